"""Attentive Neural Processes (Kim, Mnih, Schwarz, Garnelo, Eslami, Rosenbaum, Vinyals and
Teh, ICLR 2019).

An NP underfits its context: one mean-pooled vector cannot say which context point is near a
target. ANP replaces the deterministic path's mean by cross-attention from each target to the
context (section 3, eq. 4 with multi-head attention),

    r_t = MultiHead(Q = e(x_t), K = e(x_C), V = SelfAttn(h([x_C, y_C]))),

and adds self-attention among the context encodings of both paths. The latent path, as in the
NP, is mean-pooled (over self-attended encodings) and trained by the ELBO; ``latent_dim=0``
drops it, which is the conditional ANP (CANP of Lee et al. 2020). Attention keeps the
prediction invariant to the context's order, at O(n^2 + nm) cost.
"""

from __future__ import annotations

import dataclasses

import chex
import jax

from metajax.algorithms.neural_process import (
    Conditioned,
    LatentFields,
    NeuralProcess,
    ProcessConfig,
)
from metajax.config import BuildEnv, ConfigError, register_algorithm
from metajax.core.functional import Model, from_nnx
from metajax.core.types import Params, Split
from metajax.models.neural_process import (
    AttentiveEncoder,
    Gaussian,
    GaussianDecoder,
    PooledEncoder,
)


@dataclasses.dataclass(frozen=True)
class ANP(NeuralProcess):
    """An Attentive Neural Process.

    Attributes:
      encoder: ``apply(params, x_target, x, y, mask) -> [targets, width]`` (`AttentiveEncoder`).
      decoder: ``apply(params, representation, x) -> Gaussian``.
      latent_encoder: ``apply(params, x, y, mask) -> Gaussian`` over ``z``; ``None``: no
        latent path.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> anp = ANP.build(x_dim=1, y_dim=1, width=16, heads=2, latent_dim=0)
      >>> params = anp.init(jax.random.key(0))
      >>> context = Split(jnp.linspace(-1, 1, 5)[:, None], jnp.zeros((5, 1)))
      >>> anp.predict(anp.adapt(params, context), jnp.zeros((3, 1))).scale.shape
      (3, 1)
    """

    encoder: Model
    decoder: Model
    latent_encoder: Model | None = None

    @classmethod
    def build(cls, x_dim: int, y_dim: int, width: int = 128, encoder_depth: int = 4,
              post_depth: int = 2, decoder_depth: int = 3, min_scale: float = 0.01,
              latent_dim: int = 128, attention_layers: int = 2, heads: int = 8,
              **kwargs) -> ANP:  # fmt: skip
        """An ANP of the paper's architecture for ``x_dim -> y_dim``."""
        encoder = from_nnx(lambda r: AttentiveEncoder(x_dim, y_dim, width, encoder_depth,
                                                      attention_layers, heads, rngs=r))  # fmt: skip
        latent = None
        if latent_dim:
            latent = from_nnx(lambda r: PooledEncoder(x_dim, y_dim, width, latent_dim,
                                                      encoder_depth, post_depth,
                                                      attention_layers, heads, latent=True,
                                                      rngs=r))  # fmt: skip
        decoder = from_nnx(lambda r: GaussianDecoder(x_dim, width + latent_dim, y_dim, width,
                                                     decoder_depth, min_scale, rngs=r))  # fmt: skip
        return cls(encoder, decoder, latent, **kwargs)

    def init(self, key: chex.PRNGKey) -> Params:
        k_enc, k_dec, k_lat = jax.random.split(key, 3)
        params = {"encoder": self.encoder.init(k_enc), "decoder": self.decoder.init(k_dec)}
        if self.latent_encoder is not None:
            params["latent"] = self.latent_encoder.init(k_lat)
        return params

    def represent(self, params: Params, context: Split) -> None:
        del params, context  # read at each target, by attention
        return None

    def latent_distribution(self, params: Params, points: Split) -> Gaussian | None:
        if self.latent_encoder is None:
            return None
        return self.latent_encoder.apply(params["latent"], points.x, points.y, points.mask)

    def decode(self, adapted: Conditioned, x: chex.Array, z: chex.Array | None) -> Gaussian:
        c = adapted.context
        r = self.encoder.apply(adapted.params["encoder"], x, c.x, c.y, c.mask)
        return self.decoder.apply(adapted.params["decoder"], r, x, z)


@register_algorithm("anp")
@dataclasses.dataclass(frozen=True)
class ANPConfig(LatentFields, ProcessConfig):
    """Attentive Neural Process (Kim et al. 2019): self- and cross-attention over the context.

    Attributes:
      attention_layers: self-attention rounds over the context encodings.
      heads: attention heads.
    """

    attention_layers: int = 2
    heads: int = 8

    def build(self, env: BuildEnv) -> ANP:
        x_dim, y_dim = self.dims(env)
        return ANP.build(x_dim, y_dim, self.width, self.encoder_depth, self.post_depth,
                         self.decoder_depth, self.min_scale, self.latent_dim,
                         self.attention_layers, self.heads, eval_samples=self.eval_samples,
                         train_samples=self.train_samples, **self.common(env))  # fmt: skip

    def validate(self, name: str) -> None:
        super().validate(name)
        self.check_latent(name)
        if self.attention_layers < 0 or self.heads < 1 or self.width % self.heads:
            raise ConfigError(
                f"Config {name}: heads must be >= 1 and divide width ({self.width}), and "
                f"attention_layers >= 0; got heads={self.heads}, "
                f"attention_layers={self.attention_layers}."
            )
