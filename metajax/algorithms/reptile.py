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

Evaluation (section 6): with batch normalization that uses the statistics of the batch it
sees, predicting all query examples at once lets them inform each other (transductive, the
setting of MAML's results). With ``transductive=False`` each query example is classified
alone, in a batch made of the support set and that one example, as in the paper's
non-transductive rows.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import chex
import jax
import jax.numpy as jnp
from flax import struct

from metajax.algorithms.base import GradientLearner
from metajax.config import (
    BuildEnv,
    ConfigError,
    InnerFields,
    LearnerConfig,
    OptimizerFields,
    register_algorithm,
)
from metajax.core.learner import Metrics, vmap_mean
from metajax.core.types import Params, Split, Task


@struct.dataclass
class ReptileWeights:
    """Reptile's adapted predictor: the fast weights, and the support inputs that
    non-transductive prediction normalizes alongside each query example."""

    params: Params
    support_x: chex.Array


@dataclasses.dataclass(frozen=True)
class Reptile(GradientLearner):
    """Reptile with any optax inner optimizer; the outer optimizer takes the pseudo-gradient.

    The inner loop is run, never differentiated, so ``InnerLoop(first_order=..., remat=...)``
    are refused. ``meta_loss`` in the metrics is the query loss of the adapted parameters,
    for monitoring.

    Example:
      >>> import jax, optax
      >>> from metajax import InnerLoop, Sinusoid, from_nnx, losses
      >>> from metajax.models import MLP
      >>> reptile = Reptile(from_nnx(lambda r: MLP(1, 1, rngs=r)), losses.mse,
      ...                   InnerLoop(optax.sgd(0.02), steps=5))
      >>> params = reptile.init(jax.random.key(0))
      >>> task = Sinusoid().sample(jax.random.key(1))
      >>> grads, metrics = reptile.meta_grad(params, task, jax.random.key(2))
      >>> sorted(metrics)
      ['meta_loss', 'support_loss']

    Attributes:
      transductive: predict a batch of query examples together (``True``), or each one in
        a batch with the support set alone (``False``).
    """

    transductive: bool = True
    differentiates_inner_loop: ClassVar[bool] = False

    def __post_init__(self):
        super().__post_init__()
        if self.inner.steps < 1:
            raise ValueError(
                f"Reptile needs inner steps >= 1 (its update is W - theta), got {self.inner.steps}."
            )

    def meta_grad(
        self, meta_params: Params, task: Task, key: chex.PRNGKey
    ) -> tuple[Params, Metrics]:
        """The Reptile pseudo-gradient ``theta - W`` of one task."""
        del key
        inner = self.run_inner(meta_params, task.support)
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

    def fast_weights(self, params: Params, support: Split) -> ReptileWeights:
        return ReptileWeights(params, support.x)

    def predict(
        self, adapted: ReptileWeights, x: chex.Array, key: chex.PRNGKey | None = None
    ) -> chex.Array:
        """Outputs on ``x``; without transduction each example is normalized alone with the
        support set."""
        del key
        if self.transductive:
            return self.model.apply(adapted.params, x)

        def one(example):
            batch = jnp.concatenate([adapted.support_x, example[None]])
            return self.model.apply(adapted.params, batch)[-1]

        return jax.vmap(one)(x)


@register_algorithm("reptile")
@dataclasses.dataclass(frozen=True)
class ReptileConfig(LearnerConfig, InnerFields, OptimizerFields):
    """Reptile (Nichol et al. 2018): move towards each task's trained weights.

    Attributes:
      transductive: see `Reptile`.
    """

    transductive: bool = True

    def build(self, env: BuildEnv) -> Reptile:
        inner = self.inner_loop(env, self.make_optimizer(differentiated=False, config=env.config))
        return Reptile(env.network(), env.loss, inner, transductive=self.transductive,
                       metric=env.metric, eval_steps=self.test_steps(),
                       task_chunk=env.task_chunk)  # fmt: skip

    def validate(self, name: str) -> None:
        self.check_inner(name)
        self.check_optimizer(name)
        if self.inner_steps < 1:
            raise ConfigError(f"Config {name}: reptile needs inner_steps >= 1.")
