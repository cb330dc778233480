"""The benchmark suite: several implementations of each workload, measured in one run.

    python -m benchmarks.suite [--workloads a,b,c,d,e]
                               [--impls metajax,jax,torch,torchfunc,torchopt,learn2learn]
                               [--steps 10] [--json] [--peer-python PATH]
                               [--record FILE] [--worker-timeout 900]

Every (implementation, workload) pair runs in a fresh process of its own, so that its peak
RSS is its own, with the same data and initial weights (`benchmarks.workloads`) and all the
machine's cores. Each reports the meta-loss at step 0 (which must agree across
implementations), the compile (first-call) time, and meta-steps and tasks per second over
``--steps`` timed steps after that. The PyTorch peers (``torch``: a task loop with
autograd; ``torchfunc``: ``torch.func`` vmap and grad of grad; ``torchopt``: TorchOpt's
differentiable optimizer; ``learn2learn``: its ``MAML`` wrapper's clone/adapt, on the MAML
workloads) run in the environment that `benchmarks/setup_peers.sh` creates
(``.venv-bench``, or ``--peer-python``), never in the package's own.

GFLOP/s: each workload's meta-step is counted once, by XLA's cost analysis of the
hand-written JAX program (the algorithm's arithmetic: convolutions, matmuls, elementwise
work), and divided by each implementation's time per step, so the column compares like with
like. The header gives the CPU's float32 peak (cores x clock x 32 FLOP/cycle for two 256-bit
FMA pipes) and what one large XLA matmul reaches. On a GPU, every row also names the device
and its peak allocated memory (``device_peak_mb``).
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

from benchmarks.workloads import WORKLOADS, make_data, timed_steps

JAX_IMPLS = ("metajax", "jax")
TORCH_IMPLS = ("torch", "torchfunc", "torchopt", "learn2learn")
PEER_PYTHON = Path(__file__).resolve().parents[1] / ".venv-bench" / "bin" / "python"
ROOT = Path(__file__).resolve().parents[1]


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
    state, per_s = timed_steps(step, state, steps, jax.block_until_ready)
    device = jax.devices()[0]
    row = {"impl": impl, "workload": workload, "meta_loss_0": loss0,
           "steps_per_s": per_s, "tasks_per_s": per_s * w.meta_batch,
           "compile_s": compile_s, "peak_rss_mb": _peak_rss_mb(),
           "device": "cpu" if device.platform == "cpu" else device.device_kind}  # fmt: skip
    stats = device.memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        row["device_peak_mb"] = stats["peak_bytes_in_use"] / 2**20
    return row


def count_flops(workload: str) -> float:
    """FLOPs of one meta-step, from XLA's cost analysis of the hand-written JAX program."""
    from benchmarks import jax_impls

    w = WORKLOADS[workload]
    step, state, _ = jax_impls.build_jax(w, make_data(w), jax_impls.metajax_init(w))
    return float(step.lower(state).cost_analysis()["flops"])


def cpu_reference() -> dict:
    """The CPU's float32 peak (assumed two 256-bit FMA pipes per core) and a measured
    2048^3 XLA matmul, the practical ceiling the convolutions are compared against."""
    import jax
    import jax.numpy as jnp

    mhz = 0.0
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("cpu MHz"):
                mhz = float(line.split(":")[1])
                break
    a = jnp.ones((2048, 2048), jnp.float32)
    mm = jax.jit(lambda x: x @ x)
    jax.block_until_ready(mm(a))
    t0 = time.perf_counter()
    for _ in range(5):
        jax.block_until_ready(mm(a))
    gflops = 5 * 2 * 2048**3 / (time.perf_counter() - t0) / 1e9
    return {"cores": os.cpu_count(), "mhz": mhz, "peak_gflops": os.cpu_count() * mhz * 32 / 1e3,
            "matmul_gflops": gflops}  # fmt: skip


def _subprocess_json(
    argv: list[str], env: dict | None = None, timeout: float | None = None
) -> dict:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=env,
                              timeout=timeout)  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish in {timeout:.0f} s (compile and 3 timed steps)"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        text = (proc.stderr or proc.stdout).strip()
        # The exception's own line, not the frames or a native stack dump after it.
        errors = [ln for ln in text.splitlines() if "Error" in ln or "error:" in ln]
        first = (errors or text.splitlines()[-1:] or ["no output"])[-1]
        return {"error": f"exit {proc.returncode}: {first.strip()[:300]}", "log_tail": text[-3000:]}
    return json.loads(lines[-1])


def write_shared(workload: str, folder: Path) -> Path:
    """The workload's data and metajax's initial weights, for the PyTorch peers."""
    from benchmarks import jax_impls

    w = WORKLOADS[workload]
    path = folder / f"{workload}.npz"
    params = jax_impls.export_params(jax_impls.metajax_init(w))
    np.savez(path, **make_data(w), **{f"param:{k}": v for k, v in params.items()})
    return path


