"""Reptile (Nichol, Achiam and Schulman, "On First-Order Meta-Learning Algorithms", 2018).

Each task of a meta-batch is trained from the meta-parameters for k steps of an ordinary
optimizer (SGD or Adam) on its support set,

    W_i = U^k_{tau_i}(theta),

and the meta-parameters move towards the mean of the results (Algorithm 2, the batched
version),

    theta <- theta + epsilon * 1/n sum_i (W_i - theta).

Nothing is differentiated through the inner loop. `Reptile.meta_grad` returns the Reptile
pseudo-gradient ``theta - W_i`` so that the trainer's optax outer optimizer applies the
update: ``optax.sgd(epsilon)`` gives the rule above exactly, and the paper also feeds this
vector to Adam (section 6). With k = 1 step of SGD with rate alpha, ``theta - W = alpha *
grad L(theta)``: the first-order MAML direction of a step with no adaptation, scaled by alpha
(section 5's ``g_Reptile = g_1`` for k = 1).
"""

from __future__ import annotations

import dataclasses

import chex
import jax

from metajax.algorithms.base import GradientAlgorithm, Metrics, vmap_mean
from metajax.core.types import Params, Task


@dataclasses.dataclass(frozen=True)
class Reptile(GradientAlgorithm):
    """Reptile with any optax inner optimizer; the outer optimizer takes the pseudo-gradient.

    ``first_order``, ``remat`` and the meta-loss's differentiation do not apply: the inner
    loop is run, never differentiated. ``meta_loss`` in the metrics is the query loss of the
    adapted parameters, for monitoring.

    Example:
      >>> import jax, optax
      >>> from metajax import Sinusoid, from_nnx, losses
      >>> from metajax.models import MLP
      >>> reptile = Reptile(from_nnx(lambda r: MLP(1, 1, rngs=r)), losses.mse,
      ...                   optax.sgd(0.02), inner_steps=5)
      >>> params = reptile.init(jax.random.key(0))
      >>> task = Sinusoid().sample(jax.random.key(1))
      >>> grads, metrics = reptile.meta_grad(params, task, jax.random.key(2))
      >>> sorted(metrics)
      ['meta_loss', 'support_loss']
    """

    def __post_init__(self):
        if self.inner_steps < 1:
            raise ValueError(
                f"Reptile needs inner_steps >= 1 (its update is W - theta), got {self.inner_steps}."
            )

    def meta_grad(
        self, meta_params: Params, task: Task, key: chex.PRNGKey
    ) -> tuple[Params, Metrics]:
        """The Reptile pseudo-gradient ``theta - W`` of one task."""
        del key
        inner = self.adapt(meta_params, task.support)
        grads = jax.tree.map(lambda t, w: t - w, meta_params, inner.params)
        metrics = {
            "meta_loss": self.split_loss(inner.params, task.query),
            "support_loss": inner.support_losses[0],
        }
        return grads, metrics

    def batch_meta_grad(
        self, meta_params: Params, tasks: Task, keys: chex.PRNGKey, step: chex.Numeric = 0
    ) -> tuple[Params, Metrics]:
        """``theta - mean_i W_i`` over the meta-batch (Algorithm 2), and mean metrics."""
        del step
        return vmap_mean(self.meta_grad, meta_params, tasks, keys, self.task_chunk)
