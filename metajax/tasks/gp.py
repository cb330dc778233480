"""Functions drawn from a Gaussian process, the Neural Process family's 1-D benchmark.

The sampler of the published NP benchmarks (Kim et al. 2019; Lee et al. 2020): inputs
``x ~ U[-2, 2]``; a kernel ``k`` plus noise ``sigma^2 = (2e-2)^2`` on the diagonal; values
``y ~ N(0, K + sigma^2 I)``. Each function has ``num_points`` points; the first ``n`` are the
context, ``n ~ U{min_context, ..., max_context - 1}``, and the rest the targets. Shapes stay
static: the support and the query both hold all the points, with complementary masks.

Kernels, with length ``l`` and scale ``s`` (fixed, or with ``random_hyperparameters``,
``l ~ U[0.1, length_scale]`` and ``s ~ U[0.1, scale]``, as Lee et al. 2020):

- ``eq``: ``s^2 exp(-d^2 / (2 l^2))``;
- ``matern``: Matern-5/2, ``s^2 (1 + sqrt5 d/l + 5 d^2 / (3 l^2)) exp(-sqrt5 d / l)``;
- ``periodic``: ``s^2 exp(-2 sin^2(pi d / p) / l^2)``, period ``p`` (random: ``U[0.1, 0.5]``).

Noise-free functions (``noise=0``, the Neural-Process-Family benchmarks' data) are drawn with
a standard deviation of ``MIN_NOISE = 1e-3`` on the diagonal: without it the float32 Cholesky
of a smooth kernel at 128 close points fails and every value is NaN. ``observation_noise`` is
the standard deviation actually used, for the sampler and for an exact-GP oracle alike.

On CPU a meta-batch's covariances are factored one matrix per LAPACK call (`cholesky`):
jaxlib's batched CPU Cholesky waits on XLA's intra-op thread pool, and with the meta-batch
sharded over as many CPU devices as there are pool threads every thread waits and the step
never ends.
"""

from __future__ import annotations

import dataclasses
import math

import chex
import jax
import jax.numpy as jnp

from metajax.core.types import Split, Task

KERNELS = ("eq", "matern", "periodic")
MIN_NOISE = 1e-3


@jax.custom_batching.custom_vmap
def cholesky(matrix: chex.Array) -> chex.Array:
    """The lower Cholesky factor of ``matrix`` (``jnp.linalg.cholesky``), with a batching
    rule that, on CPU, factors a batch one matrix at a time (``lax.map``).

    A batched CPU factorization splits its batch over XLA's intra-op thread pool and blocks
    until the pieces finish. Inside a program sharded over several CPU devices (simulated
    with ``--xla_force_host_platform_device_count``, one pool for all), each device's call
    can hold a pool thread while waiting for the others: with as many devices as threads,
    none is left to run the pieces, and the step hangs. One matrix per call runs inline.
    The factors are the same LAPACK results either way; other platforms keep the batched
    call.

    Args:
      matrix: ``[n, n]`` symmetric positive definite.

    Returns:
      ``[n, n]`` lower triangular ``L`` with ``L @ L.T == matrix``.

    Example:
      >>> L = jax.vmap(cholesky)(jnp.stack([4.0 * jnp.eye(2), jnp.eye(2)]))
      >>> L[:, 0, 0].tolist()
      [2.0, 1.0]
    """
    return jnp.linalg.cholesky(matrix)


@cholesky.def_vmap
def _cholesky_batched(axis_size: int, in_batched: list[bool], matrices: chex.Array):
    del axis_size
    if not in_batched[0]:
        return cholesky(matrices), False
    factors = jax.lax.platform_dependent(
        matrices, cpu=lambda m: jax.lax.map(cholesky, m), default=jnp.linalg.cholesky
    )
    return factors, True


