"""Soak test: sinusoid MAML trained for a long time, with periodic evaluation, checkpoints
and metrics lines, as a long `metajax train` run does. Reports the resident memory over time
and every XLA compilation after warm-up; both should stay flat (a leak or a recompilation per
step would show here long before a real run dies of it). Not part of CI.

Run (OpenBLAS's machine overrides unset, as on a user's machine):

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks.soak --minutes 30

It prints one line per report interval and a summary, and writes ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import jax

from metajax.config import get_config
from metajax.training import checkpoint
from metajax.training.evaluate import evaluate
from metajax.training.runfiles import MetricsLog
from metajax.training.trainer import init_state, make_meta_step, make_train_fn

COMPILES: list[tuple[float, str]] = []


def _on_event(event: str, duration: float, **kwargs) -> None:
    if event == "/jax/core/compile/backend_compile_duration":
        COMPILES.append((time.perf_counter(), event))


def rss_mb() -> float:
    """The current resident set size (VmRSS) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--warmup-minutes", type=float, default=1.0)
    parser.add_argument("--report-every", type=float, default=60.0, help="seconds")
    parser.add_argument("--steps-per-call", type=int, default=100)
    parser.add_argument("--eval-every", type=int, default=2000, help="meta-steps")
    parser.add_argument("--checkpoint-every", type=int, default=1000, help="meta-steps")
    parser.add_argument("--out", default="soak.json")
    args = parser.parse_args(argv)

    jax.monitoring.register_event_duration_secs_listener(_on_event)
    config = get_config("sinusoid-maml")
    experiment = config.build()
    trainer = config.trainer
    workdir = Path(tempfile.mkdtemp(prefix="metajax-soak-"))
    step_fn = make_meta_step(experiment.learner, experiment.train_tasks, trainer.meta_batch_size)
    train_fn = make_train_fn(step_fn)
    state = init_state(experiment.learner, experiment.optimizer, trainer.seed)
    load = os.getloadavg()
    print(
        f"soak: {args.minutes} min of sinusoid-maml in {workdir}; load average before "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; jax {jax.__version__}",
        flush=True,
    )

    t0 = time.perf_counter()
    warm_at = t0 + 60 * args.warmup_minutes
    end = t0 + 60 * args.minutes
    next_report = t0 + args.report_every
    rows, step = [], 0
    saver = checkpoint.Checkpointer(workdir / "checkpoints", keep=3, async_save=True,
                                    metadata={"algorithm": config.algorithm})  # fmt: skip
    with MetricsLog(workdir / "metrics.jsonl") as log, saver:
        while time.perf_counter() < end:
            state, metrics = train_fn(state, args.steps_per_call)
            step += args.steps_per_call
            log.write({"step": step, "meta_loss": float(metrics["meta_loss"][-1])})
            if step % args.checkpoint_every == 0:
                saver.save(step, state)
            if step % args.eval_every == 0:
                result = evaluate(experiment.learner, experiment.test_tasks, state.params,
                                  num_tasks=100, seed=trainer.eval_seed)  # fmt: skip
                mse = result[next(iter(result))]["mean"]
            now = time.perf_counter()
            if now >= next_report:
                after_warm = sum(1 for t, _ in COMPILES if t > warm_at)
                row = {"minute": round((now - t0) / 60, 2), "step": step, "rss_mb": round(rss_mb(), 1),
                       "peak_rss_mb": round(peak_rss_mb(), 1), "compiles": len(COMPILES),
                       "compiles_after_warmup": after_warm, "load1": round(os.getloadavg()[0], 2),
                       "eval_mse": round(mse, 4) if step >= args.eval_every else None}  # fmt: skip
                rows.append(row)
                print(json.dumps(row), flush=True)
                next_report += args.report_every
    final = {"minutes": args.minutes, "steps": step, "rows": rows,
             "compiles_total": len(COMPILES),
             "compiles_after_warmup": sum(1 for t, _ in COMPILES if t > warm_at)}  # fmt: skip
    Path(args.out).write_text(json.dumps(final, indent=1) + "\n")
    print(
        f"soak: {step:,} steps; compilations {len(COMPILES)} in all, "
        f"{final['compiles_after_warmup']} after the {args.warmup_minutes}-minute warm-up; "
        f"RSS {rows[0]['rss_mb'] if rows else '?'} MB at the first report, "
        f"{rows[-1]['rss_mb'] if rows else '?'} MB at the last",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
