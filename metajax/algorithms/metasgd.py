"""Meta-SGD (Li, Zhou, Chen and Li, "Meta-SGD: Learning to Learn Quickly for Few-Shot
Learning", 2017).

The inner update's learning rate is a meta-parameter with the same shape as the model's
parameters, applied elementwise (eq. 1 of the paper, one step shown),

    phi = theta - alpha o grad L(theta, S),

and the initialization theta and the rates alpha are learned together from the query loss
(eq. 2),

    min_{theta, alpha}  E_tasks  L(phi(theta, alpha), Q).

Its meta-gradient with respect to alpha runs back through the inner loop like MAML's with
respect to theta (second order unless ``first_order``). The meta-parameters are the pytree
``{"init": theta, "lr": alpha}``; adapted parameters have the model's structure.
"""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp
import optax

from metajax.algorithms.base import inner_loop
from metajax.algorithms.maml import MAML
from metajax.core.inner import InnerResult
from metajax.core.types import Params, Split


def learned_sgd(lr: Params) -> optax.GradientTransformation:
    """The inner update ``u = -lr o g`` with per-parameter rates ``lr`` (a pytree shaped like
    the parameters), as an optax transformation that the inner-loop engine can run."""

    def update(grads, state, params=None):
        del params
        return jax.tree.map(lambda a, g: -a * g, lr, grads), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


@dataclasses.dataclass(frozen=True)
class MetaSGD(MAML):
    """Meta-SGD: MAML with a learned per-parameter inner learning rate (MAML's meta-loss,
    with its own parameters and inner update).

    Attributes:
      inner_optimizer: unused (the learned rates define the inner update); ``None``.
      alpha_init: the initial value of every learned rate (the paper draws them from
        [0.005, 0.1]; a constant keeps runs comparable with MAML's fixed rate).

    Example:
      >>> import jax
      >>> from metajax import Sinusoid, from_nnx, losses
      >>> from metajax.models import MLP
      >>> msgd = MetaSGD(from_nnx(lambda r: MLP(1, 1, rngs=r)), losses.mse, alpha_init=0.01)
      >>> params = msgd.init(jax.random.key(0))
      >>> sorted(params), round(float(params["lr"]["out"]["bias"][0]), 6)
      (['init', 'lr'], 0.01)
      >>> task = Sinusoid().sample(jax.random.key(1))
      >>> grads, metrics = msgd.meta_grad(params, task, jax.random.key(2))
      >>> jax.tree.structure(grads) == jax.tree.structure(params)
      True
    """

    inner_optimizer: optax.GradientTransformation | None = None
    alpha_init: float = 0.01

    def __post_init__(self):
        if self.inner_steps < 1:
            raise ValueError(
                f"MetaSGD needs inner_steps >= 1 (its rates act in the inner loop), got "
                f"{self.inner_steps}."
            )

    def init(self, key: chex.PRNGKey) -> Params:
        theta = self.model.init(key)
        return {
            "init": theta,
            "lr": jax.tree.map(lambda p: jnp.full_like(p, self.alpha_init), theta),
        }

    def adapt(
        self,
        meta_params: Params,
        support: Split,
        *,
        steps: int | None = None,
        track=None,
    ) -> InnerResult:
        """Runs the inner loop from ``theta`` with the learned rates ``alpha``."""
        return inner_loop(self, self.split_loss, meta_params["init"], support, steps=steps,
                          track=track, optimizer=learned_sgd(meta_params["lr"]))  # fmt: skip
