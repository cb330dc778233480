"""A hypernetwork that generates the classifier head from the support set.

"Few-shot image recognition by predicting parameters from activations" (Qiao, Liu, Shen and
Yuille, CVPR 2018) and "Dynamic few-shot visual learning without forgetting" (Gidaris and
Komodakis, CVPR 2018): a class's weight vector is a learned function of its mean support
activation,

    w_k = phi(a_k),   a_k = (1/|S_k|) sum_{x in S_k} f(x)          (Qiao et al., eq. 3)

with ``phi`` linear here, ``w_k = A a_k + b``, started at the identity (so training starts from
a cosine ProtoNet). A query is scored by a cosine classifier with a learned scale,
``s cos(f(x), w_k)`` (Gidaris and Komodakis, eq. 1), and the meta-loss is its cross-entropy.

With ``film=True`` the body is also modulated per task: a task embedding ``t`` (the mean of
the class means) gives a FiLM layer (Perez et al. 2018) on the body's output features,
``h(x) = (1 + gamma(t)) * f(x) + beta(t)`` with ``gamma, beta`` linear in ``t`` and started
at zero, as TADAM's task conditioning (Oreshkin et al. 2018, section 2.2; TADAM modulates
every block, this modulates the last). No gradient step happens at test time: the head is
generated in one forward pass.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import chex
import jax
import jax.numpy as jnp
from flax import struct

from metajax.algorithms.protonet import MetricClassifier, class_means
from metajax.algorithms.protonet_cosine import unit_norm
from metajax.config import BuildEnv, ConfigError, LearnerConfig, register_algorithm
from metajax.core.functional import Model
from metajax.core.types import Params, Split

# The logit of a label absent from the support set: never predicted, no NaN in the softmax.
_ABSENT = -1e9


@struct.dataclass
class GeneratedHead:
    """A generated classifier: the meta-parameters, one weight vector per label, and the
    task's FiLM modulation of the body.

    Attributes:
      params: the meta-parameters.
      weights: ``[labels, features]`` generated weights ``w_k``.
      present: ``[labels]``, whether the support set has the label.
      film: ``(gamma, beta)``, each ``[features]`` (zeros without FiLM).
    """

    params: Params
    weights: chex.Array
    present: chex.Array
    film: tuple[chex.Array, chex.Array]


def cosine_logits(params: Params, features: chex.Array, head: GeneratedHead) -> chex.Array:
    """``[n, labels]`` logits ``s cos(h(x), w_k)`` with the scale ``s = exp(log_scale)``;
    -1e9 for absent labels."""
    cos = unit_norm(features) @ unit_norm(head.weights).T
    return jnp.where(head.present, jnp.exp(params["log_scale"]) * cos, _ABSENT)


def linear_params(key: chex.PRNGKey, dim_in: int, dim_out: int, *, identity: bool = False,
                  zero: bool = False) -> Params:  # fmt: skip
    """``{"kernel": [dim_in, dim_out], "bias": [dim_out]}``: the identity, zeros, or a LeCun
    normal draw."""
    if identity:
        kernel = jnp.eye(dim_in, dim_out)
    elif zero:
        kernel = jnp.zeros((dim_in, dim_out))
    else:
        kernel = jax.random.normal(key, (dim_in, dim_out)) / jnp.sqrt(dim_in)
    return {"kernel": kernel, "bias": jnp.zeros((dim_out,))}


def linear(params: Params, x: chex.Array) -> chex.Array:
    return x @ params["kernel"] + params["bias"]


@dataclasses.dataclass(frozen=True)
class HyperNet(MetricClassifier):
    """Generated cosine-classifier heads, optionally with a FiLM-modulated body.

    Attributes:
      embedding: the body ``f``, ``apply(params, x) -> [n, feature_dim]``.
      feature_dim: its output width.
      film: modulate the body's features per task.
      scale_init: the initial scale of the cosine logits.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from metajax import from_function
      >>> net = HyperNet(from_function(lambda p, x: x, lambda k: {}), feature_dim=2)
      >>> support = Split(jnp.array([[1.0, 0.0], [0.0, 1.0]]), jnp.array([0, 1]))
      >>> head = net.adapt(net.init(jax.random.key(0)), support)
      >>> net.predict(head, jnp.array([[3.0, 0.1]])).argmax(-1).tolist()
      [0]
    """

    embedding: Model
    feature_dim: int
    film: bool = False
    scale_init: float = 10.0
    fixed_way: ClassVar[bool] = False

    def init(self, key: chex.PRNGKey) -> Params:
        k_emb, k_gen = jax.random.split(key)
        d = self.feature_dim
        params = {
            "embedding": self.embedding.init(k_emb),
            "generator": linear_params(k_gen, d, d, identity=True),
            "log_scale": jnp.log(jnp.float32(self.scale_init)),
        }
        if self.film:
            params["film"] = linear_params(k_gen, d, 2 * d, zero=True)
        return params

    def modulation(self, params: Params, means: chex.Array,
                   present: chex.Array) -> tuple[chex.Array, chex.Array]:  # fmt: skip
        """FiLM's ``(gamma, beta)`` from the task embedding (the mean of the class means)."""
        zeros = jnp.zeros(self.feature_dim, means.dtype)
        if not self.film:
            return zeros, zeros
        w = present.astype(means.dtype)
        task = (means * w[:, None]).sum(0) / jnp.maximum(w.sum(), 1)
        gamma, beta = jnp.split(linear(params["film"], task), 2)
        return gamma, beta

    def features(self, params: Params, head_film: tuple[chex.Array, chex.Array],
                 x: chex.Array) -> chex.Array:  # fmt: skip
        gamma, beta = head_film
        return (1 + gamma) * self.embedding.apply(params["embedding"], x) + beta

    def generate(self, params: Params, means: chex.Array) -> chex.Array:
        """The generator ``w_k = A a_k + b`` on each class mean (Qiao et al., eq. 3)."""
        return linear(params["generator"], means)

    def adapt(self, meta_params: Params, context: Split, key: chex.PRNGKey | None = None, *,
              steps: int | None = None) -> GeneratedHead:  # fmt: skip
        """Generates the task's head (and FiLM) in one forward pass (``steps`` is ignored)."""
        del key, steps
        raw = self.embedding.apply(meta_params["embedding"], context.x)
        film = self.modulation(meta_params, *class_means(raw, context.y))
        gamma, beta = film
        means, present = class_means((1 + gamma) * raw + beta, context.y)
        return GeneratedHead(meta_params, self.generate(meta_params, means), present, film)

    def predict(self, adapted: GeneratedHead, x: chex.Array,
                key: chex.PRNGKey | None = None) -> chex.Array:  # fmt: skip
        del key
        return cosine_logits(adapted.params, self.features(adapted.params, adapted.film, x),
                             adapted)  # fmt: skip


@register_algorithm("hypernet")
@dataclasses.dataclass(frozen=True)
class HyperNetConfig(LearnerConfig):
    """Hypernetwork heads (Qiao et al. 2018; Gidaris and Komodakis 2018), optional FiLM body.

    Attributes:
      film: modulate the body's features per task (TADAM-style FiLM).
      scale_init: the initial scale of the cosine logits.
    """

    film: bool = True
    scale_init: float = 10.0
    fixed_way: ClassVar[bool] = False
    per_task_weights: ClassVar[bool] = False
    kinds: ClassVar[tuple[str, ...]] = ("classification",)

    def build(self, env: BuildEnv) -> HyperNet:
        body = env.features()
        return HyperNet(body, env.feature_width(body, self.algorithm), self.film,
                        self.scale_init, task_chunk=env.task_chunk)  # fmt: skip

    def validate(self, name: str) -> None:
        if not self.scale_init > 0:
            raise ConfigError(f"Config {name}: scale_init must be > 0, got {self.scale_init}.")
