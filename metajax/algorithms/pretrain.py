"""The MAML paper's baseline: pretrain on all tasks jointly, then fine-tune (section 5.1).

Training minimizes the loss of the meta-parameters themselves on every task's data, with no
inner loop, ``min_theta E_tasks L(theta, S u Q)``; at test time the learner fine-tunes
``theta`` on the support set with the inner optimizer, exactly as MAML adapts.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import chex
import jax.numpy as jnp

from metajax.algorithms.base import GradientLearner
from metajax.config import BuildEnv, InnerFields, LearnerConfig, OptimizerFields, register_algorithm
from metajax.core.learner import Metrics
from metajax.core.types import Params, Split, Task


@dataclasses.dataclass(frozen=True)
class Pretrained(GradientLearner):
    """Joint training on all tasks; ``adapt`` fine-tunes with the inner loop's optimizer
    (its ``steps`` are not used in training)."""

    differentiates_inner_loop: ClassVar[bool] = False

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


@register_algorithm("pretrained")
@dataclasses.dataclass(frozen=True)
class PretrainedConfig(LearnerConfig, InnerFields, OptimizerFields):
    """The MAML paper's baseline: joint training on all tasks, then fine-tuning."""

    def build(self, env: BuildEnv) -> Pretrained:
        inner = self.inner_loop(env, self.make_optimizer(differentiated=False, config=env.config))
        return Pretrained(env.network(), env.loss, inner, metric=env.metric,
                          eval_steps=self.test_steps(), task_chunk=env.task_chunk)  # fmt: skip

    def validate(self, name: str) -> None:
        self.check_inner(name)
        self.check_optimizer(name)
