"""Figures of a trained run."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from metajax.core.learner import MetaLearner  # noqa: E402
from metajax.core.types import Params, TaskDistribution, sample_tasks  # noqa: E402


def plot_regression_adaptation(
    learner: MetaLearner,
    tasks: TaskDistribution,
    params: Params,
    path: str | os.PathLike,
    *,
    num_tasks: int = 3,
    steps: tuple[int, ...] = (0, 1, 10),
    seed: int = 0,
) -> None:
    """For ``num_tasks`` test tasks: the true curve, the support points, and the prediction
    after adapting with each of ``steps`` inner steps (``learner.adapt(..., steps=k)``).
    Needs a 1-D task distribution with ``function`` and ``x_range`` (`metajax.Sinusoid`).

    Args:
      learner: the meta-learner.
      tasks: the test task distribution.
      params: the meta-parameters.
      path: the PNG to write.
      num_tasks: panels.
      steps: inner-step counts to draw.
      seed: picks the tasks.
    """
    lo, hi = tasks.x_range
    grid = jnp.linspace(lo, hi, 200)[:, None]
    batch = sample_tasks(tasks, jax.random.key(seed), num_tasks)
    keys = jax.random.split(jax.random.key(seed + 1), num_tasks)

    @jax.jit
    def curves(task, key):
        return jnp.stack([
            learner.predict(learner.adapt(params, task.support, key, steps=k), grid, key)
            for k in steps
        ])  # fmt: skip

    preds = jax.vmap(curves)(batch, keys)  # [tasks, len(steps), grid, 1]
    fig, axes = plt.subplots(1, num_tasks, figsize=(4.5 * num_tasks, 3.6), squeeze=False)
    for i, ax in enumerate(axes[0]):
        amp, phase = batch.info["amplitude"][i], batch.info["phase"][i]
        ax.plot(grid[:, 0], tasks.function(amp, phase, grid)[:, 0], "k-", lw=2, label="true")
        ax.plot(
            batch.support.x[i, :, 0],
            batch.support.y[i, :, 0],
            "k^",
            ms=7,
            label=f"{batch.support.x.shape[1]} support points",
        )
        for j, (k, style) in enumerate(zip(steps, ["--"] + ["-"] * (len(steps) - 1), strict=True)):
            ax.plot(grid[:, 0], preds[i, j, :, 0], style, label=f"after {k} step{'s' * (k != 1)}")
        ax.set_title(f"A={float(amp):.2f}, phase={float(phase):.2f}")
        ax.set_xlabel("x")
    axes[0, 0].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_process(
    learner: MetaLearner,
    tasks: TaskDistribution,
    params: Params,
    path: str | os.PathLike,
    *,
    num_tasks: int = 3,
    seed: int = 0,
) -> None:
    """For ``num_tasks`` test functions: the context points, the targets, and a Neural
    Process's predictive mean with a 2-sigma band (a latent model's ``z`` at the mean of
    ``p(z | C)``). Needs a 1-D task distribution with ``x_range``.

    Args:
      learner: a Neural Process (``predict`` returns a Gaussian).
      tasks: the test task distribution.
      params: the meta-parameters.
      path: the PNG to write.
      num_tasks: panels.
      seed: picks the tasks.
    """
    lo, hi = tasks.x_range
    grid = jnp.linspace(lo, hi, 300)[:, None]
    batch = sample_tasks(tasks, jax.random.key(seed), num_tasks)

    @jax.jit
    def curves(task):
        prediction = learner.predict(learner.adapt(params, task.support), grid)
        return prediction.mean[:, 0], prediction.scale[:, 0]

    means, scales = jax.vmap(curves)(batch)
    fig, axes = plt.subplots(1, num_tasks, figsize=(4.5 * num_tasks, 3.4), squeeze=False)
    for i, ax in enumerate(axes[0]):
        support = jax.tree.map(lambda a, i=i: a[i], batch.support)
        query = jax.tree.map(lambda a, i=i: a[i], batch.query)
        shown, hidden = support.weights() > 0, query.weights() > 0
        ax.fill_between(grid[:, 0], means[i] - 2 * scales[i], means[i] + 2 * scales[i],
                        color="C0", alpha=0.25, label="mean +/- 2 sigma")  # fmt: skip
        ax.plot(grid[:, 0], means[i], "C0-", lw=2, label="predictive mean")
        ax.plot(query.x[hidden, 0], query.y[hidden, 0], "o", color="0.5", ms=3, label="targets")
        ax.plot(support.x[shown, 0], support.y[shown, 0], "k^", ms=6,
                label=f"{int(shown.sum())} context points")  # fmt: skip
        if hasattr(tasks, "function"):
            truth = tasks.function(batch.info["amplitude"][i], batch.info["phase"][i], grid)
            ax.plot(grid[:, 0], truth[:, 0], "k--", lw=1, label="true")
        ax.set_xlabel("x")
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
