"""The JAX implementations of the suite's workloads: metajax through its public API, and a
hand-written single-file version (jit + vmap, nothing else) to show how close the library
comes to plain JAX.

Each ``build(workload, data, params)`` returns ``(step, state, meta_loss)``: ``step(state) ->
state`` is one jitted meta-step (meta-gradient and Adam update) on the fixed meta-batch, and
``meta_loss(state)`` the meta-batch's mean meta-loss.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.workloads import Workload
from metajax import IMAML, MAML, from_nnx, losses
from metajax.algorithms import ProtoNet
from metajax.core.inner import InnerLoop
from metajax.core.learner import TrainState
from metajax.core.types import Split, Task
from metajax.models import MLP, Conv4

# ---- metajax -------------------------------------------------------------------------------


def metajax_model(w: Workload, conv: str):
    if w.kind == "sinusoid":
        return from_nnx(lambda r: MLP(1, 1, (40, 40), rngs=r))
    classes = 0 if w.kind == "protonet" else w.way
    return from_nnx(lambda r: Conv4(1, classes, conv=conv, rngs=r))


def metajax_init(w: Workload) -> dict:
    """metajax's initialization: the weights every implementation starts from."""
    return metajax_model(w, "xla").init(jax.random.key(0))


def build_metajax(
    w: Workload,
    data: dict,
    params: dict,
    remat: bool = False,
    unroll: bool | None = None,
    implicit: bool = False,
    conv: str | None = None,
    task_chunk: int | None = -1,
):
    """The workload's meta-step through metajax's public API; ``implicit`` swaps MAML for
    iMAML (lambda 2, 5 CG steps: its memory does not grow with the inner steps). ``conv`` and
    ``task_chunk`` override the library's defaults (for the formulation studies)."""
    # The library's defaults on this backend, as the few-shot configs pick them (FewShotBenchmark
    # with conv=auto, task_chunk=-1): on CPU, tasks in turn with metajax's C++ convolution.
    cpu_conv = w.kind != "sinusoid" and jax.default_backend() == "cpu"
    model = metajax_model(w, conv or "auto")
    chunk = (1 if cpu_conv else None) if task_chunk == -1 else task_chunk
    if w.kind == "protonet":
        algorithm = ProtoNet(model, task_chunk=chunk)
    elif implicit:
        inner = InnerLoop(optax.sgd(w.inner_lr), steps=w.inner_steps, unroll=bool(unroll))
        algorithm = IMAML(model, losses.cross_entropy, inner, lam=2.0, cg_steps=5,
                          task_chunk=chunk)  # fmt: skip
    else:
        algorithm = MAML(
            model,
            losses.mse if w.kind == "sinusoid" else losses.cross_entropy,
            InnerLoop(
                optax.sgd(w.inner_lr),
                steps=w.inner_steps,
                first_order=w.first_order,
                remat=remat,
                unroll=(w.kind == "maml" and not remat) if unroll is None else unroll,
            ),
            task_chunk=chunk,
        )
    tasks = Task(Split(data["sx"], data["sy"]), Split(data["qx"], data["qy"]), {})
    key = jax.random.key(1)
    opt = optax.adam(w.outer_lr)
    # The library's meta-step on a fixed meta-batch: the learner's own update (meta-gradient
    # and optax step), as the trainer calls it.
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt.init(params),
                       key=jax.random.key_data(key), tx=opt)  # fmt: skip

    @jax.jit
    def step(state):
        return algorithm.update(state, tasks, key)[0]

    @jax.jit
    def meta_loss(state):
        keys = jax.random.split(key, w.meta_batch)
        return algorithm.batch_meta_grad(state.params, tasks, keys)[1]["meta_loss"]

    return step, state, meta_loss


# ---- plain JAX -----------------------------------------------------------------------------


def _conv4(p, x, w: Workload):
    for i in range(4):
        c = p["convs"][i]
        x = jax.lax.conv_general_dilated(
            x, c["kernel"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        x = x + c["bias"]
        mean, var = x.mean((0, 1, 2)), x.var((0, 1, 2))
        x = (x - mean) * jax.lax.rsqrt(var + 1e-5) * p["norms"][i]["scale"] + p["norms"][i]["bias"]
        x = jax.nn.relu(x)
        n, h, wd, ch = x.shape
        x = x[:, : h // 2 * 2, : wd // 2 * 2].reshape(n, h // 2, 2, wd // 2, 2, ch).max((2, 4))
    x = x.reshape(x.shape[0], -1)
    return x if w.kind == "protonet" else x @ p["head"]["kernel"] + p["head"]["bias"]


def _mlp(p, x):
    x = jax.nn.relu(x @ p["hidden"][0]["kernel"] + p["hidden"][0]["bias"])
    x = jax.nn.relu(x @ p["hidden"][1]["kernel"] + p["hidden"][1]["bias"])
    return x @ p["out"]["kernel"] + p["out"]["bias"]


def build_jax(w: Workload, data: dict, params: dict):
    def xent(logits, y):
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))

    def loss(p, x, y):
        if w.kind == "sinusoid":
            return jnp.mean((_mlp(p, x) - y) ** 2)
        return xent(_conv4(p, x, w), y)

    def task_loss(p, sx, sy, qx, qy):
        if w.kind == "protonet":
            s, q = _conv4(p, sx, w), _conv4(p, qx, w)
            protos = (
                jax.ops.segment_sum(s, sy, w.way)
                / jax.ops.segment_sum(jnp.ones(len(sy)), sy, w.way)[:, None]
            )
            return xent(-((q[:, None] - protos[None]) ** 2).sum(-1), qy)
        phi = p
        for _ in range(w.inner_steps):
            g = jax.grad(loss)(phi, sx, sy)
            if w.first_order:
                g = jax.lax.stop_gradient(g)
            phi = jax.tree.map(lambda a, b: a - w.inner_lr * b, phi, g)
        return loss(phi, qx, qy)

    def mean_loss(p):
        return jax.vmap(task_loss, (None, 0, 0, 0, 0))(
            p, data["sx"], data["sy"], data["qx"], data["qy"]
        ).mean()

    opt = optax.adam(w.outer_lr)

    @jax.jit
    def step(state):
        p, s = state
        updates, s = opt.update(jax.grad(mean_loss)(p), s, p)
        return optax.apply_updates(p, updates), s

    return step, (params, opt.init(params)), jax.jit(lambda state: mean_loss(state[0]))


BUILDERS = {"metajax": build_metajax, "jax": build_jax}


def export_params(params: dict) -> dict[str, np.ndarray]:
    """Flat ``path -> array`` names (``convs/0/kernel``) for the PyTorch peers."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v) for path, v in flat}
