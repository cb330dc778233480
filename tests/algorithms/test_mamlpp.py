"""MAML++: each switch against the quantity it must equal (MAML with the switches off, the
multi-step loss by hand, first/second order by step), and the full meta-gradient (all
switches on) against float64 finite differences."""

import chex
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metajax import MAML, MAMLPlusPlus, Sinusoid, from_function, losses
from metajax.algorithms import multi_step_weights
from metajax.core.inner import InnerLoop
from metajax.core.types import Split


def _init(key):
    k1, k2 = jax.random.split(key)
    return {"dense": {"w": jax.random.normal(k1, (1, 6)), "b": 0.1 * jnp.ones(6)},
            "norm": {"scale": jnp.ones(6), "bias": jnp.zeros(6)},
            "out": {"w": jax.random.normal(k2, (6, 1)) / 3, "b": jnp.zeros(1)}}  # fmt: skip


def _apply(p, x):
    h = x @ p["dense"]["w"] + p["dense"]["b"]
    h = (h - h.mean(0)) * jax.lax.rsqrt(h.var(0) + 1e-5)  # batch statistics, per step
    h = jnp.tanh(h * p["norm"]["scale"] + p["norm"]["bias"])
    return h @ p["out"]["w"] + p["out"]["b"]


MODEL = from_function(_apply, _init)
ALL_OFF = dict(multi_step_loss=False, per_step_bn=False, lslr=False, first_order_steps=0)


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def _tasks(n=3, dtype=jnp.float32):
    tasks = jax.vmap(Sinusoid(k_shot=5, k_query=6).sample)(jax.random.split(jax.random.key(3), n))
    return jax.tree.map(lambda a: a.astype(dtype), tasks)


def _keys(n=3):
    return jax.random.split(jax.random.key(9), n)


