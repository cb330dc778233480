"""A trained run as a predictor: `load(workdir).predict(support_x, support_y, query_x)`."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from metajax.config import Config, Experiment
from metajax.core.learner import MetaLearner
from metajax.core.types import Params, Split
from metajax.errors import InputError
from metajax.training.trainer import load_state


@dataclasses.dataclass(frozen=True)
class TrainedLearner:
    """Meta-trained parameters with the learner that adapts them.

    Attributes:
      learner: the run's meta-learner.
      params: the meta-parameters.
      preprocess: raw inputs (as the data set stores them) to model inputs, exactly as in
        training; identity for data that needs none.
      config: the run's config (``None`` for a run loaded with only its experiment).
      classification: whether targets are class labels.
      x_shape: the shape of one model input in training (after ``preprocess``), checked.
      y_shape: the shape of one target in training, checked.
    """

    learner: MetaLearner
    params: Params
    preprocess: Callable[[np.ndarray], jax.Array] = jnp.asarray
    config: Config | None = None
    classification: bool = False
    x_shape: tuple[int, ...] | None = None
    y_shape: tuple[int, ...] | None = None

    def predict(self, support_x, support_y, query_x, key: jax.Array | None = None) -> jax.Array:
        """Adapts to ``(support_x, support_y)`` by the learner's test protocol and returns
        outputs for ``query_x``.

        Inputs may be numpy or jax arrays in the data set's raw form (for Omniglot, the
        105x105 images of the archives). For classification, the logits have one column per
        label ``0 .. max(support_y)``.
        """
        support_y = np.asarray(support_y)
        sx, qx = self.preprocess(support_x), self.preprocess(query_x)
        for name, x in (("support_x", sx), ("query_x", qx)):
            if self.x_shape is not None and tuple(x.shape[1:]) != self.x_shape:
                raise InputError(
                    f"predict: {name} gives model inputs of shape {list(x.shape)}; this learner "
                    f"was trained on [n, {', '.join(map(str, self.x_shape))}]."
                )
            if not bool(jnp.isfinite(x).all()):
                raise InputError(f"predict: {name} holds NaN or Inf.")
        if len(support_y) != len(sx):
            raise InputError(f"predict: {len(sx)} support inputs but {len(support_y)} labels.")
        if self.classification:
            classes = self._check_labels(support_y)
        elif self.y_shape is not None and tuple(support_y.shape[1:]) != self.y_shape:
            raise InputError(
                f"predict: support_y has shape {list(support_y.shape)}; this learner was "
                f"trained on targets of shape [n, {', '.join(map(str, self.y_shape))}]."
            )
        key = jax.random.key(0) if key is None else key
        out = self._predict(self.params, sx, jnp.asarray(support_y), qx, key)
        if self.classification:
            if out.shape[-1] < classes:
                raise InputError(
                    f"predict: the support has {classes} classes but this learner outputs "
                    f"{out.shape[-1]} logits. Its classifier head was fixed at training: train "
                    f"with --set n_way={classes}, or use a ProtoNet, whose way is free."
                )
            out = out[:, :classes]
        return out

    @staticmethod
    def _check_labels(labels: np.ndarray) -> int:
        """The number of classes of integer labels ``0 .. C-1``, each present; else an error."""
        if labels.ndim != 1:
            raise InputError(
                f"predict: support_y must be class indices of shape [n], got shape "
                f"{list(labels.shape)}"
                + (" (one-hot? pass labels.argmax(-1))." if labels.ndim == 2 else ".")
            )
        if not np.issubdtype(labels.dtype, np.integer):
            raise InputError(
                f"predict: support_y must be integer class indices, got {labels.dtype}."
            )
        present = np.unique(labels)
        if not np.array_equal(present, np.arange(len(present))):
            raise InputError(
                f"predict: support_y must use the labels 0..C-1, each at least once; got "
                f"{present.tolist()}. Relabel with np.unique(labels, return_inverse=True)[1]."
            )
        return len(present)

    def __post_init__(self):
        def run(params, sx, sy, qx, key):
            adapted = self.learner.adapt(params, Split(sx, sy), key)
            return self.learner.predict(adapted, qx, key)

        object.__setattr__(self, "_predict", jax.jit(run))


def load(
    workdir: str | os.PathLike,
    *,
    experiment: Experiment | None = None,
    config: Config | None = None,
) -> TrainedLearner:
    """The trained learner of a run.

    Args:
      workdir: the run's folder.
      experiment: for a run trained from the API with a config that is not registered:
        its experiment (the learner, tasks and optimizer it trained with).
      config: or that config itself.

    Example::

        learner = metajax.load("runs/pn")
        logits = learner.predict(support_images, support_labels, query_images)
    """
    run, experiment, state = load_state(workdir, experiment=experiment, config=config)
    preprocess = run.benchmark.preprocess if run is not None else jnp.asarray
    classification = run is not None and run.benchmark.kind == "classification"
    task = jax.eval_shape(experiment.train_tasks.sample, jax.random.key(0))
    return TrainedLearner(
        experiment.learner,
        state.params,
        preprocess,
        run,
        classification,
        x_shape=tuple(task.support.x.shape[1:]),
        y_shape=tuple(task.support.y.shape[1:]),
    )
