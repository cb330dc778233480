"""The meta-training loop: one jit-compiled meta-step, K of them per dispatch.

A meta-step is a single XLA program: derive this step's key from ``(seed, step)``, sample the
meta-batch with ``vmap`` over keys, run every task's inner loop and meta-gradient with ``vmap``,
average, and apply the outer optax update. ``steps_per_dispatch`` of them run under
``lax.scan`` in one call, with the state's buffers donated. Keys depend only on the seed and
the step number, so a run resumed from a checkpoint retraces the uninterrupted run bit for bit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm import tqdm

from metajax import config as config_lib
from metajax.core.learner import MetaLearner, Metrics, TrainState
from metajax.core.types import TaskDistribution
from metajax.errors import file_errors
from metajax.training import checkpoint
from metajax.training.lock import WorkdirLock
from metajax.training.runfiles import MetricsLog, RunError, read_json, trim_metrics


class NonFiniteLossError(FloatingPointError):
    """The meta-loss, the meta-gradient or the new parameters became NaN or Inf.

    Attributes:
      step: the meta-step that failed.
      state: the last good state (at ``step``, not advanced past it), when known.
    """

    def __init__(self, message: str, step: int | None = None, state: TrainState | None = None):
        super().__init__(message)
        self.step = step
        self.state = state


def init_state(
    learner: MetaLearner, optimizer: optax.GradientTransformation, seed: int
) -> TrainState:
    """A fresh `TrainState`: parameters from ``fold_in(seed, 0)``, steps keyed from the rest.

    Example:
      >>> import jax, optax
      >>> from metajax import MAML, InnerLoop, from_nnx, losses
      >>> from metajax.models import MLP
      >>> maml = MAML(from_nnx(lambda r: MLP(1, 1, rngs=r)), losses.mse,
      ...             InnerLoop(optax.sgd(0.01)))
      >>> int(init_state(maml, optax.adam(1e-3), seed=0).step)
      0
    """
    if not 0 <= seed < 2**63:
        raise ValueError(f"seed must be in [0, 2**63), got {seed}.")
    base = jax.random.key(seed)
    init_key, run_key = jax.random.split(base)
    params = learner.init(init_key)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=optimizer.init(params),
        key=jax.random.key_data(run_key),
        extra=learner.init_extra(params),
        tx=optimizer,
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
    learner: MetaLearner,
    tasks: TaskDistribution,
    meta_batch_size: int,
    mesh: Mesh | None = None,
) -> Callable[[TrainState], tuple[TrainState, Metrics]]:
    """One meta-step as a pure function ``state -> (state, metrics)``: sample the meta-batch
    on the device, then ``learner.update``.

    Keys depend only on the run's key and ``state.step``. A step whose meta-loss, new
    parameters or ``extra`` are not finite (or whose update reports ``finite = False``)
    leaves the state unchanged and reports ``finite = False``, so the last good parameters
    survive for the caller to keep.

    Args:
      learner: provides ``update(state, tasks, key)``.
      tasks: provides ``sample(key)``.
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
        task_key, learner_key = jax.random.split(key)
        # Keys are split on every device alike; each device then samples only its own tasks.
        task_keys = spread(jax.random.split(task_key, meta_batch_size), P("tasks"))
        batch = jax.vmap(tasks.sample)(task_keys)
        new, metrics = learner.update(state, batch, learner_key)
        metrics = dict(metrics)
        if "meta_loss" not in metrics:
            raise KeyError(f"{type(learner).__name__}.update must report a 'meta_loss' metric.")
        finite = (
            jnp.asarray(metrics.pop("finite", True))
            & jnp.isfinite(metrics["meta_loss"])
            & jnp.isfinite(optax.tree.norm(new.params))
            & jnp.isfinite(optax.tree.norm(new.extra))
        )
        new = new.replace(step=state.step + 1)
        new = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, state)
        metrics["finite"] = finite
        return spread(new, P()), metrics

    return step


