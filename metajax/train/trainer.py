"""The meta-training loop: one jit-compiled meta-step, K of them per dispatch.

A meta-step is a single XLA program: derive this step's key from ``(seed, step)``, sample the
meta-batch with ``vmap`` over keys, run every task's inner loop and meta-gradient with ``vmap``,
average, and apply the outer optax update. ``steps_per_dispatch`` of them run under
``lax.scan`` in one call, with the state's buffers donated. Keys depend only on the seed and
the step number, so a run resumed from a checkpoint retraces the uninterrupted run bit for bit.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm import tqdm

from metajax import config as config_lib
from metajax.algorithms.base import MetaAlgorithm, Metrics
from metajax.core.types import Params, TaskDistribution
from metajax.train import checkpoint


@struct.dataclass
class TrainState:
    """The whole training state; a checkpoint holds exactly this.

    Attributes:
      step: meta-steps done.
      params: the meta-parameters.
      opt_state: the outer optimizer's state.
      key: the run's base key, as raw ``uint32`` key data.
    """

    step: chex.Array
    params: Params
    opt_state: optax.OptState
    key: chex.Array


class NonFiniteLossError(FloatingPointError):
    """The meta-loss or meta-gradient became NaN or Inf."""


def init_state(
    algorithm: MetaAlgorithm, optimizer: optax.GradientTransformation, seed: int
) -> TrainState:
    """A fresh `TrainState`: parameters from ``fold_in(seed, 0)``, steps keyed from the rest.

    Example:
      >>> import jax, optax
      >>> from metajax import MAML, from_nnx, losses
      >>> from metajax.models import MLP
      >>> maml = MAML(from_nnx(lambda r: MLP(1, 1, rngs=r)), losses.mse, optax.sgd(0.01))
      >>> int(init_state(maml, optax.adam(1e-3), seed=0).step)
      0
    """
    base = jax.random.key(seed)
    init_key, run_key = jax.random.split(base)
    params = algorithm.init(init_key)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=optimizer.init(params),
        key=jax.random.key_data(run_key),
    )


def task_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A one-axis mesh named ``"tasks"`` over ``devices`` (default: every device of every
    process), for `make_meta_step`'s ``mesh``."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.array(devices), ("tasks",))


def check_divisible(meta_batch_size: int, mesh: Mesh) -> None:
    """Raises ValueError unless the meta-batch splits evenly over the mesh's devices."""
    devices = mesh.devices.size
    if meta_batch_size % devices:
        raise ValueError(
            f"meta_batch_size={meta_batch_size} does not split over {devices} devices: use a "
            f"multiple of {devices} (for example {-(-meta_batch_size // devices) * devices}), or "
            "turn off shard_tasks."
        )


def make_meta_step(
    algorithm: MetaAlgorithm,
    tasks: TaskDistribution,
    optimizer: optax.GradientTransformation,
    meta_batch_size: int,
    mesh: Mesh | None = None,
) -> Callable[[TrainState], tuple[TrainState, Metrics]]:
    """One meta-step as a pure function ``state -> (state, metrics)``.

    A step whose meta-loss, meta-gradient or new parameters are not finite leaves the state
    unchanged and reports ``finite = False``, so the last good parameters survive for the caller to keep.

    Args:
      algorithm: provides ``batch_meta_grad(params, tasks, keys, step)``.
      tasks: provides ``sample(key)``.
      optimizer: the outer optax optimizer.
      meta_batch_size: tasks per step.
      mesh: shard the meta-batch's task axis over this mesh's ``"tasks"`` axis (see
        `task_mesh`), with the state replicated; XLA averages the meta-gradient across
        devices. The result equals the single-device step to float tolerance.

    Returns:
      The step function (not jitted: `make_train_fn` compiles it).
    """
    if mesh is not None:
        check_divisible(meta_batch_size, mesh)

    def spread(tree, spec):
        if mesh is None:
            return tree
        return jax.lax.with_sharding_constraint(tree, NamedSharding(mesh, spec))

    def step(state: TrainState) -> tuple[TrainState, Metrics]:
        key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
        task_key, alg_key = jax.random.split(key)
        # Keys are split on every device alike; each device then samples only its own tasks.
        task_keys = spread(jax.random.split(task_key, meta_batch_size), P("tasks"))
        batch = jax.vmap(tasks.sample)(task_keys)
        alg_keys = spread(jax.random.split(alg_key, meta_batch_size), P("tasks"))
        grads, metrics = algorithm.batch_meta_grad(state.params, batch, alg_keys, state.step)
        grads = spread(grads, P())
        metrics = dict(metrics)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        new = TrainState(
            step=state.step + 1,
            params=optax.apply_updates(state.params, updates),
            opt_state=opt_state,
            key=state.key,
        )
        finite = (
            jnp.isfinite(metrics["meta_loss"])
            & jnp.isfinite(optax.tree.norm(grads))
            & jnp.isfinite(optax.tree.norm(new.params))
        )
        new = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, state)
        metrics["finite"] = finite
        metrics["grad_norm"] = optax.tree.norm(grads)
        return spread(new, P()), metrics

    return step


