"""Reptile: one meta-step against its formula by hand, and the k = 1 identity with
first-order MAML from the paper."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metajax import Reptile, Sinusoid, fomaml, from_function, losses
from metajax.core.inner import InnerLoop
from metajax.core.types import Split, Task


def _line(p, x):
    return x * p["w"] + p["b"]


LINE = from_function(_line, lambda key: {"w": jnp.array(0.5), "b": jnp.array(-0.25)})


def _tasks():
    x = jnp.array([[1.0, 2.0, -1.0], [0.5, -2.0, 3.0]])
    y = jnp.array([[2.0, 3.0, 0.0], [-1.0, 1.0, 2.0]])
    return Task(Split(x, y), Split(x + 1.0, y), {})


def test_one_meta_step_equals_the_formula_by_hand():
    lr, eps, steps = 0.1, 0.5, 2
    reptile = Reptile(LINE, losses.mse, InnerLoop(optax.sgd(lr), steps=steps))
    theta = reptile.init(jax.random.key(0))
    tasks = _tasks()
    grads, _ = reptile.batch_meta_grad(theta, tasks, jax.random.split(jax.random.key(0), 2))
    outer = optax.sgd(eps)
    new = optax.apply_updates(theta, outer.update(grads, outer.init(theta))[0])

    # By hand: k steps of SGD on each task's support MSE, then theta + eps * mean(W - theta).
    finals = []
    for x, y in zip(np.asarray(tasks.support.x), np.asarray(tasks.support.y), strict=True):
        w, b = 0.5, -0.25
        for _ in range(steps):
            r = w * x + b - y
            w, b = w - lr * np.mean(2 * r * x), b - lr * np.mean(2 * r)
        finals.append((w, b))
    mean_w, mean_b = np.mean(finals, axis=0)
    np.testing.assert_allclose(new["w"], 0.5 + eps * (mean_w - 0.5), rtol=1e-6)
    np.testing.assert_allclose(new["b"], -0.25 + eps * (mean_b + 0.25), rtol=1e-6)


def test_one_sgd_step_is_alpha_times_the_first_order_maml_direction():
    """Section 5: for k = 1, g_Reptile = g_1, the gradient first-order MAML takes at theta
    when it does not adapt; Reptile's W - theta is that gradient times -alpha."""
    alpha = 0.05
    task = Sinusoid(k_shot=10, k_query=10).sample(jax.random.key(1))
    task = Task(task.support, task.support, {})  # one minibatch: the paper's k = 1 case
    reptile = Reptile(LINE, losses.mse, InnerLoop(optax.sgd(alpha), steps=1))
    fo = fomaml(LINE, losses.mse, InnerLoop(optax.sgd(alpha), steps=0))
    theta = reptile.init(jax.random.key(0))
    g_reptile, _ = reptile.meta_grad(theta, task, jax.random.key(2))
    g_fomaml, _ = fo.meta_grad(theta, task, jax.random.key(2))
    chex.assert_trees_all_close(g_reptile, jax.tree.map(lambda g: alpha * g, g_fomaml), rtol=1e-5)


def test_inner_adam_and_chunks_give_the_same_batch_update():
    reptile = Reptile(LINE, losses.mse, InnerLoop(optax.adam(0.1), steps=3))
    chunked = Reptile(LINE, losses.mse, InnerLoop(optax.adam(0.1), steps=3), task_chunk=1)
    theta = reptile.init(jax.random.key(0))
    keys = jax.random.split(jax.random.key(0), 2)
    chex.assert_trees_all_close(
        reptile.batch_meta_grad(theta, _tasks(), keys),
        chunked.batch_meta_grad(theta, _tasks(), keys),
        rtol=1e-6,
    )


def test_zero_inner_steps_is_a_clear_error():
    with pytest.raises(ValueError, match="Reptile needs inner steps >= 1"):
        Reptile(LINE, losses.mse, InnerLoop(optax.sgd(0.1), steps=0))


def _norm_init(key):
    k1, k2 = jax.random.split(key)
    return {"w1": jax.random.normal(k1, (1, 8)), "w2": jax.random.normal(k2, (8, 1)) / 3}


def _norm_apply(p, x):
    h = x @ p["w1"]
    h = (h - h.mean(0)) * jax.lax.rsqrt(h.var(0) + 1e-5)  # the batch's own statistics
    return jnp.tanh(h) @ p["w2"]


NORM_MODEL = from_function(_norm_apply, _norm_init)


def test_non_transductive_prediction_sees_the_support_and_one_query_at_a_time():
    task = Sinusoid(k_shot=5, k_query=7).sample(jax.random.key(4))
    inner = InnerLoop(optax.sgd(0.05), steps=2)
    transductive = Reptile(NORM_MODEL, losses.mse, inner)
    inductive = Reptile(NORM_MODEL, losses.mse, inner, transductive=False)
    theta = transductive.init(jax.random.key(0))
    phi = transductive.adapt(theta, task.support)
    adapted = inductive.adapt(theta, task.support)
    chex.assert_trees_all_close(adapted.params, phi.params)  # the same inner loop
    by_hand = jnp.stack([
        NORM_MODEL.apply(phi.params, jnp.concatenate([task.support.x, q[None]]))[-1]
        for q in task.query.x
    ])  # fmt: skip
    np.testing.assert_allclose(inductive.predict(adapted, task.query.x), by_hand, rtol=1e-5)
    # With batch statistics the two settings differ; queries change each other's outputs
    # only in the transductive one.
    together = transductive.predict(phi, task.query.x)
    assert not np.allclose(together, by_hand, rtol=1e-3)
    first_alone = inductive.predict(adapted, task.query.x[:1])
    np.testing.assert_allclose(first_alone[0], by_hand[0], rtol=1e-5)
    # The meta-update does not depend on the evaluation setting.
    grads_t, _ = transductive.meta_grad(theta, task, jax.random.key(1))
    grads_i, _ = inductive.meta_grad(theta, task, jax.random.key(1))
    chex.assert_trees_all_close(grads_t, grads_i)


def test_non_transductive_evaluation_runs_through_evaluate():
    from metajax.training.evaluate import evaluate

    inductive = Reptile(NORM_MODEL, losses.mse, InnerLoop(optax.sgd(0.05)), transductive=False,
                        metric=losses.MSE, eval_steps=(0, 2))  # fmt: skip
    sinusoid = Sinusoid(k_shot=5, k_query=6)
    out = evaluate(inductive, sinusoid, inductive.init(jax.random.key(0)), num_tasks=8, chunk=4)
    assert sorted(out) == ["mse_after_0", "mse_after_2"]
    assert all(np.isfinite(v["mean"]) for v in out.values())
