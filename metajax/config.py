"""Configs: a benchmark, a learner and a trainer, composed, registered and overridable.

A run's `Config` has three parts, each a frozen dataclass with its own fields:

- the **benchmark** (`Benchmark`): the data, the task distributions and the network;
- the **learner** (`LearnerConfig`): one dataclass per algorithm, holding only that
  algorithm's fields. Each algorithm's file defines it and registers it with
  `register_algorithm`, so a new algorithm is one file;
- the **trainer** (`TrainerConfig`): steps, seed, meta-batch, outer optimizer, checkpoints.

``--set key=value`` (`override`) finds the part that has ``key``; ``algorithm=NAME`` swaps the
learner for another registered one. Named configs are registered with `register_config`
(the built-in ones in `metajax.configs`) and found by `get_config`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import optax

from metajax import losses
from metajax.core.functional import Model, mixed_precision
from metajax.core.inner import InnerLoop
from metajax.core.learner import MetaLearner, Metric
from metajax.core.types import TaskDistribution
from metajax.errors import UserError
from metajax.files import dumps, write_atomic


class ConfigError(UserError, ValueError):
    """An unknown config or algorithm, or a bad ``--set`` override or config value."""


# ---- the parts ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Experiment:
    """Everything a run needs, built from a config.

    Attributes:
      learner: the meta-learner.
      train_tasks: the meta-training task distribution.
      test_tasks: the meta-test task distribution.
      optimizer: the outer (meta) optax optimizer.
    """

    learner: MetaLearner
    train_tasks: TaskDistribution
    test_tasks: TaskDistribution
    optimizer: optax.GradientTransformation


@dataclasses.dataclass(frozen=True)
class BuildEnv:
    """What a benchmark hands a learner config to build a learner from.

    Attributes:
      network: ``network()``: the benchmark's predictor (a classifier's head has ``n_way``
        outputs).
      features: ``features()``: the network without its head, an embedding (ProtoNet).
      body_and_head: ``() -> (body, head)``: the network split before its last layer (ANIL).
      loss: the training loss, ``loss(predictions, targets)``.
      metric: the test metric.
      unroll: unroll inner loops (convolutions run faster unrolled on XLA:CPU).
      task_chunk: tasks per ``vmap`` chunk (`metajax.core.learner.map_chunks`).
      config: the config's name, for error messages.
      x_dim, y_dim: input and output widths of a benchmark of functions (the Neural Process
        family sizes its networks from them); ``None`` elsewhere.
      x_range: where a function benchmark's inputs lie (ConvCNP sizes its grid from it).
      feature_maps: ``feature_maps()``: the image backbone's spatial feature maps
        ``[n, h, w, c]`` (Conv4 pooling only in its first two blocks, as Relation Networks'
        embedding); ``None`` where the benchmark has no image backbone.
      input_shape: one model input's shape (a learner sizes its own modules from it).
    """

    network: Callable[[], Model]
    features: Callable[[], Model]
    body_and_head: Callable[[], tuple[Model, Model]]
    loss: Callable[[Any, Any], Any]
    metric: Metric
    unroll: bool
    task_chunk: int | None
    config: str
    x_dim: int | None = None
    y_dim: int | None = None
    x_range: tuple[float, float] | None = None
    feature_maps: Callable[[], Model] | None = None
    input_shape: tuple[int, ...] | None = None

    def feature_width(self, model: Model, algorithm: str) -> int:
        """The flat output width of ``model`` on this benchmark's inputs (for learners that
        size their own modules from their embedding's width)."""
        if self.input_shape is None:
            raise ConfigError(f"Config {self.config}: {algorithm} needs a benchmark that states "
                              "its input shape (the few-shot image benchmarks do).")  # fmt: skip
        shape = jax.eval_shape(
            lambda k: model.apply(model.init(k), jnp.zeros((1, *self.input_shape))),
            jax.random.key(0),
        ).shape
        if len(shape) != 2:
            raise ConfigError(
                f"Config {self.config}: {algorithm} needs flat features; got {shape}."
            )
        return shape[1]


