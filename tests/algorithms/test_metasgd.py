"""Meta-SGD: the meta-gradient for the learned rates and the initialization against finite
differences in float64, a closed form for one step, and MAML as the constant-rate case."""

import chex
import jax
import jax.flatten_util
import jax.numpy as jnp
import optax
import pytest

from metajax import MAML, MetaSGD, Sinusoid, from_function, losses
from metajax.core.inner import InnerLoop
from metajax.core.types import Task


def _init(key):
    k1, k2 = jax.random.split(key)
    return {"w1": jax.random.normal(k1, (1, 6)), "b1": 0.1 * jnp.ones(6),
            "w2": jax.random.normal(k2, (6, 1)) / 3, "b2": jnp.zeros(1)}  # fmt: skip


def _apply(p, x):
    return jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]


MODEL = from_function(_apply, _init)


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def _task(dtype=jnp.float32):
    task = Sinusoid(k_shot=5, k_query=5).sample(jax.random.key(3))
    return jax.tree.map(lambda a: a.astype(dtype), task)


def _perturbed_rates(params, key):
    """Rates that differ per coordinate, so a wrong broadcast cannot pass."""
    leaves, tree = jax.tree.flatten(params["lr"])
    keys = jax.random.split(key, len(leaves))
    lr = [
        a * (0.5 + jax.random.uniform(k, a.shape, a.dtype))
        for a, k in zip(leaves, keys, strict=True)
    ]
    return {"init": params["init"], "lr": jax.tree.unflatten(tree, lr)}


def test_meta_gradient_for_rates_and_init_matches_finite_differences(x64):
    msgd = MetaSGD(MODEL, losses.mse, InnerLoop(None, steps=2), alpha_init=0.05)
    params = jax.tree.map(lambda a: a.astype(jnp.float64), msgd.init(jax.random.key(0)))
    params = _perturbed_rates(params, jax.random.key(1))
    task, key = _task(jnp.float64), jax.random.key(0)
    grads, _ = msgd.meta_grad(params, task, key)

    flat, unravel = jax.flatten_util.ravel_pytree(params)
    eps = 1e-6
    loss = lambda v: msgd.meta_loss(unravel(v), task, key)[0]  # noqa: E731
    numeric = jax.jit(jax.vmap(lambda e: (loss(flat + e) - loss(flat - e)) / (2 * eps)))(
        eps * jnp.eye(flat.size)
    )
    analytic = jax.flatten_util.ravel_pytree(grads)[0]
    for part in ("lr", "init"):  # each block on its own, so neither hides in the other
        mask = jax.flatten_util.ravel_pytree(
            {
                k: jax.tree.map(lambda a, on=(k == part): jnp.full_like(a, on), v)
                for k, v in params.items()
            }  # fmt: skip
        )[0].astype(bool)
        rel = jnp.linalg.norm(analytic[mask] - numeric[mask]) / jnp.linalg.norm(numeric[mask])
        print(f"Meta-SGD d/d{part} vs central differences: relative error {rel:.2e}")
        assert rel < 1e-6, (part, rel)


def test_one_step_rate_gradient_has_the_closed_form():
    """phi = theta - a o g(theta)  =>  dL_Q/da = -g(theta) o grad L_Q(phi)."""
    msgd = MetaSGD(MODEL, losses.mse, InnerLoop(None, steps=1), alpha_init=0.03)
    params = _perturbed_rates(msgd.init(jax.random.key(0)), jax.random.key(1))
    task = _task()
    grads, _ = msgd.meta_grad(params, task, jax.random.key(0))
    g_support = jax.grad(msgd.split_loss)(params["init"], task.support)
    phi = jax.tree.map(lambda t, a, g: t - a * g, params["init"], params["lr"], g_support)
    g_query = jax.grad(msgd.split_loss)(phi, task.query)
    expected = jax.tree.map(lambda gs, gq: -gs * gq, g_support, g_query)
    chex.assert_trees_all_close(grads["lr"], expected, rtol=1e-4, atol=1e-7)


def test_constant_rates_give_mamls_initialization_gradient():
    msgd = MetaSGD(MODEL, losses.mse, InnerLoop(None, steps=2), alpha_init=0.02)
    maml = MAML(MODEL, losses.mse, InnerLoop(optax.sgd(0.02), steps=2))
    params = msgd.init(jax.random.key(0))
    task = _task()
    g_msgd, m_msgd = msgd.meta_grad(params, task, jax.random.key(0))
    g_maml, m_maml = maml.meta_grad(params["init"], task, jax.random.key(0))
    chex.assert_trees_all_close(g_msgd["init"], g_maml, rtol=1e-5, atol=1e-7)
    chex.assert_trees_all_close(m_msgd, m_maml, rtol=1e-6)


def test_batch_meta_grad_and_adapt_shapes():
    msgd = MetaSGD(MODEL, losses.mse, InnerLoop(None, steps=1))
    params = msgd.init(jax.random.key(0))
    tasks = jax.vmap(Sinusoid().sample)(jax.random.split(jax.random.key(1), 4))
    grads, metrics = jax.jit(msgd.batch_meta_grad)(
        params, tasks, jax.random.split(jax.random.key(2), 4)
    )
    chex.assert_trees_all_equal_shapes(grads, params)
    assert metrics["meta_loss"].shape == ()
    first = Task(jax.tree.map(lambda a: a[0], tasks.support), None, {})
    adapted = msgd.run_inner(params, first.support, steps=3).params
    chex.assert_trees_all_equal_shapes(adapted, params["init"])


def test_zero_inner_steps_is_a_clear_error():
    with pytest.raises(ValueError, match="MetaSGD needs inner steps >= 1"):
        MetaSGD(MODEL, losses.mse, InnerLoop(None, steps=0))
