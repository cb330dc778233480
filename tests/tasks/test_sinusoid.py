"""The sinusoid task distribution of the MAML paper."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metajax import Sinusoid, sample_tasks


def test_shapes_and_ranges_over_many_tasks():
    dist = Sinusoid(k_shot=10, k_query=7)
    tasks = jax.jit(lambda k: sample_tasks(dist, k, 2000))(jax.random.key(0))
    chex.assert_shape([tasks.support.x, tasks.support.y], (2000, 10, 1))
    chex.assert_shape([tasks.query.x, tasks.query.y], (2000, 7, 1))
    amp, phase = np.asarray(tasks.info["amplitude"]), np.asarray(tasks.info["phase"])
    assert 0.1 <= amp.min() < 0.2 and 4.9 < amp.max() <= 5.0
    assert 0.0 <= phase.min() < 0.05 and 3.09 < phase.max() <= np.pi
    x = np.asarray(tasks.support.x)
    assert -5 <= x.min() < -4.95 and 4.95 < x.max() <= 5
    expected = amp[:, None, None] * np.sin(np.asarray(tasks.query.x) - phase[:, None, None])
    np.testing.assert_allclose(tasks.query.y, expected, rtol=1e-5, atol=1e-5)


def test_sampling_is_a_pure_function_of_the_key():
    dist = Sinusoid()
    a, b, c = (dist.sample(jax.random.key(k)) for k in (1, 1, 2))
    chex.assert_trees_all_equal(a, b)
    assert not jnp.allclose(a.support.x, c.support.x)


def test_support_and_query_points_differ():
    task = Sinusoid(k_shot=5, k_query=5).sample(jax.random.key(0))
    assert not jnp.allclose(task.support.x, task.query.x)


def test_bad_sizes_are_errors():
    with pytest.raises(ValueError, match="k_shot >= 1"):
        Sinusoid(k_shot=0)
