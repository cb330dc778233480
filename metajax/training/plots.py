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


def plot_completion(
    learner: MetaLearner,
    tasks: TaskDistribution,
    params: Params,
    path: str | os.PathLike,
    *,
    num_images: int = 6,
    context_sizes: tuple[int, ...] = (10, 50, 200),
    seed: int = 0,
) -> None:
    """For ``num_images`` held-out images (one row each): for each context size, the context
    pixels (the rest blue) and the predicted mean image, then the original image. Needs an
    `metajax.tasks.ImageCompletion` distribution.

    Args:
      learner: a Neural Process on pixel coordinates.
      tasks: the test `metajax.tasks.ImageCompletion`.
      params: the meta-parameters.
      path: the PNG to write.
      num_images: rows.
      context_sizes: context pixels of each pair of columns.
      seed: picks the images.
    """
    from metajax.algorithms.neural_process import first_points
    from metajax.tasks.completion import pixel_coordinates

    h, w, _ = tasks.image_shape
    grid = pixel_coordinates(h, w)
    batch = sample_tasks(tasks, jax.random.key(seed), num_images)

    @jax.jit
    def complete(task):
        points = task.points()
        shown, means = [], []
        for n in context_sizes:
            context, _ = first_points(points, n)
            shown.append(context)
            means.append(learner.predict(learner.adapt(params, context), grid).mean[:, 0])
        return points, shown, jnp.stack(means)

    points, shown, means = jax.vmap(complete)(batch)
    cols = 2 * len(context_sizes) + 1
    fig, axes = plt.subplots(num_images, cols, figsize=(1.3 * cols, 1.3 * num_images),
                             squeeze=False)  # fmt: skip
    for i in range(num_images):
        original = jnp.zeros(h * w)
        real = points.weights()[i] > 0
        rows = jnp.round((points.x[i, :, 0] + 1) / 2 * (h - 1)).astype(int)
        cols_ = jnp.round((points.x[i, :, 1] + 1) / 2 * (w - 1)).astype(int)
        original = original.at[jnp.where(real, rows * w + cols_, h * w)].set(
            points.y[i, :, 0], mode="drop"
        )
        for j, n in enumerate(context_sizes):
            mask = shown[j].weights()[i] > 0
            where = jnp.where(mask, rows * w + cols_, h * w)
            # Unobserved pixels in blue, observed ones in grey levels.
            partial = jnp.tile(jnp.array([0.25, 0.35, 0.7]), (h * w, 1))
            partial = partial.at[where].set(points.y[i, :, :1].repeat(3, -1), mode="drop")
            axes[i, 2 * j].imshow(jnp.clip(partial.reshape(h, w, 3), 0, 1))
            axes[i, 2 * j + 1].imshow(means[i, j].reshape(h, w), cmap="gray", vmin=0, vmax=1)
            if i == 0:
                axes[i, 2 * j].set_title(f"{n} pixels", fontsize=8)
                axes[i, 2 * j + 1].set_title("mean", fontsize=8)
        axes[i, -1].imshow(original.reshape(h, w), cmap="gray", vmin=0, vmax=1)
        if i == 0:
            axes[i, -1].set_title("original", fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
