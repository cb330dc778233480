"""Meta-test evaluation: a metric after 0, 1, ... inner steps on fresh tasks, with a 95% CI."""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np

from metajax import losses
from metajax.algorithms.base import map_tasks
from metajax.config import Experiment
from metajax.core.types import Params, Task


def mean_ci95(values: chex.Array) -> dict[str, float]:
    """The mean and the half-width of its normal 95% confidence interval, ``1.96 s / sqrt(n)``.

    Tasks whose value is NaN or infinite (an inner loop that diverged) are not hidden: the
    mean is then NaN or infinite too, and ``"nonfinite"`` counts them.

    Example:
      >>> mean_ci95(np.array([1.0, 3.0]))
      {'mean': 2.0, 'ci95': 1.96}
      >>> mean_ci95(np.array([1.0, 3.0, np.nan]))
      {'mean': nan, 'ci95': nan, 'nonfinite': 1}
    """
    values = np.asarray(values, dtype=np.float64)
    n = values.size
    if n < 2:
        raise ValueError(f"A confidence interval needs at least 2 values, got {n}.")
    half = 1.96 * values.std(ddof=1) / math.sqrt(n)
    out = {"mean": float(values.mean()), "ci95": float(round(half, 12))}
    nonfinite = int((~np.isfinite(values)).sum())
    if nonfinite:
        out["nonfinite"] = nonfinite
    return out


def evaluate(
    experiment: Experiment,
    params: Params,
    *,
    num_tasks: int = 1000,
    seed: int = 1234,
    chunk: int = 250,
    max_examples: int = 4096,
) -> dict[str, dict[str, float]]:
    """Adapts ``params`` on ``num_tasks`` test tasks; reports the query metric after each of
    ``experiment.eval_steps`` inner steps.

    Args:
      experiment: supplies the algorithm, the test tasks, the metric and the step counts.
      params: the meta-parameters.
      num_tasks: test tasks (fresh, from ``seed``).
      seed: the test tasks' seed, fixed so that evaluations are comparable.
      chunk: the most tasks per vectorized batch.
      max_examples: the most support plus query examples per batch (bounds memory).

    Returns:
      For regression, ``{"mse_after_<k>": {"mean": m, "ci95": h}}`` for each ``k`` in
      ``eval_steps``; for classification, ``{"accuracy": {"mean": m, "ci95": h}}`` after
      ``max(eval_steps)`` inner steps.
    """
    algorithm = experiment.algorithm
    metric_fn = _METRICS[experiment.metric]
    max_steps = max(experiment.eval_steps)

    def one_task(task: Task) -> chex.Array:
        def score(phi: Params) -> chex.Array:
            return metric_fn(algorithm.predict(phi, task.query.x), task.query.y)

        if experiment.metric == "accuracy":
            # Only the last step is reported: scoring the query set after every step would
            # cost a query forward pass per step (50 of them for Reptile's evaluation).
            return score(algorithm.adapt(params, task.support, steps=max_steps).params)[None]
        return algorithm.adapt(params, task.support, steps=max_steps, track=score).tracked

    @jax.jit
    def run_chunk(keys: chex.PRNGKey) -> chex.Array:
        tasks = jax.vmap(experiment.test_tasks.sample)(keys)
        chunk = getattr(algorithm, "task_chunk", None)
        return map_tasks(lambda task, _: one_task(task), tasks, keys, chunk)

    # Chunks are dispatched from the host rather than looped over with lax.map: XLA:CPU runs
    # convolutions inside a loop body much slower (see `metajax.core.inner.adapt`). Keys are
    # those of `sample_tasks(test_tasks, key, num_tasks)`; the last chunk is padded, not
    # recompiled.
    # Bound the examples in flight, so that large episodes do not exhaust memory.
    shapes = jax.eval_shape(experiment.test_tasks.sample, jax.random.key(0))
    examples = shapes.support.x.shape[0] + shapes.query.x.shape[0]
    size = max(1, min(chunk, num_tasks, max_examples // examples))
    keys = jax.random.split(jax.random.key(seed), num_tasks)
    padded = -(-num_tasks // size) * size
    keys = jnp.concatenate([keys, keys[: padded - num_tasks]])
    per_task = np.concatenate(
        [np.asarray(run_chunk(keys[i : i + size])) for i in range(0, padded, size)]
    )[:num_tasks]  # [num_tasks, max_steps + 1], or [num_tasks, 1] for accuracy
    if experiment.metric == "accuracy":
        # Classification reports one figure: accuracy after the test-time inner steps.
        return {"accuracy": mean_ci95(per_task[:, -1])}
    return {
        f"{experiment.metric}_after_{k}": mean_ci95(per_task[:, k]) for k in experiment.eval_steps
    }


_METRICS = {"mse": losses.mse, "accuracy": losses.accuracy}
