"""Training, checkpoints, evaluation and plots."""

from metajax.core.learner import TrainState
from metajax.training.checkpoint import Checkpointer, CheckpointError
from metajax.training.evaluate import evaluate, mean_ci95
from metajax.training.trainer import (
    NonFiniteLossError,
    RunError,
    init_state,
    load_state,
    make_meta_step,
    make_train_fn,
    restore_state,
    run_config,
    save_state,
    task_mesh,
    train,
)

__all__ = [
    "CheckpointError",
    "Checkpointer",
    "NonFiniteLossError",
    "RunError",
    "TrainState",
    "evaluate",
    "init_state",
    "load_state",
    "make_meta_step",
    "make_train_fn",
    "mean_ci95",
    "restore_state",
    "run_config",
    "save_state",
    "task_mesh",
    "train",
]