def function_env(name: str, x_dim: int, y_dim: int, x_range: tuple[float, float],
                 needs: str) -> BuildEnv:  # fmt: skip
    """The `BuildEnv` of a benchmark of functions, which has no fixed network: a learner that
    asks for one gets an error naming ``needs`` (the learners that fit)."""

    def fail():
        raise ConfigError(f"Config {name}: these tasks have no fixed network; use {needs}.")

    return BuildEnv(network=fail, features=fail, body_and_head=fail, loss=losses.mse,
                    metric=losses.MSE, unroll=False, task_chunk=None, config=name,
                    x_dim=x_dim, y_dim=y_dim, x_range=x_range)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Benchmark:
    """The data, tasks and network of a config. Subclasses define ``tasks`` and ``env``.

    Attributes:
      compute_dtype: the network's forward and backward dtype, ``float32``, ``bfloat16`` or
        ``float16`` (parameters and optimizer state stay float32; see
        `metajax.core.functional.mixed_precision`).
    """

    compute_dtype: str = "float32"
    kind: ClassVar[str] = "regression"  # or "classification"

    def tasks(self) -> tuple[TaskDistribution, TaskDistribution]:
        """``(meta-train, meta-test)`` task distributions."""
        raise NotImplementedError

    def env(self, learner: LearnerConfig, trainer: TrainerConfig, name: str) -> BuildEnv:
        """The pieces ``learner`` builds from."""
        raise NotImplementedError

    def with_dtype(self, model: Model) -> Model:
        """``model`` in this benchmark's ``compute_dtype``."""
        if self.compute_dtype == "float32":
            return model
        return mixed_precision(model, jnp.dtype(self.compute_dtype))

    def preprocess(self, raw: Any) -> Any:
        """Raw inputs (as the data set stores them) to model inputs, exactly as in training."""
        return jnp.asarray(raw)

    def resolve_paths(self) -> Benchmark:
        """The benchmark with its data folder made explicit, for the run's record."""
        return self

    def validate(self, name: str) -> None:
        if self.compute_dtype not in ("float32", "bfloat16", "float16"):
            raise ConfigError(
                f"Config {name}: compute_dtype must be float32, bfloat16 or float16, got "
                f"{self.compute_dtype!r}."
            )


@dataclasses.dataclass(frozen=True)
class LearnerConfig:
    """A registered algorithm's settings (`register_algorithm`); ``build`` makes the learner.

    Class attributes set by registration: ``algorithm`` (the name) and ``summary`` (one line).
    """

    algorithm: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    # Evaluation and training at different ways (ProtoNet): a learner without a fixed head.
    fixed_way: ClassVar[bool] = True
    # Every task has its own weights during training (MAML's fast weights), which decides the
    # CPU convolution (metajax.configs.fewshot).
    per_task_weights: ClassVar[bool] = True
    # The benchmark kinds the learner handles.
    kinds: ClassVar[tuple[str, ...]] = ("regression", "classification")

    def build(self, env: BuildEnv) -> MetaLearner:
        raise NotImplementedError

    def validate(self, name: str) -> None:
        """Raises ConfigError naming any field with an impossible value."""


_ALGORITHMS: dict[str, type[LearnerConfig]] = {}


def register_algorithm(name: str, summary: str = "") -> Callable[[type], type]:
    """Class decorator: registers a `LearnerConfig` subclass as algorithm ``name``.

    Args:
      name: the name configs and ``--set algorithm=`` use.
      summary: one line for ``metajax list`` (default: the class docstring's first line).

    Example:
      >>> import dataclasses
      >>> @register_algorithm("doc-example")
      ... @dataclasses.dataclass(frozen=True)
      ... class DocExample(LearnerConfig):
      ...     '''An example.'''
      >>> algorithm_config("doc-example").algorithm
      'doc-example'
      >>> unregister_algorithm("doc-example")
    """

    def register(cls: type) -> type:
        if not (isinstance(cls, type) and issubclass(cls, LearnerConfig)):
            raise TypeError(f"register_algorithm({name!r}) needs a LearnerConfig subclass.")
        if name in _ALGORITHMS and _ALGORITHMS[name].__qualname__ != cls.__qualname__:
            raise ConfigError(f"Algorithm {name!r} is registered already.")
        cls.algorithm = name
        doc = (cls.__doc__ or "").strip().splitlines()
        cls.summary = summary or (doc[0] if doc else "")
        _ALGORITHMS[name] = cls
        return cls

    return register


