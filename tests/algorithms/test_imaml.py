"""iMAML: the implicit meta-gradient against the closed form of a quadratic inner problem
(float64), against differentiating a long converged inner loop on a small MLP, and memory
that does not depend on the number of inner steps."""

import chex
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metajax import IMAML, Sinusoid, from_function
from metajax.core.inner import InnerLoop, adapt
from metajax.core.types import Split, Task


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def half_sse(pred, y):
    return 0.5 * jnp.sum((pred - y) ** 2)


LINEAR = from_function(lambda p, x: x @ p, lambda key: jax.random.normal(key, (4,)))


def test_quadratic_inner_problem_matches_the_closed_form(x64):
    """L_S = 1/2 ||M phi - y||^2, L_Q = 1/2 ||N phi - z||^2: phi* = (M'M + lam I)^-1 (M'y +
    lam theta) and dL_Q(phi*)/dtheta = lam (M'M + lam I)^-1 N'(N phi* - z), exactly."""
    rng = np.random.default_rng(0)
    m, y = rng.normal(size=(6, 4)), rng.normal(size=6)
    n, z = rng.normal(size=(5, 4)), rng.normal(size=5)
    theta, lam = rng.normal(size=4), 2.0
    task = Task(Split(jnp.asarray(m), jnp.asarray(y)), Split(jnp.asarray(n), jnp.asarray(z)), {})
    step = 1.0 / (np.linalg.eigvalsh(m.T @ m).max() + lam)
    imaml = IMAML(LINEAR, half_sse, InnerLoop(optax.sgd(step), steps=2000), lam=lam, cg_steps=4)
    grads, metrics = imaml.meta_grad(jnp.asarray(theta), task, jax.random.key(0))

    system = m.T @ m + lam * np.eye(4)
    phi = np.linalg.solve(system, m.T @ y + lam * theta)
    exact = lam * np.linalg.solve(system, n.T @ (n @ phi - z))
    np.testing.assert_allclose(grads, exact, rtol=1e-5, atol=1e-10)
    np.testing.assert_allclose(metrics["meta_loss"], 0.5 * np.sum((n @ phi - z) ** 2), rtol=1e-8)


def test_line_search_solver_gives_the_exact_gradient_where_fixed_rate_descent_diverges(x64):
    """A sharp support loss (curvature up to ~1e3) and a rate of 0.01: plain SGD overshoots
    and the implicit gradient is garbage; L-BFGS with its line search solves the proximal
    problem, and the gradient is the closed form's again."""
    rng = np.random.default_rng(1)
    m = rng.normal(size=(6, 4)) * np.array([30.0, 1.0, 1.0, 0.5])
    y, n, z = rng.normal(size=6), rng.normal(size=(5, 4)), rng.normal(size=5)
    theta, lam = rng.normal(size=4), 1.0
    task = Task(Split(jnp.asarray(m), jnp.asarray(y)), Split(jnp.asarray(n), jnp.asarray(z)), {})
    system = m.T @ m + lam * np.eye(4)
    phi = np.linalg.solve(system, m.T @ y + lam * theta)
    exact = lam * np.linalg.solve(system, n.T @ (n @ phi - z))

    def solve(inner):
        imaml = IMAML(LINEAR, half_sse, InnerLoop(inner, steps=50), lam=lam, cg_steps=12)
        return imaml.meta_grad(jnp.asarray(theta), task, jax.random.key(0))

    fixed, fixed_metrics = solve(optax.sgd(0.01))
    assert not np.allclose(fixed, exact, rtol=1e-2)  # diverged (NaN) or far from it
    assert not float(fixed_metrics["inner_residual"]) < 1.0
    grads, metrics = solve(optax.lbfgs())
    np.testing.assert_allclose(grads, exact, rtol=1e-8, atol=1e-12)
    assert float(metrics["inner_residual"]) < 1e-10


def _mlp_init(key):
    k1, k2 = jax.random.split(key)
    return {"w1": jax.random.normal(k1, (1, 8)), "b1": 0.1 * jnp.ones(8),
            "w2": jax.random.normal(k2, (8, 1)) / 3, "b2": jnp.zeros(1)}  # fmt: skip


