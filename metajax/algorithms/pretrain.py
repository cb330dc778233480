"""The MAML paper's baseline: pretrain on all tasks jointly, then fine-tune (section 5.1).

Training minimizes the loss of the meta-parameters themselves on every task's data, with no
inner loop, ``min_theta E_tasks L(theta, S u Q)``; at test time the learner fine-tunes
``theta`` on the support set with the inner optimizer, exactly as MAML adapts.
"""

from __future__ import annotations

import dataclasses

import chex
import jax.numpy as jnp

from metajax.algorithms.base import GradientAlgorithm, Metrics
from metajax.core.types import Params, Split, Task


@dataclasses.dataclass(frozen=True)
class Pretrained(GradientAlgorithm):
    """Joint training on all tasks; ``adapt`` fine-tunes with ``inner_optimizer``."""

    def meta_loss(
        self, meta_params: Params, task: Task, key: chex.PRNGKey
    ) -> tuple[chex.Array, Metrics]:
        del key
        both = Split(
            x=jnp.concatenate([task.support.x, task.query.x]),
            y=jnp.concatenate([task.support.y, task.query.y]),
        )
        loss = self.split_loss(meta_params, both)
        return loss, {"meta_loss": loss, "support_loss": self.split_loss(meta_params, task.support)}
