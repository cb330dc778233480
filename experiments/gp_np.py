"""The GP regression table and figure of the Neural Process family (issue 16).

    python experiments/gp_np.py RUN [RUN ...] [--figure experiments/figures/gp_np.png]

Each RUN is a finished ``metajax train gp-*`` folder. Prints, as markdown, each run's target
and context log-likelihood (from its ``results.json``) beside the exact Gaussian-process
posterior on the same test functions (the oracle: the true kernel, known to it), then the
target log-likelihood against the number of context points (the first N points of each
function as the context, the rest as targets). With ``--figure``: three test functions with
each model's predictive mean and 2-sigma band, and the curve against N.

The "all points" column scores every point of a function, the context included, given the
context: the protocol of the Neural-Process-Family benchmarks, whose targets include the
context points. For latent models, "all points, joint (IW)" is the importance-weighted
estimate of the joint ``log p(y_all | C)`` per point, the quantity those benchmarks score for
latent models (a log mean over z of the product over points), where "all points" averages
each point's own predictive log-density.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from metajax.algorithms.neural_process import first_points, weighted_mean  # noqa: E402
from metajax.core.types import Split, sample_tasks  # noqa: E402
from metajax.tasks.gp import kernel_matrix  # noqa: E402
from metajax.training.evaluate import evaluate, mean_ci95  # noqa: E402
from metajax.training.trainer import load_state  # noqa: E402

SIZES = (3, 5, 10, 15, 20, 25, 30, 35, 40, 45)
_LOG_2PI = math.log(2 * math.pi)


def oracle_point_ll(dist, info, context: Split, targets: Split) -> jax.Array:
    """``[n]`` log p(y_i | context) of each target under the true GP posterior."""
    x = jnp.concatenate([context.x, targets.x])
    k = kernel_matrix(dist.kernel, x, info["length_scale"], info["scale"], info["period"])
    n = context.x.shape[0]
    mc = context.weights()
    noise = dist.observation_noise**2
    # Padded context rows: unit variance, no correlation, no data; they drop out exactly.
    kcc = k[:n, :n] * mc[:, None] * mc[None, :] + jnp.diag(noise * mc + (1 - mc))
    ktc = k[n:, :n] * mc[None, :]
    yc = context.y[:, 0] * mc
    chol = jnp.linalg.cholesky(kcc)
    alpha = jax.scipy.linalg.cho_solve((chol, True), yc)
    mean = ktc @ alpha
    v = jax.scipy.linalg.solve_triangular(chol, ktc.T, lower=True)
    var = jnp.diag(k[n:, n:]) - jnp.sum(v * v, 0) + noise
    return -0.5 * ((targets.y[:, 0] - mean) ** 2 / var + jnp.log(var) + _LOG_2PI)


def oracle(dist, num_tasks: int, seed: int) -> dict[str, dict[str, float]]:
    """The oracle's metrics on `evaluate`'s test functions (same keys, same tasks)."""
    keys = jax.random.split(jax.random.key(seed), num_tasks)

    @jax.jit
    def one(key):
        task = dist.sample(key)
        points = task.points()
        out = {
            "log_likelihood": weighted_mean(
                oracle_point_ll(dist, task.info, task.support, task.query), task.query),
            "context_log_likelihood": weighted_mean(
                oracle_point_ll(dist, task.info, task.support, task.support), task.support),
            "all_points_log_likelihood": weighted_mean(
                oracle_point_ll(dist, task.info, task.support, points), points),
        }  # fmt: skip
        for n in SIZES:
            c, t = first_points(points, n)
            out[f"log_likelihood_context_{n}"] = weighted_mean(
                oracle_point_ll(dist, task.info, c, t), t
            )
        return out

    per_task = jax.lax.map(one, keys)
    return {k: mean_ci95(np.asarray(v)) for k, v in per_task.items()}


def all_points(learner, dist, params, num_tasks: int, seed: int) -> dict[str, float]:
    """``all_points_log_likelihood`` on `evaluate`'s test functions: every point of a function,
    the context included, given the context."""
    learner = dataclasses.replace(learner, eval_context_sizes=())
    metrics = evaluate(learner, dist, params, num_tasks=num_tasks, seed=seed)
    return metrics["all_points_log_likelihood"]


def all_points_joint(learner, dist, params, num_tasks: int, seed: int) -> dict[str, float] | None:
    """A latent model's importance-weighted estimate of ``log p(y_all | C) / n`` on the same
    test functions: the joint likelihood of all of a function's points given its context,
    which is what the Neural-Process-Family benchmarks score for latent models (a log mean
    over z of the product over points). ``None`` for a conditional model."""
    keys = jax.random.split(jax.random.key(seed), num_tasks)
    if learner.adapt(params, dist.sample(keys[0]).support).latent is None:
        return None

    @jax.jit
    def one(key):
        task = dist.sample(key)
        points = task.points()
        bounds = learner.bounds(params, task.support, points, jax.random.fold_in(key, 6), points)
        return bounds["iw_log_likelihood"]

    return mean_ci95(np.asarray(jax.lax.map(one, keys)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--figure", default=None)
    parser.add_argument("--curve-tasks", type=int, default=1000)
    args = parser.parse_args()
    rows, curves, models = [], {}, []
    dist = None
    for run in args.runs:
        config, experiment, state = load_state(run)
        results = json.loads((Path(run) / "results.json").read_text())
        dist = experiment.test_tasks
        learner = dataclasses.replace(experiment.learner, eval_context_sizes=SIZES)
        curve = evaluate(learner, dist, state.params, num_tasks=args.curve_tasks,
                         seed=config.eval_seed)  # fmt: skip
        name = config.algorithm
        every = all_points(experiment.learner, dist, state.params, 2000, config.eval_seed)
        joint = all_points_joint(experiment.learner, dist, state.params, 2000, config.eval_seed)
        rows.append((name, {**results["metrics"], "all": every, "joint": joint},
                     results["train_s"], results["step"]))  # fmt: skip
        curves[name] = curve
        models.append((name, experiment.learner, state.params))
    best = oracle(dist, 2000, 1234)
    curves["GP oracle"] = oracle(dist, args.curve_tasks, 1234)

    def cell(m, key):
        return f"{m[key]['mean']:.2f} +/- {m[key]['ci95']:.2f}"

    print(f"kernel {dist.kernel}, random hyperparameters {dist.random_hyperparameters}\n")
    print("| model | steps | train | target log-lik. | context log-lik. | all points | "
          "all points, joint (IW) | target MSE |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, m, train_s, step in rows:
        joint = cell(m, "joint") if m["joint"] else ""
        print(f"| {name} | {step:,} | {train_s:.0f} s | {cell(m, 'log_likelihood')} | "
              f"{cell(m, 'context_log_likelihood')} | {cell(m, 'all')} | {joint} | "
              f"{cell(m, 'mse')} |")  # fmt: skip
    print(f"| GP oracle (true kernel) | | | {cell(best, 'log_likelihood')} | "
          f"{cell(best, 'context_log_likelihood')} | "
          f"{cell(best, 'all_points_log_likelihood')} | | |\n")  # fmt: skip
    print("| N context points | " + " | ".join(str(n) for n in SIZES) + " |")
    print("| --- |" + " --- |" * len(SIZES))
    for name, curve in curves.items():
        values = [f"{curve[f'log_likelihood_context_{n}']['mean']:.2f}" for n in SIZES]
        print(f"| {name} | " + " | ".join(values) + " |")
    if args.figure:
        figure(models, curves, dist, args.figure)
        print(f"\nwrote {args.figure}")


def figure(models, curves, dist, path) -> None:
    grid = jnp.linspace(-2, 2, 300)[:, None]
    batch = sample_tasks(dist, jax.random.key(3), 3)
    fig, axes = plt.subplots(len(models), 4, figsize=(16, 2.6 * len(models)), squeeze=False)
    for r, (name, learner, params) in enumerate(models):
        for i in range(3):
            s, q = jax.tree.map(lambda a, i=i: a[i], (batch.support, batch.query))
            out = learner.predict(learner.adapt(params, s), grid)
            ax = axes[r, i]
            ax.fill_between(grid[:, 0], out.mean[:, 0] - 2 * out.scale[:, 0],
                            out.mean[:, 0] + 2 * out.scale[:, 0], alpha=0.25)  # fmt: skip
            ax.plot(grid[:, 0], out.mean[:, 0])
            ax.plot(q.x[q.mask, 0], q.y[q.mask, 0], "o", color="0.55", ms=2.5)
            ax.plot(s.x[s.mask, 0], s.y[s.mask, 0], "k^", ms=5)
            ax.set_title(f"{name}: {int(s.mask.sum())} context points", fontsize=9)
        axes[r, 3].axis("off")
    ax = fig.add_subplot(1, 4, 4)
    for name, curve in curves.items():
        means = [curve[f"log_likelihood_context_{n}"]["mean"] for n in SIZES]
        ax.plot(SIZES, means, "o-" if name != "GP oracle" else "k--", label=name, ms=3)
    ax.set_xlabel("context points N")
    ax.set_ylabel("target log-likelihood per point")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
