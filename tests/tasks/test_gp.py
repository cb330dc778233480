"""Gaussian-process tasks: the context split, the kernels by hand, and values whose whitened
form is standard normal (the sampler draws from the stated covariance)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metajax.core.types import sample_tasks
from metajax.tasks.gp import MIN_NOISE, GaussianProcess, cholesky, kernel_matrix


def test_context_and_targets_split_every_function():
    tasks = sample_tasks(GaussianProcess(), jax.random.key(0), 2000)
    context, targets = np.asarray(tasks.support.mask), np.asarray(tasks.query.mask)
    assert not (context & targets).any() and (context | targets).all()
    sizes = context.sum(1)
    assert sizes.min() == 3 and sizes.max() == 46
    np.testing.assert_array_equal(sizes, np.asarray(tasks.info["num_context"]))
    # The context is the first n points.
    assert all(context[i, : sizes[i]].all() for i in range(20))
    x = np.asarray(tasks.support.x)
    assert x.min() >= -2 and x.max() <= 2


def test_kernels_by_hand():
    x = jnp.array([[0.0], [0.3]])
    d, length, scale, period = 0.3, 0.6, 1.5, 0.5
    eq = kernel_matrix("eq", x, length, scale, period)[0, 1]
    assert float(eq) == pytest.approx(scale**2 * math.exp(-(d**2) / (2 * length**2)), rel=1e-5)
    r = math.sqrt(5) * d / length
    matern = kernel_matrix("matern", x, length, scale, period)[0, 1]
    assert float(matern) == pytest.approx(scale**2 * (1 + r + r**2 / 3) * math.exp(-r), rel=1e-5)
    periodic = kernel_matrix("periodic", x, length, scale, period)[0, 1]
    expected = scale**2 * math.exp(-2 * math.sin(math.pi * d / period) ** 2 / length**2)
    assert float(periodic) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("kernel", ["eq", "matern", "periodic"])
@pytest.mark.parametrize("random_hyperparameters", [False, True])
def test_whitened_values_are_standard_normal(kernel, random_hyperparameters):
    dist = GaussianProcess(kernel=kernel, random_hyperparameters=random_hyperparameters,
                           num_points=10, min_context=3, max_context=7)  # fmt: skip
    tasks = sample_tasks(dist, jax.random.key(1), 3000)

    def whiten(x, y, length, scale, period):
        noise_var = dist.observation_noise**2
        cov = kernel_matrix(kernel, x, length, scale, period) + noise_var * jnp.eye(10)
        return jax.scipy.linalg.solve_triangular(jnp.linalg.cholesky(cov), y[:, 0], lower=True)

    info = tasks.info
    z = np.asarray(jax.vmap(whiten)(tasks.support.x, tasks.support.y, info["length_scale"],
                                    info["scale"], info["period"])).ravel()  # fmt: skip
    assert abs(z.mean()) < 0.03 and abs(z.std() - 1) < 0.03
    if random_hyperparameters:
        lengths = np.asarray(info["length_scale"])
        assert lengths.min() >= 0.1 and lengths.max() <= 0.6 and lengths.std() > 0.1


def test_noise_free_functions_at_many_close_points_are_finite():
    # The Neural-Process-Family benchmarks' data: EQ length 0.2, 128 points, no noise. A bare
    # float32 Cholesky of that kernel fails, so the sampler uses MIN_NOISE on the diagonal.
    dist = GaussianProcess(length_scale=0.2, noise=0.0, num_points=128, min_context=1,
                           max_context=51)  # fmt: skip
    assert dist.observation_noise == MIN_NOISE
    assert GaussianProcess(noise=0.02).observation_noise == 0.02
    y = np.asarray(sample_tasks(dist, jax.random.key(2), 500).support.y)
    assert np.isfinite(y).all()
    assert abs(y.std() - 1) < 0.05


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="kernel must be one of"):
        GaussianProcess(kernel="rbf2")
    with pytest.raises(ValueError, match="min_context < max_context <= num_points"):
        GaussianProcess(num_points=10, max_context=20)


@pytest.mark.parametrize("jit", [False, True])
def test_cholesky_batches_give_the_lapack_factors(jit):
    # The batching rule factors one matrix per call on CPU; the factors must be LAPACK's.
    a = jax.random.normal(jax.random.key(0), (3, 2, 6, 6))
    spd = a @ jnp.swapaxes(a, -1, -2) + 6 * jnp.eye(6)
    once = jax.vmap(cholesky)
    twice = jax.vmap(jax.vmap(cholesky))
    if jit:
        once, twice = jax.jit(once), jax.jit(twice)
    expected = jnp.linalg.cholesky(spd)
    np.testing.assert_array_equal(twice(spd), expected)
    np.testing.assert_array_equal(once(spd[0]), expected[0])
    # Batched on the second axis; an unbatched matrix inside a vmap; no vmap at all.
    np.testing.assert_array_equal(jax.vmap(cholesky, in_axes=1, out_axes=1)(spd), expected)
    inside = jax.vmap(lambda s: cholesky(spd[0, 0]) * s)(jnp.arange(1.0, 3.0))
    np.testing.assert_array_equal(inside, expected[0, 0] * jnp.arange(1.0, 3.0)[:, None, None])
    np.testing.assert_array_equal(cholesky(spd[0, 0]), expected[0, 0])
