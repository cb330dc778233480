"""MAML++ (Antoniou, Edwards and Storkey, "How to train your MAML", ICLR 2019, section 4).

MAML's meta-loss and inner loop, with five changes, each a switch here (all on by default):

- **Multi-step loss** (MSL, ``multi_step_loss``). The meta-loss weighs the query loss after
  every inner step ``i = 1 .. N``,

      L_meta = sum_i v_i(s) L(phi_i, Q),

  with weights that start uniform, ``v_i = 1/N``, and move linearly with the meta-step ``s``
  towards the last step: ``v_i = max((1 - s/S)/N, 0.03/N)`` for ``i < N`` and
  ``v_N = min((1 + (N - 1) s/S)/N, 1 - (N - 1) 0.03/N)``, ``S = msl_anneal_steps``. From
  step ``S`` on, the last step's loss alone (MAML's). The authors' code anneals over 15
  epochs of 500 meta-steps.
- **Derivative-order annealing** (DA, ``first_order_steps``). First-order meta-gradients for
  the first ``first_order_steps`` meta-steps, second order afterwards (a ``lax.cond`` on the
  step: the first-order phase does not pay for second-order terms).
- **Per-step batch-norm weights and biases** (BNWB, ``per_step_bn``). The normalization
  layers' scale and bias get one copy per inner step; step ``t`` (and the query loss of the
  parameters it produces) normalizes with copy ``t``. They are meta-learned and not adapted in
  the inner loop. Statistics: the models here normalize with the current batch's statistics
  at every step (transductive, like MAML and like the reference code, which calls batch norm
  with ``training=True`` at test time too), so they are per-step by construction; the
  paper's per-step running averages (BNRS) only matter for non-transductive prediction.
- **Learned per-layer per-step learning rates** (LSLR, ``lslr``). Inner SGD with a learned
  rate for each parameter tensor ``l`` and step ``t``,

      phi_{t+1,l} = phi_{t,l} - alpha_{l,t} grad_l L(phi_t, S),

  initialized at ``lslr_init`` and meta-learned with the initialization.
- **Cosine annealing of the meta learning rate** (CA): a schedule of the outer optimizer,
  ``optax.cosine_decay_schedule``, set by the config (``cosine_meta_lr``).

Meta-parameters are ``{"init": theta, "norm": per-step norm parameters, "lr": rates}``
("norm" only with ``per_step_bn``, without which the norm parameters stay in ``theta`` and
are adapted as in MAML; "lr" only with ``lslr``). Adapted parameters have the model's
structure, so ``predict`` is the model.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from metajax.algorithms.maml import MAML
from metajax.config import (
    BuildEnv,
    ConfigError,
    InnerFields,
    LearnerConfig,
    OptimizerFields,
    register_algorithm,
)
from metajax.core.functional import merge_params, partition_params
from metajax.core.inner import InnerResult
from metajax.core.learner import Metrics
from metajax.core.types import Params, Split, Task


class StepCount(NamedTuple):
    """The inner step number, the state of `per_step_sgd`."""

    count: chex.Array


def per_step_sgd(rates: Params) -> optax.GradientTransformation:
    """SGD whose rate changes with the step: ``u_t = -rates[t] * g_t`` for each tensor.

    Args:
      rates: a pytree shaped like the parameters' tree, each leaf a ``[steps]`` vector of
        rates for that tensor. Steps past the last rate reuse the last one.

    Returns:
      An ``optax.GradientTransformation`` that counts its steps in its state.

    Example:
      >>> import jax.numpy as jnp
      >>> opt = per_step_sgd({"w": jnp.array([0.1, 0.5])})
      >>> state = opt.init({"w": jnp.zeros(2)})
      >>> for _ in range(3):
      ...     u, state = opt.update({"w": jnp.ones(2)}, state)
      ...     print(u["w"])
      [-0.1 -0.1]
      [-0.5 -0.5]
      [-0.5 -0.5]
    """

    def init(params: Params) -> StepCount:
        del params
        return StepCount(jnp.zeros((), jnp.int32))

    def update(grads, state, params=None):
        del params

        def leaf(rate, g):
            return -rate[jnp.minimum(state.count, rate.shape[0] - 1)].astype(g.dtype) * g

        return jax.tree.map(leaf, rates, grads), StepCount(state.count + 1)

    return optax.GradientTransformation(init, update)


def is_norm_key(key: str) -> bool:
    """The default test for normalization parameters: a path key containing ``norm``
    (``norms`` and ``shortcut_norm`` in `metajax.models.Conv4` and ``ResNet12``)."""
    return "norm" in key.lower()


def multi_step_weights(step: chex.Numeric, num_steps: int, anneal_steps: int) -> chex.Array:
    """MAML++'s per-step loss weights ``v(s)`` at meta-step ``step`` (module docstring).

    Example:
      >>> multi_step_weights(0, 4, 100)
      Array([0.25, 0.25, 0.25, 0.25], dtype=float32)
      >>> multi_step_weights(50, 4, 100)
      Array([0.125, 0.125, 0.125, 0.625], dtype=float32)
      >>> multi_step_weights(100, 4, 100)
      Array([0., 0., 0., 1.], dtype=float32)
    """
    n = num_steps
    fraction = jnp.asarray(step, jnp.float32) / max(anneal_steps, 1)
    floor = 0.03 / n
    early = jnp.maximum((1.0 - fraction) / n, floor)
    last = jnp.minimum((1.0 + (n - 1) * fraction) / n, 1.0 - (n - 1) * floor)
    annealing = jnp.concatenate([jnp.full((n - 1,), early), last[None]])
    return jnp.where(fraction < 1.0, annealing, jax.nn.one_hot(n - 1, n))


@dataclasses.dataclass(frozen=True)
class MAMLPlusPlus(MAML):
    """MAML++: MAML with the multi-step loss, derivative-order annealing, per-step batch-norm
    weights and biases, and learned per-layer per-step inner rates, each a switch.

    ``inner.optimizer`` is the inner optimizer when ``lslr`` is off, and must be ``None`` with
    it (the learned rates are the update).

    Attributes:
      multi_step_loss: weigh every step's query loss, annealed over ``msl_anneal_steps``.
      msl_anneal_steps: meta-steps until the multi-step loss becomes the last step's.
      first_order_steps: meta-steps of first-order meta-gradients before second order.
      per_step_bn: one copy of the norm layers' scale and bias per inner step.
      lslr: learned per-tensor per-step inner rates, initialized at ``lslr_init``.
      is_norm: ``is_norm(key)`` on a parameter path's keys picks the norm parameters.

    Example:
      >>> import jax, optax
      >>> from metajax import InnerLoop, Sinusoid, from_nnx, losses
      >>> from metajax.models import MLP
      >>> mamlpp = MAMLPlusPlus(from_nnx(lambda r: MLP(1, 1, rngs=r)), losses.mse,
      ...                       InnerLoop(None, steps=3), per_step_bn=False, lslr_init=0.01)
      >>> params = mamlpp.init(jax.random.key(0))
      >>> sorted(params), params["lr"]["out"]["bias"].shape
      (['init', 'lr'], (3,))
      >>> tasks = jax.vmap(Sinusoid().sample)(jax.random.split(jax.random.key(1), 4))
      >>> keys = jax.random.split(jax.random.key(2), 4)
      >>> grads, metrics = jax.jit(mamlpp.batch_meta_grad)(params, tasks, keys, 0)
      >>> jax.tree.structure(grads) == jax.tree.structure(params)
      True
    """

    multi_step_loss: bool = True
    msl_anneal_steps: int = 7500
    first_order_steps: int = 0
    per_step_bn: bool = True
    lslr: bool = True
    lslr_init: float = 0.1
    is_norm: Callable[[str], bool] = is_norm_key

    @property
    def learned_inner_update(self) -> bool:
        return self.lslr

    def __post_init__(self):
        super().__post_init__()
        if self.inner.steps < 1:
            raise ValueError(f"MAMLPlusPlus needs inner steps >= 1, got {self.inner.steps}.")
        if self.multi_step_loss and self.msl_anneal_steps < 1:
            raise ValueError(
                f"MAMLPlusPlus: msl_anneal_steps must be >= 1 with the multi-step loss, got "
                f"{self.msl_anneal_steps}."
            )

    def init(self, key: chex.PRNGKey) -> Params:
        theta = self.model.init(key)
        params: dict[str, Any] = {"init": theta}
        if self.per_step_bn:
            norm, rest = partition_params(theta, self.is_norm)
            if not jax.tree.leaves(norm):
                raise ValueError(
                    "MAMLPlusPlus(per_step_bn=True): no parameter path has a key that "
                    "is_norm accepts, so there are no norm layers to copy per step. Turn "
                    "per_step_bn off or pass is_norm."
                )
            params["init"] = rest
            params["norm"] = jax.tree.map(
                lambda a: jnp.repeat(a[None], self.inner.steps, axis=0), norm
            )
        if self.lslr:
            params["lr"] = jax.tree.map(
                lambda p: jnp.full((self.inner.steps,), self.lslr_init, p.dtype), params["init"]
            )
        return params

    def _inner(
        self,
        meta_params: Params,
        support: Split,
        *,
        steps: int | None,
        track: Callable[[Params], Any] | None,
        first_order: bool,
    ) -> InnerResult:
        """The inner loop; ``track`` and the returned parameters see whole model parameters
        (adapted tensors and the norm copy of the step that produced them)."""
        steps = self.inner.steps if steps is None else steps
        settings = dataclasses.replace(self.inner, first_order=first_order)
        optimizer = per_step_sgd(meta_params["lr"]) if self.lslr else None
        if not self.per_step_bn:
            return settings.run(self.split_loss, meta_params["init"], support,
                                steps=steps, track=track, optimizer=optimizer)  # fmt: skip
        # Past the trained number of steps, evaluation reuses the last step's norm copy.
        index = jnp.minimum(jnp.arange(max(steps, 1)), self.inner.steps - 1)
        norms = jax.tree.map(lambda a: a[index], meta_params["norm"])

        def loss(phi, split, norm):
            return self.split_loss(merge_params(phi, norm), split)

        norm_track = None if track is None else (lambda phi, norm: track(merge_params(phi, norm)))
        inner = settings.run(loss, meta_params["init"], support, steps=steps,
                             track=norm_track, optimizer=optimizer, step_inputs=norms)  # fmt: skip
        last = jax.tree.map(lambda a: a[-1], norms)
        return inner.replace(params=merge_params(inner.params, last))

    def initial(self, meta_params: Params) -> Params:
        """The initialization with the first step's norm copy."""
        if not self.per_step_bn:
            return meta_params["init"]
        return merge_params(meta_params["init"], jax.tree.map(lambda a: a[0], meta_params["norm"]))

    def run_inner(
        self,
        meta_params: Params,
        support: Split,
        *,
        steps: int | None = None,
        track: Callable[[Params], Any] | None = None,
    ) -> InnerResult:
        """Adapted model parameters from a support split; ``steps`` defaults to training's."""
        return self._inner(meta_params, support, steps=steps, track=track,
                           first_order=self.inner.first_order)  # fmt: skip

    def step_meta_loss(
        self,
        meta_params: Params,
        task: Task,
        key: chex.PRNGKey,
        *,
        weights: chex.Array | None,
        first_order: bool,
    ) -> tuple[chex.Array, Metrics]:
        """One task's meta-loss: ``sum_i weights_i L(phi_i, Q)``, or the last step's query
        loss when ``weights`` is ``None``."""
        del key

        def query_loss(params):
            return self.split_loss(params, task.query)

        track = query_loss if weights is not None else None
        inner = self._inner(meta_params, task.support, steps=None, track=track,
                            first_order=first_order)  # fmt: skip
        if weights is None:
            loss = final = query_loss(inner.params)
        else:
            loss, final = jnp.dot(weights, inner.tracked[1:]), inner.tracked[-1]
        return loss, {"meta_loss": loss, "final_query_loss": final,
                      "support_loss": inner.support_losses[0]}  # fmt: skip

    def meta_loss(
        self, meta_params: Params, task: Task, key: chex.PRNGKey
    ) -> tuple[chex.Array, Metrics]:
        """The meta-loss at meta-step 0 (see `batch_meta_grad` for later steps)."""
        weights = multi_step_weights(0, self.inner.steps, self.msl_anneal_steps)
        return self.step_meta_loss(
            meta_params,
            task,
            key,
            weights=weights if self.multi_step_loss else None,
            first_order=self.inner.first_order or self.first_order_steps > 0,
        )

    def batch_meta_grad(
        self, meta_params: Params, tasks: Task, keys: chex.PRNGKey, step: chex.Numeric = 0
    ) -> tuple[Params, Metrics]:
        """The meta-batch's mean meta-gradient at meta-step ``step``, with the multi-step
        loss's weights and the derivative order of that step."""
        weights = (
            multi_step_weights(step, self.inner.steps, self.msl_anneal_steps)
            if self.multi_step_loss
            else None
        )

        def grads(first_order: bool) -> tuple[Params, Metrics]:
            loss = functools.partial(self.step_meta_loss, weights=weights, first_order=first_order)
            return self.mean_loss_grad(loss, meta_params, tasks, keys)

        if self.inner.first_order or self.first_order_steps == 0:
            return grads(self.inner.first_order)
        return jax.lax.cond(
            step < self.first_order_steps, lambda: grads(True), lambda: grads(False)
        )


