"""ANIL, "Almost No Inner Loop" (Raghu, Raghu, Bengio and Vinyals, "Rapid Learning or
Feature Reuse?", ICLR 2020).

The network is a body ``f`` (features) and a head ``h``. MAML's inner loop is kept for the
head only (section 4): the support and query features are computed once per task with the
meta-parameters' body,

    z_S = f(theta_body, x_S),   z_Q = f(theta_body, x_Q),

the head is adapted on ``z_S`` by the inner-loop engine,

    phi_head = theta_head - alpha grad_head L(h(theta_head, z_S), y_S)   (one step shown),

and the meta-loss is ``L(h(phi_head, z_Q), y_Q)``, differentiated with respect to both the
body and the head (through the inner loop, second order unless ``first_order``). The inner
loop never runs or differentiates the body, which is what makes ANIL cheap: with frozen
body parameters it computes exactly MAML's meta-gradient.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import chex
import jax

from metajax.algorithms.base import InnerLoopLearner
from metajax.algorithms.maml import MAMLConfig
from metajax.config import BuildEnv, register_algorithm
from metajax.core.functional import Model
from metajax.core.inner import InnerLoop, InnerResult
from metajax.core.learner import Metrics
from metajax.core.types import Params, Split, Task


@dataclasses.dataclass(frozen=True)
class ANIL(InnerLoopLearner):
    """ANIL: MAML's inner loop on the head alone, over features computed once per task.

    Meta-parameters are ``{"body": ..., "head": ...}``; adapted parameters have the same
    structure (the body unchanged), so ``predict`` applies the whole network.

    Attributes:
      body: features ``f(params, x)``.
      head: the adapted part, ``h(params, features)``.
      loss: ``loss(predictions, targets) -> scalar``.
      inner: the head's inner loop (`metajax.InnerLoop`).

    Example:
      >>> import jax, optax
      >>> from metajax import InnerLoop, Sinusoid, from_nnx, losses
      >>> from metajax.models import MLP
      >>> anil = ANIL(from_nnx(lambda r: MLP(1, 8, (16,), rngs=r)),
      ...             from_nnx(lambda r: MLP(8, 1, (), rngs=r)), losses.mse,
      ...             InnerLoop(optax.sgd(0.01)))
      >>> params = anil.init(jax.random.key(0))
      >>> grads, metrics = anil.meta_grad(params, Sinusoid().sample(jax.random.key(1)),
      ...                                 jax.random.key(2))
      >>> sorted(grads), sorted(metrics)
      (['body', 'head'], ['meta_loss', 'support_loss'])
    """

    body: Model
    head: Model
    loss: Callable[[chex.Array, chex.Array], chex.Array]
    inner: InnerLoop

    def init(self, key: chex.PRNGKey) -> Params:
        body_key, head_key = jax.random.split(key)
        return {"body": self.body.init(body_key), "head": self.head.init(head_key)}

    def apply(self, params: Params, x: chex.Array) -> chex.Array:
        return self.head.apply(params["head"], self.body.apply(params["body"], x))

    def initial(self, meta_params: Params) -> Params:
        return meta_params

    def head_loss(self, head_params: Params, features: Split) -> chex.Array:
        """The loss of the head on precomputed features."""
        return self.loss(self.head.apply(head_params, features.x), features.y)

    def adapt_head(
        self,
        head_params: Params,
        features: Split,
        *,
        steps: int | None = None,
        track: Callable[[Params], Any] | None = None,
    ) -> InnerResult:
        """The inner loop on the head alone, over support features."""
        return self.inner.run(self.head_loss, head_params, features, steps=steps, track=track)

    def run_inner(
        self,
        meta_params: Params,
        support: Split,
        *,
        steps: int | None = None,
        track: Callable[[Params], Any] | None = None,
    ) -> InnerResult:
        """Adapted ``{"body", "head"}`` parameters from a support split; ``track`` sees the
        whole network's parameters."""
        body = meta_params["body"]
        features = Split(self.body.apply(body, support.x), support.y)
        track_head = None if track is None else (lambda head: track({"body": body, "head": head}))
        inner = self.adapt_head(meta_params["head"], features, steps=steps, track=track_head)
        return inner.replace(params={"body": body, "head": inner.params})

    def meta_loss(
        self, meta_params: Params, task: Task, key: chex.PRNGKey
    ) -> tuple[chex.Array, Metrics]:
        del key
        body = meta_params["body"]
        support = Split(self.body.apply(body, task.support.x), task.support.y)
        query = Split(self.body.apply(body, task.query.x), task.query.y)
        inner = self.adapt_head(meta_params["head"], support)
        query_loss = self.head_loss(inner.params, query)
        support_loss = (
            inner.support_losses[0]
            if self.inner.steps > 0
            else self.head_loss(meta_params["head"], support)
        )
        return query_loss, {"meta_loss": query_loss, "support_loss": support_loss}


@register_algorithm("anil")
@dataclasses.dataclass(frozen=True)
class ANILConfig(MAMLConfig):
    """ANIL (Raghu et al. 2020): MAML's inner loop on the last layer alone."""

    def build(self, env: BuildEnv) -> ANIL:
        body, head = env.body_and_head()
        optimizer = self.make_optimizer(differentiated=True, config=env.config)
        inner = self.inner_loop(env, optimizer, **self.second_order())
        return ANIL(body, head, env.loss, inner, metric=env.metric,
                    eval_steps=self.test_steps(), task_chunk=env.task_chunk)  # fmt: skip
