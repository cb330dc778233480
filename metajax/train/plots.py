"""Figures of a trained run."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from metajax.config import Experiment  # noqa: E402
from metajax.core.types import Params, sample_tasks  # noqa: E402


def plot_regression_adaptation(
    experiment: Experiment,
    params: Params,
    path: str | os.PathLike,
    *,
    num_tasks: int = 3,
    steps: tuple[int, ...] = (0, 1, 10),
    seed: int = 0,
) -> None:
    """For ``num_tasks`` test tasks: the true curve, the support points, and the prediction
    after each of ``steps`` inner steps. Needs a 1-D task distribution with ``function``.

    Args:
      experiment: supplies the algorithm and the test tasks.
      params: the meta-parameters.
      path: the PNG to write.
      num_tasks: panels.
      steps: inner-step counts to draw.
      seed: picks the tasks.
    """
    dist = experiment.test_tasks
    lo, hi = dist.x_range
    grid = jnp.linspace(lo, hi, 200)[:, None]
    tasks = sample_tasks(dist, jax.random.key(seed), num_tasks)

    @jax.jit
    def curves(task):
        return experiment.algorithm.adapt(
            params,
            task.support,
            steps=max(steps),
            track=lambda phi: experiment.algorithm.predict(phi, grid),
        ).tracked

    preds = jax.vmap(curves)(tasks)  # [tasks, max_steps + 1, grid, 1]
    fig, axes = plt.subplots(1, num_tasks, figsize=(4.5 * num_tasks, 3.6), squeeze=False)
    for i, ax in enumerate(axes[0]):
        amp, phase = tasks.info["amplitude"][i], tasks.info["phase"][i]
        ax.plot(grid[:, 0], dist.function(amp, phase, grid)[:, 0], "k-", lw=2, label="true")
        ax.plot(
            tasks.support.x[i, :, 0],
            tasks.support.y[i, :, 0],
            "k^",
            ms=7,
            label=f"{tasks.support.x.shape[1]} support points",
        )
        for k, style in zip(steps, ["--"] + ["-"] * (len(steps) - 1), strict=True):
            ax.plot(grid[:, 0], preds[i, k, :, 0], style, label=f"after {k} step{'s' * (k != 1)}")
        ax.set_title(f"A={float(amp):.2f}, phase={float(phase):.2f}")
        ax.set_xlabel("x")
    axes[0, 0].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