@register_algorithm("mamlpp")
@dataclasses.dataclass(frozen=True)
class MAMLPlusPlusConfig(LearnerConfig, InnerFields, OptimizerFields):
    """MAML++ (Antoniou et al. 2019): MAML with MSL, DA, BNWB and LSLR, each a switch.

    Attributes:
      multi_step_loss, msl_anneal_steps, first_order_steps, per_step_bn, lslr: see
        `MAMLPlusPlus`; the learned rates start at inner_lr. ``inner_optimizer`` applies
        with ``lslr=false`` only. With every switch off (and a constant outer rate) it is
        MAML.
    """

    multi_step_loss: bool = True
    msl_anneal_steps: int = 500
    first_order_steps: int = 0
    per_step_bn: bool = True
    lslr: bool = True

    def build(self, env: BuildEnv) -> MAMLPlusPlus:
        optimizer = (
            None if self.lslr else self.make_optimizer(differentiated=True, config=env.config)
        )
        return MAMLPlusPlus(
            env.network(),
            env.loss,
            self.inner_loop(env, optimizer),
            multi_step_loss=self.multi_step_loss,
            msl_anneal_steps=self.msl_anneal_steps,
            first_order_steps=self.first_order_steps,
            per_step_bn=self.per_step_bn,
            lslr=self.lslr,
            lslr_init=self.inner_lr,
            metric=env.metric,
            eval_steps=self.test_steps(),
            task_chunk=env.task_chunk,
        )

    def validate(self, name: str) -> None:
        self.check_inner(name)
        self.check_optimizer(name)
        if self.lslr and self.inner_optimizer != "sgd":
            raise ConfigError(
                f"Config {name}: inner_optimizer={self.inner_optimizer} applies only with "
                "lslr=false (the learned per-step rates are MAML++'s inner update)."
            )
        if self.inner_steps < 1 or (self.multi_step_loss and self.msl_anneal_steps < 1):
            raise ConfigError(
                f"Config {name}: mamlpp needs inner_steps >= 1 and msl_anneal_steps >= 1."
            )
