"""The suite's workloads, and the data and initial weights every implementation shares.

Each workload is a fixed meta-batch (drawn once from ``numpy.random.RandomState(0)``) that
every implementation trains on, step after step, from the same initial weights (metajax's
initialization, exported as arrays): so step 0's meta-loss must agree across
implementations, and the timings measure the same arithmetic.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str
    title: str
    kind: str  # "maml", "protonet" or "sinusoid"
    first_order: bool = False
    inner_steps: int = 1
    inner_lr: float = 0.4
    meta_batch: int = 32
    way: int = 5
    shot: int = 1
    query: int = 15
    outer_lr: float = 1e-3


WORKLOADS = {
    w.name: w
    for w in (
        Workload("a", "MAML, 2nd order, Conv4, 5-way 1-shot 15q, meta-batch 32, 1 step", "maml"),
        Workload("b", "first-order MAML, same shapes", "maml", first_order=True),
        Workload("c", "MAML, 2nd order, same shapes, 5 inner steps", "maml", inner_steps=5),
        Workload("d", "Prototypical Networks, same shapes", "protonet"),
        Workload(
            "e",
            "sinusoid MAML (paper: K=10, meta-batch 25, 2x40 MLP, 1 step of 0.01)",
            "sinusoid",
            inner_lr=0.01,
            meta_batch=25,
            shot=10,
            query=10,
        ),
    )
}


def make_data(w: Workload) -> dict[str, np.ndarray]:
    """The fixed meta-batch: support/query inputs and labels, float32/int32, NHWC images."""
    rng = np.random.RandomState(0)
    if w.kind == "sinusoid":
        amp = rng.uniform(0.1, 5.0, (w.meta_batch, 1, 1))
        phase = rng.uniform(0, np.pi, (w.meta_batch, 1, 1))
        x = rng.uniform(-5, 5, (w.meta_batch, w.shot + w.query, 1))
        y = amp * np.sin(x - phase)
        f = np.float32
        return {"sx": x[:, : w.shot].astype(f), "sy": y[:, : w.shot].astype(f),
                "qx": x[:, w.shot :].astype(f), "qy": y[:, w.shot :].astype(f)}  # fmt: skip
    images = rng.rand(w.meta_batch, w.way * (w.shot + w.query), 28, 28, 1).astype(np.float32)
    labels = np.tile(np.arange(w.way), w.shot + w.query)
    n = w.way * w.shot
    return {
        "sx": images[:, :n],
        "sy": np.tile(labels[:n], (w.meta_batch, 1)).astype(np.int32),
        "qx": images[:, n:],
        "qy": np.tile(labels[n:], (w.meta_batch, 1)).astype(np.int32),
    }


def timed_steps(step, state, steps: int, sync, budget_s: float = 20.0):
    """Runs up to ``steps`` calls of ``state = step(state)`` and returns ``(state,
    steps_per_s)``, stopping early (after at least 3 steps) once ``budget_s`` seconds have
    passed, so that slow implementations finish in bounded time. ``sync(state)`` waits for
    queued device work, so the clock stops when the last step is done."""
    import time

    t0 = time.perf_counter()
    done = 0
    while done < steps:
        state = step(state)
        done += 1
        if done >= 3 and done % 3 == 0:
            sync(state)
            if time.perf_counter() - t0 > budget_s:
                break
    sync(state)
    return state, done / (time.perf_counter() - t0)