def _spread(params, key, scale=0.3):
    """Per-step copies and rates made to differ, so that a wrong index cannot pass."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(
        tree,
        [
            a + scale * jax.random.uniform(k, a.shape, a.dtype)
            for a, k in zip(leaves, keys, strict=True)
        ],
    )


@pytest.mark.parametrize("first_order", [False, True])
def test_all_switches_off_is_maml(first_order):
    maml = MAML(MODEL, losses.mse, InnerLoop(optax.sgd(0.1), steps=3, first_order=first_order))
    mamlpp = MAMLPlusPlus(MODEL, losses.mse, InnerLoop(optax.sgd(0.1), steps=3,
                          first_order=first_order), **ALL_OFF)  # fmt: skip
    theta = maml.init(jax.random.key(0))
    expected, _ = maml.batch_meta_grad(theta, _tasks(), _keys())
    grads, _ = mamlpp.batch_meta_grad({"init": theta}, _tasks(), _keys(), step=5)
    chex.assert_trees_all_close(grads["init"], expected, rtol=1e-5, atol=1e-6)


def test_multi_step_weights_sum_to_one_and_move_to_the_last_step():
    for step in [0, 10, 37, 99]:
        w = multi_step_weights(step, 5, 100)
        np.testing.assert_allclose(float(w.sum()), 1.0, rtol=1e-6)
    early = [float(multi_step_weights(s, 5, 100)[0]) for s in (0, 50, 99, 100)]
    last = [float(multi_step_weights(s, 5, 100)[-1]) for s in (0, 50, 99, 100)]
    assert early[0] > early[1] > early[2] > early[3] == 0.0
    assert early[2] == pytest.approx(0.03 / 5)  # the floor the paper keeps until the switch
    assert last[0] < last[1] < last[2] < last[3] == 1.0


def test_multi_step_loss_is_the_weighted_query_losses_of_maml_at_each_step():
    steps, anneal, step = 3, 40, 10
    mamlpp = MAMLPlusPlus(MODEL, losses.mse, InnerLoop(optax.sgd(0.1), steps=steps), msl_anneal_steps=anneal, per_step_bn=False, lslr=False)  # fmt: skip
    theta = MODEL.init(jax.random.key(0))
    task = jax.tree.map(lambda a: a[0], _tasks())
    weights = multi_step_weights(step, steps, anneal)
    loss, metrics = mamlpp.step_meta_loss({"init": theta}, task, None, weights=weights,
                                          first_order=False)  # fmt: skip
    by_hand = 0.0
    for i in range(1, steps + 1):
        phi = MAML(MODEL, losses.mse, InnerLoop(optax.sgd(0.1), steps=i)).run_inner(
            theta, task.support
        )
        by_hand += weights[i - 1] * losses.mse(MODEL.apply(phi.params, task.query.x), task.query.y)
    np.testing.assert_allclose(loss, by_hand, rtol=1e-5)
    assert float(metrics["final_query_loss"]) != pytest.approx(float(loss))


def test_lslr_with_equal_rates_is_sgd_and_uses_each_steps_rate():
    mamlpp = MAMLPlusPlus(
        MODEL, losses.mse, InnerLoop(None, steps=3), lslr_init=0.1, per_step_bn=False
    )
    params = mamlpp.init(jax.random.key(0))
    support = jax.tree.map(lambda a: a[0], _tasks()).support
    maml = MAML(MODEL, losses.mse, InnerLoop(optax.sgd(0.1), steps=3))
    chex.assert_trees_all_close(
        mamlpp.run_inner(params, support).params, maml.run_inner(params["init"], support).params,
        rtol=1e-6, atol=1e-6,
    )  # fmt: skip
    # Rate 0 at step 1 (index 1) only: steps 0 and 2 move, step 1 does not.
    lr = jax.tree.map(lambda r: r.at[1].set(0.0), params["lr"])
    frozen_step = mamlpp.run_inner({**params, "lr": lr}, support)
    losses_ = frozen_step.support_losses
    assert float(losses_[1]) == pytest.approx(float(losses_[2]), rel=1e-6)
    assert float(losses_[0]) != pytest.approx(float(losses_[1]), rel=1e-3)


def test_per_step_norm_copy_t_acts_from_step_t():
    mamlpp = MAMLPlusPlus(MODEL, losses.mse, InnerLoop(None, steps=3), lslr_init=0.1)
    params = mamlpp.init(jax.random.key(0))
    assert sorted(params) == ["init", "lr", "norm"] and "norm" not in params["init"]
    chex.assert_shape(params["norm"]["norm"]["scale"], (3, 6))
    support = jax.tree.map(lambda a: a[0], _tasks()).support
    base = mamlpp.run_inner(params, support)
    changed = jax.tree.map(lambda a: a.at[1].multiply(2.0), params["norm"])
    moved = mamlpp.run_inner({**params, "norm": changed}, support)
    np.testing.assert_allclose(base.support_losses[:1], moved.support_losses[:1], rtol=1e-7)
    assert not np.allclose(base.support_losses[1:], moved.support_losses[1:], rtol=1e-3)
    # Adapted parameters carry the last step's copy, so predict is the plain model.
    last_copy = jax.tree.map(lambda a: a[-1], params["norm"]["norm"])
    chex.assert_trees_all_close(base.params["norm"], last_copy)
    assert MODEL.apply(base.params, support.x).shape == (5, 1)


def test_per_step_bn_without_norm_parameters_is_a_clear_error():
    model = from_function(lambda p, x: x * p["w"], lambda k: {"w": jnp.ones(1)})
    with pytest.raises(ValueError, match="per_step_bn"):
        MAMLPlusPlus(model, losses.mse, InnerLoop(None, steps=2)).init(jax.random.key(0))
    with pytest.raises(ValueError, match="needs an inner optimizer"):
        MAMLPlusPlus(model, losses.mse, InnerLoop(None, steps=2), lslr=False)
    with pytest.raises(ValueError, match="meta-learns its inner update"):
        MAMLPlusPlus(model, losses.mse, InnerLoop(optax.sgd(0.1), steps=2), lslr=True)


def test_derivative_order_annealing_switches_at_the_step_under_one_compilation():
    mamlpp = MAMLPlusPlus(MODEL, losses.mse, InnerLoop(optax.sgd(0.1), steps=2), first_order_steps=4, multi_step_loss=False, per_step_bn=False, lslr=False)  # fmt: skip
    theta = MODEL.init(jax.random.key(0))
    traces = []

    @jax.jit
    def grad_at(step):
        traces.append(step)
        return mamlpp.batch_meta_grad({"init": theta}, _tasks(), _keys(), step)[0]["init"]

    first = MAML(MODEL, losses.mse, InnerLoop(optax.sgd(0.1), steps=2, first_order=True))
    second = MAML(MODEL, losses.mse, InnerLoop(optax.sgd(0.1), steps=2))
    fo, _ = first.batch_meta_grad(theta, _tasks(), _keys())
    so, _ = second.batch_meta_grad(theta, _tasks(), _keys())
    chex.assert_trees_all_close(grad_at(3), fo, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(grad_at(4), so, rtol=1e-5, atol=1e-6)
    assert len(traces) == 1
    assert not np.allclose(*(jax.flatten_util.ravel_pytree(g)[0] for g in (fo, so)), rtol=1e-3)


def test_full_mamlpp_meta_gradient_matches_finite_differences(x64):
    """Multi-step loss mid-annealing, per-step norm copies and per-step rates, second order."""
    mamlpp = MAMLPlusPlus(
        MODEL, losses.mse, InnerLoop(None, steps=3), msl_anneal_steps=10, lslr_init=0.1
    )
    params = jax.tree.map(lambda a: a.astype(jnp.float64), mamlpp.init(jax.random.key(0)))
    params = {**params, "norm": _spread(params["norm"], jax.random.key(1)),
              "lr": _spread(params["lr"], jax.random.key(2), 0.05)}  # fmt: skip
    tasks, keys, step = _tasks(2, jnp.float64), _keys(2), 4
    grads, _ = jax.jit(mamlpp.batch_meta_grad)(params, tasks, keys, step)

    flat, unravel = jax.flatten_util.ravel_pytree(params)
    weights = multi_step_weights(step, 3, 10)

    def loss(v):
        per_task = jax.vmap(
            lambda t: mamlpp.step_meta_loss(
                unravel(v), t, None, weights=weights, first_order=False
            )[0]  # fmt: skip
        )(tasks)
        return per_task.mean()

    eps = 1e-6
    numeric = jax.jit(jax.vmap(lambda e: (loss(flat + e) - loss(flat - e)) / (2 * eps)))(
        eps * jnp.eye(flat.size)
    )
    numeric = unravel(numeric)
    for part in ("init", "norm", "lr"):
        a = jax.flatten_util.ravel_pytree(grads[part])[0]
        n = jax.flatten_util.ravel_pytree(numeric[part])[0]
        rel = float(jnp.linalg.norm(a - n) / jnp.linalg.norm(n))
        print(f"MAML++ d/d{part} vs central differences: relative error {rel:.2e}")
        assert rel < 1e-6, (part, rel)


def test_trainer_passes_the_step(monkeypatch):
    """The trainer hands its step counter to batch_meta_grad, so schedules advance."""
    from metajax.training.trainer import init_state, make_meta_step, make_train_fn

    seen = []
    mamlpp = MAMLPlusPlus(MODEL, losses.mse, InnerLoop(None, steps=2), msl_anneal_steps=3)
    original = MAMLPlusPlus.batch_meta_grad

    def spy(self, params, tasks, keys, step=0):
        # The step is traced inside the compiled loop: record the value each step receives.
        jax.debug.callback(lambda s: seen.append(int(s)), step, ordered=True)
        return original(self, params, tasks, keys, step)

    monkeypatch.setattr(MAMLPlusPlus, "batch_meta_grad", spy)
    train_fn = make_train_fn(make_meta_step(mamlpp, Sinusoid(k_shot=5, k_query=5), 4))
    state = init_state(mamlpp, optax.adam(1e-3), seed=0)
    state, metrics = train_fn(state, 2)
    state, metrics = train_fn(state, 1)
    assert seen == [0, 1, 2]
    assert bool(metrics["finite"].all())


def test_evaluation_steps_past_training_reuse_the_last_rate_and_copy():
    short = MAMLPlusPlus(MODEL, losses.mse, InnerLoop(None, steps=2), lslr_init=0.1)
    params = short.init(jax.random.key(0))
    params = {**params, "norm": _spread(params["norm"], jax.random.key(1)),
              "lr": _spread(params["lr"], jax.random.key(2), 0.05)}  # fmt: skip
    support = Split(jnp.linspace(-1, 1, 8)[:, None], jnp.sin(3 * jnp.linspace(-1, 1, 8))[:, None])
    # The same run as a 4-step MAML++ whose steps 2 and 3 hold copies of step 1's rate and norm.
    long = MAMLPlusPlus(MODEL, losses.mse, InnerLoop(None, steps=4))
    padded = {
        "init": params["init"],
        "norm": jax.tree.map(lambda a: a[jnp.array([0, 1, 1, 1])], params["norm"]),
        "lr": jax.tree.map(lambda a: a[jnp.array([0, 1, 1, 1])], params["lr"]),
    }
    out = short.run_inner(params, support, steps=4)
    chex.assert_trees_all_close(out.params, long.run_inner(padded, support).params, rtol=1e-6)
    chex.assert_trees_all_close(
        out.support_losses, long.run_inner(padded, support).support_losses, rtol=1e-6
    )
    # Zero steps: the initialization with the first step's norm copy.
    zero = short.run_inner(params, support, steps=0)
    chex.assert_trees_all_close(
        zero.params["norm"], jax.tree.map(lambda a: a[0], params["norm"]["norm"])
    )