MLP = from_function(lambda p, x: jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"], _mlp_init)


def _mse(pred, y):
    return jnp.mean((pred - y) ** 2)


def test_mlp_meta_gradient_approaches_the_unrolled_converged_one(x64):
    lam, steps, lr = 2.0, 400, 0.05
    task = jax.tree.map(lambda a: a.astype(jnp.float64),
                        Sinusoid(k_shot=10, k_query=10).sample(jax.random.key(1)))  # fmt: skip
    imaml = IMAML(MLP, _mse, InnerLoop(optax.sgd(lr), steps=steps), lam=lam, cg_steps=20)
    theta = jax.tree.map(lambda a: a.astype(jnp.float64), imaml.init(jax.random.key(0)))
    implicit, _ = imaml.meta_grad(theta, task, jax.random.key(0))

    def unrolled_query_loss(theta):
        # The same proximal inner loop with theta left in the graph: reverse mode through
        # every one of its steps.
        def loss(p, s):
            prox = optax.tree.norm(jax.tree.map(jnp.subtract, p, theta), squared=True)
            return _mse(MLP.apply(p, s.x), s.y) + 0.5 * lam * prox

        phi = adapt(loss, theta, task.support, optimizer=optax.sgd(lr), steps=steps).params
        return _mse(MLP.apply(phi, task.query.x), task.query.y)

    unrolled = jax.grad(unrolled_query_loss)(theta)
    a = jax.flatten_util.ravel_pytree(implicit)[0]
    b = jax.flatten_util.ravel_pytree(unrolled)[0]
    rel = float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))
    print(f"iMAML implicit vs unrolled meta-gradient (400 inner steps): relative error {rel:.2e}")
    assert rel < 1e-4  # 3e-6 measured; 0.12 with 5 CG steps, 0.008 with 10
    # Few CG steps give a rougher answer: the test can tell the solver apart.
    rough, _ = IMAML(
        MLP, _mse, InnerLoop(optax.sgd(lr), steps=steps), lam=lam, cg_steps=1
    ).meta_grad(theta, task, jax.random.key(0))
    assert float(jnp.linalg.norm(jax.flatten_util.ravel_pytree(rough)[0] - b)) > 10 * rel * float(
        jnp.linalg.norm(b)
    )


def test_memory_does_not_grow_with_inner_steps():
    """The compiled meta-gradient's temporary memory is the same for 5 and 50 inner steps
    (MAML's grows with them: it keeps every step for the backward pass)."""
    task = Sinusoid().sample(jax.random.key(1))

    def temp_bytes(steps):
        imaml = IMAML(MLP, _mse, InnerLoop(optax.sgd(0.01), steps=steps), cg_steps=5)
        params = imaml.init(jax.random.key(0))
        compiled = jax.jit(imaml.meta_grad).lower(params, task, jax.random.key(0)).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    assert temp_bytes(50) == temp_bytes(5)


def test_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match="IMAML needs lam > 0"):
        IMAML(MLP, _mse, InnerLoop(optax.sgd(0.01)), lam=0.0)


def test_batch_meta_grad_is_the_mean_of_task_gradients():
    imaml = IMAML(MLP, _mse, InnerLoop(optax.sgd(0.05), steps=5), cg_steps=3)
    params = imaml.init(jax.random.key(0))
    tasks = jax.vmap(Sinusoid().sample)(jax.random.split(jax.random.key(1), 3))
    keys = jax.random.split(jax.random.key(2), 3)
    batch, _ = imaml.batch_meta_grad(params, tasks, keys)
    one = jax.jit(imaml.meta_grad)
    each = [one(params, jax.tree.map(lambda a, i=i: a[i], tasks), keys[i])[0] for i in range(3)]
    chex.assert_trees_all_close(
        batch, jax.tree.map(lambda *g: sum(g) / 3, *each), rtol=1e-4, atol=1e-6
    )
