"""Training speed of the Neural Process family: metajax's CNP and ANP on the Gaussian-process
task (configs ``gp-cnp``, ``gp-anp``: width 128, latent 128, 8 heads, meta-batch 16, 50
points) against the same models in PyTorch (`benchmarks.np_torch`, run in ``.venv-bench``).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks.np_speed [--parts]

Both sample a fresh batch of GP functions every step (metajax on the device, inside the
compiled step). metajax runs ``steps_per_dispatch`` steps per compiled call (the trainer's
default of 100, and 1). Reports meta-steps/s (median of ``--repeats`` rounds), the ratio,
metajax's compile time (the first call less the steps it ran) and PyTorch's first step, and
the load average before the run. ``--parts`` adds where the ANP's time goes: its step
without self-attention (``attention_layers=0``); one attention block's forward and backward
pass; and one ``[800, 128] @ [128, 128]`` product (a layer of the models on a meta-batch),
the last two in both frameworks.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from metajax.config import get_config, override
from metajax.core.functional import from_nnx
from metajax.models.neural_process import MultiheadAttention
from metajax.training.trainer import init_state, make_meta_step, make_train_fn

ROOT = Path(__file__).resolve().parents[1]


def measure_metajax(config: str, per_dispatch: int, steps: int, repeats: int,
                    sets: tuple[str, ...] = ()) -> dict:  # fmt: skip
    experiment = override(get_config(config), list(sets)).build()
    state = init_state(experiment.learner, experiment.optimizer, seed=0)
    run = make_train_fn(make_meta_step(experiment.learner, experiment.train_tasks, 16))
    t0 = time.perf_counter()
    state = jax.block_until_ready(run(state, per_dispatch)[0])
    first = time.perf_counter() - t0
    dispatches = max(steps // per_dispatch, 1)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(dispatches):
            state = run(state, per_dispatch)[0]
        jax.block_until_ready(state)
        rates.append(dispatches * per_dispatch / (time.perf_counter() - t0))
    rate = statistics.median(rates)
    return {"impl": "metajax", "model": config.split("-")[1], "steps_per_dispatch": per_dispatch,
            "steps_per_s": rate, "steps_per_s_min": min(rates), "steps_per_s_max": max(rates),
            "compile_s": max(first - per_dispatch / rate, 0.0)}  # fmt: skip


def per_call_median(call, steps: int, repeats: int) -> float:
    """Seconds per step of ``call()`` (a compiled scan of ``steps`` steps), the median of
    ``repeats`` timed calls after one that compiles."""
    jax.block_until_ready(call())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(call())
        times.append((time.perf_counter() - t0) / steps)
    return statistics.median(times)


def block_ms(steps: int, repeats: int) -> float:
    """Milliseconds of one attention block's forward and backward pass (parameter and input
    gradients) on 16 sets of 50 rows, half masked; ``steps`` passes run in one compiled
    scan, as the trainer runs its steps."""
    block = from_nnx(lambda r: MultiheadAttention(128, 128, 128, 128, 8, rngs=r))
    params = block.init(jax.random.key(0))
    h = jax.random.normal(jax.random.key(1), (16, 50, 128))
    mask = jnp.broadcast_to(jnp.arange(50) < 25, (16, 50))

    def loss(p, h):
        return jnp.sum(jax.vmap(lambda a, m: block.apply(p, a, a, a, m))(h, mask) ** 2)

    @jax.jit
    def run(p, h):
        def body(carry, _):
            value, (gp, gh) = jax.value_and_grad(loss, argnums=(0, 1))(p, carry)
            # Every gradient feeds the carry, so none of the backward pass is dead code.
            touch = sum(jnp.sum(g) for g in jax.tree.leaves(gp))
            return carry + 1e-6 * gh + 1e-12 * touch, value

        return jax.lax.scan(body, h, None, length=steps)[1]

    return per_call_median(lambda: run(params, h), steps, repeats) * 1e3


def gemm_us(steps: int, repeats: int) -> float:
    """Microseconds of one ``[800, 128] @ [128, 128]`` product (a layer of the NP models on a
    meta-batch of 16 sets of 50 points), ``steps`` of them chained in one compiled scan."""
    a = jax.random.normal(jax.random.key(0), (800, 128))
    w = jax.random.normal(jax.random.key(1), (128, 128)) / 128**0.5

    @jax.jit
    def run(a, w):
        return jax.lax.scan(lambda c, _: (c @ w, None), a, None, length=steps)[0]

    return per_call_median(lambda: run(a, w), steps, repeats) * 1e6


def measure_torch(model: str, steps: int, repeats: int) -> dict | None:
    python = ROOT / ".venv-bench" / "bin" / "python"
    if not python.exists():
        print("np_speed: .venv-bench is missing (bash benchmarks/setup_peers.sh); no PyTorch row",
              file=sys.stderr)  # fmt: skip
        return None
    out = subprocess.run([str(python), str(ROOT / "benchmarks" / "np_torch.py"), model,
                          str(steps), str(repeats)], capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="one JSON line per measurement")
    parser.add_argument("--parts", action="store_true",
                        help="also the ANP without self-attention, one attention block, one matmul")  # fmt: skip
    args = parser.parse_args()
    load = os.getloadavg()
    steps = {"cnp": 400, "anp": 60}
    rows = []
    for model in ("cnp", "anp"):
        torch_row = measure_torch(model, steps[model], args.repeats)
        for k in (100, 1):
            rows.append(measure_metajax(f"gp-{model}", k, steps[model] if k > 1 else
                                        steps[model] // 4, args.repeats))  # fmt: skip
        if torch_row:
            rows.append(torch_row)
    parts = []
    if args.parts:
        no_attention = measure_metajax("gp-anp", 100, steps["anp"], args.repeats,
                                       ("attention_layers=0",))  # fmt: skip
        parts.append({"impl": "metajax", "part": "anp step, attention_layers=0",
                      "steps_per_s": no_attention["steps_per_s"]})  # fmt: skip
        parts.append(
            {"impl": "metajax", "part": "attention block", "ms": block_ms(100, args.repeats)}
        )
        torch_block = measure_torch("block", 100, args.repeats)
        if torch_block:
            parts.append(torch_block)
        parts.append({"impl": "metajax", "part": "matmul 800x128x128",
                      "us": gemm_us(1000, args.repeats)})  # fmt: skip
        torch_gemm = measure_torch("gemm", 1000, args.repeats)
        if torch_gemm:
            parts.append(torch_gemm)
    if args.json:
        for row in rows + parts:
            print(json.dumps({**row, "load_avg_1m": load[0]}))
        return
    print(f"NP training on GP tasks, meta-batch 16, 50 points; jax {jax.__version__} on "
          f"{jax.devices()[0].platform}, {os.cpu_count()} cores; load average before: "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")  # fmt: skip
    print(f"{'model':<6} {'impl':<10} {'steps/dispatch':>14} {'steps/s (min-max)':>22} "
          f"{'compile or 1st step s':>22}")  # fmt: skip
    for r in rows:
        spread = f"{r['steps_per_s']:.1f} ({r['steps_per_s_min']:.1f}-{r['steps_per_s_max']:.1f})"
        first = r.get("compile_s", r.get("first_step_s", 0.0))
        print(f"{r['model']:<6} {r['impl']:<10} {r.get('steps_per_dispatch', 1):>14} "
              f"{spread:>22} {first:>22.2f}")  # fmt: skip
    for model in ("cnp", "anp"):
        by = {(r["impl"], r.get("steps_per_dispatch", 1)): r["steps_per_s"] for r in rows
              if r["model"] == model}  # fmt: skip
        if ("pytorch", 1) in by:
            print(f"{model}: metajax / PyTorch = {by['metajax', 100] / by['pytorch', 1]:.2f}x "
                  f"(100 steps a dispatch), {by['metajax', 1] / by['pytorch', 1]:.2f}x (1)")  # fmt: skip
    for part in parts:
        if "ms" in part:
            figure = f"{part['ms']:.2f} ms"
        elif "us" in part:
            figure = f"{part['us']:.1f} us ({2 * 800 * 128 * 128 / part['us'] / 1e3:.0f} GFLOP/s)"
        else:
            figure = f"{part['steps_per_s']:.1f} steps/s"
        print(f"part: {part['part']:<30} {part['impl']:<8} {figure}")
    for unit, label in (("ms", "attention block"), ("us", "matmul 800x128x128")):
        times = {p["impl"]: p[unit] for p in parts if unit in p}
        if len(times) == 2:
            print(f"{label}: metajax / PyTorch = {times['pytorch'] / times['metajax']:.2f}x")


if __name__ == "__main__":
    main()