def kernel_matrix(kernel: str, x: chex.Array, length: chex.Array, scale: chex.Array,
                  period: chex.Array) -> chex.Array:  # fmt: skip
    """``[n, n]`` covariance of the inputs ``x [n, 1]`` under ``kernel`` (module docstring)."""
    d = jnp.abs(x[:, None, 0] - x[None, :, 0])
    if kernel == "eq":
        k = jnp.exp(-0.5 * (d / length) ** 2)
    elif kernel == "matern":
        r = math.sqrt(5.0) * d / length
        k = (1 + r + r**2 / 3) * jnp.exp(-r)
    elif kernel == "periodic":
        k = jnp.exp(-2 * (jnp.sin(math.pi * d / period) / length) ** 2)
    else:
        raise ValueError(f"Unknown kernel {kernel!r}; one of {', '.join(KERNELS)}.")
    return scale**2 * k


@dataclasses.dataclass(frozen=True)
class GaussianProcess:
    """Gaussian-process functions with a random split into context and targets.

    Attributes:
      kernel: ``eq``, ``matern`` or ``periodic``.
      length_scale: the kernel's length (the upper end of its range when random).
      scale: the kernel's output scale (likewise).
      period: the periodic kernel's period (random: ``U[0.1, 0.5]``).
      random_hyperparameters: draw length, scale (and period) per function.
      noise: the observation noise's standard deviation (at least ``MIN_NOISE`` is used).
      num_points: points per function.
      min_context, max_context: the context size is drawn from ``[min_context, max_context)``.
      x_range: the inputs' range.

    Example:
      >>> import jax
      >>> task = GaussianProcess().sample(jax.random.key(0))
      >>> task.support.x.shape, int(task.support.mask.sum() + task.query.mask.sum())
      ((50, 1), 50)
    """

    kernel: str = "eq"
    length_scale: float = 0.6
    scale: float = 1.0
    period: float = 0.5
    random_hyperparameters: bool = False
    noise: float = 2e-2
    num_points: int = 50
    min_context: int = 3
    max_context: int = 47
    x_range: tuple[float, float] = (-2.0, 2.0)

    def __post_init__(self):
        if self.kernel not in KERNELS:
            raise ValueError(
                f"GaussianProcess: kernel must be one of {KERNELS}, got {self.kernel!r}."
            )
        if not 1 <= self.min_context < self.max_context <= self.num_points:
            raise ValueError(
                "GaussianProcess needs 1 <= min_context < max_context <= num_points, got "
                f"{self.min_context}, {self.max_context}, {self.num_points}."
            )
        if min(self.length_scale, self.scale, self.period) <= 0 or self.noise < 0:
            raise ValueError("GaussianProcess: length_scale, scale and period must be > 0, "
                             "noise >= 0.")  # fmt: skip

    @property
    def observation_noise(self) -> float:
        """The noise's standard deviation in the samples: ``max(noise, MIN_NOISE)``."""
        return max(self.noise, MIN_NOISE)

    def sample(self, key: chex.PRNGKey) -> Task:
        k_x, k_y, k_n, k_l, k_s, k_p = jax.random.split(key, 6)
        n = self.num_points
        lo, hi = self.x_range
        x = jax.random.uniform(k_x, (n, 1), minval=lo, maxval=hi)
        length, scale, period = (jnp.float32(v) for v in (self.length_scale, self.scale,
                                                          self.period))  # fmt: skip
        if self.random_hyperparameters:
            length = jax.random.uniform(k_l, (), minval=0.1, maxval=self.length_scale)
            scale = jax.random.uniform(k_s, (), minval=0.1, maxval=self.scale)
            period = jax.random.uniform(k_p, (), minval=0.1, maxval=0.5)
        noise_var = self.observation_noise**2
        cov = kernel_matrix(self.kernel, x, length, scale, period) + noise_var * jnp.eye(n)
        y = cholesky(cov) @ jax.random.normal(k_y, (n, 1))
        num_context = jax.random.randint(k_n, (), self.min_context, self.max_context)
        context = jnp.arange(n) < num_context
        return Task(
            support=Split(x, y, context),
            query=Split(x, y, ~context),
            info={
                "num_context": num_context,
                "length_scale": length,
                "scale": scale,
                "period": period,
            },  # fmt: skip
            shared_points=True,
        )
