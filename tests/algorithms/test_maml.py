"""MAML's meta-gradient against finite differences (float64), for NNX, Linen and function models."""

import flax.linen as nn
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metajax import MAML, Sinusoid, from_function, from_linen, from_nnx, losses
from metajax.core.inner import InnerLoop
from metajax.core.types import Split, Task
from metajax.models import MLP


class LinenMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = jnp.tanh(nn.Dense(8)(x))
        return nn.Dense(1)(x)


def _plain_init(key):
    k1, k2 = jax.random.split(key)
    return {
        "w1": jax.random.normal(k1, (1, 8)),
        "b1": jnp.zeros(8),
        "w2": jax.random.normal(k2, (8, 1)) / 3,
        "b2": jnp.zeros(1),
    }


def _plain_apply(p, x):
    return jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]


MODELS = {
    # tanh/smooth where possible: finite differences need a smooth loss.
    "nnx": lambda: from_nnx(lambda r: MLP(1, 1, (8,), rngs=r)),
    "linen": lambda: from_linen(LinenMLP(), jnp.ones((1, 1))),
    "function": lambda: from_function(_plain_apply, _plain_init),
}


def _flat(tree):
    return jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(tree)])


def _central_fd(f, params, eps=1e-6):
    """Central differences of scalar ``f`` in every coordinate of ``params`` (vmapped, jitted)."""
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    basis = eps * jnp.eye(flat.size, dtype=flat.dtype)
    one = lambda e: (f(unravel(flat + e)) - f(unravel(flat - e))) / (2 * eps)  # noqa: E731
    return jax.jit(jax.vmap(one))(basis)


def _task64():
    task = Sinusoid(k_shot=5, k_query=5).sample(jax.random.key(3))
    return jax.tree.map(lambda a: a.astype(jnp.float64), task)


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_second_order_meta_gradient_matches_finite_differences(x64, kind):
    model = MODELS[kind]()
    maml = MAML(model, losses.mse, InnerLoop(optax.sgd(0.1), steps=2))
    params = jax.tree.map(lambda a: a.astype(jnp.float64), maml.init(jax.random.key(0)))
    task = _task64()
    key = jax.random.key(0)
    loss = lambda p: maml.meta_loss(p, task, key)[0]  # noqa: E731
    grads, _ = maml.meta_grad(params, task, key)
    analytic = _flat(grads)
    numeric = _central_fd(loss, params)
    rel = jnp.linalg.norm(analytic - numeric) / jnp.linalg.norm(numeric)
    print(f"MAML meta-gradient vs central differences, {kind}: relative error {rel:.2e}")
    assert analytic.dtype == jnp.float64
    assert rel < 1e-6, f"{kind}: relative error {rel:.2e}"


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_first_order_equals_gradient_with_inner_update_held_constant(x64, kind):
    model = MODELS[kind]()
    second = MAML(model, losses.mse, InnerLoop(optax.sgd(0.1), steps=2))
    first = MAML(model, losses.mse, InnerLoop(optax.sgd(0.1), steps=2, first_order=True))
    params = jax.tree.map(lambda a: a.astype(jnp.float64), second.init(jax.random.key(0)))
    task = _task64()
    key = jax.random.key(0)

    def held_constant(p):
        # phi = p + sum of inner updates, the updates computed at p and frozen.
        phi = second.run_inner(jax.lax.stop_gradient(p), task.support).params
        delta = jax.tree.map(lambda a, b: a - b, phi, jax.lax.stop_gradient(p))
        return second.split_loss(jax.tree.map(jnp.add, p, delta), task.query)

    fo, _ = first.meta_grad(params, task, key)
    so, _ = second.meta_grad(params, task, key)
    expected = jax.grad(held_constant)(params)
    np.testing.assert_allclose(_flat(fo), _flat(expected), rtol=1e-10, atol=1e-12)
    gap = jnp.linalg.norm(_flat(fo) - _flat(so)) / jnp.linalg.norm(_flat(so))
    assert gap > 1e-3, f"{kind}: first- and second-order gradients should differ, gap {gap:.1e}"


