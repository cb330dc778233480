"""Prototypical Networks (Snell, Swersky and Zemel, NeurIPS 2017).

An embedding ``f_theta`` maps each support example to a vector; each class's prototype is the
mean of its support embeddings (eq. 1),

    c_k = 1/|S_k| sum_{(x, y) in S_k} f_theta(x),

and a query is classified by a softmax over negative squared Euclidean distances (eq. 2),

    p(y = k | x) = softmax_k(-||f_theta(x) - c_k||^2).

The meta-loss is the query cross-entropy; there is no inner loop, so ``adapt`` computes the
prototypes (`Prototypes`) and ignores ``steps``.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import chex
import jax
import jax.numpy as jnp
from flax import struct

from metajax import losses
from metajax.config import BuildEnv, LearnerConfig, register_algorithm
from metajax.core.functional import Model
from metajax.core.learner import MetaLearner, Metrics
from metajax.core.types import Params, Split, Task

# Logit of a label absent from the support set: never predicted, no NaN in the softmax.
_ABSENT = -1e9


def class_means(embeddings: chex.Array, labels: chex.Array) -> tuple[chex.Array, chex.Array]:
    """``(means, present)``: the mean embedding of each label ``0 .. n - 1`` (eq. 1) for ``n``
    examples, and whether the label occurs; an absent label's mean is zero.

    Example:
      >>> import jax.numpy as jnp
      >>> means, present = class_means(jnp.array([[0.0], [2.0], [5.0]]), jnp.array([0, 0, 2]))
      >>> means[:, 0].tolist(), present.tolist()
      ([1.0, 0.0, 5.0], [True, False, True])
    """
    n = labels.shape[0]
    sums = jax.ops.segment_sum(embeddings, labels, num_segments=n)
    counts = jax.ops.segment_sum(jnp.ones(n, embeddings.dtype), labels, num_segments=n)
    return sums / jnp.maximum(counts, 1)[:, None], counts > 0


@struct.dataclass
class Prototypes:
    """A metric learner's adapted predictor: the embedding's parameters and one prototype
    per label.

    Attributes:
      params: the embedding network's parameters.
      prototypes: ``[labels, features]`` class means of the support embeddings.
      present: ``[labels]``, whether the support set has the label.
    """

    params: Params
    prototypes: chex.Array
    present: chex.Array


@dataclasses.dataclass(frozen=True)
class MetricClassifier(MetaLearner):
    """A classifier with no inner loop: ``adapt`` summarizes the support set, ``predict``
    gives logits (or log-probabilities) per label, and the meta-loss is their query
    cross-entropy. The metric-based learners (ProtoNet, Matching Networks) share it."""

    def meta_loss(
        self, meta_params: Params, task: Task, key: chex.PRNGKey
    ) -> tuple[chex.Array, Metrics]:
        logits = self.predict(self.adapt(meta_params, task.support, key), task.query.x)
        loss = losses.cross_entropy(logits, task.query.y)
        return loss, {"meta_loss": loss, "accuracy": losses.accuracy(logits, task.query.y)}

    def evaluate_task(self, params: Params, task: Task, key: chex.PRNGKey) -> Metrics:
        """Query accuracy (the metric-based papers' protocol)."""
        logits = self.predict(self.adapt(params, task.support, key), task.query.x)
        return {"accuracy": losses.accuracy(logits, task.query.y)}


@dataclasses.dataclass(frozen=True)
class ProtoNet(MetricClassifier):
    """Prototypical Networks with squared Euclidean distance.

    Labels are integers ``0 .. n_way - 1``; logits have one column per possible label up to
    the support set's size, and labels absent from the support get a logit of -1e9.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from metajax import from_function
      >>> net = ProtoNet(from_function(lambda p, x: x * p, lambda k: jnp.float32(1.0)))
      >>> support = Split(jnp.array([[0.0], [4.0]]), jnp.array([0, 1]))
      >>> adapted = net.adapt(net.init(jax.random.key(0)), support)
      >>> net.predict(adapted, jnp.array([[1.0], [3.5]])).argmax(-1).tolist()
      [0, 1]
    """

    model: Model
    fixed_way: ClassVar[bool] = False

    def init(self, key: chex.PRNGKey) -> Params:
        return self.model.init(key)

    def adapt(
        self,
        meta_params: Params,
        context: Split,
        key: chex.PRNGKey | None = None,
        *,
        steps: int | None = None,
    ) -> Prototypes:
        """Class means of the support embeddings (``steps`` is ignored: no inner loop)."""
        del key, steps
        means, present = class_means(self.model.apply(meta_params, context.x), context.y)
        return Prototypes(meta_params, means, present)

    def distances(self, adapted: Prototypes, x: chex.Array) -> chex.Array:
        """``[n, labels]`` squared Euclidean distances from embeddings to prototypes (eq. 2)."""
        emb = self.model.apply(adapted.params, x)
        protos = adapted.prototypes
        return jnp.sum(emb**2, -1, keepdims=True) - 2 * emb @ protos.T + jnp.sum(protos**2, -1)

    def predict(
        self, adapted: Prototypes, x: chex.Array, key: chex.PRNGKey | None = None
    ) -> chex.Array:
        del key
        return jnp.where(adapted.present, -self.distances(adapted, x), _ABSENT)


@register_algorithm("protonet")
@dataclasses.dataclass(frozen=True)
class ProtoNetConfig(LearnerConfig):
    """Prototypical Networks (Snell et al. 2017): nearest class mean in an embedding."""

    fixed_way: ClassVar[bool] = False
    per_task_weights: ClassVar[bool] = False
    kinds: ClassVar[tuple[str, ...]] = ("classification",)

    def build(self, env: BuildEnv) -> ProtoNet:
        return ProtoNet(env.features(), task_chunk=env.task_chunk)
