"""The meta-batch sharded over simulated CPU devices: throughput and agreement.

    python -m benchmarks.sharded [--devices 4] [--meta-batch 32] [--steps 200]

Runs sinusoid MAML at the paper's settings (config ``sinusoid-maml``, meta-batch 32 so that
it splits over the devices) twice in one process on ``--devices`` simulated CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count``): on one device, and with the task
axis sharded over a `metajax.training.task_mesh` of all of them. Both start from the same
state and take the same steps (``--steps`` per call, under ``lax.scan``). Prints meta-steps
and tasks per second of each, and the largest difference between their parameters after
one meta-step and after all of them.
The simulated devices share the machine's cores, so this shows that sharding is correct
and what it costs, not a speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=4)
    parser.add_argument("--meta-batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    load = os.getloadavg()
    flag = f"--xla_force_host_platform_device_count={args.devices}"
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax
    import numpy as np

    from metajax.config import get_config, override
    from metajax.training.trainer import init_state, make_meta_step, make_train_fn, task_mesh

    config = override(get_config("sinusoid-maml"), [f"meta_batch_size={args.meta_batch}"])
    experiment = config.build()
    rows, finals, first = [], {}, {}
    for name, mesh in (("1 device", None), (f"{jax.device_count()} devices", task_mesh())):
        fn = make_train_fn(
            make_meta_step(
                experiment.learner,
                experiment.train_tasks,
                args.meta_batch,
                mesh,
            )  # fmt: skip
        )
        # One meta-step from the same state: the agreement check (the call donates its state).
        one, _ = fn(init_state(experiment.learner, experiment.optimizer, seed=0), 1)
        first[name] = jax.tree.leaves(jax.device_get(one.params))
        state = init_state(experiment.learner, experiment.optimizer, seed=0)
        t0 = time.perf_counter()
        state, _ = jax.block_until_ready(fn(state, args.steps))
        compile_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(args.rounds):
            state, metrics = fn(state, args.steps)
        jax.block_until_ready(state)
        per_s = args.rounds * args.steps / (time.perf_counter() - t0)
        finals[name] = jax.tree.leaves(jax.device_get(state.params))
        row = {"run": name, "steps_per_s": per_s, "tasks_per_s": per_s * args.meta_batch,
               "compile_s": compile_s, "final_meta_loss": float(metrics["meta_loss"][-1])}  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)

    def max_diff(runs):
        a, b = runs.values()
        return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))

    print(f"\nsinusoid MAML, meta-batch {args.meta_batch}, {(1 + args.rounds) * args.steps} "
          f"meta-steps each; load average before {load[0]:.2f}")  # fmt: skip
    print(f"{'run':<12}{'steps/s':>9}{'tasks/s':>10}{'compile s':>11}{'meta-loss':>11}")
    for r in rows:
        print(f"{r['run']:<12}{r['steps_per_s']:>9.1f}{r['tasks_per_s']:>10.0f}"
              f"{r['compile_s']:>11.2f}{r['final_meta_loss']:>11.4f}")  # fmt: skip
    print(f"largest parameter difference after one meta-step: {max_diff(first):.2e}; after "
          f"all of them: {max_diff(finals):.2e} (float rounding, which differs with the "
          "reduction order across devices, compounds over Adam steps)")  # fmt: skip


if __name__ == "__main__":
    main()