def test_meta_loss_is_query_loss_after_inner_sgd_step():
    model = MODELS["function"]()
    maml = MAML(model, losses.mse, InnerLoop(optax.sgd(0.05), steps=1))
    params = maml.init(jax.random.key(1))
    task = Sinusoid(k_shot=4, k_query=6).sample(jax.random.key(2))
    g = jax.grad(maml.split_loss)(params, task.support)
    phi = jax.tree.map(lambda p, d: p - 0.05 * d, params, g)
    expected = maml.split_loss(phi, task.query)
    got, metrics = maml.meta_loss(params, task, jax.random.key(0))
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    np.testing.assert_allclose(
        metrics["support_loss"], maml.split_loss(params, task.support), rtol=1e-6
    )


def test_meta_gradient_is_vmappable_over_a_meta_batch():
    model = MODELS["nnx"]()
    maml = MAML(model, losses.mse, InnerLoop(optax.sgd(0.01)))
    params = maml.init(jax.random.key(0))
    tasks = jax.vmap(Sinusoid().sample)(jax.random.split(jax.random.key(1), 4))
    keys = jax.random.split(jax.random.key(2), 4)
    batched, metrics = jax.vmap(maml.meta_grad, in_axes=(None, 0, 0))(params, tasks, keys)
    for i in range(4):
        task_i = jax.tree.map(lambda a, i=i: a[i], tasks)
        single, _ = jax.jit(maml.meta_grad)(params, task_i, keys[i])
        np.testing.assert_allclose(
            _flat(jax.tree.map(lambda a, i=i: a[i], batched)), _flat(single), rtol=1e-5, atol=1e-6
        )
    assert metrics["meta_loss"].shape == (4,)
    assert isinstance(tasks, Task) and isinstance(tasks.support, Split)


def test_batch_meta_grad_is_the_mean_of_per_task_meta_grads():
    from metajax.core.learner import vmap_mean

    maml = MAML(MODELS["nnx"](), losses.mse, InnerLoop(optax.sgd(0.05), steps=2))
    params = maml.init(jax.random.key(0))
    tasks = jax.vmap(Sinusoid().sample)(jax.random.split(jax.random.key(1), 6))
    keys = jax.random.split(jax.random.key(2), 6)
    fused, m1 = jax.jit(maml.batch_meta_grad)(params, tasks, keys)
    looped, m2 = jax.jit(lambda p, t, k: vmap_mean(maml.meta_grad, p, t, k))(params, tasks, keys)
    np.testing.assert_allclose(_flat(fused), _flat(looped), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m1["meta_loss"], m2["meta_loss"], rtol=1e-6)


@pytest.mark.parametrize("chunk", [1, 2, 4])
def test_task_chunks_give_the_batch_meta_gradient(chunk):
    maml = MAML(MODELS["nnx"](), losses.mse, InnerLoop(optax.sgd(0.1), steps=2))
    chunked = MAML(
        MODELS["nnx"](), losses.mse, InnerLoop(optax.sgd(0.1), steps=2), task_chunk=chunk
    )
    params = maml.init(jax.random.key(0))
    keys = jax.random.split(jax.random.key(1), 4)
    tasks = jax.vmap(Sinusoid().sample)(keys)
    expected = jax.jit(maml.batch_meta_grad)(params, tasks, keys)
    got = jax.jit(chunked.batch_meta_grad)(params, tasks, keys)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got, expected)


def test_task_chunk_must_divide_the_meta_batch():
    maml = MAML(MODELS["nnx"](), losses.mse, InnerLoop(optax.sgd(0.1)), task_chunk=3)
    params = maml.init(jax.random.key(0))
    keys = jax.random.split(jax.random.key(1), 4)
    tasks = jax.vmap(Sinusoid().sample)(keys)
    with pytest.raises(
        ValueError, match="task_chunk=3 must be a positive divisor of the meta-batch of 4"
    ):
        maml.batch_meta_grad(params, tasks, keys)
