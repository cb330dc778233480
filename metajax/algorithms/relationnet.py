"""Relation Networks (Sung, Yang, Zhang, Xiang, Torr and Hospedales, CVPR 2018).

An embedding ``f`` maps each image to a feature map; a class's map is the sum of its support
examples' maps (section 3.2, K-shot). A learned *relation module* ``g`` scores each query
against each class from their concatenated maps (eq. 1),

    r_{i,j} = g(C(f(x_i), f(x_j))),   r in [0, 1] (a sigmoid),

and the objective is regression to the match indicator (eq. 2),

    L = sum_i sum_j (r_{i,j} - 1[y_i == y_j])^2.

The relation module here is the paper's: two blocks of 3x3 convolution (64 filters), batch
normalization, ReLU and 2x2 max-pooling, then a hidden layer of 8 ReLU units and one sigmoid
output. Its first convolution acts on the depth concatenation ``[f(x_i), f(x_j)]``, which is a
sum of one convolution of each half: ``conv([a, b]) = conv_a(a) + conv_b(b)``. Those are
computed once per query and once per class, and only their sums are formed for each of the
``queries x classes`` pairs (the same result as convolving every concatenated pair, at a
fraction of the cost).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import chex
import jax
import jax.numpy as jnp
from flax import nnx, struct

from metajax import losses
from metajax.algorithms.protonet import MetricClassifier
from metajax.config import BuildEnv, ConfigError, LearnerConfig, register_algorithm
from metajax.core.functional import Model, from_nnx
from metajax.core.learner import Metrics
from metajax.core.types import Params, Split, Task
from metajax.models.conv4 import CONV_IMPLS, TransductiveBatchNorm, max_pool_2x2, resolve_conv

# The score of a label absent from the support set: below any sigmoid, never predicted.
_ABSENT = -1.0


class RelationModule(nnx.Module):
    """The relation module ``g`` on (query map, class map) pairs (module docstring).

    Args:
      channels: channels of each feature map (the concatenation has twice as many).
      filters: the convolutions' filters.
      hidden: the hidden layer's width.
      spatial: the maps' height and width, to size the hidden layer.
      conv: the convolution implementation (`metajax.models.conv4.resolve_conv`).
      rngs: NNX random streams.
    """

    def __init__(self, channels: int, filters: int = 64, hidden: int = 8, *,
                 spatial: tuple[int, int], conv: str = "auto", rngs: nnx.Rngs):  # fmt: skip
        impl = CONV_IMPLS[resolve_conv(conv)]

        def conv3x3(a, b, bias=True):
            return nnx.Conv(a, b, (3, 3), padding="SAME", use_bias=bias,
                            conv_general_dilated=impl, rngs=rngs)  # fmt: skip

        # The first convolution's weights split by the half of the concatenation they read.
        self.conv_query = conv3x3(channels, filters)
        self.conv_class = conv3x3(channels, filters, bias=False)
        self.norm1 = TransductiveBatchNorm(filters)
        self.conv2 = conv3x3(filters, filters)
        self.norm2 = TransductiveBatchNorm(filters)
        h, w = spatial[0] // 4, spatial[1] // 4
        if h < 1 or w < 1:
            raise ValueError(f"RelationModule pools twice; maps of {spatial} are too small.")
        self.fc1 = nnx.Linear(filters * h * w, hidden, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, 1, rngs=rngs)

    def __call__(self, queries: chex.Array, classes: chex.Array) -> chex.Array:
        """``[q, c]`` relation scores in [0, 1] of query maps ``[q, h, w, ch]`` against class
        maps ``[c, h, w, ch]``."""
        a, b = self.conv_query(queries), self.conv_class(classes)
        pairs = (a[:, None] + b[None, :]).reshape(-1, *a.shape[1:])
        h = max_pool_2x2(jax.nn.relu(self.norm1(pairs)))
        h = max_pool_2x2(jax.nn.relu(self.norm2(self.conv2(h))))
        h = jax.nn.relu(self.fc1(h.reshape(h.shape[0], -1)))
        return jax.nn.sigmoid(self.fc2(h)).reshape(queries.shape[0], classes.shape[0])


@struct.dataclass
class ClassMaps:
    """A Relation Network's adapted predictor.

    Attributes:
      params: the meta-parameters (``{"embedding": ..., "relation": ...}``).
      maps: ``[labels, h, w, c]`` the sum of each label's support feature maps.
      present: ``[labels]``, whether the support set has the label.
    """

    params: Params
    maps: chex.Array
    present: chex.Array


@dataclasses.dataclass(frozen=True)
class RelationNet(MetricClassifier):
    """Relation Networks: a learned relation score between a query and each class.

    Labels are integers ``0 .. n - 1`` for a support set of ``n`` examples; ``predict``
    returns ``[queries, n]`` relation scores in [0, 1], and -1 for labels the support lacks.

    Attributes:
      embedding: ``apply(params, images) -> [n, h, w, c]`` feature maps.
      relation: ``apply(params, query_maps, class_maps) -> [q, c]`` scores (`RelationModule`).
    """

    embedding: Model
    relation: Model
    fixed_way: ClassVar[bool] = False

    def init(self, key: chex.PRNGKey) -> Params:
        k_emb, k_rel = jax.random.split(key)
        return {"embedding": self.embedding.init(k_emb), "relation": self.relation.init(k_rel)}

    def adapt(self, meta_params: Params, context: Split, key: chex.PRNGKey | None = None, *,
              steps: int | None = None) -> ClassMaps:  # fmt: skip
        """Sums each class's support feature maps (K-shot: section 3.2)."""
        del key, steps
        maps = self.embedding.apply(meta_params["embedding"], context.x)
        n = context.y.shape[0]
        sums = jax.ops.segment_sum(maps, context.y, num_segments=n)
        counts = jax.ops.segment_sum(jnp.ones(n), context.y, num_segments=n)
        return ClassMaps(meta_params, sums, counts > 0)

    def predict(self, adapted: ClassMaps, x: chex.Array,
                key: chex.PRNGKey | None = None) -> chex.Array:  # fmt: skip
        del key
        queries = self.embedding.apply(adapted.params["embedding"], x)
        scores = self.relation.apply(adapted.params["relation"], queries, adapted.maps)
        return jnp.where(adapted.present, scores, _ABSENT)

    def meta_loss(self, meta_params: Params, task: Task,
                  key: chex.PRNGKey) -> tuple[chex.Array, Metrics]:  # fmt: skip
        """Mean squared error of the relation scores against the one-hot match (eq. 2), over
        every (query, present class) pair."""
        adapted = self.adapt(meta_params, task.support, key)
        scores = self.predict(adapted, task.query.x)
        target = jax.nn.one_hot(task.query.y, scores.shape[1])
        present = adapted.present.astype(scores.dtype)
        loss = jnp.sum((scores - target) ** 2 * present) / (scores.shape[0] * present.sum())
        return loss, {"meta_loss": loss, "accuracy": losses.accuracy(scores, task.query.y)}