def unregister_algorithm(name: str) -> None:
    """Removes a registered algorithm (tests, notebooks)."""
    _ALGORITHMS.pop(name, None)


def algorithms() -> dict[str, type[LearnerConfig]]:
    """Every registered algorithm's config class, by name."""
    import metajax.algorithms  # noqa: F401  (registers the built-in algorithms)

    return dict(_ALGORITHMS)


def algorithm_config(name: str) -> type[LearnerConfig]:
    """The config class of algorithm ``name``.

    Raises:
      ConfigError: an unknown name; the message lists the registered ones.
    """
    known = algorithms()
    if name not in known:
        raise ConfigError(f"Unknown algorithm {name!r}. Registered: {', '.join(sorted(known))}.")
    return known[name]


LR_SCHEDULES = ("constant", "cosine", "linear")
OUTER_OPTIMIZERS = ("adam", "sgd")


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
    """How a run trains and evaluates.

    Attributes:
      steps: meta-steps to train; raising it extends a finished run.
      seed: seeds initialization and task sampling.
      meta_batch_size: tasks per meta-step.
      steps_per_dispatch: meta-steps per compiled call (a ``lax.scan``); 1 for step-by-step.
      checkpoint_every: meta-steps between checkpoints.
      log_every: meta-steps between lines of ``metrics.jsonl``.
      keep_checkpoints: how many checkpoints to keep.
      eval_tasks: test tasks for evaluation.
      eval_seed: seeds the test tasks (fixed, so evaluations are comparable).
      shard_tasks: split each meta-batch's tasks over every device (all processes' after
        ``jax.distributed.initialize()``), parameters replicated; ``meta_batch_size`` must
        be a multiple of the device count.
      outer_optimizer: ``adam`` or ``sgd`` (Reptile's ``theta += eps (W - theta)`` is SGD with
        rate eps on its pseudo-gradient).
      outer_lr: the outer optimizer's learning rate.
      lr_schedule: ``constant`` (with ``lr_halve_every``), ``cosine`` (to ``min_outer_lr``,
        MAML++) or ``linear`` (to ``min_outer_lr``, Reptile).
      lr_halve_every: halve the outer rate every this many steps (0: never).
      min_outer_lr: the cosine or linear schedule's final rate.
      schedule_steps: the cosine or linear schedule's horizon; 0 means ``steps`` and is
        fixed when the run starts, so extending a run never stretches its schedule (past the
        horizon the rate stays at ``min_outer_lr``).
    """

    steps: int = 1000
    seed: int = 0
    meta_batch_size: int = 25
    steps_per_dispatch: int = 100
    checkpoint_every: int = 5000
    log_every: int = 100
    keep_checkpoints: int = 3
    eval_tasks: int = 1000
    eval_seed: int = 1234
    shard_tasks: bool = False
    outer_optimizer: str = "adam"
    outer_lr: float = 1e-3
    lr_schedule: str = "constant"
    lr_halve_every: int = 0
    min_outer_lr: float = 0.0
    schedule_steps: int = 0

    def validate(self, name: str) -> None:
        for field in ("steps", "meta_batch_size", "steps_per_dispatch", "checkpoint_every",
                      "log_every", "keep_checkpoints", "eval_tasks"):  # fmt: skip
            value = getattr(self, field)
            minimum = 0 if field == "steps" else 1
            if value < minimum:
                raise ConfigError(f"Config {name}: {field} must be >= {minimum}, got {value}.")
        if self.eval_tasks < 2:
            raise ConfigError(
                f"Config {name}: eval_tasks must be >= 2 (a confidence interval needs two "
                f"tasks), got {self.eval_tasks}."
            )
        for field, allowed in (("outer_optimizer", OUTER_OPTIMIZERS),
                               ("lr_schedule", LR_SCHEDULES)):  # fmt: skip
            if getattr(self, field) not in allowed:
                raise ConfigError(
                    f"Config {name}: {field} must be one of {', '.join(allowed)}, got "
                    f"{getattr(self, field)!r}."
                )
        for field in ("outer_lr", "min_outer_lr"):
            value = getattr(self, field)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"Config {name}: {field} must be finite and >= 0, got {value}.")
        for field in ("seed", "eval_seed"):
            value = getattr(self, field)
            if not 0 <= value < 2**63:
                raise ConfigError(
                    f"Config {name}: {field} must be in [0, 2**63) (a 64-bit key), got {value}."
                )
        if self.schedule_steps < 0 or self.lr_halve_every < 0:
            raise ConfigError(
                f"Config {name}: schedule_steps and lr_halve_every must be >= 0, got "
                f"{self.schedule_steps} and {self.lr_halve_every}."
            )

    def outer_lr_schedule(self) -> optax.ScalarOrSchedule:
        """The outer learning rate: constant, halved every ``lr_halve_every`` steps, or a
        cosine or linear decay to ``min_outer_lr`` over ``schedule_steps`` (else ``steps``).

        Example:
          >>> schedule = TrainerConfig(steps=10, lr_schedule="cosine").outer_lr_schedule()
          >>> [round(float(schedule(s)), 6) for s in (0, 5, 10, 20)]
          [0.001, 0.0005, 0.0, 0.0]
        """
        horizon = self.schedule_steps or self.steps
        if self.lr_schedule == "cosine":
            alpha = self.min_outer_lr / self.outer_lr if self.outer_lr else 0.0
            return optax.cosine_decay_schedule(self.outer_lr, horizon, alpha=alpha)
        if self.lr_schedule == "linear":
            return optax.linear_schedule(self.outer_lr, self.min_outer_lr, horizon)
        if self.lr_halve_every:
            return optax.exponential_decay(self.outer_lr, self.lr_halve_every, 0.5, staircase=True)
        return self.outer_lr

    def optimizer(self) -> optax.GradientTransformation:
        outer = optax.adam if self.outer_optimizer == "adam" else optax.sgd
        return outer(self.outer_lr_schedule())


