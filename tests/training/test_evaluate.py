"""Evaluation: the CI formula, and the metric after k steps against a direct computation."""

import dataclasses
import functools

import jax
import numpy as np
import optax
from hypothesis import given, settings
from hypothesis import strategies as st

from metajax import MAML, Sinusoid, from_nnx, losses, sample_tasks
from metajax.core.inner import InnerLoop
from metajax.models import MLP
from metajax.training.evaluate import evaluate, mean_ci95


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=2, max_size=200))
def test_mean_ci95_is_mean_and_1_96_standard_errors(values):
    out = mean_ci95(np.array(values))
    a = np.array(values, dtype=np.float64)
    np.testing.assert_allclose(out["mean"], a.mean(), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(
        out["ci95"], 1.96 * a.std(ddof=1) / np.sqrt(a.size), rtol=1e-6, atol=1e-9
    )


def test_evaluate_matches_adapting_each_task_by_hand():
    maml = MAML(
        from_nnx(lambda r: MLP(1, 1, (16,), rngs=r)), losses.mse, InnerLoop(optax.sgd(0.02))
    )
    params = maml.init(jax.random.key(0))
    test_tasks = Sinusoid(k_shot=5, k_query=20)
    maml = dataclasses.replace(maml, metric=losses.MSE, eval_steps=(0, 1, 3))
    out = evaluate(maml, test_tasks, params, num_tasks=40, seed=7, chunk=16)
    tasks = sample_tasks(test_tasks, jax.random.key(7), 40)

    @functools.partial(jax.jit, static_argnums=2)  # one task at a time, compiled once per k
    def task_mse(params, task, k):
        phi = maml.adapt(params, task.support, steps=k)
        return losses.mse(maml.predict(phi, task.query.x), task.query.y)

    for k in (0, 1, 3):
        per_task = []
        for i in range(40):
            task = jax.tree.map(lambda a, i=i: a[i], tasks)
            per_task.append(float(task_mse(params, task, k)))
        expected = mean_ci95(np.array(per_task))
        np.testing.assert_allclose(out[f"mse_after_{k}"]["mean"], expected["mean"], rtol=1e-4)
        np.testing.assert_allclose(out[f"mse_after_{k}"]["ci95"], expected["ci95"], rtol=1e-3)
