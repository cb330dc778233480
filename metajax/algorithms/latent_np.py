"""Neural Processes with a global latent variable (Garnelo, Schwarz, Rosenbaum, Viola,
Rezende, Eslami and Teh, ICML 2018 workshop, "Neural Processes").

A latent ``z`` carries the uncertainty about the whole function, so samples of ``z`` give
coherent function samples (which a CNP's independent per-target Gaussians cannot). The latent
encoder is a mean-pooled set encoder that outputs ``q(z | set)``; the prior is the same
encoder on the context, ``p(z | C) = q(z | C)``. The model here keeps CNP's deterministic path
beside the latent one, as the NP baseline of Kim et al. 2019 (their Figure 2):

    p(y_t | x_t, C) = E_{p(z | C)} N(y_t; g([r_C, z, x_t])).

Training maximizes the ELBO of eq. 8 (`metajax.algorithms.neural_process`); the test reports
the predictive log-likelihood by sampling ``z ~ p(z | C)``, and the importance-weighted bound
(Burda et al. 2016) with ``q(z | C u T)`` as the proposal.
"""

from __future__ import annotations

import dataclasses

import chex
import jax

from metajax.algorithms.cnp import CNP
from metajax.algorithms.neural_process import LatentFields, ProcessConfig
from metajax.config import BuildEnv, ConfigError, register_algorithm
from metajax.core.functional import Model, from_nnx
from metajax.core.types import Params, Split
from metajax.models.neural_process import Gaussian, GaussianDecoder, PooledEncoder


@dataclasses.dataclass(frozen=True)
class LatentNP(CNP):
    """A Neural Process: CNP's deterministic path plus a global latent ``z``.

    Attributes:
      latent_encoder: ``apply(params, x, y, mask) -> Gaussian`` over ``z``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> model = LatentNP.build(x_dim=1, y_dim=1, width=16, latent_dim=4)
      >>> params = model.init(jax.random.key(0))
      >>> context = Split(jnp.linspace(-1, 1, 5)[:, None], jnp.zeros((5, 1)))
      >>> model.adapt(params, context).latent.mean.shape
      (4,)
    """

    latent_encoder: Model | None = None

    @classmethod
    def build(cls, x_dim: int, y_dim: int, width: int = 128, encoder_depth: int = 4,
              post_depth: int = 2, decoder_depth: int = 3, min_scale: float = 0.01,
              latent_dim: int = 128, **kwargs) -> LatentNP:  # fmt: skip
        """An NP of the standard architecture for ``x_dim -> y_dim``."""
        encoder = from_nnx(lambda r: PooledEncoder(x_dim, y_dim, width, width, encoder_depth,
                                                   post_depth, rngs=r))  # fmt: skip
        latent = from_nnx(lambda r: PooledEncoder(x_dim, y_dim, width, latent_dim,
                                                  encoder_depth, post_depth, latent=True,
                                                  rngs=r))  # fmt: skip
        decoder = from_nnx(lambda r: GaussianDecoder(x_dim, width + latent_dim, y_dim, width,
                                                     decoder_depth, min_scale, rngs=r))  # fmt: skip
        return cls(encoder, decoder, latent, **kwargs)

    def __post_init__(self):
        if self.latent_encoder is None:
            raise ValueError("LatentNP needs a latent_encoder (else it is a CNP).")

    def init(self, key: chex.PRNGKey) -> Params:
        k_det, k_lat = jax.random.split(key)
        return {**super().init(k_det), "latent": self.latent_encoder.init(k_lat)}

    def latent_distribution(self, params: Params, points: Split) -> Gaussian:
        return self.latent_encoder.apply(params["latent"], points.x, points.y, points.mask)


@register_algorithm("np")
@dataclasses.dataclass(frozen=True)
class NPConfig(LatentFields, ProcessConfig):
    """Neural Process (Garnelo et al. 2018b): a global latent, trained by the ELBO."""

    def build(self, env: BuildEnv) -> LatentNP:
        x_dim, y_dim = self.dims(env)
        return LatentNP.build(x_dim, y_dim, self.width, self.encoder_depth, self.post_depth,
                              self.decoder_depth, self.min_scale, self.latent_dim,
                              eval_samples=self.eval_samples, train_samples=self.train_samples,
                              **self.common(env))  # fmt: skip

    def validate(self, name: str) -> None:
        super().validate(name)
        self.check_latent(name)
        if self.latent_dim < 1:
            raise ConfigError(f"Config {name}: np needs latent_dim >= 1 (0 is algorithm=cnp).")