# ---- shared learner fields --------------------------------------------------------------------

INNER_OPTIMIZERS = ("sgd", "adam", "sgd_linesearch", "lbfgs")


def inner_optimizer(
    name: str, lr: float, *, differentiated: bool, algorithm: str, config: str
) -> optax.GradientTransformation:
    """The inner optimizer a config names.

    Args:
      name: ``sgd``; ``adam`` (beta1 = 0, as Reptile's paper); ``sgd_linesearch`` (SGD from
        ``lr`` with Armijo backtracking, halving up to 20 times: never an uphill step); or
        ``lbfgs`` (``optax.lbfgs`` with its zoom line search; ``lr`` unused).
      lr: the inner learning rate.
      differentiated: whether the algorithm differentiates its inner loop; the line
        searches are ``while_loop`` s, which reverse mode cannot differentiate, so they are
        refused there.
      algorithm, config: names for the error message.

    Returns:
      The ``optax`` transformation.

    Example:
      >>> opt = inner_optimizer("sgd_linesearch", 0.01, differentiated=False, algorithm="imaml",
      ...                       config="demo")
      >>> inner_optimizer("lbfgs", 0.01, differentiated=True, algorithm="maml", config="demo")
      Traceback (most recent call last):
      ...
      metajax.config.ConfigError: Config demo: inner_optimizer=lbfgs line-searches in a while_loop, which cannot be differentiated; maml differentiates its inner loop. Use sgd or adam, or an algorithm that does not (imaml, reptile).
    """
    if name not in INNER_OPTIMIZERS:
        raise ConfigError(
            f"Config {config}: inner_optimizer must be one of {', '.join(INNER_OPTIMIZERS)}, "
            f"got {name!r}."
        )
    if name in ("sgd_linesearch", "lbfgs") and differentiated:
        raise ConfigError(
            f"Config {config}: inner_optimizer={name} line-searches in a while_loop, which "
            f"cannot be differentiated; {algorithm} differentiates its inner loop. Use sgd or "
            "adam, or an algorithm that does not (imaml, reptile)."
        )
    if name == "sgd":
        return optax.sgd(lr)
    if name == "adam":
        return optax.adam(lr, b1=0.0)
    if name == "lbfgs":
        return optax.lbfgs()
    return optax.chain(
        optax.sgd(lr),
        optax.scale_by_backtracking_linesearch(
            max_backtracking_steps=20, decrease_factor=0.5, increase_factor=1.0
        ),
    )


