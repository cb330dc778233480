"""Prototypical Networks with scaled cosine similarity (Snell et al. 2017 compare cosine
against Euclidean distance, section 2.7 and Table 1; the learned scale is TADAM's metric
scaling, Oreshkin, Rodriguez and Lacoste, NeurIPS 2018, section 2.1).

Prototypes are the class means of the support embeddings, as in `ProtoNet` (eq. 1). A query
``x`` is classified by a softmax over scaled cosine similarities,

    p(y = k | x) = softmax_k(alpha * cos(f_theta(x), c_k)),

with the scale ``alpha = exp(log_alpha)`` meta-learned with the embedding: cosine logits lie in
[-1, 1], and without a scale the softmax cannot become confident.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import chex
import jax
import jax.numpy as jnp

from metajax.algorithms.protonet import ProtoNet, Prototypes
from metajax.config import BuildEnv, ConfigError, LearnerConfig, register_algorithm
from metajax.core.functional import Model
from metajax.core.types import Params, Split


def unit_norm(v: chex.Array) -> chex.Array:
    """``v``'s rows scaled to unit length (a zero row stays zero): cosine similarity is then
    a dot product.

    The squared norm is clamped before the square root, so a zero row (an absent class's
    mean) has a finite gradient; ``jnp.linalg.norm``'s gradient at zero is NaN, and a NaN
    survives ``jnp.where`` masking in reverse mode."""
    return v * jax.lax.rsqrt(jnp.maximum(jnp.sum(v * v, axis=-1, keepdims=True), 1e-16))


def scaled_cosine_params(model: Model, key: chex.PRNGKey, scale_init: float) -> Params:
    """``{"embedding": ..., "log_scale": log scale_init}``: an embedding with a learned scale
    for its cosine similarities (TADAM's metric scaling)."""
    return {"embedding": model.init(key), "log_scale": jnp.log(jnp.float32(scale_init))}


@dataclasses.dataclass(frozen=True)
class CosineProtoNet(ProtoNet):
    """Prototypical Networks whose logits are ``alpha * cos(f(x), c_k)``.

    Meta-parameters are ``{"embedding": ..., "log_scale": log alpha}``.

    Attributes:
      scale_init: the initial scale alpha.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from metajax import from_function
      >>> net = CosineProtoNet(from_function(lambda p, x: x * p, lambda k: jnp.float32(1.0)))
      >>> support = Split(jnp.array([[1.0, 0.0], [0.0, 2.0]]), jnp.array([0, 1]))
      >>> adapted = net.adapt(net.init(jax.random.key(0)), support)
      >>> net.predict(adapted, jnp.array([[3.0, 0.0]]))[0, :2].round(3).tolist()
      [10.0, 0.0]
    """

    scale_init: float = 10.0

    def init(self, key: chex.PRNGKey) -> Params:
        return scaled_cosine_params(self.model, key, self.scale_init)

    def adapt(
        self,
        meta_params: Params,
        context: Split,
        key: chex.PRNGKey | None = None,
        *,
        steps: int | None = None,
    ) -> Prototypes:
        """Class means of the support embeddings; the adapted pytree carries the scale."""
        means = super().adapt(meta_params["embedding"], context, key, steps=steps)
        return means.replace(params=meta_params)

    def distances(self, adapted: Prototypes, x: chex.Array) -> chex.Array:
        """Negative scaled cosine similarities, ``-alpha cos(f(x), c_k)``: ``predict``'s
        logits are their negation."""
        emb = unit_norm(self.model.apply(adapted.params["embedding"], x))
        scale = jnp.exp(adapted.params["log_scale"])
        return -scale * emb @ unit_norm(adapted.prototypes).T


@register_algorithm("protonet-cosine")
@dataclasses.dataclass(frozen=True)
class CosineProtoNetConfig(LearnerConfig):
    """Prototypical Networks with a learned-scale cosine similarity (Snell et al. 2017; TADAM).

    Attributes:
      scale_init: the initial scale of the cosine logits.
    """

    scale_init: float = 10.0
    fixed_way: ClassVar[bool] = False
    per_task_weights: ClassVar[bool] = False
    kinds: ClassVar[tuple[str, ...]] = ("classification",)

    def build(self, env: BuildEnv) -> CosineProtoNet:
        return CosineProtoNet(env.features(), scale_init=self.scale_init, task_chunk=env.task_chunk)

    def validate(self, name: str) -> None:
        if not self.scale_init > 0:
            raise ConfigError(f"Config {name}: scale_init must be > 0, got {self.scale_init}.")
