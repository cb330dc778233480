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
    """

    learner: MetaLearner
    params: Params
    preprocess: Callable[[np.ndarray], jax.Array] = jnp.asarray
    config: Config | None = None
    classification: bool = False

    def predict(self, support_x, support_y, query_x, key: jax.Array | None = None) -> jax.Array:
        """Adapts to ``(support_x, support_y)`` by the learner's test protocol and returns
        outputs for ``query_x``.

        Inputs may be numpy or jax arrays in the data set's raw form (for Omniglot, the
        105x105 images of the archives). For classification, the logits have one column per
        label ``0 .. max(support_y)``.
        """
        support_y = np.asarray(support_y)
        if len(support_y) != len(support_x):
            raise InputError(
                f"predict: {len(support_x)} support inputs but {len(support_y)} labels."
            )
        key = jax.random.key(0) if key is None else key
        out = self._predict(
            self.params,
            self.preprocess(support_x),
            jnp.asarray(support_y),
            self.preprocess(query_x),
            key,
        )
        if self.classification and np.issubdtype(support_y.dtype, np.integer):
            classes = int(support_y.max()) + 1
            if out.shape[-1] < classes:
                raise InputError(
                    f"predict: the support has {classes} classes but this learner outputs "
                    f"{out.shape[-1]} logits. Its classifier head was fixed at training: train "
                    f"with --set n_way={classes}, or use a ProtoNet, whose way is free."
                )
            out = out[:, :classes]
        return out

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
    return TrainedLearner(experiment.learner, state.params, preprocess, run, classification)
