"""A trained run as a learner you can call: `load(workdir).predict(support_x, support_y, query_x)`."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from metajax.algorithms.base import MetaAlgorithm
from metajax.core.types import Params, Split
from metajax.train.trainer import load_state


@dataclasses.dataclass(frozen=True)
class Learner:
    """Meta-trained parameters with the algorithm that adapts them.

    Attributes:
      algorithm: the run's algorithm.
      params: the meta-parameters.
      steps: inner steps at prediction time (the config's test-time steps).
      preprocess: raw inputs (as the data set stores them) to model inputs, exactly as in
        training; identity for data that needs none.
    """

    algorithm: MetaAlgorithm
    params: Params
    steps: int
    preprocess: Callable[[np.ndarray], jax.Array] = jnp.asarray

    def predict(self, support_x, support_y, query_x) -> jax.Array:
        """Adapts to ``(support_x, support_y)`` and returns outputs for ``query_x``.

        Inputs may be numpy or jax arrays in the data set's raw form (for Omniglot, the
        105x105 images of the archives). For classification, the logits have one column per
        label ``0 .. max(support_y)``.
        """
        support_y = np.asarray(support_y)
        if len(support_y) != len(support_x):
            raise ValueError(
                f"predict: {len(support_x)} support inputs but {len(support_y)} labels."
            )
        out = self._predict(
            self.params,
            self.preprocess(support_x),
            jnp.asarray(support_y),
            self.preprocess(query_x),
        )
        if np.issubdtype(support_y.dtype, np.integer):
            classes = int(support_y.max()) + 1
            if out.shape[-1] < classes:
                raise ValueError(
                    f"predict: the support has {classes} classes but this learner outputs "
                    f"{out.shape[-1]} logits. Its classifier head was fixed at training: train "
                    f"with --set n_way={classes}, or use a ProtoNet, whose way is free."
                )
            out = out[:, :classes]
        return out

    def __post_init__(self):
        def run(params, sx, sy, qx):
            adapted = self.algorithm.adapt(params, Split(sx, sy), steps=self.steps).params
            return self.algorithm.predict(adapted, qx)

        object.__setattr__(self, "_predict", jax.jit(run))


def load(workdir: str | os.PathLike) -> Learner:
    """The trained learner of a run.

    Example::

        learner = metajax.load("runs/pn")
        logits = learner.predict(support_images, support_labels, query_images)
    """
    config, experiment, state = load_state(workdir)
    preprocess = getattr(config, "preprocess", None) or jnp.asarray
    return Learner(experiment.algorithm, state.params, max(experiment.eval_steps), preprocess)
