"""Training, checkpoints, evaluation and plots."""

from metajax.train.checkpoint import CheckpointError
from metajax.train.evaluate import evaluate, mean_ci95
from metajax.train.trainer import (
    NonFiniteLossError,
    TrainState,
    init_state,
    load_state,
    make_meta_step,
    make_train_fn,
    train,
)

__all__ = [
    "CheckpointError",
    "NonFiniteLossError",
    "TrainState",
    "evaluate",
    "init_state",
    "load_state",
    "make_meta_step",
    "make_train_fn",
    "mean_ci95",
    "train",
]