@dataclasses.dataclass(frozen=True)
class InnerFields:
    """Fields of every gradient-based learner's config.

    Attributes:
      inner_lr: the inner learning rate (the initial learned rates of Meta-SGD and MAML++).
      inner_steps: inner steps during meta-training.
      eval_steps: test-time step counts that evaluation reports; empty: ``(inner_steps,)``.
    """

    inner_lr: float = 0.01
    inner_steps: int = 1
    eval_steps: tuple[int, ...] = ()

    def check_inner(self, name: str) -> None:
        if not math.isfinite(self.inner_lr) or self.inner_lr <= 0:
            raise ConfigError(
                f"Config {name}: inner_lr must be finite and > 0, got {self.inner_lr}."
            )
        if self.inner_steps < 0 or any(k < 0 for k in self.eval_steps):
            raise ConfigError(
                f"Config {name}: inner_steps and eval_steps must be >= 0, got "
                f"{self.inner_steps} and {self.eval_steps}."
            )
        if len(set(self.eval_steps)) < len(self.eval_steps):
            raise ConfigError(f"Config {name}: eval_steps repeats a count: {self.eval_steps}.")

    def test_steps(self) -> tuple[int, ...] | None:
        return tuple(self.eval_steps) or None

    def inner_loop(
        self, env: BuildEnv, optimizer: optax.GradientTransformation | None, **settings: Any
    ) -> InnerLoop:
        """The `metajax.InnerLoop` of these fields on ``env`` (``settings``: first_order,
        remat)."""
        return InnerLoop(optimizer, steps=self.inner_steps, unroll=env.unroll, **settings)


@dataclasses.dataclass(frozen=True)
class OptimizerFields:
    """Fields of the learners that take an inner optax optimizer.

    Attributes:
      inner_optimizer: ``sgd``, ``adam`` (beta1 = 0), or where the inner loop is never
        differentiated ``sgd_linesearch`` or ``lbfgs`` (`inner_optimizer`).
      inner_grad_clip: clip each inner gradient to this global norm (0: off).
    """

    inner_optimizer: str = "sgd"
    inner_grad_clip: float = 0.0

    def make_optimizer(self, *, differentiated: bool, config: str) -> optax.GradientTransformation:
        opt = inner_optimizer(self.inner_optimizer, self.inner_lr, differentiated=differentiated,
                              algorithm=self.algorithm, config=config)  # fmt: skip
        if self.inner_grad_clip:
            opt = optax.chain(optax.clip_by_global_norm(self.inner_grad_clip), opt)
        return opt

    def check_optimizer(self, name: str) -> None:
        if self.inner_optimizer not in INNER_OPTIMIZERS:
            raise ConfigError(
                f"Config {name}: inner_optimizer must be one of {', '.join(INNER_OPTIMIZERS)}, "
                f"got {self.inner_optimizer!r}."
            )
        if not math.isfinite(self.inner_grad_clip) or self.inner_grad_clip < 0:
            raise ConfigError(
                f"Config {name}: inner_grad_clip must be >= 0, got {self.inner_grad_clip}."
            )


@dataclasses.dataclass(frozen=True)
class SecondOrderFields:
    """Fields of the learners that differentiate their inner loop.

    Attributes:
      first_order: drop second-order terms (first-order MAML).
      remat: checkpoint each inner step (memory flat in inner_steps).
    """

    first_order: bool = False
    remat: bool = False

    def second_order(self) -> dict[str, bool]:
        return {"first_order": self.first_order, "remat": self.remat}


