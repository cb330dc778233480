"""The inner-loop engine: every gradient-based algorithm adapts parameters through `adapt`.

Given a loss ``L(phi, support)`` and an optax inner optimizer with update rule ``U``,

    phi_0 = theta
    g_t = grad_phi L(phi_t, support)
    (u_t, s_{t+1}) = U(g_t, s_t, phi_t)
    phi_{t+1} = phi_t + u_t,            t = 0 .. steps - 1

run under ``lax.scan`` so that compile time does not grow with ``steps``. Differentiating
``phi_T`` with respect to ``theta`` gives the second-order MAML meta-gradient (Finn et al.
2017, eq. 1), Hessian-vector products included. With ``first_order=True`` each ``g_t`` is
wrapped in ``stop_gradient``, so ``d phi_T / d theta = I`` (first-order MAML, section 5.2 of
the paper). With ``remat=True`` each step is wrapped in ``jax.checkpoint``: the backward pass
recomputes a step's activations instead of storing them, so memory is flat in ``steps``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
import optax
from flax import struct

from metajax.core.types import Params, Split

LossFn = Callable[[Params, Split], chex.Array]


@struct.dataclass
class InnerResult:
    """What `adapt` returns.

    Attributes:
      params: the adapted parameters ``phi_T``.
      support_losses: ``[steps]``, the support loss at ``phi_0 .. phi_{T-1}``.
      tracked: ``track(phi_t)`` for ``t = 0 .. T``, stacked on a leading axis of size
        ``steps + 1``; ``None`` when no ``track`` function was given.
    """

    params: Params
    support_losses: chex.Array
    tracked: Any = None


@jax.custom_vjp
def _guard_leaf(g: chex.Array) -> chex.Array:
    return g


def _guard_fwd(g):
    return g, g


def _guard_bwd(g, cotangent):
    return (jnp.where((g == 0) & ~jnp.isfinite(cotangent), 0.0, cotangent),)


_guard_leaf.defvjp(_guard_fwd, _guard_bwd)


def zero_gradient_guard(grads: Params) -> Params:
    """The identity, whose backward pass zeroes non-finite cotangents of gradient entries
    that are exactly zero.

    Adam-style inner optimizers take ``sqrt(v)`` of a second-moment estimate that is 0 where
    every gradient so far was 0 (a dead ReLU unit, an unused parameter). Its derivative is
    infinite there, and reverse mode multiplies it by the zero gradient: ``0 * inf = NaN``
    in the meta-gradient (the bug TorchOpt and higher have). The true derivative of the
    update at a zero gradient is finite and the sqrt path's part of it vanishes (the first
    moment is zero too), so zero is the right cotangent where the zero is structural (the
    gradient stays 0 around the point). At an exact stationary point with curvature, an
    event of measure zero in floating point, it also drops the first moment's term, whose
    derivative there is ``-lr / eps``, an artifact of Adam's epsilon. Elsewhere the guard
    changes nothing.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> adam = optax.adam(0.1)
      >>> x = jnp.array([1.0, 0.0])  # an input that is always 0: w[1] gets gradient 0
      >>> def one_step(w, guard):
      ...     g = jax.grad(lambda v: jnp.sum((x * v - 2.0) ** 2))(w)
      ...     g = zero_gradient_guard(g) if guard else g
      ...     u, _ = adam.update(g, adam.init(w))
      ...     return jnp.sum(optax.apply_updates(w, u) ** 2)
      >>> jax.grad(one_step)(jnp.ones(2), False).round(3)
      Array([2.2, nan], dtype=float32)
      >>> jax.grad(one_step)(jnp.ones(2), True).round(3)  # w[1] stays put: d/dw[1] = 2 w[1]
      Array([2.2, 2. ], dtype=float32)
    """
    return jax.tree.map(_guard_leaf, grads)


def adapt(
    loss_fn: LossFn,
    params: Params,
    support: Split,
    *,
    optimizer: optax.GradientTransformation,
    steps: int,
    first_order: bool = False,
    remat: bool = False,
    track: Callable[[Params], Any] | None = None,
    unroll: bool = False,
    step_inputs: Any = None,
) -> InnerResult:
    """Adapts ``params`` on ``support`` for ``steps`` updates of ``optimizer``.

    Args:
      loss_fn: ``loss_fn(params, split) -> scalar``.
      params: the initial parameters ``theta`` (the meta-parameters).
      support: the split to adapt on.
      optimizer: any ``optax.GradientTransformation``; ``optax.sgd(alpha)`` is MAML's. Its
        ``update`` also receives ``value``, ``grad`` and ``value_fn`` (the support loss as a
        function of the parameters), so line-search solvers such as ``optax.lbfgs()`` work.
        Their line searches are ``while_loop`` s, which reverse mode cannot differentiate:
        use them where the inner loop is not differentiated (iMAML, evaluation).
      steps: the number of inner updates (static; ``0`` returns ``params``).
      first_order: stop gradients through the inner gradients (first-order MAML).
      remat: ``jax.checkpoint`` each inner step, trading compute for memory.
      track: an optional function of the parameters, evaluated before the first and after
        every step (for example the query loss, to report loss after 0, 1, ... steps).
      unroll: unroll the scan into straight-line code. Same result; on XLA:CPU,
        convolutions inside a loop body run about 15x slower than unrolled, so conv models
        with few inner steps should unroll. Compile time then grows with ``steps``.
      step_inputs: per-step inputs that are not adapted (MAML++'s per-step batch-norm
        parameters): a pytree whose leaves have a leading axis of size ``max(steps, 1)``.
        With them, step ``t`` computes ``loss_fn(phi_t, support, x_t)`` and ``track`` is
        called as ``track(phi, x)``: ``track(phi_0, x_0)``, then ``track(phi_{t+1}, x_t)``
        after step ``t`` (the inputs that produced the new parameters). Gradients flow to
        them like to ``params``.

    Returns:
      An `InnerResult`.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> loss = lambda p, s: jnp.mean((s.x * p - s.y) ** 2)
      >>> support = Split(x=jnp.ones(4), y=2 * jnp.ones(4))
      >>> out = adapt(loss, jnp.array(0.0), support, optimizer=optax.sgd(0.25), steps=1)
      >>> float(out.params)
      1.0
    """
    if steps < 0:
        raise ValueError(f"adapt: steps must be >= 0, got {steps}.")
    if step_inputs is None:
        inputs = None

        def extra(x):
            return ()
    else:
        sizes = {a.shape[0] for a in jax.tree.leaves(step_inputs)}
        if sizes != {max(steps, 1)}:
            raise ValueError(
                f"adapt: step_inputs need a leading axis of max(steps, 1) = {max(steps, 1)}, "
                f"got {sorted(sizes)}."
            )
        inputs = step_inputs

        def extra(x):
            return (x,)

    grad_fn = jax.value_and_grad(loss_fn)
    solver = optax.with_extra_args_support(optimizer)

    def step(carry, x):
        phi, opt_state = carry
        loss, grads = grad_fn(phi, support, *extra(x))
        grads = jax.lax.stop_gradient(grads) if first_order else zero_gradient_guard(grads)
        # Line-search optimizers (optax.lbfgs, scale_by_backtracking_linesearch) evaluate
        # the loss at trial points; the others ignore these arguments.
        updates, opt_state = solver.update(
            grads,
            opt_state,
            phi,
            value=loss,
            grad=grads,
            value_fn=lambda p: loss_fn(p, support, *extra(x)),
        )
        new_phi = optax.apply_updates(phi, updates)
        outputs = (loss, track(new_phi, *extra(x)) if track is not None else None)
        return (new_phi, opt_state), outputs

    if remat:
        step = jax.checkpoint(step)

    def input_at(t):
        return None if inputs is None else jax.tree.map(lambda a: a[t], inputs)

    carry = (params, solver.init(params))
    if steps == 0:
        no_inputs = None if inputs is None else jax.tree.map(lambda a: a[:0], inputs)
        (phi, _), (losses, tracked) = jax.lax.scan(step, carry, no_inputs, length=0)
    else:
        # The first step runs outside the scan. Under ``vmap`` over tasks a scan's carry is
        # batched from the start, which would copy the shared meta-parameters to every task;
        # outside it, the first forward and backward passes keep them shared, so XLA runs
        # one matmul (or convolution) over all tasks' inputs instead of one per task (10-40%
        # of sinusoid MAML's step on CPU).
        carry, first = step(carry, input_at(0))
        rest_inputs = None if inputs is None else jax.tree.map(lambda a: a[1:], inputs)
        (phi, _), rest = jax.lax.scan(
            step, carry, rest_inputs, length=steps - 1, unroll=bool(unroll) or 1
        )
        losses, tracked = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), first, rest)
    if track is not None:
        initial = jax.tree.map(lambda a: a[None], track(params, *extra(input_at(0))))
        tracked = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), initial, tracked)
    return InnerResult(params=phi, support_losses=losses, tracked=tracked)


@dataclasses.dataclass(frozen=True)
class InnerLoop:
    """The inner loop's settings as one value, shared by every gradient-based learner.

    Attributes:
      optimizer: the optax inner optimizer (``optax.sgd(alpha)`` for MAML); ``None`` for the
        learners that meta-learn their inner update (Meta-SGD, MAML++ with learned rates),
        which refuse one that is given.
      steps: inner updates during meta-training (test-time steps are the learner's
        ``eval_steps``).
      first_order: stop gradients through the inner gradients (first-order MAML).
      remat: ``jax.checkpoint`` each inner step (memory flat in ``steps``).
      unroll: unroll the inner ``lax.scan`` (faster for conv models on XLA:CPU; see `adapt`).

    Learners whose inner loop is never differentiated (Reptile, iMAML) refuse
    ``first_order`` and ``remat``, rather than ignoring them.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> loop = InnerLoop(optax.sgd(0.25), steps=2)
      >>> loss = lambda p, s: jnp.mean((s.x * p - s.y) ** 2)
      >>> float(loop.run(loss, jnp.array(0.0), Split(jnp.ones(4), 2 * jnp.ones(4))).params)
      1.5
    """

    optimizer: optax.GradientTransformation | None
    steps: int = 1
    first_order: bool = False
    remat: bool = False
    unroll: bool = False

    def __post_init__(self):
        if self.steps < 0:
            raise ValueError(f"InnerLoop: steps must be >= 0, got {self.steps}.")

    def run(
        self,
        loss_fn: Callable[..., chex.Array],
        params: Params,
        support: Split,
        *,
        steps: int | None = None,
        optimizer: optax.GradientTransformation | None = None,
        track: Callable[..., Any] | None = None,
        step_inputs: Any = None,
    ) -> InnerResult:
        """`adapt` with these settings; ``steps`` and ``optimizer`` override them (a learner
        with a learned update passes its own optimizer)."""
        optimizer = self.optimizer if optimizer is None else optimizer
        if optimizer is None:
            raise ValueError("InnerLoop.run: no inner optimizer (InnerLoop.optimizer is None).")
        return adapt(
            loss_fn,
            params,
            support,
            optimizer=optimizer,
            steps=self.steps if steps is None else steps,
            first_order=self.first_order,
            remat=self.remat,
            track=track,
            unroll=self.unroll,
            step_inputs=step_inputs,
        )
