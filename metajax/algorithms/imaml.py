"""iMAML, implicit MAML (Rajeswaran, Finn, Kakade and Levine, "Meta-Learning with Implicit
Gradients", NeurIPS 2019).

The inner problem is regularized towards the meta-parameters (eq. 3),

    phi*(theta) = argmin_phi  L(phi, S) + lambda/2 ||phi - theta||^2,

solved approximately by the inner-loop engine from ``phi = theta``. At its optimum
``grad L(phi*) + lambda (phi* - theta) = 0``, and the implicit function theorem gives
``d phi*/d theta = (I + H/lambda)^-1`` with ``H = grad^2 L(phi*, S)`` (Lemma 1), so the
meta-gradient of the query loss is (eq. 6)

    g = (I + H/lambda)^-1 grad L(phi*, Q),

found by conjugate gradient (Algorithm 2) with Hessian-vector products, ``jax.jvp`` of
``jax.grad``. Nothing is differentiated through the inner loop, so memory does not grow
with the number of inner steps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import chex
import jax
import optax

from metajax.algorithms.base import GradientLearner
from metajax.config import (
    BuildEnv,
    ConfigError,
    InnerFields,
    LearnerConfig,
    OptimizerFields,
    register_algorithm,
)
from metajax.core.cg import conjugate_gradient
from metajax.core.inner import InnerResult
from metajax.core.learner import Metrics, vmap_mean
from metajax.core.types import Params, Split, Task


@dataclasses.dataclass(frozen=True)
class IMAML(GradientLearner):
    """Implicit MAML with a proximal inner objective and a conjugate-gradient meta-gradient.

    Attributes:
      lam: the proximal regularization strength lambda.
      cg_steps: conjugate-gradient iterations for the implicit meta-gradient.
      cg_damping: added to the system's diagonal, ``((1 + damping) I + H/lambda) g = v``,
        which keeps it positive definite when the inner loss is not convex at ``phi``.
      inner: the proximal objective's solver (its ``first_order`` and ``remat`` are refused:
        the inner loop is never differentiated).

    The implicit meta-gradient is exact only at the proximal problem's solution; the metric
    ``inner_residual`` (the proximal gradient's norm at the returned ``phi``) says how far the
    inner solver stopped from it. Nothing in the meta-objective penalizes curvature, so
    meta-training can reach parameters so sharp that a fixed-rate gradient-descent inner loop
    oscillates instead of converging (seen on sinusoid regression: experiments/RESULTS.md).
    The inner loop is never differentiated, so any solver works: a line search keeps every
    step downhill, e.g. ``optax.chain(optax.sgd(alpha),
    optax.scale_by_backtracking_linesearch(20))`` or ``optax.lbfgs()``.

    Example:
      >>> import jax, optax
      >>> from metajax import InnerLoop, Sinusoid, from_nnx, losses
      >>> from metajax.models import MLP
      >>> imaml = IMAML(from_nnx(lambda r: MLP(1, 1, rngs=r)), losses.mse,
      ...               InnerLoop(optax.sgd(0.01), steps=10), lam=2.0, cg_steps=5)
      >>> params = imaml.init(jax.random.key(0))
      >>> grads, metrics = imaml.meta_grad(params, Sinusoid().sample(jax.random.key(1)),
      ...                                  jax.random.key(2))
      >>> sorted(metrics)
      ['inner_residual', 'meta_loss', 'support_loss']
    """

    lam: float = 1.0
    cg_steps: int = 5
    cg_damping: float = 0.0
    differentiates_inner_loop: ClassVar[bool] = False

    def __post_init__(self):
        super().__post_init__()
        if self.lam <= 0 or self.cg_steps < 1 or self.cg_damping < 0:
            raise ValueError(
                f"IMAML needs lam > 0, cg_steps >= 1 and cg_damping >= 0; got lam={self.lam}, "
                f"cg_steps={self.cg_steps}, cg_damping={self.cg_damping}."
            )

    def proximal_loss(self, params: Params, split: Split, anchor: Params) -> chex.Array:
        """``L(params, split) + lambda/2 ||params - anchor||^2`` (eq. 3's objective)."""
        distance = optax.tree.norm(jax.tree.map(lambda p, a: p - a, params, anchor), squared=True)
        return self.split_loss(params, split) + 0.5 * self.lam * distance

    def run_inner(
        self,
        meta_params: Params,
        support: Split,
        *,
        steps: int | None = None,
        track: Callable[[Params], Any] | None = None,
    ) -> InnerResult:
        """Approximately solves the proximal inner problem from ``phi = theta``."""
        anchor = jax.lax.stop_gradient(meta_params)
        loss = lambda p, s: self.proximal_loss(p, s, anchor)  # noqa: E731
        return self.inner.run(loss, anchor, support, steps=steps, track=track)

    def meta_grad(
        self, meta_params: Params, task: Task, key: chex.PRNGKey
    ) -> tuple[Params, Metrics]:
        """The implicit meta-gradient of one task (Algorithm 2)."""
        del key
        inner = self.run_inner(meta_params, task.support)
        phi = jax.lax.stop_gradient(inner.params)
        query_loss, query_grad = jax.value_and_grad(self.split_loss)(phi, task.query)
        support_grad = jax.grad(self.split_loss)

        def matvec(v: Params) -> Params:
            hv = jax.jvp(lambda p: support_grad(p, task.support), (phi,), (v,))[1]
            return jax.tree.map(lambda x, h: (1.0 + self.cg_damping) * x + h / self.lam, v, hv)

        grads = conjugate_gradient(matvec, query_grad, self.cg_steps)
        support_loss = inner.support_losses[0] if inner.support_losses.shape[0] else query_loss * 0
        # The implicit gradient holds at the proximal problem's solution; the norm of its
        # gradient at phi shows how far the inner solver is from it (0 when solved).
        anchor = jax.lax.stop_gradient(meta_params)
        residual = optax.tree.norm(jax.grad(self.proximal_loss)(phi, task.support, anchor))
        metrics = {
            "meta_loss": query_loss,
            "support_loss": support_loss,
            "inner_residual": residual,
        }
        return grads, metrics

    def batch_meta_grad(
        self, meta_params: Params, tasks: Task, keys: chex.PRNGKey, step: chex.Numeric = 0
    ) -> tuple[Params, Metrics]:
        """The mean implicit meta-gradient over the meta-batch."""
        del step
        return vmap_mean(self.meta_grad, meta_params, tasks, keys, self.task_chunk)


@register_algorithm("imaml")
@dataclasses.dataclass(frozen=True)
class IMAMLConfig(LearnerConfig, InnerFields, OptimizerFields):
    """iMAML (Rajeswaran et al. 2019): implicit meta-gradients of a proximal inner problem.

    Attributes:
      imaml_lambda: the proximal strength lambda.
      cg_steps: conjugate-gradient iterations.
      cg_damping: added to the system's diagonal.
    """

    imaml_lambda: float = 1.0
    cg_steps: int = 5
    cg_damping: float = 0.0

    def build(self, env: BuildEnv) -> IMAML:
        inner = self.inner_loop(env, self.make_optimizer(differentiated=False, config=env.config))
        return IMAML(env.network(), env.loss, inner, lam=self.imaml_lambda,
                     cg_steps=self.cg_steps, cg_damping=self.cg_damping, metric=env.metric,
                     eval_steps=self.test_steps(), task_chunk=env.task_chunk)  # fmt: skip

    def validate(self, name: str) -> None:
        self.check_inner(name)
        self.check_optimizer(name)
        if not (self.imaml_lambda > 0) or self.cg_steps < 1 or not (self.cg_damping >= 0):
            raise ConfigError(
                f"Config {name}: imaml needs imaml_lambda > 0, cg_steps >= 1 and "
                f"cg_damping >= 0; got {self.imaml_lambda}, {self.cg_steps}, {self.cg_damping}."
            )
