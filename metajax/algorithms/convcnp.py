"""Convolutional Conditional Neural Processes (Gordon, Bruinsma, Foong, Requeima, Dubois and
Turner, ICLR 2020).

A function of the context that commutes with translations must be a convolution (their
Theorem 1), so ConvCNP builds its representation on a uniform grid ``t_j``:

1. SetConv onto the grid (eq. 4): a density channel ``h0(t) = sum_i phi(t - x_i)`` and a data
   channel ``h1(t) = sum_i phi(t - x_i) y_i / h0(t)``, with an EQ kernel ``phi`` of a learned
   length per channel;
2. a CNN over ``[h0, h1]`` on the grid;
3. SetConv back to each target, ``f(x) = sum_j psi(x - t_j) CNN(h)_j / sum_j psi(x - t_j)``
   (normalized: kernel interpolation of the grid), then a pointwise linear layer to a mean
   and a bounded scale.

The grid has ``grid_size`` points, ``1 / points_per_unit`` apart, starting at the smallest
context or target input less ``margin``, snapped to a multiple of the spacing: shifting every
input by a multiple of the spacing shifts the grid with it, so the predictions are exactly
translation equivariant there (and approximately for any shift). Sums over the context make
them invariant to its order.
"""

from __future__ import annotations

import dataclasses
import math

import chex
import jax
import jax.numpy as jnp
from flax import nnx

from metajax.algorithms.neural_process import Conditioned, NeuralProcess, ProcessConfig
from metajax.config import BuildEnv, ConfigError, register_algorithm
from metajax.core.functional import Model, from_nnx
from metajax.core.types import Params, Split
from metajax.models.neural_process import (
    ConvDecoderCNN,
    Gaussian,
    bounded_gaussian,
    set_conv,
)


@dataclasses.dataclass(frozen=True)
class ConvCNP(NeuralProcess):
    """A 1-D ConvCNP.

    Attributes:
      cnn: ``apply(params, h [grid, 1 + y_dim]) -> [grid, channels]`` (`ConvDecoderCNN`: a plain CNN, as the paper's 1-D model).
      head: ``apply(params, f [m, channels]) -> [m, 2 y_dim]``, the pointwise output layer.
      channels: the CNN's output channels.
      points_per_unit: grid density.
      grid_size: grid points (static); the grid spans ``grid_size / points_per_unit``.
      margin: room left of the smallest input.
      min_scale: the predictive scale's lower bound.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> model = ConvCNP.build(y_dim=1, channels=8, layers=1, grid_size=64)
      >>> params = model.init(jax.random.key(0))
      >>> context = Split(jnp.linspace(-1, 1, 5)[:, None], jnp.zeros((5, 1)))
      >>> model.predict(model.adapt(params, context), jnp.zeros((3, 1))).mean.shape
      (3, 1)
    """

    cnn: Model
    head: Model
    channels: int
    points_per_unit: float = 32.0
    grid_size: int = 160
    margin: float = 0.1
    min_scale: float = 0.01

    @classmethod
    def build(cls, y_dim: int = 1, channels: int = 32, layers: int = 6, kernel_size: int = 11,
              points_per_unit: float = 32.0, grid_size: int = 160, margin: float = 0.1,
              min_scale: float = 0.01, **kwargs) -> ConvCNP:  # fmt: skip
        """A ConvCNP with a residual CNN of ``layers`` convolutions."""
        cnn = from_nnx(lambda r: ConvDecoderCNN(1 + y_dim, channels, layers, kernel_size, rngs=r))
        head = from_nnx(lambda r: nnx.Linear(channels, 2 * y_dim, rngs=r))
        return cls(cnn, head, channels, points_per_unit, grid_size, margin, min_scale, **kwargs)

    def init(self, key: chex.PRNGKey) -> Params:
        k_cnn, k_head = jax.random.split(key)
        # Both SetConvs start at twice the grid spacing (the paper's initialization).
        log_length = math.log(2.0 / self.points_per_unit)
        return {
            "cnn": self.cnn.init(k_cnn),
            "head": self.head.init(k_head),
            "log_length_in": jnp.full((2,), log_length, jnp.float32),
            "log_length_out": jnp.full((self.channels,), log_length, jnp.float32),
        }

    def represent(self, params: Params, context: Split) -> None:
        del params, context  # the grid is laid over the context and the targets together
        return None

    def grid(self, context: Split, x: chex.Array) -> chex.Array:
        """``[grid_size, 1]`` grid points from the smallest input (less the margin), snapped
        to a multiple of the spacing."""
        real = context.weights() > 0
        lowest = jnp.minimum(jnp.min(jnp.where(real, context.x[:, 0], jnp.inf)), jnp.min(x[:, 0]))
        start = jnp.floor((lowest - self.margin) * self.points_per_unit)
        return ((start + jnp.arange(self.grid_size)) / self.points_per_unit)[:, None]

    def decode(self, adapted: Conditioned, x: chex.Array, z: chex.Array | None) -> Gaussian:
        del z
        params, context = adapted.params, adapted.context
        t = jax.lax.stop_gradient(self.grid(context, x))
        w = context.weights()[:, None]
        # The density channel counts the context near each grid point; the data channel is
        # the kernel-weighted mean of y there (eq. 4's normalization).
        values = jnp.concatenate([w, context.y * w], -1)
        lengths = jnp.concatenate([params["log_length_in"][:1],
                                   jnp.broadcast_to(params["log_length_in"][1], context.y.shape[-1:])])  # fmt: skip
        h = set_conv(context.x, values, t, lengths)
        density = h[:, :1]
        h = jnp.concatenate([density, h[:, 1:] / (density + 1e-8)], -1)
        f = self.cnn.apply(params["cnn"], h)
        out = set_conv(t, f, x, params["log_length_out"], normalize=True)
        return bounded_gaussian(self.head.apply(params["head"], out), self.min_scale)


@register_algorithm("convcnp")
@dataclasses.dataclass(frozen=True)
class ConvCNPConfig(ProcessConfig):
    """ConvCNP (Gordon et al. 2020): SetConv onto a grid, a CNN, SetConv back; translation
    equivariant.

    Attributes:
      channels: CNN channels.
      conv_layers: residual convolutions.
      kernel_size: their width, in grid points.
      points_per_unit: grid density.
      margin: grid room beyond the inputs.
    """

    channels: int = 32
    conv_layers: int = 6
    kernel_size: int = 11
    points_per_unit: float = 32.0
    margin: float = 0.1

    def build(self, env: BuildEnv) -> ConvCNP:
        x_dim, y_dim = self.dims(env)
        if x_dim != 1 or env.x_range is None:
            raise ConfigError(f"Config {env.config}: convcnp is 1-D here; this benchmark's "
                              f"inputs have {x_dim} dimensions.")  # fmt: skip
        lo, hi = env.x_range
        grid_size = math.ceil(((hi - lo) + 2 * self.margin) * self.points_per_unit) + 1
        return ConvCNP.build(y_dim, self.channels, self.conv_layers, self.kernel_size,
                             self.points_per_unit, grid_size, self.margin, self.min_scale,
                             **self.common(env))  # fmt: skip

    def validate(self, name: str) -> None:
        super().validate(name)
        if min(self.channels, self.conv_layers + 1, self.kernel_size) < 1 or not (
            self.points_per_unit > 0 and self.margin >= 0
        ):
            raise ConfigError(
                f"Config {name}: channels and kernel_size must be >= 1, conv_layers >= 0, "
                "points_per_unit > 0 and margin >= 0."
            )
