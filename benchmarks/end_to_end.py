"""End-to-end meta-training throughput on the real Omniglot images: episode sampling included.

    python -m benchmarks.end_to_end [--workloads a,d] [--steps 5]
                                    [--impls metajax,torch,learn2learn]
                                    [--loader-workers 0] [--peer-python PATH]

The suite (`benchmarks.suite`) trains on one fixed meta-batch, which isolates the meta-step.
This measures what a user feels: every step draws a fresh meta-batch of 5-way 1-shot,
15-query episodes from the Omniglot "minimal" background set (``small1``, the config
``omniglot-minimal-fomaml``'s training data, read from ``$METAJAX_DATA_DIR`` or
``../shared/data/omniglot``) and takes one meta-step on it, workload (a) (second-order MAML, one
inner step) or (d) (Prototypical Networks), Conv4, meta-batch 32.

- ``metajax``: the library's path: the images live on the device as one uint8 array and
  `metajax.tasks.Episodes` samples the meta-batch inside the jitted step
  (`metajax.training.make_meta_step`).
- ``torch``: the usual PyTorch pipeline: a ``torch.utils.data.Dataset`` whose item is one
  episode drawn on the host (NumPy indexing into the same preprocessed images), batched
  into meta-batches by a ``DataLoader`` (``--loader-workers`` worker processes, 0 by
  default: on 2 cores a worker process takes a core from the model), then the suite's
  task-loop meta-step (`benchmarks.torch_peers`).
- ``learn2learn``: learn2learn's own pipeline: ``MetaDataset`` + ``TaskDataset`` (``NWays``,
  ``KShots``, ``LoadData``, ``RemapLabels``), one ``sample()`` and ``partition_task`` per
  task, then its ``MAML`` clone/adapt loop (workload a only: the suite has no learn2learn
  ProtoNet).

Both see the same images (exported by metajax's loader), the same shapes and the same
threads. Prints a table and one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEER_PYTHON = ROOT / ".venv-bench" / "bin" / "python"
OVERRIDES = ["n_way=5", "k_shot=1", "train_query=15", "meta_batch_size=32",
             "train_rotations=false"]  # fmt: skip


DATA_DIR = os.environ.get("METAJAX_DATA_DIR") or str(ROOT.parent / "shared" / "data" / "omniglot")


def _config(workload: str):
    from metajax.config import get_config, override

    learner = ["algorithm=maml", "inner_steps=1"] if workload == "a" else ["algorithm=protonet"]
    settings = [*OVERRIDES, *learner, f"data_dir={DATA_DIR}"]
    return override(get_config("omniglot-minimal-fomaml"), settings)


def export_images(folder: Path, workloads: list[str]) -> dict:
    """The training images as metajax feeds them to the model (floats in [0, 1]) and each
    workload's initial weights, one ``{workload}.npz`` each, for the peer."""
    import numpy as np

    from benchmarks import jax_impls
    from benchmarks.workloads import WORKLOADS

    train, _ = _config("a").benchmark.load_data()
    images = np.asarray(train.images, np.float32) / 255.0
    for workload in workloads:
        params = jax_impls.export_params(jax_impls.metajax_init(WORKLOADS[workload]))
        np.savez(folder / f"{workload}.npz", images=images, counts=np.asarray(train.counts),
                 **{f"param:{k}": v for k, v in params.items()})  # fmt: skip
    return {"classes": int(images.shape[0]), "shape": list(images.shape)}


def metajax_worker(workload: str, steps: int) -> dict:
    import jax
    import optax

    from benchmarks.workloads import timed_steps
    from metajax.training.trainer import init_state, make_meta_step

    experiment = _config(workload).build()
    optimizer = optax.adam(1e-3)
    step = jax.jit(make_meta_step(experiment.learner, experiment.train_tasks, 32))
    state = init_state(experiment.learner, optimizer, seed=0)
    t0 = time.perf_counter()
    state, metrics = jax.block_until_ready(step(state))
    compile_s = time.perf_counter() - t0
    loss0 = float(metrics["meta_loss"])
    state, per_s = timed_steps(lambda s: step(s)[0], state, steps, jax.block_until_ready)
    return {"meta_loss_first": loss0, "steps_per_s": per_s, "tasks_per_s": 32 * per_s,
            "compile_s": compile_s,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # fmt: skip


def _run(argv: list[str], timeout: float) -> dict:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish in {timeout:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": f"exit {proc.returncode}: {tail[0][:300]}"}
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="a,d")
    parser.add_argument("--impls", default="metajax,torch,learn2learn")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--loader-workers", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument(
        "--peer-python", type=Path, default=Path(os.environ.get("BENCH_PEER_PYTHON", PEER_PYTHON))
    )
    parser.add_argument("--worker", nargs=2, metavar=("IMPL", "WORKLOAD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(metajax_worker(args.worker[1], args.steps)))
        return
    load = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        info = export_images(Path(tmp), args.workloads.split(","))
        for workload in args.workloads.split(","):
            for impl in args.impls.split(","):
                if impl == "learn2learn" and workload != "a":
                    continue
                if impl == "metajax":
                    argv = [sys.executable, "-m", "benchmarks.end_to_end", "--worker", impl,
                            workload, "--steps", str(args.steps)]  # fmt: skip
                else:
                    argv = [str(args.peer_python), str(Path(__file__).with_name("torch_peers.py")),
                            impl, workload, str(args.steps), str(Path(tmp) / f"{workload}.npz"),
                            "--episodes", str(args.loader_workers)]  # fmt: skip
                row = {"impl": impl, "workload": workload, **_run(argv, args.timeout),
                       "load_avg_1m_before": load[0]}  # fmt: skip
                rows.append(row)
                print(json.dumps(row), flush=True)
    print(f"\nOmniglot small1: {info['classes']} classes; load average before {load[0]:.2f}")
    print(
        f"{'workload':<9}{'impl':<12}{'tasks/s':>9}{'steps/s':>9}{'first step s':>13}{'RSS MB':>8}"
    )
    for r in rows:
        if "error" in r:
            print(f"{r['workload']:<9}{r['impl']:<12}  {r['error']}")
            continue
        print(f"{r['workload']:<9}{r['impl']:<12}{r['tasks_per_s']:>9.2f}{r['steps_per_s']:>9.3f}"
              f"{r['compile_s']:>13.1f}{r['peak_rss_mb']:>8.0f}")  # fmt: skip
    for workload in args.workloads.split(","):
        got = {r["impl"]: r for r in rows if r["workload"] == workload and "error" not in r}
        if "metajax" in got and len(got) > 1:
            ratios = ", ".join(f"{i} {got['metajax']['tasks_per_s'] / r['tasks_per_s']:.2f}x"
                               for i, r in got.items() if i != "metajax")  # fmt: skip
            print(f"workload {workload}: metajax tasks/s against {ratios}")


if __name__ == "__main__":
    main()
