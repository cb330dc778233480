"""Memory-bounded meta-gradients: peak memory and time of second-order MAML against the
number of inner steps, with and without rematerialization of each inner step.

    python -m benchmarks.remat [--steps-list 1,5,10,25] [--meta-batch 4] [--json]

Workload (a)'s shapes (Conv4, 5-way 1-shot, 15 queries) with a smaller meta-batch. Each
setting runs in a fresh process, so its peak RSS (host memory on CPU; the device's
``peak_bytes_in_use`` where it reports one) is its own. Without remat, reverse mode keeps
every inner step's activations; with ``remat=True`` the shared engine recomputes them in the
backward pass (`metajax.core.inner.adapt`), trading time for memory.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import time


def worker(inner_steps: int, remat: bool, meta_batch: int, timed: int) -> dict:
    import jax

    from benchmarks import jax_impls
    from benchmarks.workloads import WORKLOADS, make_data

    w = dataclasses.replace(WORKLOADS["a"], inner_steps=inner_steps, meta_batch=meta_batch)
    step, state, _ = jax_impls.build_metajax(w, make_data(w), jax_impls.metajax_init(w), remat)
    t0 = time.perf_counter()
    state = jax.block_until_ready(step(state))
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(timed):
        state = step(state)
    jax.block_until_ready(state)
    stats = jax.devices()[0].memory_stats() or {}
    return {
        "inner_steps": inner_steps,
        "remat": remat,
        "meta_batch": meta_batch,
        "step_s": (time.perf_counter() - t0) / timed,
        "compile_s": compile_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "device_peak_mb": stats.get("peak_bytes_in_use", 0) / 2**20 or None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps-list", default="1,5,10,25")
    parser.add_argument("--meta-batch", type=int, default=4)
    parser.add_argument("--timed", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        steps, remat = int(args.worker[0]), args.worker[1] == "1"
        print(json.dumps(worker(steps, remat, args.meta_batch, args.timed)))
        return
    load = os.getloadavg()
    rows = []
    for steps in map(int, args.steps_list.split(",")):
        for remat in (False, True):
            argv = [sys.executable, "-m", "benchmarks.remat", "--worker", str(steps),
                    str(int(remat)), "--meta-batch", str(args.meta_batch),
                    "--timed", str(args.timed)]  # fmt: skip
            proc = subprocess.run(argv, capture_output=True, text=True)
            if proc.returncode:
                row = {"inner_steps": steps, "remat": remat, "error": proc.stderr[-300:]}
            else:
                row = json.loads(proc.stdout.strip().splitlines()[-1])
            row["load_avg_1m_before"] = load[0]
            rows.append(row)
            if args.json:
                print(json.dumps(row), flush=True)
    if args.json:
        return
    print(f"second-order MAML, Conv4 5-way 1-shot 15q, meta-batch {args.meta_batch}; "
          f"load average before: {load[0]:.2f}")  # fmt: skip
    print(f"{'inner steps':>11} {'remat':>6} {'peak RSS MB':>12} {'device MB':>10} {'s/step':>8} "
          f"{'compile s':>10}")  # fmt: skip
    for r in rows:
        if "error" in r:
            print(f"{r['inner_steps']:>11} {r['remat']!s:>6}  error: {r['error'][-120:]}")
            continue
        device_mb = f"{r['device_peak_mb']:>10.0f}" if r["device_peak_mb"] else f"{'-':>10}"
        print(f"{r['inner_steps']:>11} {r['remat']!s:>6} {r['peak_rss_mb']:>12.0f} {device_mb} "
              f"{r['step_s']:>8.3f} {r['compile_s']:>10.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
