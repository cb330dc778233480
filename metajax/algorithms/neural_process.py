"""The shared base of the Neural Process family: conditioning on a context set, the
predictive `Gaussian`, the training objective, and the test protocol.

A Neural Process maps a context set ``C = {(x_i, y_i)}`` to a predictive distribution at
target inputs, with no gradient step at test time (Garnelo et al. 2018a, section 2). Tasks
are ordinary `Task` s: the support is the context, the query the targets, disjoint; each
may carry a ``mask`` (a Gaussian-process function's context holds 3 to 46 of its 50 points).

Training (every model of the family): predict *all* the task's points, context and targets,
from the context, and maximize their mean log-likelihood (Garnelo et al. 2018a, eq. 4; the
targets include the context, as in Le et al. 2018 and Kim et al. 2019). A latent model
maximizes the ELBO instead (Garnelo et al. 2018b, eq. 8),

    log p(y_T | x_T, C) >= E_{q(z | C u T)} [sum_{i in T} log p(y_i | z, x_i, C)]
                           - KL(q(z | C u T) || p(z | C)),

with ``q`` and ``p`` the same latent encoder on the two sets, divided by the number of points.

Evaluation (`NeuralProcess.evaluate_task`) reports, per point:

- ``log_likelihood``: of the targets given the context; for a latent model the
  predictive ``log (1/K) sum_k p(y_i | z_k)``, ``z_k ~ p(z | C)``, point by point;
- ``context_log_likelihood``: of the context points themselves (how well the model fits
  what it was shown: the ANP paper's central claim, Kim et al. 2019, Figure 1);
- ``mse``: of the predictive mean on the targets;
- ``all_points_log_likelihood``: of every point of the task, context and targets
  (`Task.points`), given the context: the set the training objective scores, and the metric
  of the Neural-Process-Family benchmarks (Dubois et al. 2020), whose targets include the
  context;
- ``log_likelihood_context_N``: ``log_likelihood`` with the first ``N`` of the task's points
  as the context and the rest as targets, for each ``N`` of ``eval_context_sizes``;
- for latent models, ``elbo`` and ``iw_log_likelihood``: the ELBO and the importance-weighted
  bound (Burda et al. 2016) on ``log p(y_T | x_T, C) / |T|`` with ``q(z | C u T)`` as the
  proposal and the same ``K`` samples, so ``elbo <= iw_log_likelihood`` on every task.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import chex
import jax
import jax.numpy as jnp
from flax import struct

from metajax.config import BuildEnv, ConfigError, LearnerConfig
from metajax.core.learner import MetaLearner, Metrics
from metajax.core.types import Params, Split, Task, join
from metajax.models.neural_process import Gaussian


@struct.dataclass
class Conditioned:
    """What a Neural Process's ``adapt`` returns: the model conditioned on a context.

    Attributes:
      params: the meta-parameters.
      context: the context set (with its mask).
      representation: the deterministic summary of the context where the model has one
        (CNP's ``r``); ``None`` where the model reads the context at each target (ANP's
        attention, ConvCNP's grid).
      latent: ``p(z | context)`` for latent models, else ``None``.
    """

    params: Params
    context: Split
    representation: Any
    latent: Gaussian | None


def first_points(points: Split, n: int) -> tuple[Split, Split]:
    """``(context, targets)``: the first ``n`` examples of ``points`` (in order, skipping
    padding) and the rest."""
    real = points.weights() > 0
    rank = jnp.cumsum(real) - 1
    return (Split(points.x, points.y, real & (rank < n)),
            Split(points.x, points.y, real & (rank >= n)))  # fmt: skip


def weighted_mean(values: chex.Array, split: Split) -> chex.Array:
    """The mean of per-point ``values [..., n]`` over the examples of ``split``."""
    w = split.weights()
    return jnp.sum(values * w, -1) / jnp.maximum(w.sum(), 1)


@dataclasses.dataclass(frozen=True)
class NeuralProcess(MetaLearner):
    """A model of the Neural Process family. Subclasses define ``init``, ``represent``
    (the context's summary) and ``decode``, and latent models ``latent_distribution``.

    Attributes:
      eval_context_sizes: context sizes ``N`` of the ``log_likelihood_context_N`` metrics.
      eval_samples: latent samples ``K`` per test task (latent models).
      train_samples: latent samples of the training ELBO (latent models).
    """

    eval_context_sizes: tuple[int, ...] = dataclasses.field(default=(), kw_only=True)
    eval_samples: int = dataclasses.field(default=32, kw_only=True)
    train_samples: int = dataclasses.field(default=1, kw_only=True)
    fixed_way: ClassVar[bool] = False

    # ---- to define ------------------------------------------------------------------------

    def represent(self, params: Params, context: Split) -> Any:
        """The context's deterministic summary (``None``: read at each target)."""
        raise NotImplementedError

    def decode(self, adapted: Conditioned, x: chex.Array, z: chex.Array | None) -> Gaussian:
        """The predictive distribution at ``x [m, d]`` given the context and a latent ``z``."""
        raise NotImplementedError

    def latent_distribution(self, params: Params, points: Split) -> Gaussian | None:
        """``q(z | points)`` of a latent model; ``None`` for a conditional one."""
        del params, points
        return None

    # ---- the protocol ---------------------------------------------------------------------

    def adapt(self, params: Params, context: Split, key: chex.PRNGKey | None = None, *,
              steps: int | None = None) -> Conditioned:  # fmt: skip
        """Conditions on ``context`` (no gradient steps: ``steps`` is ignored)."""
        del key, steps
        return Conditioned(params, context, self.represent(params, context),
                           self.latent_distribution(params, context))  # fmt: skip

    def predict(self, adapted: Conditioned, x: chex.Array,
                key: chex.PRNGKey | None = None) -> Gaussian:  # fmt: skip
        """The predictive `Gaussian` at ``x``. A latent model draws ``z ~ p(z | C)`` from
        ``key``, or uses its mean when ``key`` is None."""
        z = None
        if adapted.latent is not None:
            z = adapted.latent.mean if key is None else adapted.latent.sample(key)
        return self.decode(adapted, x, z)

    def meta_loss(
        self, params: Params, task: Task, key: chex.PRNGKey
    ) -> tuple[chex.Array, Metrics]:
        adapted = self.adapt(params, task.support)
        points = task.points()
        if adapted.latent is None:
            ll = weighted_mean(self.decode(adapted, points.x, None).log_prob(points.y), points)
            return -ll, {"meta_loss": -ll, "log_likelihood": ll}
        posterior = self.latent_distribution(params, points)
        zs = posterior.sample(key, self.train_samples)
        recon = jax.vmap(lambda z: self.decode(adapted, points.x, z).log_prob(points.y))(zs)
        w = points.weights()
        elbo = (jnp.sum(recon.mean(0) * w) - posterior.kl(adapted.latent)) / jnp.maximum(w.sum(), 1)
        return -elbo, {"meta_loss": -elbo, "elbo": elbo}

    def point_log_likelihood(self, adapted: Conditioned, targets: Split,
                             key: chex.PRNGKey) -> chex.Array:  # fmt: skip
        """``[n]`` predictive log-likelihood of each point of ``targets`` (for a latent
        model, ``log (1/K) sum_k p(y_i | z_k, x_i)`` with ``z_k ~ p(z | C)``)."""
        if adapted.latent is None:
            return self.decode(adapted, targets.x, None).log_prob(targets.y)
        zs = adapted.latent.sample(key, self.eval_samples)
        ll = jax.vmap(lambda z: self.decode(adapted, targets.x, z).log_prob(targets.y))(zs)
        return jax.nn.logsumexp(ll, 0) - jnp.log(self.eval_samples)

    def bounds(self, params: Params, context: Split, targets: Split, key: chex.PRNGKey,
               union: Split | None = None) -> dict[str, chex.Array]:  # fmt: skip
        """A latent model's ``elbo`` and ``iw_log_likelihood`` per target point (module
        docstring): the same ``K`` draws from ``q(z | C u T)`` make the ELBO their mean log
        weight and the importance-weighted bound their log mean weight. ``union``: ``C u T``
        where the caller has it in one set (`Task.points`); by default the two joined."""
        adapted = self.adapt(params, context)
        union = join(context, targets) if union is None else union
        posterior = self.latent_distribution(params, union)
        zs = posterior.sample(key, self.eval_samples)
        w = targets.weights()

        def log_weight(z):
            recon = jnp.sum(self.decode(adapted, targets.x, z).log_prob(targets.y) * w)
            return recon + adapted.latent.log_prob(z) - posterior.log_prob(z)

        log_w = jax.vmap(log_weight)(zs)
        n = jnp.maximum(w.sum(), 1)
        iw = (jax.nn.logsumexp(log_w) - jnp.log(self.eval_samples)) / n
        return {"elbo": log_w.mean() / n, "iw_log_likelihood": iw}

    def evaluate_task(self, params: Params, task: Task, key: chex.PRNGKey) -> Metrics:
        """The family's test metrics (module docstring)."""
        k_target, k_context, k_bounds, k_sizes = jax.random.split(key, 4)
        adapted = self.adapt(params, task.support)
        mean = self.predict(adapted, task.query.x).mean
        metrics = {
            "log_likelihood": weighted_mean(
                self.point_log_likelihood(adapted, task.query, k_target), task.query),
            "context_log_likelihood": weighted_mean(
                self.point_log_likelihood(adapted, task.support, k_context), task.support),
            "mse": weighted_mean(jnp.sum((mean - task.query.y) ** 2, -1), task.query),
        }  # fmt: skip
        points = task.points()
        # A key of its own (not a fifth split) keeps the other metrics' draws as they were.
        metrics["all_points_log_likelihood"] = weighted_mean(
            self.point_log_likelihood(adapted, points, jax.random.fold_in(key, 5)), points
        )
        if adapted.latent is not None:
            metrics.update(self.bounds(params, task.support, task.query, k_bounds, points))
        for n, k in zip(self.eval_context_sizes,
                        jax.random.split(k_sizes, len(self.eval_context_sizes)), strict=True):  # fmt: skip
            context, targets = first_points(points, n)
            ll = self.point_log_likelihood(self.adapt(params, context), targets, k)
            metrics[f"log_likelihood_context_{n}"] = weighted_mean(ll, targets)
        return metrics


# ---- the family's config fields ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ProcessConfig(LearnerConfig):
    """Fields every Neural Process config shares (defaults: the models of Kim et al. 2019 and
    the benchmark of Lee et al. 2020: width 128, a 4-layer encoder, 2 layers after pooling,
    a 3-layer decoder).

    Attributes:
      width: hidden width of every network.
      encoder_depth: linear layers per example before pooling or attention.
      post_depth: linear layers after pooling.
      decoder_depth: linear layers of the decoder.
      min_scale: the predictive scale's lower bound.
      eval_context_sizes: context sizes N of the ``log_likelihood_context_N`` metrics.
    """

    width: int = 128
    encoder_depth: int = 4
    post_depth: int = 2
    decoder_depth: int = 3
    min_scale: float = 0.01
    eval_context_sizes: tuple[int, ...] = (3, 10, 20, 40)
    fixed_way: ClassVar[bool] = False
    per_task_weights: ClassVar[bool] = False
    kinds: ClassVar[tuple[str, ...]] = ("regression", "process")

    def dims(self, env: BuildEnv) -> tuple[int, int]:
        """``(x_dim, y_dim)`` of the benchmark's functions."""
        if env.x_dim is None or env.y_dim is None:
            raise ConfigError(
                f"Config {env.config}: {self.algorithm} needs a benchmark of functions "
                "(regression or Gaussian-process tasks)."
            )
        return env.x_dim, env.y_dim

    def common(self, env: BuildEnv) -> dict[str, Any]:
        return {"eval_context_sizes": tuple(self.eval_context_sizes),
                "task_chunk": env.task_chunk}  # fmt: skip

    def validate(self, name: str) -> None:
        for field in ("width", "encoder_depth", "post_depth", "decoder_depth"):
            if getattr(self, field) < 1:
                raise ConfigError(
                    f"Config {name}: {field} must be >= 1, got {getattr(self, field)}."
                )
        if not 0 < self.min_scale < 1:
            raise ConfigError(f"Config {name}: min_scale must be in (0, 1), got {self.min_scale}.")
        if any(n < 1 for n in self.eval_context_sizes):
            raise ConfigError(
                f"Config {name}: eval_context_sizes must be >= 1, got {self.eval_context_sizes}."
            )


@dataclasses.dataclass(frozen=True)
class LatentFields:
    """Fields of the latent models (NP, ANP).

    Attributes:
      latent_dim: the width of ``z`` (0: no latent path, a conditional model).
      eval_samples: latent samples per test task.
      train_samples: latent samples of the training ELBO.
    """

    latent_dim: int = 128
    eval_samples: int = 32
    train_samples: int = 1

    def check_latent(self, name: str) -> None:
        if self.latent_dim < 0 or self.eval_samples < 1 or self.train_samples < 1:
            raise ConfigError(
                f"Config {name}: latent_dim must be >= 0 and eval_samples, train_samples >= 1; "
                f"got {self.latent_dim}, {self.eval_samples}, {self.train_samples}."
            )