def make_train_fn(
    step_fn: Callable[[TrainState], tuple[TrainState, Metrics]],
    *,
    donate: bool = True,
    check_finite: bool = True,
) -> Callable[[TrainState, int], tuple[TrainState, Metrics]]:
    """Compiles ``num_steps`` meta-steps per call under ``lax.scan``.

    Args:
      step_fn: a meta-step (`make_meta_step`).
      donate: donate the input state's buffers to the output (no copy of the parameters and
        optimizer state per call). The state passed in is then invalid after the call: keep
        only the returned one, or pass ``donate=False``.
      check_finite: after each call, raise `NonFiniteLossError` if a step failed (its
        ``state`` attribute holds the last good state, at the failed step). Without it the
        failed step is retried, unchanged, for the rest of the call, and
        ``metrics["finite"]`` says so.

    Returns:
      ``train_fn(state, num_steps) -> (state, metrics)``, metrics stacked ``[num_steps]``.
      ``num_steps`` is static: each distinct value compiles once (``train_fn.jitted`` is the
      compiled function).

    Example:
      >>> import optax
      >>> from metajax import MAML, InnerLoop, Sinusoid, from_nnx, init_state, losses
      >>> from metajax.models import MLP
      >>> maml = MAML(from_nnx(lambda r: MLP(1, 1, (8,), rngs=r)), losses.mse,
      ...             InnerLoop(optax.sgd(0.01)))
      >>> train_fn = make_train_fn(make_meta_step(maml, Sinusoid(), meta_batch_size=4))
      >>> state, metrics = train_fn(init_state(maml, optax.adam(1e-3), seed=0), 10)
      >>> int(state.step), metrics["meta_loss"].shape
      (10, (10,))
    """

    def run(state: TrainState, num_steps: int) -> tuple[TrainState, Metrics]:
        if num_steps == 1:
            # No loop at all: XLA:CPU runs convolutions inside a while loop about 15x slower
            # than at top level (measured on Conv4), so conv models dispatch one step a call.
            state, metrics = step_fn(state)
            return state, jax.tree.map(lambda m: m[None], metrics)
        return jax.lax.scan(lambda s, _: step_fn(s), state, None, length=num_steps)

    jitted = jax.jit(run, static_argnums=1, donate_argnums=0 if donate else ())

    def train_fn(state: TrainState, num_steps: int) -> tuple[TrainState, Metrics]:
        new, metrics = jitted(state, num_steps)
        if check_finite and not bool(np.all(jax.device_get(metrics["finite"]))):
            failed = int(new.step)
            raise NonFiniteLossError(
                f"The meta-loss or meta-gradient became NaN/Inf at step {failed}; the state "
                "was not advanced past it (NonFiniteLossError.state holds it). Lower the "
                "learning rates or check the task data for NaN/Inf.",
                step=failed,
                state=new,
            )
        return new, metrics

    train_fn.jitted = jitted
    train_fn.lower = jitted.lower
    return train_fn


def run_config(config: config_lib.Config, workdir: str | os.PathLike) -> config_lib.Config:
    """The config a run in ``workdir`` trains with: ``config`` with its data folder made
    explicit and its learning-rate schedule's horizon fixed, or, for an existing run, with
    the settings it recorded (its data folder, its schedule horizon) where ``config`` leaves
    them unset.

    Raises:
      RunError: the folder holds a run whose settings differ (other than ``steps``).
    """
    config.validate()
    saved_path = Path(workdir) / "config.json"
    trainer = config.trainer
    if saved_path.exists():
        saved = config_lib.from_dict(read_json(saved_path), base=_registered_or(config))
        bench = config.benchmark
        if getattr(bench, "data_dir", None) == "" and getattr(saved.benchmark, "data_dir", ""):
            bench = dataclasses.replace(bench, data_dir=saved.benchmark.data_dir)
        if trainer.schedule_steps == 0:
            trainer = dataclasses.replace(trainer, schedule_steps=saved.trainer.schedule_steps)
        config = dataclasses.replace(config, benchmark=bench.resolve_paths(), trainer=trainer)
        old, new = _flat(config_lib.to_dict(saved)), _flat(config_lib.to_dict(config))
        differ = sorted(k for k in set(old) | set(new)
                        if k != "trainer.steps" and old.get(k) != new.get(k))  # fmt: skip
        if differ:
            raise RunError(
                f"{workdir} holds a run with a different config ({', '.join(differ)} differ). "
                "Use another --workdir, or the same settings to resume it (only steps may "
                "change, to extend it)."
            )
        return config
    if trainer.lr_schedule != "constant" and trainer.schedule_steps == 0:
        trainer = dataclasses.replace(trainer, schedule_steps=trainer.steps)
    return dataclasses.replace(config, benchmark=config.benchmark.resolve_paths(), trainer=trainer)


def _flat(values: dict) -> dict:
    """``{"trainer": {"steps": 3}}`` -> ``{"trainer.steps": 3}``."""
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def _registered_or(config: config_lib.Config) -> config_lib.Config:
    """The registered config of ``config``'s name, else ``config`` itself (a config built
    through the API): the base a saved config.json is read against."""
    try:
        return config_lib.get_config(config.name)
    except config_lib.ConfigError:
        return config


