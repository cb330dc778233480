"""Prototypical Networks (Snell, Swersky and Zemel, NeurIPS 2017).

An embedding ``f_theta`` maps each support example to a vector; each class's prototype is the
mean of its support embeddings (eq. 1),

    c_k = 1/|S_k| sum_{(x, y) in S_k} f_theta(x),

and a query is classified by a softmax over negative squared Euclidean distances (eq. 2),

    p(y = k | x) = softmax_k(-||f_theta(x) - c_k||^2).

The meta-loss is the query cross-entropy; there is no inner loop, so ``adapt`` computes the
prototypes and ignores ``steps``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp

from metajax import losses
from metajax.algorithms.base import LossAlgorithm, Metrics
from metajax.core.functional import Model
from metajax.core.inner import InnerResult
from metajax.core.types import Params, Split, Task

# Logit of a label absent from the support set: never predicted, no NaN in the softmax.
_ABSENT = -1e9


@dataclasses.dataclass(frozen=True)
class ProtoNet(LossAlgorithm):
    """Prototypical Networks with squared Euclidean distance.

    Labels are integers ``0 .. n_way - 1``; logits have one column per possible label up to
    the support set's size, and labels absent from the support get a logit of -1e9.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from metajax import from_function
      >>> net = ProtoNet(from_function(lambda p, x: x * p, lambda k: jnp.float32(1.0)))
      >>> support = Split(jnp.array([[0.0], [4.0]]), jnp.array([0, 1]))
      >>> adapted = net.adapt(net.init(jax.random.key(0)), support).params
      >>> net.predict(adapted, jnp.array([[1.0], [3.5]])).argmax(-1).tolist()
      [0, 1]
    """

    model: Model

    def init(self, key: chex.PRNGKey) -> Params:
        return self.model.init(key)

    def prototypes(self, params: Params, support: Split) -> dict[str, chex.Array]:
        """Class means of the support embeddings, and which labels are present."""
        emb = self.model.apply(params, support.x)
        n = support.y.shape[0]
        sums = jax.ops.segment_sum(emb, support.y, num_segments=n)
        counts = jax.ops.segment_sum(jnp.ones(n), support.y, num_segments=n)
        return {"prototypes": sums / jnp.maximum(counts, 1)[:, None], "present": counts > 0}

    def adapt(
        self,
        meta_params: Params,
        support: Split,
        *,
        steps: int | None = None,
        track: Callable[[Params], Any] | None = None,
    ) -> InnerResult:
        del steps  # no inner loop
        adapted = {"params": meta_params, **self.prototypes(meta_params, support)}
        tracked = None if track is None else jax.tree.map(lambda a: a[None], track(adapted))
        return InnerResult(params=adapted, support_losses=jnp.zeros((0,)), tracked=tracked)

    def predict(self, adapted: Params, x: chex.Array) -> chex.Array:
        emb = self.model.apply(adapted["params"], x)
        d2 = (
            jnp.sum(emb**2, -1, keepdims=True)
            - 2 * emb @ adapted["prototypes"].T
            + jnp.sum(adapted["prototypes"] ** 2, -1)
        )
        return jnp.where(adapted["present"], -d2, _ABSENT)

    def meta_loss(
        self, meta_params: Params, task: Task, key: chex.PRNGKey
    ) -> tuple[chex.Array, Metrics]:
        del key
        adapted = self.adapt(meta_params, task.support).params
        logits = self.predict(adapted, task.query.x)
        loss = losses.cross_entropy(logits, task.query.y)
        return loss, {"meta_loss": loss, "accuracy": losses.accuracy(logits, task.query.y)}