# ---- the whole config -------------------------------------------------------------------------

_PARTS = ("benchmark", "learner", "trainer")


@dataclasses.dataclass(frozen=True)
class Config:
    """A run's config: its name and three parts.

    Fields of the parts read through the config too (``config.steps``,
    ``config.inner_lr``). `override` changes them by name; ``algorithm`` swaps the learner.

    Attributes:
      name: the config's registered name.
      benchmark: data, tasks and network (`Benchmark`).
      learner: the algorithm's own settings (`LearnerConfig`).
      trainer: steps, seed, meta-batch, outer optimizer (`TrainerConfig`).
      description: one line for ``metajax list``.
    """

    name: str
    benchmark: Benchmark
    learner: LearnerConfig
    trainer: TrainerConfig = TrainerConfig()
    description: str = dataclasses.field(default="", compare=False)

    def __getattr__(self, key: str) -> Any:
        # Only called when normal lookup fails: read a part's field by its name.
        if key.startswith("__"):
            raise AttributeError(key)
        for part in _PARTS:
            value = self.__dict__.get(part)
            if value is not None and key in {f.name for f in dataclasses.fields(value)}:
                return getattr(value, key)
        raise AttributeError(f"Config {self.__dict__.get('name')!r} has no field {key!r}.")

    @property
    def algorithm(self) -> str:
        return self.learner.algorithm

    def validate(self) -> None:
        """Raises ConfigError naming any field with an impossible value."""
        self.benchmark.validate(self.name)
        self.learner.validate(self.name)
        self.trainer.validate(self.name)
        for part in _PARTS:  # every float, including those no part's validate names
            obj = getattr(self, part)
            for field in _field_names(obj):
                value = getattr(obj, field)
                values = value if isinstance(value, tuple) else (value,)
                if any(isinstance(v, float) and not math.isfinite(v) for v in values):
                    raise ConfigError(f"Config {self.name}: {field} must be finite, got {value}.")
                too_big = [v for v in values if isinstance(v, int) and abs(v) >= 2**31]
                if too_big and field not in ("seed", "eval_seed"):
                    raise ConfigError(
                        f"Config {self.name}: {field} must be below 2**31 (array sizes and "
                        f"step counts are 32-bit), got {value}."
                    )
        if self.benchmark.kind not in self.learner.kinds:
            raise ConfigError(
                f"Config {self.name}: {self.algorithm} handles {' and '.join(self.learner.kinds)} "
                f"tasks, and this benchmark's are {self.benchmark.kind}."
            )
        check = getattr(self.benchmark, "check_learner", None)
        if check is not None:
            check(self.learner, self.trainer, self.name)

    def build(self) -> Experiment:
        """The run's learner, tasks and outer optimizer."""
        self.validate()
        train_tasks, test_tasks = self.benchmark.tasks()
        env = self.benchmark.env(self.learner, self.trainer, self.name)
        return Experiment(
            learner=self.learner.build(env),
            train_tasks=train_tasks,
            test_tasks=test_tasks,
            optimizer=self.trainer.optimizer(),
        )

    def replace(self, **changes: Any) -> Config:
        """A copy with fields of any part changed by name (``algorithm`` first, if given).

        Example:
          >>> config = get_config("sinusoid-maml").replace(steps=10, inner_lr=0.1)
          >>> config.steps, config.learner.inner_lr
          (10, 0.1)
        """
        config = self
        if "algorithm" in changes:
            config = _switch_algorithm(config, changes.pop("algorithm"))
        parts: dict[str, dict[str, Any]] = {p: {} for p in _PARTS}
        for key, value in changes.items():
            parts[config.part_of(key)][key] = value
        return dataclasses.replace(
            config,
            **{p: dataclasses.replace(getattr(config, p), **v) for p, v in parts.items() if v},
        )

    def part_of(self, key: str) -> str:
        """Which part has field ``key``.

        Raises:
          ConfigError: no part has it; the message names the algorithms that do, if any,
            and lists the valid keys.
        """
        for part in _PARTS:
            if key in _field_names(getattr(self, part)):
                return part
        others = sorted(a for a, cls in algorithms().items()
                        if key in {f.name for f in dataclasses.fields(cls)})  # fmt: skip
        if others:
            raise ConfigError(
                f"{key!r} is a setting of {', '.join(others)}, not of {self.algorithm}, the "
                f"algorithm of {self.name}. Set algorithm={others[0]} too, or drop {key}."
            )
        raise ConfigError(
            f"Unknown config key {key!r} for {self.name}. Valid keys: {self.valid_keys()}."
        )

    def valid_keys(self) -> str:
        keys = ["algorithm (str)"]
        for part in _PARTS:
            obj = getattr(self, part)
            hints = typing.get_type_hints(type(obj))
            keys += [f"{f} ({_type_name(hints[f])})" for f in _field_names(obj)]
        return ", ".join(sorted(keys))