def train(
    config: config_lib.Config,
    workdir: str | os.PathLike,
    *,
    experiment: config_lib.Experiment | None = None,
    progress: bool | None = None,
) -> TrainState:
    """Meta-trains ``config`` in ``workdir``, resuming from its newest checkpoint if any.

    Writes ``config.json`` (when the run starts or is extended), ``checkpoints/step_*.npz``
    (atomically, every ``checkpoint_every`` steps and at the end) and ``metrics.jsonl``.

    Args:
      config: the run's config (see `run_config` for what an existing run keeps).
      workdir: the run's folder.
      experiment: ``run_config(config, workdir).build()`` if not given.
      progress: show a progress bar (default: when stderr is a terminal).

    Returns:
      The final `TrainState`.

    Raises:
      NonFiniteLossError: the meta-loss or meta-gradient went NaN/Inf; the newest checkpoint
        on disk is the last good one.
      RunError: ``workdir`` holds a run of a different config.
    """
    workdir = Path(workdir)
    config = run_config(config, workdir)
    # With several processes (jax.distributed), every one computes the same replicated state
    # and restores it from the shared folder; only the first writes files.
    writer = jax.process_index() == 0
    if writer:
        with file_errors("create the run folder", workdir):
            workdir.mkdir(parents=True, exist_ok=True)
    experiment = experiment or config.build()
    with WorkdirLock(workdir) if writer else contextlib.nullcontext():
        return _train(config, workdir, experiment, progress, writer)


