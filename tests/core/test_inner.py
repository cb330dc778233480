"""The inner-loop engine: its updates, first-order/second-order switch, remat, tracking."""

import chex
import jax
import jax.flatten_util
import jax.numpy as jnp
import optax
import pytest

from metajax.core.inner import InnerLoop, adapt
from metajax.core.types import Split, Task


def _loss(p, s):
    return jnp.mean((jnp.tanh(s.x @ p["w"]) + p["b"] - s.y) ** 2)


def _setup():
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    params = {"w": jax.random.normal(k1, (3, 2)), "b": jnp.zeros(2)}
    support = Split(x=jax.random.normal(k2, (6, 3)), y=jax.random.normal(k3, (6, 2)))
    return params, support


class TestAdapt(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_sgd_steps_match_hand_written_loop(self):
        params, support = _setup()
        out = self.variant(lambda p, s: adapt(_loss, p, s, optimizer=optax.sgd(0.3), steps=3))(
            params, support
        )
        expected = params
        losses = []
        for _ in range(3):
            loss, g = jax.value_and_grad(_loss)(expected, support)
            losses.append(loss)
            expected = jax.tree.map(lambda a, b: a - 0.3 * b, expected, g)
        chex.assert_trees_all_close(out.params, expected, rtol=1e-5)
        chex.assert_trees_all_close(out.support_losses, jnp.stack(losses), rtol=1e-5)
        chex.assert_shape(out.support_losses, (3,))

    @chex.variants(with_jit=True, without_jit=True)
    def test_adam_inner_optimizer_and_tracking(self):
        params, support = _setup()
        opt = optax.adam(0.1)
        out = self.variant(
            lambda p, s: adapt(_loss, p, s, optimizer=opt, steps=4, track=lambda q: _loss(q, s))
        )(params, support)
        state, expected, tracked = opt.init(params), params, []
        for _ in range(4):
            tracked.append(_loss(expected, support))
            g = jax.grad(_loss)(expected, support)
            u, state = opt.update(g, state, expected)
            expected = optax.apply_updates(expected, u)
        tracked.append(_loss(expected, support))
        chex.assert_trees_all_close(out.params, expected, rtol=1e-5)
        chex.assert_trees_all_close(out.tracked, jnp.stack(tracked), rtol=1e-5)

    def test_zero_steps_returns_params(self):
        params, support = _setup()
        out = adapt(
            _loss,
            params,
            support,
            optimizer=optax.sgd(0.1),
            steps=0,
            track=lambda q: _loss(q, support),
        )
        chex.assert_trees_all_close(out.params, params)
        chex.assert_shape(out.tracked, (1,))

    def test_negative_steps_is_an_error(self):
        params, support = _setup()
        with pytest.raises(ValueError, match="steps must be >= 0"):
            adapt(_loss, params, support, optimizer=optax.sgd(0.1), steps=-1)


def _outer(params, support, **kw):
    phi = adapt(_loss, params, support, optimizer=optax.sgd(0.5), steps=5, **kw).params
    return _loss(phi, Split(support.x * 0.5, support.y))


def test_first_order_drops_second_order_terms():
    params, support = _setup()
    so = jax.grad(_outer)(params, support)
    fo = jax.grad(lambda p: _outer(p, support, first_order=True))(params)
    # First order: d phi / d theta = I, so the meta-gradient is the query gradient at phi.
    phi = adapt(_loss, params, support, optimizer=optax.sgd(0.5), steps=5).params
    at_phi = jax.grad(lambda q: _loss(q, Split(support.x * 0.5, support.y)))(phi)
    chex.assert_trees_all_close(fo, at_phi, rtol=1e-5)
    diff = max(
        float(jnp.abs(a - b).max())
        for a, b in zip(jax.tree.leaves(so), jax.tree.leaves(fo), strict=True)
    )
    assert diff > 1e-3


def test_remat_gives_the_same_gradient():
    params, support = _setup()
    plain = jax.jit(jax.grad(_outer))(params, support)
    remat = jax.jit(jax.grad(lambda p, s: _outer(p, s, remat=True)))(params, support)
    chex.assert_trees_all_close(plain, remat, rtol=1e-6, atol=1e-7)


def test_remat_is_in_the_compiled_program():
    params, support = _setup()
    text = jax.jit(jax.grad(lambda p, s: _outer(p, s, remat=True))).lower(params, support).as_text()
    plain = jax.jit(jax.grad(_outer)).lower(params, support).as_text()
    # remat re-runs the forward step inside the backward loop: more tanh ops in the program.
    assert text.count("tanh") > plain.count("tanh")


@pytest.mark.parametrize("inner", ["adam", "momentum"])
def test_second_order_through_inner_adam_and_momentum_matches_finite_differences(inner):
    """The engine differentiates through any optax inner optimizer. An input feature that is
    always 0 gives its weight a zero gradient, where Adam's sqrt(v) has an infinite
    derivative: without `zero_gradient_guard` the meta-gradient is NaN (TorchOpt's and
    higher's bug); with it, it is finite and equals central differences."""
    from metajax import MAML, from_function, losses

    optimizer = {"adam": optax.adam(0.05), "momentum": optax.sgd(0.05, momentum=0.9)}[inner]
    model = from_function(
        lambda p, x: jnp.tanh(x @ p["w"]) @ p["v"],
        lambda key: {"w": jax.random.normal(key, (3, 4)), "v": jnp.ones((4, 1)) / 2},
    )
    with jax.enable_x64(True):
        x = jax.random.normal(jax.random.key(1), (8, 3), jnp.float64).at[:, 2].set(0.0)
        y = jnp.sin(x[:, :1])
        task = Task(Split(x[:4], y[:4]), Split(x[4:], y[4:]), {})
        maml = MAML(model, losses.mse, InnerLoop(optimizer, steps=3))
        params = jax.tree.map(lambda a: a.astype(jnp.float64), maml.init(jax.random.key(0)))
        grads, _ = maml.meta_grad(params, task, jax.random.key(0))
        flat, unravel = jax.flatten_util.ravel_pytree(params)
        assert bool(jnp.all(jnp.isfinite(jax.flatten_util.ravel_pytree(grads)[0])))
        loss = lambda v: maml.meta_loss(unravel(v), task, jax.random.key(0))[0]  # noqa: E731
        eps = 1e-6
        central = jax.vmap(lambda e: (loss(flat + e) - loss(flat - e)) / (2 * eps))
        numeric = jax.jit(central)(eps * jnp.eye(flat.size))
        analytic = jax.flatten_util.ravel_pytree(grads)[0]
        rel = jnp.linalg.norm(analytic - numeric) / jnp.linalg.norm(numeric)
        assert rel < 1e-6, rel
        if inner == "adam":
            # The same computation without the guard: the bug, reproduced.
            def unguarded(p):
                g = jax.grad(lambda q: losses.mse(model.apply(q, task.support.x), task.support.y))(
                    p
                )
                u, _ = optimizer.update(g, optimizer.init(p), p)
                phi = optax.apply_updates(p, u)
                return losses.mse(model.apply(phi, task.query.x), task.query.y)

            assert bool(
                jnp.isnan(jax.flatten_util.ravel_pytree(jax.grad(unguarded)(params))[0]).any()
            )


def _sharp_quadratic(p, s):
    # Curvatures 1 and 400: fixed-rate descent at 0.01 is unstable along the second axis.
    return 0.5 * jnp.sum(s.x * (p - s.y) ** 2)


def test_line_search_solvers_get_the_loss_function():
    support = Split(x=jnp.array([1.0, 400.0]), y=jnp.array([2.0, -1.0]))
    start = jnp.zeros(2)
    sgd = adapt(_sharp_quadratic, start, support, optimizer=optax.sgd(0.01), steps=10)
    assert float(_sharp_quadratic(sgd.params, support)) > 1e6  # fixed rate diverges
    backtracking = optax.chain(
        optax.sgd(0.01),
        optax.scale_by_backtracking_linesearch(max_backtracking_steps=20, decrease_factor=0.5),
    )
    bt = adapt(_sharp_quadratic, start, support, optimizer=backtracking, steps=10)
    assert bool(jnp.all(jnp.diff(bt.support_losses) <= 0))  # Armijo: never uphill
    lbfgs = adapt(_sharp_quadratic, start, support, optimizer=optax.lbfgs(), steps=10)
    chex.assert_trees_all_close(lbfgs.params, support.y, atol=1e-4)
    # Under vmap too (each task's line search runs until every task's has finished).
    tasks = Split(x=jnp.stack([support.x, support.x[::-1]]), y=jnp.stack([support.y] * 2))
    batched = jax.vmap(
        lambda s: adapt(_sharp_quadratic, start, s, optimizer=optax.lbfgs(), steps=10).params
    )(tasks)
    chex.assert_trees_all_close(batched, tasks.y, atol=1e-4)
