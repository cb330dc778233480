"""The contract every registered algorithm keeps, in optax's ``alias_test`` style.

Each algorithm in `metajax.config.algorithms()` is built by its own registered config on a
tiny regression benchmark and a tiny classification benchmark (those of the kinds it handles)
and must: initialize; take a meta-step jitted and not, with the same result; adapt, predict
and evaluate with the right shapes; round-trip a checkpoint; resume bitwise; and take a
second step without compiling again. A new algorithm gets all of this by registering.
"""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from metajax import losses
from metajax.config import Benchmark, BuildEnv, algorithm_config, algorithms
from metajax.core.functional import Model, from_nnx
from metajax.core.types import Split, Task
from metajax.models.neural_process import Gaussian
from metajax.tasks import Sinusoid
from metajax.training.trainer import (
    init_state,
    make_meta_step,
    make_train_fn,
    restore_state,
    save_state,
)

META_BATCH = 2


class Net(nnx.Module):
    """A tiny network with a normalization layer (MAML++'s per-step copies need one)."""

    def __init__(self, inputs: int, outputs: int, *, rngs: nnx.Rngs):
        self.body = nnx.Linear(inputs, 8, rngs=rngs)
        self.norm = nnx.LayerNorm(8, rngs=rngs)
        self.out = nnx.Linear(8, outputs, rngs=rngs) if outputs else None

    def features(self, x):
        return jax.nn.relu(self.norm(self.body(x)))

    def __call__(self, x):
        h = self.features(x)
        return h if self.out is None else self.out(h)


class Maps(nnx.Module):
    """Spatial feature maps [n, 4, 4, 2] of vectors, for learners that read maps (Relation)."""

    def __init__(self, inputs: int, *, rngs: nnx.Rngs):
        self.linear = nnx.Linear(inputs, 32, rngs=rngs)

    def __call__(self, x):
        return jax.nn.relu(self.linear(x)).reshape(x.shape[0], 4, 4, 2)


@dataclasses.dataclass(frozen=True)
class Clusters:
    """3-way 2-shot classification of points around per-task random centres."""

    ways: int = 3
    shots: int = 2
    queries: int = 3
    dim: int = 4

    def sample(self, key):
        k_centre, k_s, k_q = jax.random.split(key, 3)
        centres = jax.random.normal(k_centre, (self.ways, self.dim)) * 2.0
        ys = jnp.repeat(jnp.arange(self.ways), self.shots)
        yq = jnp.repeat(jnp.arange(self.ways), self.queries)
        xs = centres[ys] + 0.3 * jax.random.normal(k_s, (ys.size, self.dim))
        xq = centres[yq] + 0.3 * jax.random.normal(k_q, (yq.size, self.dim))
        return Task(Split(xs, ys), Split(xq, yq), {})


@dataclasses.dataclass(frozen=True)
class TinyBenchmark(Benchmark):
    classify: bool = False

    @property
    def kind(self) -> str:  # type: ignore[override]
        return "classification" if self.classify else "regression"

    def tasks(self):
        dist = Clusters() if self.classify else Sinusoid(k_shot=4, k_query=3)
        return dist, dist

    def _net(self, outputs: int) -> Model:
        inputs = Clusters.dim if self.classify else 1
        return from_nnx(lambda r: Net(inputs, outputs, rngs=r))

    def env(self, learner, trainer, name) -> BuildEnv:
        outputs = Clusters.ways if self.classify else 1

        def body_and_head():
            return self._net(0), from_nnx(lambda r: nnx.Linear(8, outputs, rngs=r))

        return BuildEnv(
            network=lambda: self._net(outputs),
            features=lambda: self._net(0),
            body_and_head=body_and_head,
            loss=losses.cross_entropy if self.classify else losses.mse,
            metric=losses.ACCURACY if self.classify else losses.MSE,
            unroll=False,
            task_chunk=None,
            config=name,
            feature_maps=(lambda: from_nnx(lambda r: Maps(Clusters.dim, rngs=r)))
            if self.classify
            else None,
            input_shape=(Clusters.dim,) if self.classify else (1,),
            x_dim=None if self.classify else 1,
            y_dim=None if self.classify else 1,
            x_range=None if self.classify else Sinusoid.x_range,
        )


CASES = [
    (name, classify)
    for name, cls in sorted(algorithms().items())
    for classify in (False, True)
    if TinyBenchmark(classify=classify).kind in cls.kinds
]


@pytest.fixture(
    scope="module", params=CASES, ids=[f"{a}-{'cls' if c else 'reg'}" for a, c in CASES]
)
def case(request):
    name, classify = request.param
    bench = TinyBenchmark(classify=classify)
    learner = algorithm_config(name)().build(bench.env(algorithm_config(name)(), None, "contract"))
    train_tasks, test_tasks = bench.tasks()
    return learner, train_tasks, test_tasks, name


def _leaves_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_every_registered_algorithm_is_in_the_table():
    assert {name for name, _ in CASES} == set(algorithms())
    assert len(algorithms()) >= 13


