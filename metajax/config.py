"""Experiment configs: plain dataclasses, overridable from the command line.

A named config is a dataclass deriving from `BaseConfig` whose ``build()`` returns an
`Experiment`. Named configs live in ``experiments/configs/*.py`` (each file exports a
``CONFIGS`` dict of name -> config class); `get_config` finds them.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import os
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import optax

from metajax.algorithms.base import MetaAlgorithm
from metajax.core.functional import Model, mixed_precision
from metajax.core.types import TaskDistribution


@dataclasses.dataclass(frozen=True)
class Experiment:
    """Everything a run needs, built from a config.

    Attributes:
      algorithm: the meta-learning algorithm.
      train_tasks: the meta-training task distribution.
      test_tasks: the meta-test task distribution.
      optimizer: the outer (meta) optax optimizer.
      metric: ``"mse"`` (regression) or ``"accuracy"`` (classification).
      eval_steps: inner-step counts at which evaluation reports the metric.
    """

    algorithm: MetaAlgorithm
    train_tasks: TaskDistribution
    test_tasks: TaskDistribution
    optimizer: optax.GradientTransformation
    metric: str = "mse"
    eval_steps: tuple[int, ...] = (0, 1, 10)


@dataclasses.dataclass(frozen=True)
class BaseConfig:
    """Fields every config has; the trainer reads them.

    Attributes:
      name: the config's registered name.
      steps: meta-steps to train.
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
      compute_dtype: the models' forward and backward dtype, ``float32`` or ``bfloat16``
        (mixed precision: parameters, gradients and optimizer state stay float32; see
        `metajax.core.functional.mixed_precision`).
    """

    name: str = "base"
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
    compute_dtype: str = "float32"

    def build(self) -> Experiment:
        raise NotImplementedError(f"{type(self).__name__}.build() is not defined.")

    def model(self, model: Model) -> Model:
        """``model`` in this config's ``compute_dtype``; configs wrap their models with it."""
        if self.compute_dtype == "float32":
            return model
        return mixed_precision(model, jnp.dtype(self.compute_dtype))

    def validate(self) -> None:
        """Raises ValueError naming any field with an impossible value."""
        if self.compute_dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(
                f"Config {self.name}: compute_dtype must be float32, bfloat16 or float16, got "
                f"{self.compute_dtype!r}."
            )
        for field in (
            "steps",
            "meta_batch_size",
            "steps_per_dispatch",
            "checkpoint_every",
            "log_every",
            "keep_checkpoints",
            "eval_tasks",
        ):
            value = getattr(self, field)
            minimum = 0 if field == "steps" else 1
            if value < minimum:
                raise ValueError(f"Config {self.name}: {field} must be >= {minimum}, got {value}.")


INNER_OPTIMIZERS = ("sgd", "adam", "sgd_linesearch", "lbfgs")
# Algorithms whose inner loop is never differentiated: a while_loop line search is fine there.
UNDIFFERENTIATED_INNER_LOOP = ("imaml", "reptile")


