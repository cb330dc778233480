"""Meta-test evaluation: the learner's own metrics on fresh tasks, each with a 95% CI."""

from __future__ import annotations

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np

from metajax.core.learner import MetaLearner, map_tasks
from metajax.core.types import Params, Task, TaskDistribution


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


@functools.partial(jax.jit, static_argnums=(0, 1))
def _evaluate_chunk(
    learner: MetaLearner, tasks: TaskDistribution, params: Params, keys: chex.PRNGKey
) -> dict[str, chex.Array]:
    """Every metric of a chunk of test tasks drawn from ``keys``. Compiled once per learner,
    task distribution and chunk size: periodic evaluations during training reuse it (the
    parameters are an argument, not a constant baked into the program)."""

    def one_task(task: Task, key: chex.PRNGKey) -> dict[str, chex.Array]:
        # The task was drawn from ``key``; the learner gets a key of its own.
        return learner.evaluate_task(params, task, jax.random.fold_in(key, 1))

    batch = jax.vmap(tasks.sample)(keys)
    return map_tasks(one_task, batch, keys, learner.task_chunk)


def evaluate(
    learner: MetaLearner,
    tasks: TaskDistribution,
    params: Params,
    *,
    num_tasks: int = 1000,
    seed: int = 1234,
    chunk: int = 250,
    max_examples: int = 4096,
) -> dict[str, dict[str, float]]:
    """Each metric of ``learner.evaluate_task`` on ``num_tasks`` fresh test tasks, with its
    95% confidence interval. The metric names are the learner's own.

    Args:
      learner: the meta-learner (its ``task_chunk`` bounds the tasks vmapped together).
      tasks: the test task distribution.
      params: the meta-parameters.
      num_tasks: test tasks (fresh, from ``seed``; at least 2).
      seed: the test tasks' seed, fixed so that evaluations are comparable.
      chunk: the most tasks per vectorized batch.
      max_examples: the most support plus query examples per batch (bounds memory).

    Returns:
      ``{metric: {"mean": m, "ci95": h}}`` (and ``"nonfinite"``: the count of tasks whose
      value is NaN/Inf, when there are any).

    Example:
      >>> import jax, optax
      >>> from metajax import MAML, InnerLoop, Sinusoid, from_nnx, losses
      >>> from metajax.models import MLP
      >>> maml = MAML(from_nnx(lambda r: MLP(1, 1, (8,), rngs=r)), losses.mse,
      ...             InnerLoop(optax.sgd(0.01)), metric=losses.MSE, eval_steps=(0, 1))
      >>> params = maml.init(jax.random.key(0))
      >>> sorted(evaluate(maml, Sinusoid(), params, num_tasks=10))
      ['mse_after_0', 'mse_after_1']
    """
    if num_tasks < 2:
        raise ValueError(f"evaluate: num_tasks must be >= 2 (for a CI), got {num_tasks}.")

    # Chunks are dispatched from the host rather than looped over with lax.map: XLA:CPU runs
    # convolutions inside a loop body much slower (see `metajax.core.inner.adapt`). Keys are
    # those of `sample_tasks(tasks, key, num_tasks)`; the last chunk is padded, not
    # recompiled. Bound the examples in flight, so that large episodes do not exhaust memory.
    shapes = jax.eval_shape(tasks.sample, jax.random.key(0))
    examples = shapes.support.x.shape[0] + shapes.query.x.shape[0]
    size = max(1, min(chunk, num_tasks, max_examples // examples))
    chunk_of_learner = learner.task_chunk
    if chunk_of_learner:
        size = max(chunk_of_learner, size // chunk_of_learner * chunk_of_learner)
    keys = jax.random.split(jax.random.key(seed), num_tasks)
    padded = -(-num_tasks // size) * size
    keys = keys[jnp.arange(padded) % num_tasks]
    outs = [
        jax.device_get(_evaluate_chunk(learner, tasks, params, keys[i : i + size]))
        for i in range(0, padded, size)
    ]
    per_task = {k: np.concatenate([o[k] for o in outs])[:num_tasks] for k in outs[0]}
    return {name: mean_ci95(values) for name, values in per_task.items()}
