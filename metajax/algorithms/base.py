"""The shared base of the gradient-based learners: adaptation by the inner-loop engine, the
test protocol (a metric after each test-time step count), and the adapted type they return.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import chex
from flax import struct

from metajax.core.functional import Model
from metajax.core.inner import InnerLoop, InnerResult
from metajax.core.learner import MetaLearner, Metric, Metrics
from metajax.core.types import Params, Split, Task


@struct.dataclass
class FastWeights:
    """What a gradient-based learner's ``adapt`` returns: the adapted model parameters.

    Attributes:
      params: the adapted parameters (the model's structure).
    """

    params: Params


@dataclasses.dataclass(frozen=True)
class InnerLoopLearner(MetaLearner):
    """A learner that adapts by gradient steps on the support set.

    Subclasses define ``run_inner`` (the inner loop from the meta-parameters, returning the
    model's parameters) and ``apply``; adaptation, prediction and evaluation follow.

    Attributes:
      metric: the test metric (``metajax.losses.MSE``, ``metajax.losses.ACCURACY``...);
        ``None``: the training loss itself, named ``loss``.
      eval_steps: the test-time step counts evaluation reports; ``None``: the training
        ``inner.steps``. With one count the metric keeps its bare name (``accuracy``), with
        several each is suffixed (``mse_after_0``, ``mse_after_10``). ``adapt`` runs the
        largest count by default.
    """

    metric: Metric | None = dataclasses.field(default=None, kw_only=True)
    eval_steps: tuple[int, ...] | None = dataclasses.field(default=None, kw_only=True)
    # Learners that never differentiate their inner loop (Reptile, iMAML) refuse
    # first_order and remat; learners that meta-learn their update refuse an optimizer.
    differentiates_inner_loop: ClassVar[bool] = True
    learned_inner_update: ClassVar[bool] = False

    def __post_init__(self):
        name = type(self).__name__
        inner = self.inner
        if not isinstance(inner, InnerLoop):
            raise TypeError(
                f"{name}: inner must be a metajax.InnerLoop, e.g. InnerLoop(optax.sgd(0.01), "
                f"steps=1); got {type(inner).__name__}."
            )
        if not self.differentiates_inner_loop and (inner.first_order or inner.remat):
            raise ValueError(
                f"{name} never differentiates its inner loop, so InnerLoop(first_order=True) "
                "and remat=True do not apply; leave them False."
            )
        if self.learned_inner_update and inner.optimizer is not None:
            raise ValueError(
                f"{name} meta-learns its inner update; InnerLoop.optimizer must be None."
            )
        if not self.learned_inner_update and inner.optimizer is None:
            raise ValueError(f"{name} needs an inner optimizer: InnerLoop(optax.sgd(alpha)).")
        if self.eval_steps is not None and (
            not self.eval_steps
            or min(self.eval_steps) < 0
            or len(set(self.eval_steps)) < len(self.eval_steps)
        ):
            raise ValueError(
                f"{name}: eval_steps must be distinct step counts >= 0, got {self.eval_steps}."
            )

    # ---- to define ------------------------------------------------------------------------

    def run_inner(
        self,
        meta_params: Params,
        support: Split,
        *,
        steps: int | None = None,
        track: Callable[[Params], Any] | None = None,
    ) -> InnerResult:
        """The inner loop from the meta-parameters (``steps`` defaults to training's);
        ``track`` and the result's ``params`` see whole model parameters."""
        raise NotImplementedError

    def apply(self, params: Params, x: chex.Array) -> chex.Array:
        """The model on adapted (model-structured) parameters."""
        raise NotImplementedError

    def initial(self, meta_params: Params) -> Params:
        """The model parameters before any inner step."""
        raise NotImplementedError

    # ---- the protocol ---------------------------------------------------------------------

    @property
    def test_steps(self) -> tuple[int, ...]:
        """The step counts of the test protocol."""
        return tuple(self.eval_steps) if self.eval_steps is not None else (self.inner.steps,)

    def fast_weights(self, params: Params, support: Split) -> FastWeights:
        """The adapted predictor around model parameters ``params``."""
        del support
        return FastWeights(params)

    def adapt(
        self,
        meta_params: Params,
        context: Split,
        key: chex.PRNGKey | None = None,
        *,
        steps: int | None = None,
    ) -> FastWeights:
        """Adapts to ``context`` (the support set) by ``steps`` inner steps; default: the
        largest test-time count, ``max(eval_steps)``."""
        del key
        steps = max(self.test_steps) if steps is None else steps
        return self.fast_weights(self.run_inner(meta_params, context, steps=steps).params, context)

    def predict(
        self, adapted: FastWeights, x: chex.Array, key: chex.PRNGKey | None = None
    ) -> chex.Array:
        del key
        return self.apply(adapted.params, x)

    def predict_unadapted(
        self, params: Params, x: chex.Array, key: chex.PRNGKey | None = None
    ) -> chex.Array:
        """The meta-parameters' own predictions (zero inner steps)."""
        del key
        return self.apply(self.initial(params), x)

    def evaluate_task(self, params: Params, task: Task, key: chex.PRNGKey) -> Metrics:
        """The metric on the query set after each of ``eval_steps`` inner steps."""
        name, fn = (
            ("loss", self.loss) if self.metric is None else (self.metric.name, self.metric.fn)
        )
        steps = self.test_steps

        def score(adapted: FastWeights) -> chex.Array:
            return fn(self.predict(adapted, task.query.x, key), task.query.y)

        if len(steps) == 1:
            # One count: adapt and score once (no query pass after every step).
            return {name: score(self.adapt(params, task.support, key, steps=steps[0]))}
        inner = self.run_inner(
            params,
            task.support,
            steps=max(steps),
            track=lambda phi: score(self.fast_weights(phi, task.support)),
        )
        return {f"{name}_after_{k}": inner.tracked[k] for k in steps}


@dataclasses.dataclass(frozen=True)
class GradientLearner(InnerLoopLearner):
    """An inner-loop learner that adapts every parameter of one model.

    Attributes:
      model: the model as pure functions.
      loss: ``loss(predictions, targets) -> scalar``.
      inner: the inner loop's settings (`metajax.InnerLoop`).
    """

    model: Model
    loss: Callable[[chex.Array, chex.Array], chex.Array]
    inner: InnerLoop

    def init(self, key: chex.PRNGKey) -> Params:
        return self.model.init(key)

    def apply(self, params: Params, x: chex.Array) -> chex.Array:
        return self.model.apply(params, x)

    def initial(self, meta_params: Params) -> Params:
        return meta_params

    def split_loss(self, params: Params, split: Split) -> chex.Array:
        """The loss of model parameters on one split."""
        return self.loss(self.model.apply(params, split.x), split.y)

    def run_inner(
        self,
        meta_params: Params,
        support: Split,
        *,
        steps: int | None = None,
        track: Callable[[Params], Any] | None = None,
    ) -> InnerResult:
        return self.inner.run(self.split_loss, meta_params, support, steps=steps, track=track)


def query_and_support_losses(
    learner: GradientLearner, meta_params: Params, inner: InnerResult, task: Task
) -> tuple[chex.Array, Metrics]:
    """MAML's meta-loss from an inner loop's result: the query loss of the adapted
    parameters, with the support loss at the meta-parameters as a metric."""
    query_loss = learner.split_loss(inner.params, task.query)
    # The inner loop already evaluated the support loss at theta; reuse it.
    support_loss = (
        inner.support_losses[0]
        if inner.support_losses.shape[0]
        else learner.split_loss(learner.initial(meta_params), task.support)
    )
    return query_loss, {"meta_loss": query_loss, "support_loss": support_loss}