def measure(
    impl: str, workload: str, steps: int, shared: Path, peer_python: Path, timeout: float
) -> dict:
    if impl in TORCH_IMPLS:
        if not peer_python.exists():
            return {"impl": impl, "workload": workload,
                    "error": f"no {peer_python}: run bash benchmarks/setup_peers.sh"}  # fmt: skip
        npz = write_shared(workload, shared)
        argv = [str(peer_python), str(Path(__file__).with_name("torch_peers.py")),
                impl, workload, str(steps), str(npz)]  # fmt: skip
    elif impl in JAX_IMPLS:
        argv = [sys.executable, "-m", "benchmarks.suite", "--worker", impl, workload,
                "--steps", str(steps)]  # fmt: skip
    else:
        return {"impl": impl, "workload": workload, "error": f"unknown implementation {impl!r}"}
    return {"impl": impl, "workload": workload, **_subprocess_json(argv, timeout=timeout)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--impls", default=",".join(JAX_IMPLS + TORCH_IMPLS))
    parser.add_argument("--steps", type=int, default=10, help="timed meta-steps (sinusoid: x100)")
    parser.add_argument("--json", action="store_true", help="one JSON line per measurement")
    parser.add_argument("--record", type=Path, help="also append each JSON line to this file")
    parser.add_argument(
        "--worker-timeout",
        type=float,
        default=900,
        help="seconds one implementation may take on one workload; slower is reported as such",
    )
    parser.add_argument(
        "--peer-python",
        type=Path,
        default=Path(os.environ.get("BENCH_PEER_PYTHON", PEER_PYTHON)),
        help="the Python that has PyTorch (default .venv-bench, or $BENCH_PEER_PYTHON)",
    )
    parser.add_argument("--worker", nargs=2, metavar=("IMPL", "WORKLOAD"), help=argparse.SUPPRESS)
    parser.add_argument("--flops-worker", metavar="WORKLOAD", help=argparse.SUPPRESS)
    parser.add_argument("--cpu-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_jax_worker(*args.worker, args.steps)))
        return
    if args.flops_worker:
        print(json.dumps({"flops": count_flops(args.flops_worker)}))
        return
    if args.cpu_worker:
        print(json.dumps(cpu_reference()))
        return
    load = os.getloadavg()
    # FLOP counts and the CPU reference run on the CPU backend, in processes of their own,
    # so that this process never holds an accelerator the measured ones need.
    cpu_env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    me = [sys.executable, "-m", "benchmarks.suite"]
    cpu = _subprocess_json([*me, "--cpu-worker"], cpu_env)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for workload in args.workloads.split(","):
            steps = args.steps * (100 if WORKLOADS[workload].kind == "sinusoid" else 1)
            flops = _subprocess_json([*me, "--flops-worker", workload], cpu_env).get("flops")
            for impl in args.impls.split(","):
                row = measure(
                    impl, workload, steps, Path(tmp), args.peer_python, args.worker_timeout
                )
                row["load_avg_1m_before"] = load[0]
                if flops and "steps_per_s" in row:
                    row["gflops_per_s"] = flops * row["steps_per_s"] / 1e9
                    row["gflop_per_step"] = flops / 1e9
                rows.append(row)
                if args.json:
                    print(json.dumps(row), flush=True)
                if args.record:
                    with args.record.open("a") as f:
                        f.write(json.dumps(row) + "\n")
    if args.json:
        return
    print(f"{os.cpu_count()} cores; load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if "peak_gflops" in cpu:
        print(f"CPU float32 peak {cpu['peak_gflops']:.0f} GFLOP/s ({cpu['cores']} cores x "
              f"{cpu['mhz']:.0f} MHz x 32); a 2048^3 XLA matmul reaches "
              f"{cpu['matmul_gflops']:.0f} GFLOP/s")  # fmt: skip
    devices = sorted({r["device"] for r in rows if "device" in r})
    print(f"devices: {', '.join(devices)}")
    header = f"{'workload':<9}{'impl':<11}{'loss@0':>8}{'tasks/s':>10}{'steps/s':>9}"
    print(header + f"{'GFLOP/s':>9}{'compile s':>10}{'peak RSS MB':>12}{'device MB':>10}")
    for r in rows:
        if "error" in r:
            print(f"{r['workload']:<9}{r['impl']:<11}  {r['error']}")
            continue
        device_mb = f"{r['device_peak_mb']:>10.0f}" if "device_peak_mb" in r else f"{'-':>10}"
        print(f"{r['workload']:<9}{r['impl']:<11}{r['meta_loss_0']:>8.4f}{r['tasks_per_s']:>10.1f}"
              f"{r['steps_per_s']:>9.2f}{r.get('gflops_per_s', float('nan')):>9.1f}"
              f"{r['compile_s']:>10.2f}{r['peak_rss_mb']:>12.0f}{device_mb}")  # fmt: skip
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
