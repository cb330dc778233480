"""Sinusoid MAML meta-steps per second: metajax against a hand-written single-file JAX MAML.

Both run the paper's settings (K=10 support and query points, meta-batch 25, 2x40 ReLU MLP,
one inner SGD step with alpha=0.01, Adam 1e-3), second order, with 1 and 100 meta-steps per
compiled dispatch. Compile time is excluded and reported separately.

    python -m benchmarks.sinusoid_throughput [--steps 5000] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import optax

import metajax
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
    maml = metajax.MAML(model, metajax.losses.mse, optax.sgd(ALPHA), inner_steps=1)
    opt = optax.adam(LR)
    run = metajax.make_train_fn(
        metajax.make_meta_step(maml, metajax.Sinusoid(k_shot=K, k_query=K), opt, META_BATCH)
    )
    return (lambda state, n: run(state, n)[0]), metajax.init_state(maml, opt, seed=0)


def measure(make, per_dispatch: int, steps: int) -> dict[str, float]:
    run, state = make()
    t0 = time.perf_counter()
    state = run(state, per_dispatch)
    jax.block_until_ready(state)
    compile_s = time.perf_counter() - t0
    dispatches = max(steps // per_dispatch, 1)
    t0 = time.perf_counter()
    for _ in range(dispatches):
        state = run(state, per_dispatch)
    jax.block_until_ready(state)
    elapsed = time.perf_counter() - t0
    return {"steps_per_s": dispatches * per_dispatch / elapsed, "compile_s": compile_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5000, help="timed meta-steps per measurement")
    parser.add_argument("--json", action="store_true", help="one JSON line per measurement")
    args = parser.parse_args()
    load = os.getloadavg()
    rows = []
    for impl, make in (("metajax", metajax_train_fn), ("plain-jax", plain_jax_train_fn)):
        for k in (1, 100):
            steps = args.steps if k > 1 else max(args.steps // 5, 1)
            rows.append(
                {
                    "impl": impl,
                    "workload": "sinusoid-maml",
                    "steps_per_dispatch": k,
                    **measure(make, k, steps),
                }
            )
    if args.json:
        for row in rows:
            print(json.dumps({**row, "load_avg_1m": load[0]}))
        return
    print(
        f"sinusoid MAML, meta-batch {META_BATCH}, K={K}; jax {jax.__version__} on "
        f"{jax.devices()[0].platform}; load average before: {load[0]:.2f}"
    )
    print(f"{'impl':<10} {'steps/dispatch':>14} {'meta-steps/s':>13} {'compile s':>10}")
    for row in rows:
        print(
            f"{row['impl']:<10} {row['steps_per_dispatch']:>14} {row['steps_per_s']:>13.0f} {row['compile_s']:>10.2f}"
        )
    by = {(r["impl"], r["steps_per_dispatch"]): r["steps_per_s"] for r in rows}
    for k in (1, 100):
        print(
            f"metajax / plain JAX at {k} step(s) per dispatch: {by['metajax', k] / by['plain-jax', k]:.2f}"
        )


if __name__ == "__main__":
    main()
