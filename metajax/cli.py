"""The ``metajax`` command: ``train``, ``eval`` and ``list``."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import jax

from metajax import config as config_lib
from metajax.algorithms.neural_process import NeuralProcess
from metajax.errors import UserError
from metajax.files import dumps, write_atomic
from metajax.tasks.completion import ImageCompletion
from metajax.training.evaluate import evaluate
from metajax.training.trainer import (
    NonFiniteLossError,
    load_state,
    read_run_config,
    run_config,
    train,
)

# Errors that are the user's to fix (a config, a data file, a run folder): one line, exit 2.
# Anything else is a bug and keeps its traceback.
USER_ERRORS = (UserError,)


def _format_metrics(metrics: dict[str, dict[str, float]]) -> str:
    def line(name: str, v: dict[str, float]) -> str:
        diverged = f"; {v['nonfinite']} tasks diverged (NaN/Inf)" if v.get("nonfinite") else ""
        return f"  {name:<16} {v['mean']:.4f} +/- {v['ci95']:.4f} (95% CI){diverged}"

    return "\n".join(line(k, v) for k, v in metrics.items())


def _with_data_dir(config: config_lib.Config, data_dir: str | None) -> config_lib.Config:
    if data_dir is None:
        return config
    if "data_dir" not in {f.name for f in dataclasses.fields(config.benchmark)}:
        raise config_lib.ConfigError(f"--data-dir: {config.name} reads no data files.")
    return config.replace(data_dir=str(Path(data_dir).expanduser().resolve()))


def _evaluate_run(
    workdir: Path, num_tasks: int | None, changes: Sequence[str] = (), data_dir: str | None = None
) -> tuple[str, dict]:
    config = _with_data_dir(read_run_config(workdir), data_dir)
    _, _, state = load_state(workdir, config=config)
    config = config_lib.override(config, changes)
    experiment = config.build()
    wanted = jax.eval_shape(experiment.learner.init, jax.random.key(0))
    if jax.tree.map(lambda a: a.shape, wanted) != jax.tree.map(lambda a: a.shape, state.params):
        raise config_lib.ConfigError(
            f"{workdir} was trained with a model whose shape {', '.join(changes)} would change "
            "(for example a classifier head of another width). Evaluate it with its training "
            "n_way, or train a ProtoNet, whose n_way is free at test time."
        )
    trainer = config.trainer
    metrics = evaluate(
        experiment.learner,
        experiment.test_tasks,
        state.params,
        num_tasks=trainer.eval_tasks if num_tasks is None else num_tasks,
        seed=trainer.eval_seed,
    )
    return config.name, metrics


def start_distributed(
    coordinator: str | None, num_processes: int | None, process_id: int | None
) -> None:
    """Joins this process to a multi-process run (`jax.distributed.initialize`).

    Each of ``coordinator`` (``host:port`` of process 0), ``num_processes`` and ``process_id``
    defaults to ``$JAX_COORDINATOR_ADDRESS``, ``$JAX_NUM_PROCESSES`` and ``$JAX_PROCESS_ID``;
    where none is set, JAX detects the cluster itself (SLURM, Cloud TPU). On CPUs the
    processes exchange gradients over gloo.
    """
    env = os.environ
    coordinator = coordinator or env.get("JAX_COORDINATOR_ADDRESS") or None
    counts = {}
    for flag, value, var in (("--num-processes", num_processes, "JAX_NUM_PROCESSES"),
                             ("--process-id", process_id, "JAX_PROCESS_ID")):  # fmt: skip
        if value is None and env.get(var, "") != "":
            try:
                value = int(env[var])
            except ValueError:
                raise config_lib.ConfigError(
                    f"${var} must be an integer, got {env[var]!r}."
                ) from None
        counts[flag] = value
    num_processes, process_id = counts["--num-processes"], counts["--process-id"]
    given = [coordinator is not None, num_processes is not None, process_id is not None]
    if any(given) and not all(given):
        raise config_lib.ConfigError(
            "--distributed outside SLURM or Cloud TPU needs all three of --coordinator HOST:PORT, "
            "--num-processes N and --process-id I (or $JAX_COORDINATOR_ADDRESS, "
            "$JAX_NUM_PROCESSES, $JAX_PROCESS_ID)."
        )
    if num_processes is not None and (num_processes < 1 or not 0 <= process_id < num_processes):
        raise config_lib.ConfigError(
            f"--process-id must be in [0, --num-processes), and --num-processes >= 1; got "
            f"{process_id} and {num_processes}."
        )
    # Cross-process collectives between CPU devices need an implementation (gloo ships in
    # jaxlib); accelerators use their own, so this changes nothing on them.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator, num_processes, process_id)


def cmd_train(args: argparse.Namespace) -> int:
    stray = [f for f, v in (("--coordinator", args.coordinator), ("--num-processes",
             args.num_processes), ("--process-id", args.process_id)) if v is not None]  # fmt: skip
    if stray and not args.distributed:
        raise config_lib.ConfigError(f"{', '.join(stray)} only apply with --distributed.")
    if args.distributed:
        start_distributed(args.coordinator, args.num_processes, args.process_id)
    config = config_lib.override(config_lib.get_config(args.config), args.set or [])
    config = _with_data_dir(config, args.data_dir)
    workdir = Path(args.workdir or f"runs/{config.name}")
    config = run_config(config, workdir)
    experiment = config.build()
    trainer = config.trainer
    print(f"metajax: training {config.name} for {trainer.steps:,} meta-steps in {workdir}")
    t0 = time.perf_counter()
    try:
        state = train(config, workdir, experiment=experiment, progress=args.progress)
    except NonFiniteLossError as err:
        print(f"metajax: error: {err}", file=sys.stderr)
        return 1
    wall = time.perf_counter() - t0
    print(f"metajax: trained to step {int(state.step):,} in {wall:.1f}s")
    metrics = evaluate(experiment.learner, experiment.test_tasks, state.params,
                       num_tasks=trainer.eval_tasks, seed=trainer.eval_seed)  # fmt: skip
    print(f"metajax: evaluation on {trainer.eval_tasks} test tasks:\n{_format_metrics(metrics)}")
    if jax.process_index() == 0:
        # Written atomically, so a crash mid-write never leaves a truncated results file.
        record = {"config": config.name, "algorithm": config.algorithm, "seed": trainer.seed,
                  "step": int(state.step), "train_s": round(wall, 1),
                  "eval_tasks": trainer.eval_tasks, "metrics": metrics}  # fmt: skip
        write_atomic(workdir / "results.json", dumps(record, indent=1) + "\n")
        # Imported here: matplotlib adds ~0.4 s to every command's start, and only a finished
        # training run draws.
        from metajax.training.plots import (
            plot_completion,
            plot_process,
            plot_regression_adaptation,
        )

        plot = None
        if isinstance(experiment.test_tasks, ImageCompletion):
            plot = workdir / "completion.png"
            plot_completion(experiment.learner, experiment.test_tasks, state.params, plot)
        elif isinstance(experiment.learner, NeuralProcess):
            if hasattr(experiment.test_tasks, "x_range"):
                plot = workdir / "predictions.png"
                plot_process(experiment.learner, experiment.test_tasks, state.params, plot)
        elif hasattr(experiment.test_tasks, "function"):
            plot = workdir / "adaptation.png"
            plot_regression_adaptation(
                experiment.learner, experiment.test_tasks, state.params, plot
            )
        if plot is not None:
            print(f"metajax: wrote {plot}")
    return 0


def _eval_one_shot_runs(args: argparse.Namespace) -> int:
    from metajax.datasets import omniglot_runs
    from metajax.trained import load
    from metajax.training.evaluate import mean_ci95

    if args.n_way is not None or args.k_shot is not None or args.tasks is not None:
        raise config_lib.ConfigError(
            "--omniglot-runs fixes the episodes (20-way 1-shot, 20 runs); drop --n-way, "
            "--k-shot and --tasks."
        )
    runs = omniglot_runs.load_one_shot_runs(args.omniglot_runs)
    learner = load(args.workdir)
    rates = omniglot_runs.one_shot_error_rates(learner.predict, runs)
    name = learner.config.name if learner.config is not None else ""
    metrics = {"error_rate": mean_ci95(rates), "run_error_rates": rates.tolist()}
    if args.json:
        print(dumps({"config": name, "metrics": metrics}))
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
    for flag, value, minimum in (("--tasks", args.tasks, 2), ("--n-way", args.n_way, 1),
                                 ("--k-shot", args.k_shot, 1)):  # fmt: skip
        if value is not None and value < minimum:
            raise config_lib.ConfigError(f"{flag} must be >= {minimum}, got {value}.")
    changes = [f"{k}={v}" for k, v in (("n_way", args.n_way), ("k_shot", args.k_shot))
               if v is not None]  # fmt: skip
    name, metrics = _evaluate_run(Path(args.workdir), args.tasks, changes, args.data_dir)
    if args.json:
        print(dumps({"config": name, "metrics": metrics}))
    else:
        print(f"{name} ({args.workdir}):\n{_format_metrics(metrics)}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from metajax import tasks

    print("configs:")
    for name, factory in sorted(config_lib.available_configs().items()):
        cfg = factory()
        about = cfg.description or f"{cfg.algorithm} on {type(cfg.benchmark).__name__}"
        print(f"  {name:<28} {about}")
    print("algorithms:")
    for name, cls in sorted(config_lib.algorithms().items()):
        print(f"  {name:<28} {cls.summary}")
    print("task distributions:")
    for name in tasks.__all__:
        doc = (getattr(tasks, name).__doc__ or "").strip().splitlines()
        print(f"  {name:<28} {doc[0] if doc else ''}")
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
        help="join a multi-process run first (jax.distributed; with --set shard_tasks=true)",
    )
    p.add_argument(
        "--coordinator",
        metavar="HOST:PORT",
        help="with --distributed: process 0's address (else $JAX_COORDINATOR_ADDRESS)",
    )
    p.add_argument(
        "--num-processes",
        type=int,
        help="with --distributed: how many processes (else $JAX_NUM_PROCESSES)",
    )
    p.add_argument(
        "--process-id",
        type=int,
        help="with --distributed: this process's index (else $JAX_PROCESS_ID)",
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
    try:
        return args.func(args)
    except USER_ERRORS as err:
        print(f"metajax: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
