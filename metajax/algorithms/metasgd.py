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
from collections.abc import Callable
from typing import Any, ClassVar

import chex
import jax
import jax.numpy as jnp
import optax

from metajax.algorithms.maml import MAML
from metajax.config import (
    BuildEnv,
    InnerFields,
    LearnerConfig,
    SecondOrderFields,
    register_algorithm,
)
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
    with its own parameters and inner update). ``inner.optimizer`` must be ``None``.

    Its rates are learned for ``inner.steps`` steps, so evaluation always reports the metric
    after that many steps (the paper's protocol), plus any other counts in ``eval_steps``.

    Attributes:
      alpha_init: the initial value of every learned rate (the paper draws them from
        [0.005, 0.1]; a constant keeps runs comparable with MAML's fixed rate).

    Example:
      >>> import jax
      >>> from metajax import InnerLoop, Sinusoid, from_nnx, losses
      >>> from metajax.models import MLP
      >>> msgd = MetaSGD(from_nnx(lambda r: MLP(1, 1, rngs=r)), losses.mse, InnerLoop(None),
      ...                alpha_init=0.01)
      >>> params = msgd.init(jax.random.key(0))
      >>> sorted(params), round(float(params["lr"]["out"]["bias"][0]), 6)
      (['init', 'lr'], 0.01)
      >>> task = Sinusoid().sample(jax.random.key(1))
      >>> grads, metrics = msgd.meta_grad(params, task, jax.random.key(2))
      >>> jax.tree.structure(grads) == jax.tree.structure(params)
      True
    """

    alpha_init: float = 0.01
    learned_inner_update: ClassVar[bool] = True

    def __post_init__(self):
        super().__post_init__()
        if self.inner.steps < 1:
            raise ValueError(
                f"MetaSGD needs inner steps >= 1 (its rates act in the inner loop), got "
                f"{self.inner.steps}."
            )

    @property
    def test_steps(self) -> tuple[int, ...]:
        """The trained step count, and any others of ``eval_steps``."""
        return tuple(sorted({self.inner.steps, *(self.eval_steps or ())}))

    def init(self, key: chex.PRNGKey) -> Params:
        theta = self.model.init(key)
        return {
            "init": theta,
            "lr": jax.tree.map(lambda p: jnp.full_like(p, self.alpha_init), theta),
        }

    def initial(self, meta_params: Params) -> Params:
        return meta_params["init"]

    def run_inner(
        self,
        meta_params: Params,
        support: Split,
        *,
        steps: int | None = None,
        track: Callable[[Params], Any] | None = None,
    ) -> InnerResult:
        """The inner loop from ``theta`` with the learned rates ``alpha``."""
        return self.inner.run(self.split_loss, meta_params["init"], support, steps=steps,
                              track=track, optimizer=learned_sgd(meta_params["lr"]))  # fmt: skip


@register_algorithm("metasgd")
@dataclasses.dataclass(frozen=True)
class MetaSGDConfig(LearnerConfig, InnerFields, SecondOrderFields):
    """Meta-SGD (Li et al. 2017): MAML with learned per-parameter inner rates (from inner_lr)."""

    def build(self, env: BuildEnv) -> MetaSGD:
        inner = self.inner_loop(env, None, **self.second_order())
        return MetaSGD(env.network(), env.loss, inner, alpha_init=self.inner_lr,
                       metric=env.metric, eval_steps=self.test_steps(),
                       task_chunk=env.task_chunk)  # fmt: skip

    def validate(self, name: str) -> None:
        self.check_inner(name)