def inner_optimizer(
    name: str, lr: float, *, algorithm: str, config: str
) -> optax.GradientTransformation:
    """The inner optimizer a config names.

    Args:
      name: ``sgd``; ``adam`` (beta1 = 0, as Reptile's paper); ``sgd_linesearch`` (SGD from
        ``lr`` with Armijo backtracking, halving up to 20 times: never an uphill step); or
        ``lbfgs`` (``optax.lbfgs`` with its zoom line search; ``lr`` unused).
      lr: the inner learning rate.
      algorithm: the config's algorithm; the line searches are ``while_loop`` s, which
        reverse mode cannot differentiate, so they are refused unless the algorithm never
        differentiates its inner loop (iMAML, Reptile).
      config: the config's name, for the error message.

    Returns:
      The ``optax`` transformation.

    Example:
      >>> opt = inner_optimizer("sgd_linesearch", 0.01, algorithm="imaml", config="demo")
      >>> inner_optimizer("lbfgs", 0.01, algorithm="maml", config="demo")
      Traceback (most recent call last):
      ...
      ValueError: Config demo: inner_optimizer=lbfgs line-searches in a while_loop, which cannot be differentiated; maml differentiates its inner loop. Use sgd or adam, or an algorithm that does not (imaml, reptile).
    """
    if name not in INNER_OPTIMIZERS:
        raise ValueError(
            f"Config {config}: inner_optimizer must be one of {', '.join(INNER_OPTIMIZERS)}, "
            f"got {name!r}."
        )
    if name in ("sgd_linesearch", "lbfgs") and algorithm not in UNDIFFERENTIATED_INNER_LOOP:
        raise ValueError(
            f"Config {config}: inner_optimizer={name} line-searches in a while_loop, which "
            f"cannot be differentiated; {algorithm} differentiates its inner loop. Use sgd or "
            f"adam, or an algorithm that does not ({', '.join(UNDIFFERENTIATED_INNER_LOOP)})."
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


class ConfigError(ValueError):
    """An unknown config name, or a bad ``--set`` override."""


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


def override(config: BaseConfig, assignments: Sequence[str]) -> BaseConfig:
    """Applies ``key=value`` overrides, converting each value to its field's type.

    Args:
      config: the config to override.
      assignments: strings ``"key=value"``; tuples as ``"40,40"``.

    Returns:
      A new config.

    Raises:
      ConfigError: an unknown key, a malformed assignment, or a value of the wrong type;
        the message lists the valid keys.

    Example:
      >>> cfg = override(BaseConfig(), ["steps=10", "seed=3"])
      >>> cfg.steps, cfg.seed
      (10, 3)
    """
    hints = typing.get_type_hints(type(config))
    fields = {f.name for f in dataclasses.fields(config)} - {"name"}
    valid = ", ".join(f"{k} ({getattr(hints[k], '__name__', hints[k])})" for k in sorted(fields))
    changes = {}
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        key = key.strip()
        if not sep:
            raise ConfigError(f"--set expects key=value, got {assignment!r}. Valid keys: {valid}.")
        if key not in fields:
            raise ConfigError(f"Unknown config key {key!r} for {config.name}. Valid keys: {valid}.")
        try:
            changes[key] = _coerce(raw.strip(), hints[key])
        except ValueError as err:
            raise ConfigError(
                f"Bad value {raw!r} for {key} in {config.name}: {err}. Expected type "
                f"{hints[key]}. Valid keys: {valid}."
            ) from None
    new = dataclasses.replace(config, **changes)
    try:
        new.validate()
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return new


def to_dict(config: BaseConfig) -> dict[str, Any]:
    """The config as JSON-ready values."""
    return dataclasses.asdict(config)


def from_dict(values: dict[str, Any]) -> BaseConfig:
    """Rebuilds a config written by `to_dict`, from its registered name."""
    config = get_config(values["name"])
    hints = typing.get_type_hints(type(config))
    fields = {f.name for f in dataclasses.fields(config)}
    changes = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"Saved config has key {key!r}, unknown to {values['name']} now.")
        if isinstance(value, list) or typing.get_origin(hints[key]) is tuple:
            value = tuple(value)
        changes[key] = value
    return dataclasses.replace(config, **changes)


def experiments_dir() -> Path:
    """Where named configs live: ``$METAJAX_EXPERIMENTS``, else the repository's ``experiments/``."""
    env = os.environ.get("METAJAX_EXPERIMENTS")
    if env:
        return Path(env)
    beside = Path(__file__).resolve().parents[1] / "experiments"
    return beside if beside.is_dir() else Path.cwd() / "experiments"


def available_configs() -> dict[str, type[BaseConfig]]:
    """Every named config, from ``experiments/configs/*.py`` (each file is loaded once)."""
    return dict(_load_configs(experiments_dir() / "configs"))


@functools.cache
def _load_configs(folder: Path) -> dict[str, type[BaseConfig]]:
    configs: dict[str, type[BaseConfig]] = {}
    for path in sorted(folder.glob("*.py")):
        if path.name.startswith("_"):
            continue
        spec = importlib.util.spec_from_file_location(f"metajax_configs.{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        # dataclasses and typing.get_type_hints look the module up by name.
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        configs.update(getattr(module, "CONFIGS", {}))
    return configs


def get_config(name: str) -> BaseConfig:
    """The named config with its defaults.

    Raises:
      ConfigError: an unknown name; the message lists the known ones.
    """
    configs = available_configs()
    if name not in configs:
        known = ", ".join(sorted(configs)) or f"none found under {experiments_dir() / 'configs'}"
        raise ConfigError(f"Unknown config {name!r}. Known configs: {known}.")
    return configs[name](name=name)


def save_json(path: str | os.PathLike, config: BaseConfig) -> None:
    Path(path).write_text(json.dumps(to_dict(config), indent=2) + "\n")
