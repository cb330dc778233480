"""Sinusoid MAML meta-steps per second: metajax against a hand-written single-file JAX MAML.

Both run the paper's settings (K=10 support and query points, meta-batch 25, 2x40 ReLU MLP,
one inner SGD step with alpha=0.01, Adam 1e-3), second order, with 1 and 100 meta-steps per
compiled dispatch. Compile time is excluded and reported separately.

    python -m benchmarks.sinusoid_throughput [--steps 4000] [--repeats 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import optax

import metajax
from metajax.core.inner import InnerLoop
from metajax.models import MLP

META_BATCH, K, ALPHA, LR = 25, 10, 0.01, 1e-3


def plain_jax_train_fn():
    """MAML written out by hand: a dict-of-arrays MLP, jit + vmap + scan, nothing else."""

    def init(key):
        sizes, params = [1, 40, 40, 1], {}
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=False)):
            key, sub = jax.random.split(key)
            params[f"w{i}"] = jax.random.normal(sub, (a, b)) * jnp.sqrt(2.0 / a)
            params[f"b{i}"] = jnp.zeros(b)
        return params

    def net(p, x):
        x = jax.nn.relu(x @ p["w0"] + p["b0"])
        x = jax.nn.relu(x @ p["w1"] + p["b1"])
        return x @ p["w2"] + p["b2"]

    def loss(p, x, y):
        return jnp.mean((net(p, x) - y) ** 2)

    def sample(key):
        ka, kp, kx = jax.random.split(key, 3)
        amp = jax.random.uniform(ka, (), minval=0.1, maxval=5.0)
        phase = jax.random.uniform(kp, (), minval=0.0, maxval=jnp.pi)
        x = jax.random.uniform(kx, (2 * K, 1), minval=-5.0, maxval=5.0)
        return x, amp * jnp.sin(x - phase)

    def task_loss(p, key):
        x, y = sample(key)
        g = jax.grad(loss)(p, x[:K], y[:K])
        phi = jax.tree.map(lambda a, b: a - ALPHA * b, p, g)
        return loss(phi, x[K:], y[K:])

    opt = optax.adam(LR)

    def step(carry, _):
        p, s, key = carry
        key, sub = jax.random.split(key)
        grads = jax.grad(
            lambda q: jax.vmap(task_loss, (None, 0))(q, jax.random.split(sub, META_BATCH)).mean()
        )(p)
        updates, s = opt.update(grads, s, p)
        return (optax.apply_updates(p, updates), s, key), None

    run = jax.jit(
        lambda carry, n: jax.lax.scan(step, carry, None, length=n)[0],
        static_argnums=1,
        donate_argnums=0,
    )
    params = init(jax.random.key(0))
    return run, (params, opt.init(params), jax.random.key(1))


def metajax_train_fn():
    model = metajax.from_nnx(lambda rngs: MLP(1, 1, (40, 40), rngs=rngs))
    maml = metajax.MAML(model, metajax.losses.mse, InnerLoop(optax.sgd(ALPHA), steps=1))
    opt = optax.adam(LR)
    run = metajax.make_train_fn(
        metajax.make_meta_step(maml, metajax.Sinusoid(k_shot=K, k_query=K), META_BATCH)
    )
    return (lambda state, n: run(state, n)[0]), metajax.init_state(maml, opt, seed=0)


def measure_all(makers: dict, per_dispatch: int, steps: int, repeats: int) -> list[dict]:
    """Compiles every implementation, then times them in alternation, ``repeats`` rounds,
    so that a change in the machine's load hits all of them alike; reports the median."""
    built = {}
    for impl, make in makers.items():
        run, state = make()
        t0 = time.perf_counter()
        state = jax.block_until_ready(run(state, per_dispatch))
        built[impl] = [run, state, time.perf_counter() - t0, []]
    dispatches = max(steps // per_dispatch, 1)
    for _ in range(repeats):
        for entry in built.values():
            run, state = entry[0], entry[1]
            t0 = time.perf_counter()
            for _ in range(dispatches):
                state = run(state, per_dispatch)
            jax.block_until_ready(state)
            entry[1] = state
            entry[3].append(dispatches * per_dispatch / (time.perf_counter() - t0))
    return [
        {
            "impl": impl,
            "workload": "sinusoid-maml",
            "steps_per_dispatch": per_dispatch,
            "steps_per_s": statistics.median(rates),
            "steps_per_s_min": min(rates),
            "steps_per_s_max": max(rates),
            "compile_s": compile_s,
        }
        for impl, (_, _, compile_s, rates) in built.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4000, help="timed meta-steps per round")
    parser.add_argument("--repeats", type=int, default=5, help="alternating rounds (median)")
    parser.add_argument("--json", action="store_true", help="one JSON line per measurement")
    args = parser.parse_args()
    load = os.getloadavg()
    makers = {"metajax": metajax_train_fn, "plain-jax": plain_jax_train_fn}
    rows = []
    for k in (1, 100):
        steps = args.steps if k > 1 else max(args.steps // 4, 1)
        rows += measure_all(makers, k, steps, args.repeats)
    if args.json:
        for row in rows:
            print(json.dumps({**row, "load_avg_1m": load[0]}))
        return
    print(
        f"sinusoid MAML, meta-batch {META_BATCH}, K={K}; jax {jax.__version__} on "
        f"{jax.devices()[0].platform}; {os.cpu_count()} cores; load average before: "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    print(f"{'impl':<10} {'steps/dispatch':>14} {'meta-steps/s (min-max)':>24} {'compile s':>10}")
    for r in rows:
        spread = f"{r['steps_per_s']:.0f} ({r['steps_per_s_min']:.0f}-{r['steps_per_s_max']:.0f})"
        print(f"{r['impl']:<10} {r['steps_per_dispatch']:>14} {spread:>24} {r['compile_s']:>10.2f}")
    by = {(r["impl"], r["steps_per_dispatch"]): r["steps_per_s"] for r in rows}
    for k in (1, 100):
        ratio = by["metajax", k] / by["plain-jax", k]
        print(f"metajax / plain JAX, {k} step(s) per dispatch: {ratio:.2f}")


if __name__ == "__main__":
    main()