def _field_names(obj: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(obj) if f.init]


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", str(annotation))


def _switch_algorithm(config: Config, name: str) -> Config:
    """``config`` with the learner of algorithm ``name``, carrying over the fields the two
    share that the old learner had changed from its defaults (the named config's settings)."""
    cls = algorithm_config(name)
    old = config.learner
    defaults = type(old)()
    carried = {
        f.name: getattr(old, f.name)
        for f in dataclasses.fields(cls)
        if f.name in _field_names(old) and getattr(old, f.name) != getattr(defaults, f.name)
    }
    return dataclasses.replace(config, learner=cls(**carried))


# ---- --set ---------------------------------------------------------------------------------------


def _coerce(raw: str, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (types.UnionType, typing.Union):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if raw.lower() == "none" and len(options) < len(typing.get_args(annotation)):
            return None
        annotation = options[0]
        origin = typing.get_origin(annotation)
    if annotation is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError("expected a bool (true/false)")
    if annotation is int:
        return int(raw)
    if annotation is float:
        return float(raw)
    if annotation is str:
        return raw
    if origin is tuple:
        (item, *_) = typing.get_args(annotation)
        parts = [p for p in raw.strip("()[] ").split(",") if p.strip()]
        return tuple(_coerce(p.strip(), item) for p in parts)
    raise ValueError(f"cannot parse a value of type {annotation}")


def override(config: Config, assignments: Sequence[str]) -> Config:
    """Applies ``key=value`` overrides, converting each value to its field's type.

    Args:
      config: the config to override.
      assignments: strings ``"key=value"``; tuples as ``"40,40"``; ``algorithm=NAME`` swaps
        the learner (applied first).

    Returns:
      A new, validated config.

    Raises:
      ConfigError: an unknown or repeated key, a field of another algorithm (the message
        names which), a malformed assignment, a value of the wrong type or an impossible one.

    Example:
      >>> cfg = override(get_config("sinusoid-maml"), ["steps=10", "seed=3"])
      >>> cfg.steps, cfg.seed
      (10, 3)
      >>> override(cfg, ["cg_steps=9"])
      Traceback (most recent call last):
      ...
      metajax.config.ConfigError: 'cg_steps' is a setting of imaml, not of maml, the algorithm of sinusoid-maml. Set algorithm=imaml too, or drop cg_steps.
    """
    raw_values: dict[str, str] = {}
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(
                f"--set expects key=value, got {assignment!r}. Valid keys: {config.valid_keys()}."
            )
        if key in raw_values:
            raise ConfigError(f"--set gives {key} twice ({raw_values[key]!r} and {raw.strip()!r}).")
        raw_values[key] = raw.strip()
    if "algorithm" in raw_values:
        config = _switch_algorithm(config, raw_values.pop("algorithm"))
    changes = {}
    for key, raw in raw_values.items():
        part = getattr(config, config.part_of(key))
        annotation = typing.get_type_hints(type(part))[key]
        try:
            changes[key] = _coerce(raw, annotation)
        except ValueError as err:
            raise ConfigError(
                f"Bad value {raw!r} for {key} in {config.name}: {err}. Expected type "
                f"{_type_name(annotation)}. Valid keys: {config.valid_keys()}."
            ) from None
    new = config.replace(**changes)
    new.validate()
    return new


# ---- config.json ---------------------------------------------------------------------------------


def to_dict(config: Config) -> dict[str, Any]:
    """The config as JSON-ready values: its name, algorithm and each part's fields."""
    out: dict[str, Any] = {"name": config.name, "algorithm": config.algorithm}
    for part in _PARTS:
        obj = getattr(config, part)
        out[part] = {f: getattr(obj, f) for f in _field_names(obj)}
    return json.loads(json.dumps(out))  # tuples -> lists, as saved


def from_dict(values: Mapping[str, Any], base: Config | None = None) -> Config:
    """Rebuilds a config written by `to_dict`, from its registered name (or ``base``).

    A run saved before configs had parts (one flat dict) is read as overrides of its named
    config.
    """
    base = get_config(values["name"]) if base is None else base
    if "trainer" not in values:  # the flat format of earlier runs
        return _from_flat(values, base)
    config = base
    if values.get("algorithm", base.algorithm) != base.algorithm:
        config = _switch_algorithm(config, values["algorithm"])
    parts = {}
    for part in _PARTS:
        obj = getattr(config, part)
        hints = typing.get_type_hints(type(obj))
        changes = {}
        for key, value in values.get(part, {}).items():
            if key not in hints:
                raise ConfigError(
                    f"Saved config has {part} field {key!r}, unknown to {values['name']} now."
                )
            changes[key] = tuple(value) if isinstance(value, list) else value
        parts[part] = dataclasses.replace(obj, **changes)
    return dataclasses.replace(config, **parts)


def _from_flat(values: Mapping[str, Any], base: Config) -> Config:
    """A config saved before configs had parts: one dict holding every algorithm's fields,
    of which only the run's own algorithm's were in effect."""
    config = base
    if values.get("algorithm", base.algorithm) != base.algorithm:
        config = _switch_algorithm(config, values["algorithm"])
    changes = {}
    for key, value in values.items():
        value = tuple(value) if isinstance(value, list) else value
        if key in ("name", "algorithm"):
            continue
        if key == "eval_inner_steps":  # the few-shot configs' one test-time step count
            key, value = "eval_steps", (value,)
        try:
            config.part_of(key)
        except ConfigError:
            if any(key in _field_names(cls()) for cls in algorithms().values()):
                continue  # another algorithm's setting, inert in the run
            raise
        changes[key] = value
    return config.replace(**changes)


def save_json(path: str | os.PathLike, config: Config) -> None:
    """Writes ``config.json`` atomically (`metajax.files.write_atomic`)."""
    write_atomic(path, dumps(to_dict(config), indent=2) + "\n")


# ---- named configs -----------------------------------------------------------------------------

_CONFIGS: dict[str, Callable[[], Config]] = {}


def register_config(name: str, factory: Callable[[], Config] | Config) -> None:
    """Registers a named config: a `Config`, or a function returning one (built on demand).

    Example:
      >>> register_config("my-sinusoid", get_config("sinusoid-maml").replace(steps=500))
      >>> get_config("my-sinusoid").steps, get_config("my-sinusoid").name
      (500, 'my-sinusoid')
      >>> unregister_config("my-sinusoid")
    """
    _CONFIGS[name] = factory if callable(factory) else (lambda: factory)


def unregister_config(name: str) -> None:
    """Removes a registered config (tests, notebooks)."""
    _CONFIGS.pop(name, None)


def available_configs() -> dict[str, Callable[[], Config]]:
    """Every named config's factory, by name (the built-in ones and any registered)."""
    import metajax.configs  # noqa: F401  (registers the built-in configs)

    return dict(_CONFIGS)


def get_config(name: str) -> Config:
    """The named config with its defaults.

    Raises:
      ConfigError: an unknown name; the message lists the known ones.
    """
    configs = available_configs()
    if name not in configs:
        raise ConfigError(f"Unknown config {name!r}. Known configs: {', '.join(sorted(configs))}.")
    config = configs[name]()
    return dataclasses.replace(config, name=name) if config.name != name else config
