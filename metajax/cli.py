"""The ``metajax`` command: ``train``, ``eval`` and ``list``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import jax

from metajax import config as config_lib
from metajax.datasets.download import DataFileError
from metajax.train import checkpoint
from metajax.train.evaluate import evaluate
from metajax.train.plots import plot_regression_adaptation
from metajax.train.trainer import NonFiniteLossError, load_state, train


def _format_metrics(metrics: dict[str, dict[str, float]]) -> str:
    def line(name: str, v: dict[str, float]) -> str:
        diverged = f"; {v['nonfinite']} tasks diverged (NaN/Inf)" if v.get("nonfinite") else ""
        return f"  {name:<16} {v['mean']:.4f} +/- {v['ci95']:.4f} (95% CI){diverged}"

    return "\n".join(line(k, v) for k, v in metrics.items())


def _evaluate_run(
    workdir: Path, num_tasks: int | None, changes: Sequence[str] = ()
) -> tuple[str, dict]:
    config, _, state = load_state(workdir)
    config = config_lib.override(config, changes)
    experiment = config.build()
    wanted = jax.eval_shape(experiment.algorithm.init, jax.random.key(0))
    if jax.tree.map(lambda a: a.shape, wanted) != jax.tree.map(lambda a: a.shape, state.params):
        raise ValueError(
            f"{workdir} was trained with a model whose shape {', '.join(changes)} would change "
            "(for example a classifier head of another width). Evaluate it with its training "
            "n_way, or train a ProtoNet, whose n_way is free at test time."
        )
    metrics = evaluate(
        experiment, state.params, num_tasks=num_tasks or config.eval_tasks, seed=config.eval_seed
    )
    return config.name, metrics


def cmd_train(args: argparse.Namespace) -> int:
    if args.distributed:
        # Reads the cluster from the environment (SLURM, Cloud TPU, or JAX_COORDINATOR_ADDRESS,
        # JAX_NUM_PROCESSES and JAX_PROCESS_ID); run the same command on every host.
        jax.distributed.initialize()
    config = config_lib.override(config_lib.get_config(args.config), args.set or [])
    workdir = Path(args.workdir or f"runs/{config.name}")
    experiment = config.build()
    print(f"metajax: training {config.name} for {config.steps:,} meta-steps in {workdir}")
    t0 = time.perf_counter()
    try:
        state = train(config, workdir, experiment=experiment, progress=args.progress)
    except NonFiniteLossError as err:
        print(f"metajax: error: {err}", file=sys.stderr)
        return 1
    wall = time.perf_counter() - t0
    print(f"metajax: trained to step {int(state.step):,} in {wall:.1f}s")
    metrics = evaluate(experiment, state.params, num_tasks=config.eval_tasks, seed=config.eval_seed)
    print(f"metajax: evaluation on {config.eval_tasks} test tasks:\n{_format_metrics(metrics)}")
    if jax.process_index() == 0:
        # Written atomically, so a crash mid-write never leaves a truncated results file.
        record = {"config": config.name, "seed": config.seed, "step": int(state.step),
                  "train_s": round(wall, 1), "eval_tasks": config.eval_tasks, "metrics": metrics}  # fmt: skip
        tmp = workdir / "results.json.tmp"
        tmp.write_text(json.dumps(record, indent=1) + "\n")
        tmp.replace(workdir / "results.json")
    if hasattr(experiment.test_tasks, "function"):
        plot = workdir / "adaptation.png"
        plot_regression_adaptation(experiment, state.params, plot)
        print(f"metajax: wrote {plot}")
    return 0


def _eval_one_shot_runs(args: argparse.Namespace) -> int:
    from metajax.datasets import omniglot_runs
    from metajax.learner import load
    from metajax.train.evaluate import mean_ci95

    if args.n_way or args.k_shot or args.tasks:
        raise ValueError(
            "--omniglot-runs fixes the episodes (20-way 1-shot, 20 runs); drop --n-way, "
            "--k-shot and --tasks."
        )
    runs = omniglot_runs.load_one_shot_runs(args.omniglot_runs)
    learner = load(args.workdir)
    rates = omniglot_runs.one_shot_error_rates(learner.predict, runs)
    name = json.loads((Path(args.workdir) / "config.json").read_text()).get("name", "")
    metrics = {"error_rate": mean_ci95(rates), "run_error_rates": rates.tolist()}
    if args.json:
        print(json.dumps({"config": name, "metrics": metrics}))
        return 0
    print(f"{name} ({args.workdir}): Lake et al.'s one-shot runs, error rate per run")
    for run, rate in zip(runs, rates, strict=True):
        print(f"  {run.name}  {100 * rate:5.1f}%")
    mean = metrics["error_rate"]
    print(
        f"  mean   {100 * mean['mean']:5.1f}% +/- {100 * mean['ci95']:.1f} (95% CI over "
        f"{len(runs)} runs); people: {100 * omniglot_runs.HUMAN_ERROR_RATE:.1f}%"
    )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    if args.omniglot_runs:
        return _eval_one_shot_runs(args)
    changes = [f"{k}={v}" for k, v in (("n_way", args.n_way), ("k_shot", args.k_shot)) if v]
    name, metrics = _evaluate_run(Path(args.workdir), args.tasks, changes)
    if args.json:
        print(json.dumps({"config": name, "metrics": metrics}))
    else:
        print(f"{name} ({args.workdir}):\n{_format_metrics(metrics)}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from metajax import algorithms, tasks

    print("configs:")
    for name, factory in sorted(config_lib.available_configs().items()):
        cfg = factory(name=name)
        print(f"  {name:<24} {type(cfg).__name__}, {cfg.steps:,} steps")
    print("algorithms:")
    for name in algorithms.__all__:
        obj = getattr(algorithms, name)
        doc = (obj.__doc__ or "").strip().splitlines()
        print(f"  {name:<24} {doc[0] if doc else ''}")
    print("task distributions:")
    for name in tasks.__all__:
        doc = (getattr(tasks, name).__doc__ or "").strip().splitlines()
        print(f"  {name:<24} {doc[0] if doc else ''}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metajax", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="meta-train a named config")
    p.add_argument("config", help="a config name (see `metajax list`)")
    p.add_argument("--workdir", help="the run's folder (default: runs/CONFIG)")
    p.add_argument(
        "--set", action="extend", nargs="+", metavar="KEY=VALUE", help="override config fields"
    )
    p.add_argument("--data-dir", help="folder with the data archives (else $METAJAX_DATA_DIR)")
    bar = p.add_mutually_exclusive_group()
    bar.add_argument("--progress", action="store_true", default=None, help="force the progress bar")
    bar.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument(
        "--distributed",
        action="store_true",
        help="call jax.distributed.initialize() first (multi-host; with --set shard_tasks=true)",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a trained run")
    p.add_argument("workdir")
    p.add_argument("--tasks", type=int, help="test tasks (default: the config's eval_tasks)")
    p.add_argument("--n-way", type=int, help="classes per test episode (classification)")
    p.add_argument("--k-shot", type=int, help="support examples per class (classification)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--data-dir", help="folder with the data archives (else $METAJAX_DATA_DIR)")
    p.add_argument(
        "--omniglot-runs",
        metavar="PATH",
        help="Lake et al.'s 20-way one-shot runs instead: all_runs.zip or its folder",
    )
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("list", help="show configs, algorithms and task distributions")
    p.set_defaults(func=cmd_list)
    return parser


def compilation_cache_dir() -> Path | None:
    """Where the CLI keeps XLA's persistent compilation cache: ``$METAJAX_COMPILATION_CACHE``
    (``off`` disables it), else ``~/.cache/metajax/xla``. A second run of a config, or a
    resumed one, then skips most of its compile time."""
    env = os.environ.get("METAJAX_COMPILATION_CACHE", "")
    if env.lower() in ("off", "0", "none"):
        return None
    return Path(env).expanduser() if env else Path.home() / ".cache" / "metajax" / "xla"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cache = compilation_cache_dir()
    if cache is not None and jax.config.jax_compilation_cache_dir is None:
        jax.config.update("jax_compilation_cache_dir", str(cache))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    if getattr(args, "data_dir", None):
        os.environ["METAJAX_DATA_DIR"] = args.data_dir
    try:
        return args.func(args)
    except (
        config_lib.ConfigError,
        checkpoint.CheckpointError,
        DataFileError,
        FileNotFoundError,
        ValueError,
    ) as err:
        print(f"metajax: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