def make_train_fn(
    step_fn: Callable[[TrainState], tuple[TrainState, Metrics]],
) -> Callable[[TrainState, int], tuple[TrainState, Metrics]]:
    """Compiles ``num_steps`` meta-steps per call under ``lax.scan``, donating the state.

    Returns:
      ``train_fn(state, num_steps) -> (state, metrics)``, metrics stacked ``[num_steps]``.
      ``num_steps`` is static: each distinct value compiles once.
    """

    def run(state: TrainState, num_steps: int) -> tuple[TrainState, Metrics]:
        if num_steps == 1:
            # No loop at all: XLA:CPU runs convolutions inside a while loop about 15x slower
            # than at top level (measured on Conv4), so conv models dispatch one step a call.
            state, metrics = step_fn(state)
            return state, jax.tree.map(lambda m: m[None], metrics)
        return jax.lax.scan(lambda s, _: step_fn(s), state, None, length=num_steps)

    return jax.jit(run, static_argnums=1, donate_argnums=0)


def _rewrite_metrics(path: Path, last_step: int) -> None:
    """Drops lines past ``last_step`` (written after the checkpoint we resume from), atomically."""
    if not path.exists():
        return
    keep = [
        ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= last_step
    ]
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(ln + "\n" for ln in keep))
    os.replace(tmp, path)


def _as_saved(config: config_lib.BaseConfig) -> dict:
    return json.loads(json.dumps(config_lib.to_dict(config)))  # tuples -> lists, as saved


