"""The algorithm protocol, and the shared base of the gradient-based algorithms.

Every algorithm hands the trainer a (pseudo-)gradient through ``meta_grad``, so one trainer
and one optax outer optimizer serve them all: most algorithms differentiate a meta-loss, while
Reptile and iMAML (later) compute their update directly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

import chex
import jax
import optax

from metajax.core.functional import Model
from metajax.core.inner import InnerResult, adapt
from metajax.core.types import Params, Split, Task

Metrics = dict[str, chex.Array]


class MetaAlgorithm(Protocol):
    """What the trainer and the evaluator need from an algorithm."""

    def init(self, key: chex.PRNGKey) -> Params:
        """Fresh meta-parameters."""
        ...

    def meta_grad(
        self, meta_params: Params, task: Task, key: chex.PRNGKey
    ) -> tuple[Params, Metrics]:
        """The meta-gradient of one task, and scalar metrics (``"meta_loss"`` among them)."""
        ...

    def batch_meta_grad(
        self, meta_params: Params, tasks: Task, keys: chex.PRNGKey
    ) -> tuple[Params, Metrics]:
        """The meta-gradient and metrics averaged over a meta-batch (leading task axis)."""
        ...

    def adapt(self, meta_params: Params, support: Split, **kwargs: Any) -> InnerResult:
        """Task-specific parameters from a support split."""
        ...

    def predict(self, params: Params, x: chex.Array) -> chex.Array:
        """Outputs of adapted parameters on inputs ``x``."""
        ...


def vmap_mean(
    meta_grad: Callable[[Params, Task, chex.PRNGKey], tuple[Params, Metrics]],
    meta_params: Params,
    tasks: Task,
    keys: chex.PRNGKey,
) -> tuple[Params, Metrics]:
    """Averages a per-task ``meta_grad`` over a meta-batch with ``vmap``; for algorithms whose
    update is not the gradient of a loss."""
    grads, metrics = jax.vmap(meta_grad, in_axes=(None, 0, 0))(meta_params, tasks, keys)
    return jax.tree.map(lambda g: g.mean(0), (grads, metrics))


class LossAlgorithm:
    """Base of the algorithms that minimize a meta-loss: subclasses define ``meta_loss``;
    ``meta_grad`` and ``batch_meta_grad`` are its gradients."""

    def meta_loss(
        self, meta_params: Params, task: Task, key: chex.PRNGKey
    ) -> tuple[chex.Array, Metrics]:
        raise NotImplementedError

    def meta_grad(
        self, meta_params: Params, task: Task, key: chex.PRNGKey
    ) -> tuple[Params, Metrics]:
        """The gradient of ``meta_loss`` for one task."""
        return jax.grad(self.meta_loss, has_aux=True)(meta_params, task, key)

    def batch_meta_grad(
        self, meta_params: Params, tasks: Task, keys: chex.PRNGKey
    ) -> tuple[Params, Metrics]:
        """The gradient of the meta-batch's mean meta-loss.

        Equal to the mean of per-task ``meta_grad``s, but differentiating the mean lets the
        backward pass accumulate over tasks instead of materializing ``[tasks, ...]``
        gradients (about 10% faster for sinusoid MAML on CPU).
        """

        def mean_loss(params):
            losses, metrics = jax.vmap(self.meta_loss, in_axes=(None, 0, 0))(params, tasks, keys)
            return losses.mean(), jax.tree.map(lambda m: m.mean(0), metrics)

        return jax.grad(mean_loss, has_aux=True)(meta_params)


@dataclasses.dataclass(frozen=True)
class GradientAlgorithm(LossAlgorithm):
    """Shared base: a model, a loss, and the inner-loop engine's settings.

    Subclasses define ``meta_loss``; ``meta_grad`` is its gradient.

    Attributes:
      model: the model as pure functions.
      loss: ``loss(predictions, targets) -> scalar``.
      inner_optimizer: the inner-loop optax optimizer (``optax.sgd(alpha)`` for MAML).
      inner_steps: inner updates during meta-training.
      first_order: drop second-order terms (``stop_gradient`` on inner gradients).
      remat: ``jax.checkpoint`` each inner step (memory flat in ``inner_steps``).
      unroll: unroll the inner loop (faster for conv models on CPU; see `adapt`).
    """

    model: Model
    loss: Callable[[chex.Array, chex.Array], chex.Array]
    inner_optimizer: optax.GradientTransformation
    inner_steps: int = 1
    first_order: bool = False
    remat: bool = False
    unroll: bool = False

    def init(self, key: chex.PRNGKey) -> Params:
        return self.model.init(key)

    def predict(self, params: Params, x: chex.Array) -> chex.Array:
        return self.model.apply(params, x)

    def split_loss(self, params: Params, split: Split) -> chex.Array:
        """The loss of ``params`` on one split."""
        return self.loss(self.model.apply(params, split.x), split.y)

    def adapt(
        self,
        meta_params: Params,
        support: Split,
        *,
        steps: int | None = None,
        track: Callable[[Params], Any] | None = None,
    ) -> InnerResult:
        """Runs the inner loop; ``steps`` defaults to the training ``inner_steps``."""
        return adapt(
            self.split_loss,
            meta_params,
            support,
            optimizer=self.inner_optimizer,
            steps=self.inner_steps if steps is None else steps,
            first_order=self.first_order,
            remat=self.remat,
            track=track,
            unroll=self.unroll,
        )