@register_algorithm("relationnet")
@dataclasses.dataclass(frozen=True)
class RelationNetConfig(LearnerConfig):
    """Relation Networks (Sung et al. 2018): a learned relation module, MSE to one-hot.

    Attributes:
      relation_filters: filters of the relation module's convolutions.
      relation_hidden: width of its hidden layer.
    """

    relation_filters: int = 64
    relation_hidden: int = 8
    fixed_way: ClassVar[bool] = False
    per_task_weights: ClassVar[bool] = False
    kinds: ClassVar[tuple[str, ...]] = ("classification",)

    def build(self, env: BuildEnv) -> RelationNet:
        if env.feature_maps is None or env.input_shape is None:
            raise ConfigError(f"Config {env.config}: relationnet needs an image benchmark "
                              "with a conv4 backbone (its feature maps).")  # fmt: skip
        embedding = env.feature_maps()
        shape = jax.eval_shape(
            lambda k: embedding.apply(embedding.init(k), jnp.zeros((1, *env.input_shape))),
            jax.random.key(0),
        ).shape
        if len(shape) != 4:
            raise ConfigError(f"Config {env.config}: relationnet needs [n, h, w, c] feature "
                              f"maps; the backbone gives {shape}.")  # fmt: skip
        relation = from_nnx(lambda r: RelationModule(
            shape[-1], self.relation_filters, self.relation_hidden, spatial=shape[1:3],
            rngs=r))  # fmt: skip
        return RelationNet(embedding, relation, task_chunk=env.task_chunk)

    def validate(self, name: str) -> None:
        if self.relation_filters < 1 or self.relation_hidden < 1:
            raise ConfigError(f"Config {name}: relation_filters and relation_hidden must be "
                              ">= 1.")  # fmt: skip
