"""The benchmark suite: several implementations of each workload, measured in one run.

    python -m benchmarks.suite [--workloads a,b,c,d,e] [--impls metajax,jax,torch,torchfunc]
                               [--steps 10] [--json]

Every (implementation, workload) pair runs in a fresh process of its own, so that its peak
RSS is its own, with the same data and initial weights (`benchmarks.workloads`) and all the
machine's cores. Each reports the meta-loss at step 0 (which must agree across
implementations), the compile (first-call) time, and meta-steps and tasks per second over
``--steps`` timed steps after that. The PyTorch peers (``torch``: a task loop with
autograd; ``torchfunc``: ``torch.func`` vmap and grad of grad) run in the environment that
`benchmarks/setup_peers.sh` creates (``.venv-bench``), never in the package's own.
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

import numpy as np

from benchmarks.workloads import WORKLOADS, make_data

JAX_IMPLS = ("metajax", "jax")
TORCH_IMPLS = ("torch", "torchfunc")
PEER_PYTHON = Path(__file__).resolve().parents[1] / ".venv-bench" / "bin" / "python"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_jax_worker(impl: str, workload: str, steps: int) -> dict:
    import jax

    from benchmarks import jax_impls

    w = WORKLOADS[workload]
    data = make_data(w)
    params = jax_impls.metajax_init(w)
    step, state, meta_loss = jax_impls.BUILDERS[impl](w, data, params)
    loss0 = float(meta_loss(state))
    t0 = time.perf_counter()
    state = jax.block_until_ready(step(state))
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        state = step(state)
    jax.block_until_ready(state)
    per_s = steps / (time.perf_counter() - t0)
    return {"impl": impl, "workload": workload, "meta_loss_0": loss0,
            "steps_per_s": per_s, "tasks_per_s": per_s * w.meta_batch,
            "compile_s": compile_s, "peak_rss_mb": _peak_rss_mb()}  # fmt: skip


def write_shared(workload: str, folder: Path) -> Path:
    """The workload's data and metajax's initial weights, for the PyTorch peers."""
    from benchmarks import jax_impls

    w = WORKLOADS[workload]
    path = folder / f"{workload}.npz"
    params = jax_impls.export_params(jax_impls.metajax_init(w))
    np.savez(path, **make_data(w), **{f"param:{k}": v for k, v in params.items()})
    return path


def measure(impl: str, workload: str, steps: int, shared: Path) -> dict:
    if impl in TORCH_IMPLS:
        if not PEER_PYTHON.exists():
            return {"impl": impl, "workload": workload,
                    "error": "no .venv-bench: run bash benchmarks/setup_peers.sh"}  # fmt: skip
        npz = write_shared(workload, shared)
        argv = [str(PEER_PYTHON), str(Path(__file__).with_name("torch_peers.py")),
                impl, workload, str(steps), str(npz)]  # fmt: skip
    else:
        argv = [sys.executable, "-m", "benchmarks.suite", "--worker", impl, workload,
                "--steps", str(steps)]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=Path(__file__).parents[1])
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"impl": impl, "workload": workload, "error": tail[0][:200]}
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--impls", default=",".join(JAX_IMPLS + TORCH_IMPLS))
    parser.add_argument("--steps", type=int, default=10, help="timed meta-steps (sinusoid: x100)")
    parser.add_argument("--json", action="store_true", help="one JSON line per measurement")
    parser.add_argument("--worker", nargs=2, metavar=("IMPL", "WORKLOAD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_jax_worker(*args.worker, args.steps)))
        return
    load = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for workload in args.workloads.split(","):
            steps = args.steps * (100 if WORKLOADS[workload].kind == "sinusoid" else 1)
            for impl in args.impls.split(","):
                row = measure(impl, workload, steps, Path(tmp))
                row["load_avg_1m_before"] = load[0]
                rows.append(row)
                if args.json:
                    print(json.dumps(row), flush=True)
    if args.json:
        return
    print(f"{os.cpu_count()} cores; load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    header = f"{'workload':<9}{'impl':<12}{'loss@0':>9}{'tasks/s':>10}{'steps/s':>9}"
    print(header + f"{'compile s':>11}{'peak RSS MB':>13}")
    for r in rows:
        if "error" in r:
            print(f"{r['workload']:<9}{r['impl']:<12}  {r['error']}")
            continue
        print(f"{r['workload']:<9}{r['impl']:<12}{r['meta_loss_0']:>9.4f}{r['tasks_per_s']:>10.1f}"
              f"{r['steps_per_s']:>9.2f}{r['compile_s']:>11.2f}{r['peak_rss_mb']:>13.0f}")  # fmt: skip
    for workload in args.workloads.split(","):
        got = {r["impl"]: r for r in rows if r["workload"] == workload and "error" not in r}
        losses = [r["meta_loss_0"] for r in got.values()]
        if len(losses) > 1 and not np.allclose(losses, losses[0], rtol=1e-3):
            print(f"WARNING: workload {workload}: step-0 meta-losses differ: {losses}")
        if "metajax" in got:
            ratios = ", ".join(
                f"{impl} {got['metajax']['tasks_per_s'] / r['tasks_per_s']:.2f}x"
                for impl, r in got.items()
                if impl != "metajax"
            )
            print(f"workload {workload}: metajax tasks/s against {ratios}")


if __name__ == "__main__":
    main()