def test_init_is_a_pure_function_of_the_key(case):
    learner, _, _, _ = case
    a, b = learner.init(jax.random.key(0)), learner.init(jax.random.key(0))
    _leaves_equal(a, b)
    assert jax.tree.leaves(a), "no meta-parameters"


@pytest.fixture(scope="module")
def stepped(case):
    """One compiled train function per case, and a state one step in."""
    learner, train_tasks, _, _ = case
    # SGD on the clipped gradient, a step proportional to it, so that comparing parameters
    # compares meta-gradients. Adam's first step is lr * g / (|g| + eps): it hides gradients
    # that differ, and turns a gradient of rounding noise into a step of either sign.
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.05))
    train_fn = make_train_fn(make_meta_step(learner, train_tasks, META_BATCH), donate=False)
    one, metrics = train_fn(init_state(learner, opt, seed=0), 1)
    return train_fn, opt, one, metrics


def test_meta_step_learns_something_and_does_not_recompile(case, stepped):
    learner, _, _, _ = case
    train_fn, opt, state, metrics = stepped
    assert int(state.step) == 1 and bool(metrics["finite"][0])
    assert np.isfinite(float(metrics["meta_loss"][0]))
    moved = jax.tree.map(
        lambda a, b: float(jnp.abs(a - b).max()), state.params, init_state(learner, opt, 0).params
    )
    assert max(jax.tree.leaves(moved)) > 0, "the meta-step changed nothing"
    state, _ = train_fn(state, 1)
    state, _ = train_fn(restore_like(state), 1)
    assert train_fn.jitted._cache_size() == 1, "a later step compiled again"


def test_meta_step_unjitted_equals_jitted(case, stepped):
    learner, train_tasks, _, name = case
    if isinstance(train_tasks, Clusters) and "regression" in algorithm_config(name).kinds:
        pytest.skip("op-by-op execution is slow; the regression case covers the code path")
    _, opt, jitted, metrics = stepped
    eager, eager_metrics = make_meta_step(learner, train_tasks, META_BATCH)(
        init_state(learner, opt, seed=0)
    )
    chex.assert_trees_all_close(eager.params, jitted.params, rtol=1e-5, atol=1e-6)
    assert float(eager_metrics["meta_loss"]) == pytest.approx(
        float(metrics["meta_loss"][0]), rel=1e-5
    )


def restore_like(state):
    """The state as a checkpoint restore gives it back (host arrays made device arrays)."""
    return jax.tree.map(lambda a: jnp.asarray(np.asarray(a)), state)


def test_adapt_predict_and_evaluate_task_shapes(case):
    learner, _, test_tasks, _ = case
    params = learner.init(jax.random.key(0))
    task = test_tasks.sample(jax.random.key(1))
    key = jax.random.key(2)
    adapted = learner.adapt(params, task.support, key)
    # Adapted is a pytree: it crosses jit, vmap and tree maps.
    assert jax.tree.leaves(adapted)
    out = jax.jit(learner.predict)(adapted, task.query.x, key)
    if isinstance(out, Gaussian):  # the Neural Process family: a predictive distribution
        chex.assert_equal_shape([out.mean, out.scale, task.query.y])
        assert bool((out.scale > 0).all())
        out = out.mean
    n = task.query.x.shape[0]
    if jnp.issubdtype(task.query.y.dtype, jnp.integer):
        assert out.shape[0] == n and out.shape[1] >= int(task.query.y.max()) + 1
    else:
        assert out.shape == task.query.y.shape
    # Evaluation runs it vmapped over tasks under jit.
    metrics = jax.jit(jax.vmap(learner.evaluate_task, in_axes=(None, 0, 0)))(
        params, jax.tree.map(lambda a: jnp.stack([a, a]), task), jax.random.split(key, 2)
    )
    assert metrics and all(jnp.shape(v) == (2,) for v in metrics.values())
    assert all(np.isfinite(np.asarray(v)).all() for v in metrics.values())


def test_predict_without_adapting_is_one_call(case):
    learner, _, test_tasks, _ = case
    params = learner.init(jax.random.key(0))
    task = test_tasks.sample(jax.random.key(1))
    try:
        direct = learner.predict_unadapted(params, task.query.x)
    except NotImplementedError as err:
        assert "context" in str(err)  # metric learners need a support set
        return
    zero = learner.predict(learner.adapt(params, task.support, steps=0), task.query.x)
    chex.assert_trees_all_close(direct, zero, rtol=1e-6, atol=1e-6)


def test_checkpoint_round_trip_and_bitwise_resume(case, stepped, tmp_path):
    learner, _, _, _ = case
    train_fn, opt, one, _ = stepped
    straight, _ = train_fn(one, 1)
    save_state(tmp_path, one)
    restored = restore_state(tmp_path, init_state(learner, opt, seed=1))
    _leaves_equal(restored, one)
    assert jax.tree.structure(restored) == jax.tree.structure(one)
    resumed, _ = train_fn(restored, 1)
    _leaves_equal(resumed, straight)
