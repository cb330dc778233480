"""Conditional Neural Processes (Garnelo, Rosenbaum, Maddison, Ramalho, Saxton, Shanahan,
Teh, Rezende and Eslami, ICML 2018).

Each context pair is encoded, ``r_i = h([x_i, y_i])``; the encodings are averaged into one
representation (eq. 3, the commutative aggregation ``a``),

    r = MLP_post( (1/n) sum_i r_i ),

and a decoder gives each target a Gaussian, ``(mu_t, sigma_t) = g([r, x_t])`` (eq. 4, with
the bounded scale of Le et al. 2018). Training maximizes the targets' log-likelihood
(`metajax.algorithms.neural_process`). The mean makes the prediction invariant to the order of
the context, and the cost O(n + m) for n context points and m targets.
"""

from __future__ import annotations

import dataclasses

import chex
import jax

from metajax.algorithms.neural_process import Conditioned, NeuralProcess, ProcessConfig
from metajax.config import BuildEnv, register_algorithm
from metajax.core.functional import Model, from_nnx
from metajax.core.types import Params, Split
from metajax.models.neural_process import Gaussian, GaussianDecoder, PooledEncoder


@dataclasses.dataclass(frozen=True)
class CNP(NeuralProcess):
    """A Conditional Neural Process.

    Attributes:
      encoder: ``apply(params, x, y, mask) -> r``, a set to one vector (`PooledEncoder`).
      decoder: ``apply(params, r, x) -> Gaussian`` (`GaussianDecoder`).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> cnp = CNP.build(x_dim=1, y_dim=1, width=16)
      >>> params = cnp.init(jax.random.key(0))
      >>> context = Split(jnp.linspace(-1, 1, 5)[:, None], jnp.zeros((5, 1)))
      >>> cnp.predict(cnp.adapt(params, context), jnp.zeros((3, 1))).mean.shape
      (3, 1)
    """

    encoder: Model
    decoder: Model

    @classmethod
    def build(cls, x_dim: int, y_dim: int, width: int = 128, encoder_depth: int = 4,
              post_depth: int = 2, decoder_depth: int = 3, min_scale: float = 0.01,
              **kwargs) -> CNP:  # fmt: skip
        """A CNP of the standard architecture (module docstring) for ``x_dim -> y_dim``."""
        encoder = from_nnx(lambda r: PooledEncoder(x_dim, y_dim, width, width, encoder_depth,
                                                   post_depth, rngs=r))  # fmt: skip
        decoder = from_nnx(lambda r: GaussianDecoder(x_dim, width, y_dim, width, decoder_depth,
                                                     min_scale, rngs=r))  # fmt: skip
        return cls(encoder, decoder, **kwargs)

    def init(self, key: chex.PRNGKey) -> Params:
        k_enc, k_dec = jax.random.split(key)
        return {"encoder": self.encoder.init(k_enc), "decoder": self.decoder.init(k_dec)}

    def represent(self, params: Params, context: Split) -> chex.Array:
        return self.encoder.apply(params["encoder"], context.x, context.y, context.mask)

    def decode(self, adapted: Conditioned, x: chex.Array, z: chex.Array | None) -> Gaussian:
        return self.decoder.apply(adapted.params["decoder"], adapted.representation, x, z)


@register_algorithm("cnp")
@dataclasses.dataclass(frozen=True)
class CNPConfig(ProcessConfig):
    """Conditional Neural Process (Garnelo et al. 2018a): mean-pooled context, Gaussian decoder."""

    def build(self, env: BuildEnv) -> CNP:
        x_dim, y_dim = self.dims(env)
        return CNP.build(x_dim, y_dim, self.width, self.encoder_depth, self.post_depth,
                         self.decoder_depth, self.min_scale, **self.common(env))  # fmt: skip