def _train(
    config: config_lib.Config,
    workdir: Path,
    experiment: config_lib.Experiment,
    progress: bool | None,
    writer: bool,
) -> TrainState:
    trainer = config.trainer
    ckpt_dir = workdir / "checkpoints"
    saved = workdir / "config.json"
    if writer and (not saved.exists() or trainer.steps > read_json(saved)["trainer"]["steps"]):
        config_lib.save_json(saved, config)

    mesh = task_mesh() if trainer.shard_tasks else None
    if mesh is not None:
        check_divisible(trainer.meta_batch_size, mesh)
    state = init_state(experiment.learner, experiment.optimizer, trainer.seed)
    identity = {"algorithm": config.algorithm}
    if checkpoint.checkpoint_steps(ckpt_dir):
        _, state = checkpoint.restore(ckpt_dir, state, expect=identity, set_aside=writer)
        state = jax.tree.map(jnp.asarray, state)
    if mesh is not None:
        # Replicated on every device (of every process: each computes the same init).
        state = jax.device_put(state, NamedSharding(mesh, P()))
    start = int(state.step)
    metrics_path = workdir / "metrics.jsonl"
    if writer:
        trim_metrics(metrics_path, start)

    train_fn = make_train_fn(
        make_meta_step(experiment.learner, experiment.train_tasks, trainer.meta_batch_size, mesh),
        check_finite=False,
    )
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=trainer.steps, initial=start, disable=not show, unit="step",
               dynamic_ncols=True)  # fmt: skip
    step, saved_at = start, None
    t0 = time.perf_counter()
    saver = (
        checkpoint.Checkpointer(
            ckpt_dir,
            keep=trainer.keep_checkpoints,
            metadata={**identity, "config": config.name},
            async_save=True,
        )  # fmt: skip
        if writer
        else None
    )
    with MetricsLog(metrics_path if writer else None) as log, saver or contextlib.nullcontext():
        while step < trainer.steps:
            next_ckpt = (step // trainer.checkpoint_every + 1) * trainer.checkpoint_every
            n = min(trainer.steps_per_dispatch, trainer.steps - step, next_ckpt - step)
            state, metrics = train_fn(state, n)
            metrics = jax.device_get(metrics)
            if not metrics["finite"].all():
                bad = step + int(np.argmin(metrics["finite"]))
                if saver is not None:
                    saver.wait()
                kept = checkpoint.checkpoint_steps(ckpt_dir)
                where = f"step {kept[-1]} in {ckpt_dir}" if kept else "none was written yet"
                bar.close()
                raise NonFiniteLossError(
                    f"The meta-loss or meta-gradient became NaN/Inf at step {bad} of {config.name}. "
                    f"Training stopped; the last good checkpoint is kept ({where}). Lower the "
                    "learning rates or check the task data for NaN/Inf.",
                    step=bad,
                )
            previous, step = step, step + n
            if step // trainer.log_every > previous // trainer.log_every or step == trainer.steps:
                record = {"step": step, "wall_s": round(time.perf_counter() - t0, 3)}
                record.update({k: float(v[-1]) for k, v in metrics.items() if k != "finite"})
                log.write(record)
            if saver is not None and (
                step % trainer.checkpoint_every == 0 or step == trainer.steps
            ):
                saver.save(step, state)
                saved_at = step
            bar.update(n)
            loss = float(metrics["meta_loss"][-1])
            bar.set_postfix(meta_loss=f"{loss:.4f}" if math.isfinite(loss) else str(loss))
        if saver is not None and saved_at is None and not checkpoint.checkpoint_steps(ckpt_dir):
            saver.save(step, state)  # a run with nothing to train still leaves a checkpoint
    bar.close()
    return state


def read_run_config(
    workdir: str | os.PathLike, base: config_lib.Config | None = None
) -> config_lib.Config:
    """The config a run in ``workdir`` recorded (read against ``base``, else its registered
    config).

    Raises:
      RunError: ``workdir`` has no ``config.json`` (not a metajax run).
    """
    saved = Path(workdir) / "config.json"
    if not saved.exists():
        raise RunError(
            f"{workdir} is not a metajax run: it has no config.json. Train one with "
            "`metajax train NAME --workdir DIR`."
        )
    return config_lib.from_dict(read_json(saved), base=base)


def load_state(
    workdir: str | os.PathLike,
    *,
    experiment: config_lib.Experiment | None = None,
    config: config_lib.Config | None = None,
) -> tuple[config_lib.Config | None, config_lib.Experiment, TrainState]:
    """The config, experiment and newest `TrainState` of a run in ``workdir``.

    Args:
      workdir: the run's folder.
      experiment: the run's experiment, for a run trained from the API with a config that
        is not registered; by default it is rebuilt from the recorded config.
      config: the config to read the recorded one against (default: the registered config of
        its name).

    Returns:
      ``(config, experiment, state)``; ``config`` is ``None`` when only ``experiment`` was
      given and the recorded config's name is not registered.

    Raises:
      RunError: ``workdir`` has no ``config.json`` (not a metajax run).
      checkpoint.CheckpointError: no usable checkpoint.
    """
    workdir = Path(workdir)
    saved = workdir / "config.json"
    if not saved.exists():
        read_run_config(workdir)  # raises the not-a-run error
    values = read_json(saved)
    try:
        run = config_lib.from_dict(values, base=config)
    except config_lib.ConfigError:
        if experiment is None:
            raise
        run = None
    if experiment is None:
        experiment = run.build()
    seed = run.trainer.seed if run is not None else _saved_seed(values)
    target = init_state(experiment.learner, experiment.optimizer, seed)
    algorithm = run.algorithm if run is not None else values.get("algorithm")
    expect = {"algorithm": algorithm} if algorithm else {}
    _, state = checkpoint.restore(workdir / "checkpoints", target, expect=expect, set_aside=False)
    return run, experiment, jax.tree.map(jnp.asarray, state)


def _saved_seed(values: dict) -> int:
    return int(values["trainer"]["seed"] if "trainer" in values else values.get("seed", 0))


def save_state(directory: str | os.PathLike, state: TrainState, *, keep: int = 3) -> Path:
    """Writes ``state`` as an Orbax checkpoint in ``directory`` (``step_{step}/``,
    atomically), keeping the newest ``keep``.

    Example:
      >>> import tempfile, optax
      >>> from metajax import MAML, InnerLoop, from_nnx, losses
      >>> from metajax.models import MLP
      >>> maml = MAML(from_nnx(lambda r: MLP(1, 1, (8,), rngs=r)), losses.mse,
      ...             InnerLoop(optax.sgd(0.01)))
      >>> state = init_state(maml, optax.adam(1e-3), seed=0)
      >>> folder = tempfile.mkdtemp()
      >>> _ = save_state(folder, state)
      >>> int(restore_state(folder, init_state(maml, optax.adam(1e-3), seed=1)).step)
      0
    """
    return checkpoint.save(directory, int(state.step), state, keep=keep)


def restore_state(
    directory: str | os.PathLike, like: TrainState, step: int | None = None
) -> TrainState:
    """The checkpoint at ``step`` (default: the newest) in ``directory``, restored into the
    structure of ``like`` (a state of the same learner and optimizer, e.g. from `init_state`).

    Raises:
      checkpoint.CheckpointError: no checkpoint, a corrupt one, or one of another model.
    """
    _, state = checkpoint.restore(directory, like, step)
    return jax.tree.map(jnp.asarray, state)
