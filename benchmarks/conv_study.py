"""Every convolution formulation for Conv4's layers, and the XLA:CPU flags, measured.

    python -m benchmarks.conv_study [--tasks 4] [--layers] [--flags] [--workload d]

``--layers`` (the default when neither is given) times one 3x3 convolution of each Conv4
layer's shape (80 images a task: 5-way 1-shot with 15 queries) forward, and forward plus
backward (gradients for the kernel and, except in the first layer, the input), with
per-task kernels as MAML's adapted weights have them, for:

- ``xla-nhwc``, ``xla-nchw``: ``lax.conv_general_dilated`` in either layout;
- ``im2col``: `metajax.models.im2col_conv`, patches times one matrix;
- ``taps``: `metajax.models.tap_conv`, one matrix product per kernel tap;

each with the tasks under ``vmap`` and one after another under ``lax.map``. Figures are ms
per task and GFLOP/s (2 x outputs x kh x kw x c_in FLOPs forward, three times that with the
backward pass).

``--flags`` times one meta-step of a suite workload (metajax's CPU default) in a fresh
process for each XLA:CPU flag setting worth trying (XNNPACK, YNNPACK, oneDNN), since flags
are read when JAX starts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

FLAG_SETS = {
    "default": "",
    "xnnpack": "--xla_cpu_use_xnnpack=true",
    "xnn-graph-greedy": "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY",
    "ynn-dot,eltwise,reduce": "--xla_cpu_experimental_ynn_fusion_type=dot,eltwise,reduce",
    "onednn": "--xla_cpu_use_onednn=true",
    "onednn-fusion-dot": "--xla_cpu_experimental_onednn_fusion_type=dot",
    "xnn-graph-greedy+ynn": "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY"
    " --xla_cpu_experimental_ynn_fusion_type=dot,eltwise,reduce",
    "default (again)": "",
}
LAYERS = ((28, 1), (14, 64), (7, 64), (3, 64))  # (side, in channels) of Conv4's 4 convs
IMAGES = 80  # 5 ways x (1 shot + 15 queries)


def _time(fn, *args, reps: int = 2) -> float:
    import jax

    fn = jax.jit(fn)
    jax.block_until_ready(fn(*args))
    t0 = time.perf_counter()
    for _ in range(reps):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / reps


def layers(tasks: int) -> list[dict]:
    import jax
    import jax.numpy as jnp

    from metajax.models import im2col_conv, tap_conv

    def xla(layout):
        def conv(x, k):
            if layout == "NCHW":
                x = x.transpose(0, 3, 1, 2)
            y = jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=(layout, "HWIO", layout))  # fmt: skip
            return y.transpose(0, 2, 3, 1) if layout == "NCHW" else y

        return conv

    convs = {"xla-nhwc": xla("NHWC"), "xla-nchw": xla("NCHW"), "im2col": im2col_conv,
             "taps": tap_conv}  # fmt: skip
    rows = []
    for side, cin in LAYERS:
        kx, kk = jax.random.split(jax.random.key(side))
        xs = jax.random.normal(kx, (tasks, IMAGES, side, side, cin))
        ks = 0.1 * jax.random.normal(kk, (tasks, 3, 3, cin, 64))
        flops = 2 * IMAGES * side * side * 9 * cin * 64
        for name, conv in convs.items():
            argnums = (0, 1) if cin > 1 else 1

            def loss(x, k, conv=conv):
                return jnp.sum(jnp.tanh(conv(x, k)))

            grad = jax.grad(loss, argnums)
            for mode in ("vmap", "map"):
                if mode == "vmap":
                    fwd, bwd = jax.vmap(conv), jax.vmap(grad)
                else:

                    def fwd(x, k, conv=conv):
                        return jax.lax.map(lambda a: conv(*a), (x, k))

                    def bwd(x, k, grad=grad):
                        return jax.lax.map(lambda a: grad(*a), (x, k))

                t_fwd = _time(fwd, xs, ks) / tasks
                t_all = _time(bwd, xs, ks) / tasks
                row = {"layer": f"{side}x{side}x{cin}", "conv": name, "tasks": mode,
                       "fwd_ms": 1e3 * t_fwd, "fwd_gflops": flops / t_fwd / 1e9,
                       "fwd_bwd_ms": 1e3 * t_all,
                       "fwd_bwd_gflops": (3 if cin > 1 else 2) * flops / t_all / 1e9}  # fmt: skip
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def flags_worker(workload: str, steps: int) -> dict:
    import jax

    from benchmarks import jax_impls
    from benchmarks.workloads import WORKLOADS, make_data

    w = WORKLOADS[workload]
    step, state, _ = jax_impls.build_metajax(w, make_data(w), jax_impls.metajax_init(w))
    t0 = time.perf_counter()
    state = jax.block_until_ready(step(state))
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        state = step(state)
    jax.block_until_ready(state)
    per_step = (time.perf_counter() - t0) / steps
    return {"compile_s": compile_s, "s_per_step": per_step, "tasks_per_s": w.meta_batch / per_step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--layers", action="store_true")
    parser.add_argument("--flags", action="store_true")
    parser.add_argument("--workload", default="d")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--flags-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.flags_worker:
        print(json.dumps(flags_worker(args.workload, args.steps)))
        return
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
    if args.layers or not args.flags:
        rows = layers(args.tasks)
        print(f"\n{'layer':9} {'conv':9} {'tasks':5} {'fwd ms':>8} {'GFLOP/s':>8} "
              f"{'fwd+bwd ms':>11} {'GFLOP/s':>8}")  # fmt: skip
        for r in rows:
            print(f"{r['layer']:9} {r['conv']:9} {r['tasks']:5} {r['fwd_ms']:8.1f} "
                  f"{r['fwd_gflops']:8.1f} {r['fwd_bwd_ms']:11.1f} {r['fwd_bwd_gflops']:8.1f}")  # fmt: skip
    if args.flags:
        print(f"\nworkload {args.workload}, metajax's CPU default, {args.steps} timed steps")
        for name, flags in FLAG_SETS.items():
            env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
            cmd = [sys.executable, "-m", "benchmarks.conv_study", "--flags-worker",
                   "--workload", args.workload, "--steps", str(args.steps)]  # fmt: skip
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode:
                print(f"{name:24} failed: {proc.stderr.strip().splitlines()[-1:]}", flush=True)
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"{name:24} {r['tasks_per_s']:7.2f} tasks/s  {r['s_per_step']:6.2f} s/step  "
                  f"compile {r['compile_s']:5.1f} s", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
