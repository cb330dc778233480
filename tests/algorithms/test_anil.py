"""ANIL: with the body frozen in the inner loop, MAML computes the same meta-gradient (head
and body) as ANIL's head-only inner loop over features computed once."""

import chex
import jax
import jax.numpy as jnp
import optax
import pytest

from metajax import ANIL, MAML, Sinusoid, from_function, losses
from metajax.core.inner import InnerLoop
from metajax.core.types import Task

BODY = from_function(
    lambda p, x: jnp.tanh(x @ p["w"] + p["b"]),
    lambda key: {"w": jax.random.normal(key, (1, 8)), "b": 0.1 * jnp.ones(8)},
)
HEAD = from_function(
    lambda p, z: z @ p["w"] + p["b"],
    lambda key: {"w": jax.random.normal(key, (8, 1)) / 3, "b": jnp.zeros(1)},
)
WHOLE = from_function(
    lambda p, x: HEAD.apply(p["head"], BODY.apply(p["body"], x)),
    lambda key: {"body": BODY.init(key), "head": HEAD.init(key)},
)


def _head_only_sgd(lr):
    labels = {"body": {"w": "frozen", "b": "frozen"}, "head": {"w": "adapted", "b": "adapted"}}
    return optax.multi_transform({"adapted": optax.sgd(lr), "frozen": optax.set_to_zero()}, labels)


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("steps", [1, 3])
def test_anil_equals_maml_with_a_frozen_body(first_order, steps):
    anil = ANIL(
        BODY, HEAD, losses.mse, InnerLoop(optax.sgd(0.1), steps=steps, first_order=first_order)
    )
    maml = MAML(
        WHOLE, losses.mse, InnerLoop(_head_only_sgd(0.1), steps=steps, first_order=first_order)
    )
    params = anil.init(jax.random.key(0))
    task = Sinusoid(k_shot=5, k_query=5).sample(jax.random.key(1))
    g_anil, m_anil = anil.meta_grad(params, task, jax.random.key(2))
    g_maml, m_maml = maml.meta_grad(params, task, jax.random.key(2))
    chex.assert_trees_all_close(g_anil, g_maml, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(m_anil, m_maml, rtol=1e-6)
    # The body does learn: its meta-gradient flows through the features.
    assert float(optax.tree.norm(g_anil["body"])) > 1e-3


def test_adapt_changes_the_head_only_and_predict_uses_both():
    anil = ANIL(BODY, HEAD, losses.mse, InnerLoop(optax.sgd(0.1), steps=2))
    params = anil.init(jax.random.key(0))
    task = Sinusoid().sample(jax.random.key(1))
    out = anil.run_inner(params, task.support, steps=4, track=lambda p: anil.apply(p, task.query.x))
    chex.assert_trees_all_equal(out.params["body"], params["body"])
    assert (
        float(optax.tree.norm(jax.tree.map(jnp.subtract, out.params["head"], params["head"]))) > 0
    )
    assert out.tracked.shape == (5, *task.query.y.shape)
    chex.assert_trees_all_close(out.tracked[-1], anil.apply(out.params, task.query.x))
    batch = jax.vmap(Sinusoid().sample)(jax.random.split(jax.random.key(3), 4))
    grads, metrics = jax.jit(anil.batch_meta_grad)(
        params, batch, jax.random.split(jax.random.key(4), 4)
    )
    chex.assert_trees_all_equal_shapes(grads, params)
    assert isinstance(batch, Task) and metrics["meta_loss"].shape == ()