def train(
    config: config_lib.BaseConfig,
    workdir: str | os.PathLike,
    *,
    experiment: config_lib.Experiment | None = None,
    progress: bool | None = None,
) -> TrainState:
    """Meta-trains ``config`` in ``workdir``, resuming from its newest checkpoint if any.

    Writes ``config.json``, ``checkpoints/step_*.npz`` (atomically, every
    ``checkpoint_every`` steps and at the end) and ``metrics.jsonl``.

    Args:
      config: the run's config.
      workdir: the run's folder.
      experiment: ``config.build()`` if not given.
      progress: show a progress bar (default: when stderr is a terminal).

    Returns:
      The final `TrainState`.

    Raises:
      NonFiniteLossError: the meta-loss or meta-gradient went NaN/Inf; the newest checkpoint
        on disk is the last good one.
      ValueError: ``workdir`` holds a run of a different config.
    """
    config.validate()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    experiment = experiment or config.build()
    ckpt_dir = workdir / "checkpoints"
    saved = workdir / "config.json"
    if saved.exists():
        # Through from_dict, so fields added since the run was saved compare at their defaults.
        old = _as_saved(config_lib.from_dict(json.loads(saved.read_text())))
        new = _as_saved(config)
        differ = sorted(k for k in set(old) | set(new) if k != "steps" and old.get(k) != new.get(k))
        if differ:
            raise ValueError(
                f"{workdir} holds a run with a different config ({', '.join(differ)} differ). "
                "Use another --workdir, or the same settings to resume it."
            )
    # With several processes (jax.distributed), every one computes the same replicated state
    # and only the first writes files.
    writer = jax.process_index() == 0
    if writer:
        config_lib.save_json(saved, config)

    mesh = task_mesh() if config.shard_tasks else None
    if mesh is not None:
        check_divisible(config.meta_batch_size, mesh)
    state = init_state(experiment.algorithm, experiment.optimizer, config.seed)
    if checkpoint.checkpoint_steps(ckpt_dir):
        _, state = checkpoint.restore(ckpt_dir, state)
        state = jax.tree.map(jnp.asarray, state)
    if mesh is not None:
        # Replicated on every device (of every process: each computes the same init).
        state = jax.device_put(state, NamedSharding(mesh, P()))
    start = int(state.step)
    metrics_path = workdir / "metrics.jsonl"
    _rewrite_metrics(metrics_path, start)

    train_fn = make_train_fn(
        make_meta_step(
            experiment.algorithm,
            experiment.train_tasks,
            experiment.optimizer,
            config.meta_batch_size,
            mesh,
        )
    )
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=config.steps, initial=start, disable=not show, unit="step", dynamic_ncols=True)
    step = start
    t0 = time.perf_counter()
    with open(metrics_path if writer else os.devnull, "a") as log:
        while step < config.steps:
            next_ckpt = (step // config.checkpoint_every + 1) * config.checkpoint_every
            n = min(config.steps_per_dispatch, config.steps - step, next_ckpt - step)
            state, metrics = train_fn(state, n)
            metrics = jax.device_get(metrics)
            if not metrics["finite"].all():
                bad = step + int(np.argmin(metrics["finite"]))
                kept = checkpoint.checkpoint_steps(ckpt_dir)
                where = f"step {kept[-1]} in {ckpt_dir}" if kept else "none was written yet"
                bar.close()
                raise NonFiniteLossError(
                    f"The meta-loss or meta-gradient became NaN/Inf at step {bad} of {config.name}. "
                    f"Training stopped; the last good checkpoint is kept ({where}). Lower the "
                    "learning rates or check the task data for NaN/Inf."
                )
            previous, step = step, step + n
            if step // config.log_every > previous // config.log_every or step == config.steps:
                record = {"step": step, "wall_s": round(time.perf_counter() - t0, 3)}
                record.update({k: float(v[-1]) for k, v in metrics.items() if k != "finite"})
                log.write(json.dumps(record) + "\n")
                log.flush()
            if writer and (step % config.checkpoint_every == 0 or step == config.steps):
                checkpoint.save(ckpt_dir, step, state, keep=config.keep_checkpoints)
            bar.update(n)
            loss = float(metrics["meta_loss"][-1])
            bar.set_postfix(meta_loss=f"{loss:.4f}" if math.isfinite(loss) else str(loss))
    bar.close()
    if writer and not checkpoint.checkpoint_steps(ckpt_dir):
        checkpoint.save(ckpt_dir, step, state, keep=config.keep_checkpoints)
    return state


def load_state(
    workdir: str | os.PathLike,
) -> tuple[config_lib.BaseConfig, config_lib.Experiment, TrainState]:
    """The config, experiment and newest `TrainState` of a run in ``workdir``.

    Raises:
      FileNotFoundError: ``workdir`` has no ``config.json`` (not a metajax run).
      checkpoint.CheckpointError: no usable checkpoint.
    """
    workdir = Path(workdir)
    saved = workdir / "config.json"
    if not saved.exists():
        raise FileNotFoundError(
            f"{workdir} is not a metajax run: it has no config.json. Train one with "
            "`metajax train NAME --workdir DIR`."
        )
    config = config_lib.from_dict(json.loads(saved.read_text()))
    experiment = config.build()
    target = init_state(experiment.algorithm, experiment.optimizer, config.seed)
    _, state = checkpoint.restore(workdir / "checkpoints", target)
    return config, experiment, jax.tree.map(jnp.asarray, state)
