"""The Neural Process family: invariance to the context's order, ConvCNP's translation
equivariance, masks that equal removing the padded rows, the latent NP's bounds, float64
finite differences, and the test metrics."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metajax.algorithms.anp import ANP
from metajax.algorithms.cnp import CNP
from metajax.algorithms.convcnp import ConvCNP
from metajax.algorithms.latent_np import LatentNP
from metajax.algorithms.neural_process import first_points, join
from metajax.core.types import Split, Task, sample_tasks
from metajax.models.neural_process import Gaussian
from metajax.tasks import GaussianProcess

SMALL = dict(x_dim=1, y_dim=1, width=16)
MODELS = {
    "cnp": lambda: CNP.build(**SMALL),
    "np": lambda: LatentNP.build(**SMALL, latent_dim=4),
    "anp": lambda: ANP.build(**SMALL, heads=2, latent_dim=4),
    "convcnp": lambda: ConvCNP.build(
        y_dim=1, channels=8, layers=2, kernel_size=5, points_per_unit=16, grid_size=96
    ),  # fmt: skip
}


def _function(key, n=12):
    kx, ky = jax.random.split(key)
    x = jax.random.uniform(kx, (n, 1), minval=-2, maxval=2)
    return Split(x, jnp.sin(3 * x) + 0.1 * jax.random.normal(ky, (n, 1)))


def _prediction(model, params, context, x):
    # A latent model's z at the mean of p(z | C): deterministic, so outputs can be compared.
    out = model.predict(model.adapt(params, context), x)
    return np.asarray(out.mean), np.asarray(out.scale)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_outputs_are_invariant_to_the_contexts_order(name):
    model = MODELS[name]()
    params = model.init(jax.random.key(0))
    context, x = _function(jax.random.key(1)), jnp.linspace(-2, 2, 9)[:, None]
    order = jax.random.permutation(jax.random.key(2), 12)
    shuffled = Split(context.x[order], context.y[order])
    for a, b in zip(_prediction(model, params, context, x),
                    _prediction(model, params, shuffled, x), strict=True):  # fmt: skip
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
    assert not np.allclose(_prediction(model, params, context, x)[0],
                           _prediction(model, params, _function(jax.random.key(9)), x)[0])  # fmt: skip


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_masked_row_is_the_same_as_no_row(name):
    """Padding (mask False) must change nothing: the prediction equals that of the context
    without those rows, whatever values they hold."""
    model = MODELS[name]()
    params = model.init(jax.random.key(0))
    context, x = _function(jax.random.key(1), 12), jnp.linspace(-2, 2, 9)[:, None]
    junk = Split(100 * jnp.ones((5, 1)), -50 * jnp.ones((5, 1)))
    padded = Split(jnp.concatenate([context.x[:4], junk.x, context.x[4:]]),
                   jnp.concatenate([context.y[:4], junk.y, context.y[4:]]),
                   (jnp.arange(17) < 4) | (jnp.arange(17) >= 9))  # fmt: skip
    for a, b in zip(_prediction(model, params, context, x),
                    _prediction(model, params, padded, x), strict=True):  # fmt: skip
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


def test_convcnp_is_translation_equivariant():
    model = MODELS["convcnp"]()
    params = model.init(jax.random.key(0))
    context, x = _function(jax.random.key(1)), jnp.linspace(-2, 2, 9)[:, None]
    # A shift by a multiple of the grid spacing (1/16) moves the grid with the data: exact.
    shift = 20 / 16
    moved = Split(context.x + shift, context.y)
    for a, b in zip(_prediction(model, params, context, x),
                    _prediction(model, params, moved, x + shift), strict=True):  # fmt: skip
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # Any other shift is equivariant up to the grid's discretization.
    odd = Split(context.x + 0.37, context.y)
    a, b = _prediction(model, params, context, x)[0], _prediction(model, params, odd, x + 0.37)[0]
    assert np.abs(a - b).max() < 0.1 * np.abs(a).max()
    # A CNP is not equivariant: the same check tells the two apart.
    cnp = MODELS["cnp"]()
    p = cnp.init(jax.random.key(0))
    a, b = _prediction(cnp, p, context, x)[0], _prediction(cnp, p, moved, x + shift)[0]
    assert np.abs(a - b).max() > 1e-3


def _fixed_batch(n=8):
    tasks = sample_tasks(GaussianProcess(), jax.random.key(3), n)
    return tasks, jax.random.split(jax.random.key(4), n)


def test_latent_np_elbo_is_below_the_iw_bound_and_both_rise_with_training():
    model = LatentNP.build(**SMALL, latent_dim=4, eval_samples=16)
    params = model.init(jax.random.key(0))
    tasks, keys = _fixed_batch()

    @jax.jit
    def bounds(params):
        out = jax.vmap(lambda t, k: model.bounds(params, t.support, t.query, k))(tasks, keys)
        return {k: v.mean() for k, v in out.items()}, out

    before, per_task = bounds(params)
    assert bool((per_task["elbo"] <= per_task["iw_log_likelihood"] + 1e-6).all())
    opt = optax.adam(3e-3)
    state = opt.init(params)

    @jax.jit
    def step(params, state, key):
        grads, _ = model.batch_meta_grad(params, tasks, jax.random.split(key, 8))
        updates, state = opt.update(grads, state)
        return optax.apply_updates(params, updates), state

    for i in range(150):
        params, state = step(params, state, jax.random.key(i))
    after, per_task = bounds(params)
    assert bool((per_task["elbo"] <= per_task["iw_log_likelihood"] + 1e-6).all())
    assert after["elbo"] > before["elbo"] + 0.2, (before, after)
    assert after["iw_log_likelihood"] > before["iw_log_likelihood"] + 0.2, (before, after)


def test_cnp_meta_gradient_matches_float64_finite_differences():
    with jax.enable_x64(True):
        model = CNP.build(x_dim=1, y_dim=1, width=6, encoder_depth=2, post_depth=1,
                          decoder_depth=2)  # fmt: skip
        params = jax.tree.map(lambda a: a.astype(jnp.float64), model.init(jax.random.key(0)))
        task = jax.tree.map(lambda a: a.astype(a.dtype if a.dtype == bool else jnp.float64),
                            GaussianProcess(num_points=10, min_context=3,
                                            max_context=7).sample(jax.random.key(1)))  # fmt: skip

        def loss(p):
            return model.meta_loss(p, task, jax.random.key(2))[0]

        grads = jax.grad(loss)(params)
        direction = jax.tree.map(lambda a: jax.random.normal(jax.random.key(5), a.shape,
                                                             jnp.float64), params)  # fmt: skip
        eps = 1e-6
        plus = loss(jax.tree.map(lambda a, d: a + eps * d, params, direction))
        minus = loss(jax.tree.map(lambda a, d: a - eps * d, params, direction))
        analytic = sum(jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(grads),
                                                     jax.tree.leaves(direction), strict=True))  # fmt: skip
        assert float(analytic) == pytest.approx(float((plus - minus) / (2 * eps)), rel=1e-6)


def test_gaussian_log_prob_and_kl_by_hand():
    g, h = (
        Gaussian(jnp.array([0.5, -1.0]), jnp.array([2.0, 0.3])),
        Gaussian(jnp.zeros(2), jnp.ones(2)),
    )
    y = jnp.array([1.0, 0.0])
    by_hand = sum(-0.5 * ((yi - m) / s) ** 2 - np.log(s * np.sqrt(2 * np.pi))
                  for yi, m, s in zip([1.0, 0.0], [0.5, -1.0], [2.0, 0.3], strict=True))  # fmt: skip
    assert float(g.log_prob(y)) == pytest.approx(by_hand, rel=1e-6)
    samples = g.sample(jax.random.key(0), 200_000)
    monte_carlo = float((g.log_prob(samples) - h.log_prob(samples)).mean())
    assert float(g.kl(h)) == pytest.approx(monte_carlo, rel=2e-2)
    assert float(g.kl(g)) == pytest.approx(0.0, abs=1e-6)


def test_first_points_splits_the_real_points_in_order():
    points = join(Split(jnp.arange(4.0)[:, None], jnp.zeros((4, 1)), jnp.array([1, 0, 1, 1]) > 0),
                  Split(jnp.arange(4.0, 7.0)[:, None], jnp.zeros((3, 1))))  # fmt: skip
    context, targets = first_points(points, 3)
    assert np.asarray(points.x[context.mask, 0]).tolist() == [0.0, 2.0, 3.0]
    assert np.asarray(points.x[targets.mask, 0]).tolist() == [4.0, 5.0, 6.0]


def test_evaluate_task_metrics_by_hand():
    model = MODELS["cnp"]()
    params = model.init(jax.random.key(0))
    task = GaussianProcess().sample(jax.random.key(1))
    model = CNP(model.encoder, model.decoder, eval_context_sizes=(5,))
    metrics = model.evaluate_task(params, task, jax.random.key(2))
    prediction = model.predict(model.adapt(params, task.support), task.query.x)
    target = np.asarray(task.query.mask)
    ll = np.asarray(prediction.log_prob(task.query.y))
    assert float(metrics["log_likelihood"]) == pytest.approx(ll[target].mean(), rel=1e-5)
    mse = np.asarray(((prediction.mean - task.query.y) ** 2)[:, 0])[target].mean()
    assert float(metrics["mse"]) == pytest.approx(mse, rel=1e-5)
    on_context = model.predict(model.adapt(params, task.support), task.support.x)
    ll_context = np.asarray(on_context.log_prob(task.support.y))[np.asarray(task.support.mask)]
    assert float(metrics["context_log_likelihood"]) == pytest.approx(ll_context.mean(), rel=1e-5)
    # Every point, context and targets, given the context (the GP task's 50 points).
    ll_all = np.asarray(on_context.log_prob(task.support.y))
    assert float(metrics["all_points_log_likelihood"]) == pytest.approx(ll_all.mean(), rel=1e-5)
    # Five context points: the function's first five, and the other 45 as the targets.
    five = Split(task.query.x[:5], task.query.y[:5])
    rest = model.predict(model.adapt(params, five), task.query.x[5:]).log_prob(task.query.y[5:])
    assert float(metrics["log_likelihood_context_5"]) == pytest.approx(float(rest.mean()),
                                                                       rel=1e-5)  # fmt: skip


def test_training_task_loss_covers_context_and_targets():
    """The training objective is the mean log-likelihood of every point of the task (the
    context included), as the CNP paper trains."""
    model = MODELS["cnp"]()
    params = model.init(jax.random.key(0))
    task = GaussianProcess().sample(jax.random.key(1))
    loss, _ = model.meta_loss(params, task, jax.random.key(2))
    prediction = model.predict(model.adapt(params, task.support), task.query.x)
    assert float(loss) == pytest.approx(-float(prediction.log_prob(task.query.y).mean()), rel=1e-5)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_shared_points_task_scores_as_its_joined_layout(name):
    """A Gaussian-process task's context and targets are two masks over the same 50 points
    (``shared_points``), which the models read once. Loss, gradient and test metrics must be
    those of the general layout, where the two sets are concatenated into 100 masked rows."""
    model = MODELS[name]()
    model = dataclasses.replace(model, eval_context_sizes=(5,), eval_samples=4)
    params = model.init(jax.random.key(0))
    shared = GaussianProcess(num_points=20, max_context=17).sample(jax.random.key(1))
    assert shared.shared_points and shared.points().x.shape == (20, 1)
    joined = dataclasses.replace(shared, shared_points=False)
    assert joined.points().x.shape == (40, 1)
    # A task that claims shared points with splits of other sizes is refused, not misread.
    uneven = dataclasses.replace(shared, query=jax.tree.map(lambda a: a[:5], shared.query))
    with pytest.raises(ValueError, match="shapes differ"):
        uneven.points()

    def loss(p, task):
        return model.meta_loss(p, task, jax.random.key(2))[0]

    for a, b in [(jax.jit(jax.value_and_grad(loss))(params, shared),
                  jax.jit(jax.value_and_grad(loss))(params, joined)),
                 (jax.jit(model.evaluate_task)(params, shared, jax.random.key(3)),
                  jax.jit(model.evaluate_task)(params, joined, jax.random.key(3)))]:  # fmt: skip
        jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-5), a, b)


def test_a_plain_regression_task_is_a_context_and_its_targets():
    model = MODELS["anp"]()
    params = model.init(jax.random.key(0))
    task = Task(_function(jax.random.key(1), 6), _function(jax.random.key(2), 9))
    metrics = jax.jit(model.evaluate_task)(params, task, jax.random.key(3))
    assert {"log_likelihood", "context_log_likelihood", "mse", "elbo",
            "iw_log_likelihood"} <= set(metrics)  # fmt: skip
    assert all(np.isfinite(float(v)) for v in metrics.values())
