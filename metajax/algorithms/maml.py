"""MAML and first-order MAML (Finn, Abbeel and Levine, ICML 2017).

For a task with support set S and query set Q, the inner loop adapts the meta-parameters,

    phi(theta) = theta - alpha * grad L(theta, S)            (eq. 1, one step shown)

and the meta-objective is the query loss of the adapted parameters,

    min_theta  E_tasks  L(phi(theta), Q)                     (eq. 3)

Its gradient runs back through the inner loop, Hessian-vector products included. First-order
MAML (section 5.2) drops the second-order terms by treating the inner gradients as constants.
"""

from __future__ import annotations

import dataclasses

import chex

from metajax.algorithms.base import GradientLearner, query_and_support_losses
from metajax.config import (
    BuildEnv,
    InnerFields,
    LearnerConfig,
    OptimizerFields,
    SecondOrderFields,
    register_algorithm,
)
from metajax.core.inner import InnerLoop
from metajax.core.learner import Metrics
from metajax.core.types import Params, Task


@dataclasses.dataclass(frozen=True)
class MAML(GradientLearner):
    """Model-Agnostic Meta-Learning; ``InnerLoop(..., first_order=True)`` for FOMAML.

    Example:
      >>> import jax, optax
      >>> from metajax import InnerLoop, Sinusoid, from_nnx, losses
      >>> from metajax.models import MLP
      >>> maml = MAML(from_nnx(lambda r: MLP(1, 1, rngs=r)), losses.mse,
      ...             InnerLoop(optax.sgd(0.01), steps=1))
      >>> params = maml.init(jax.random.key(0))
      >>> task = Sinusoid().sample(jax.random.key(1))
      >>> grads, metrics = maml.meta_grad(params, task, jax.random.key(2))
      >>> sorted(metrics)
      ['meta_loss', 'support_loss']
      >>> maml.predict(maml.adapt(params, task.support), task.query.x).shape
      (10, 1)
    """

    def meta_loss(
        self, meta_params: Params, task: Task, key: chex.PRNGKey
    ) -> tuple[chex.Array, Metrics]:
        del key
        inner = self.run_inner(meta_params, task.support)
        return query_and_support_losses(self, meta_params, inner, task)


@register_algorithm("maml")
@dataclasses.dataclass(frozen=True)
class MAMLConfig(LearnerConfig, InnerFields, OptimizerFields, SecondOrderFields):
    """MAML (Finn et al. 2017): second-order meta-gradients through the inner loop."""

    def build(self, env: BuildEnv) -> MAML:
        optimizer = self.make_optimizer(differentiated=True, config=env.config)
        inner = self.inner_loop(env, optimizer, **self.second_order())
        return MAML(env.network(), env.loss, inner, metric=env.metric,
                    eval_steps=self.test_steps(), task_chunk=env.task_chunk)  # fmt: skip

    def validate(self, name: str) -> None:
        self.check_inner(name)
        self.check_optimizer(name)


@register_algorithm("fomaml")
@dataclasses.dataclass(frozen=True)
class FOMAMLConfig(MAMLConfig):
    """First-order MAML (Finn et al. 2017, section 5.2): inner gradients as constants."""

    first_order: bool = True


def fomaml(model, loss, inner: InnerLoop, **kwargs) -> MAML:
    """First-order MAML: `MAML` with ``inner.first_order = True``."""
    return MAML(model, loss, dataclasses.replace(inner, first_order=True), **kwargs)
