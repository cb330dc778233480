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

from metajax.algorithms.base import GradientAlgorithm, Metrics
from metajax.core.types import Params, Task


@dataclasses.dataclass(frozen=True)
class MAML(GradientAlgorithm):
    """Model-Agnostic Meta-Learning; set ``first_order=True`` for FOMAML.

    Example:
      >>> import jax, optax
      >>> from metajax import MAML, Sinusoid, from_nnx, losses
      >>> from metajax.models import MLP
      >>> maml = MAML(from_nnx(lambda r: MLP(1, 1, rngs=r)), losses.mse, optax.sgd(0.01))
      >>> params = maml.init(jax.random.key(0))
      >>> task = Sinusoid().sample(jax.random.key(1))
      >>> grads, metrics = maml.meta_grad(params, task, jax.random.key(2))
      >>> sorted(metrics)
      ['meta_loss', 'support_loss']
    """

    def meta_loss(
        self, meta_params: Params, task: Task, key: chex.PRNGKey
    ) -> tuple[chex.Array, Metrics]:
        del key
        inner = self.adapt(meta_params, task.support)
        query_loss = self.split_loss(inner.params, task.query)
        # The inner loop already evaluated the support loss at theta; reuse it.
        support_loss = (
            inner.support_losses[0]
            if self.inner_steps > 0
            else self.split_loss(meta_params, task.support)
        )
        return query_loss, {"meta_loss": query_loss, "support_loss": support_loss}


def fomaml(*args, **kwargs) -> MAML:
    """First-order MAML: `MAML` with ``first_order=True``."""
    return MAML(*args, first_order=True, **kwargs)
