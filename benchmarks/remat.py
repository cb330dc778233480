"""Memory-bounded meta-gradients and compile time: peak memory, time and compile time of
second-order MAML against the number of inner steps, for the inner loop unrolled, under
``lax.scan``, and under ``lax.scan`` with rematerialization of each inner step; and of iMAML
(``imaml``: the implicit meta-gradient, inner loop under ``lax.scan``, never differentiated).

    python -m benchmarks.remat [--steps-list 1,5,10,25]
                               [--modes unrolled,scan,scan+remat,imaml] [--meta-batch 4] [--json]

Workload (a)'s shapes (Conv4, 5-way 1-shot, 15 queries) with a smaller meta-batch. Each
setting runs in a fresh process, so its peak RSS (host memory on CPU; the device's
``peak_bytes_in_use`` where it reports one) is its own. Without remat, reverse mode keeps
every inner step's activations; with ``remat=True`` the shared engine recomputes them in the
backward pass (`metajax.core.inner.adapt`), trading time for memory. An unrolled loop
compiles in time that grows with the steps; a scanned one compiles its body once.
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

# (remat, unroll, implicit) of each mode.
MODES = {
    "unrolled": (False, True, False),
    "scan": (False, False, False),
    "scan+remat": (True, False, False),
    "imaml": (False, False, True),
}


def worker(inner_steps: int, mode: str, meta_batch: int, timed: int) -> dict:
    import jax

    from benchmarks import jax_impls
    from benchmarks.workloads import WORKLOADS, make_data

    w = dataclasses.replace(WORKLOADS["a"], inner_steps=inner_steps, meta_batch=meta_batch)
    remat, unroll, implicit = MODES[mode]
    step, state, _ = jax_impls.build_metajax(
        w, make_data(w), jax_impls.metajax_init(w), remat=remat, unroll=unroll, implicit=implicit
    )
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
        "mode": mode,
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
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(int(args.worker[0]), args.worker[1], args.meta_batch, args.timed)))
        return
    load = os.getloadavg()
    rows = []
    for steps in map(int, args.steps_list.split(",")):
        for mode in args.modes.split(","):
            argv = [sys.executable, "-m", "benchmarks.remat", "--worker", str(steps),
                    mode, "--meta-batch", str(args.meta_batch),
                    "--timed", str(args.timed)]  # fmt: skip
            proc = subprocess.run(argv, capture_output=True, text=True)
            if proc.returncode:
                row = {"inner_steps": steps, "mode": mode, "error": proc.stderr[-300:]}
            else:
                row = json.loads(proc.stdout.strip().splitlines()[-1])
            row["load_avg_1m_before"] = load[0]
            rows.append(row)
            if args.json:
                print(json.dumps(row), flush=True)
    if args.json:
        return
    print(f"second-order MAML (and iMAML), Conv4 5-way 1-shot 15q, meta-batch {args.meta_batch}; "
          f"load average before: {load[0]:.2f}")  # fmt: skip
    print(f"{'inner steps':>11} {'inner loop':>11} {'peak RSS MB':>12} {'device MB':>10} {'s/step':>8} "
          f"{'compile s':>10}")  # fmt: skip
    for r in rows:
        if "error" in r:
            print(f"{r['inner_steps']:>11} {r['mode']:>11}  error: {r['error'][-120:]}")
            continue
        device_mb = f"{r['device_peak_mb']:>10.0f}" if r["device_peak_mb"] else f"{'-':>10}"
        print(f"{r['inner_steps']:>11} {r['mode']:>11} {r['peak_rss_mb']:>12.0f} {device_mb} "
              f"{r['step_s']:>8.3f} {r['compile_s']:>10.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
