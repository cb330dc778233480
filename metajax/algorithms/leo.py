"""Generate, then adapt in a latent space: LEO, "Meta-learning with latent embedding
optimization" (Rusu, Rao, Sygnowski, Vinyals, Pascanu, Osindero and Hadsell, ICLR 2019).

A gradient step on a classifier's full weights from one shot overfits. LEO instead encodes
each class's support examples to a low-dimensional code ``z_k`` (section 2.3.1, eq. 5-7;
here a linear encoder of the class mean), decodes weights from it, ``w_k = D(z_k)``
(eq. 8), and adapts by gradient descent on the codes (section 2.3.2, eq. 9),

    z' = z - alpha grad_z L_support(D(z)),

so every step stays on the manifold of weights the decoder can produce. The query loss of
``D(z')`` is differentiated through the latent steps (second order, by the inner-loop engine)
into the embedding, encoder and decoder. The head is the scaled cosine classifier of
`metajax.algorithms.hypernet`. Simplifications, kept for a 2-core CPU: the encoder is
deterministic (LEO's is a Gaussian, with a KL penalty), class codes are encoded
independently (LEO relates them with a relation network), the features are trained end to
end (LEO uses fixed pretrained WRN-28-10 features), and the orthogonality and encoder
penalties are dropped.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import chex
import jax
import jax.numpy as jnp
import optax

from metajax import losses
from metajax.algorithms.hypernet import (
    GeneratedHead,
    cosine_logits,
    linear,
    linear_params,
)
from metajax.algorithms.protonet import MetricClassifier, class_means
from metajax.config import BuildEnv, ConfigError, LearnerConfig, register_algorithm
from metajax.core.functional import Model
from metajax.core.inner import InnerLoop
from metajax.core.types import Params, Split


@dataclasses.dataclass(frozen=True)
class LEO(MetricClassifier):
    """Latent embedding optimization with a linear encoder and decoder.

    Attributes:
      embedding: the body ``f``, ``apply(params, x) -> [n, feature_dim]``.
      feature_dim: its output width.
      latent_dim: the codes' width.
      inner: the latent inner loop (`metajax.InnerLoop`, SGD on the codes).
      scale_init: the initial scale of the cosine logits.
    """

    embedding: Model
    feature_dim: int
    latent_dim: int
    inner: InnerLoop
    scale_init: float = 10.0
    fixed_way: ClassVar[bool] = False

    def init(self, key: chex.PRNGKey) -> Params:
        k_emb, k_enc, k_dec = jax.random.split(key, 3)
        return {
            "embedding": self.embedding.init(k_emb),
            "encoder": linear_params(k_enc, self.feature_dim, self.latent_dim),
            "decoder": linear_params(k_dec, self.latent_dim, self.feature_dim),
            "log_scale": jnp.log(jnp.float32(self.scale_init)),
        }

    def head(self, params: Params, codes: chex.Array, present: chex.Array) -> GeneratedHead:
        zeros = jnp.zeros(self.feature_dim, codes.dtype)
        return GeneratedHead(params, linear(params["decoder"], codes), present, (zeros, zeros))

    def adapt(self, meta_params: Params, context: Split, key: chex.PRNGKey | None = None, *,
              steps: int | None = None) -> GeneratedHead:  # fmt: skip
        """Encodes the classes, then takes ``steps`` (default: training's) gradient steps on
        the codes against the support loss, and decodes the head."""
        del key
        features = self.embedding.apply(meta_params["embedding"], context.x)
        means, present = class_means(features, context.y)
        codes = linear(meta_params["encoder"], means)

        def support_loss(z, split):
            logits = cosine_logits(meta_params, split.x, self.head(meta_params, z, present))
            return losses.cross_entropy(logits, split.y)

        inner = self.inner.run(support_loss, codes, Split(features, context.y), steps=steps)
        return self.head(meta_params, inner.params, present)

    def predict(self, adapted: GeneratedHead, x: chex.Array,
                key: chex.PRNGKey | None = None) -> chex.Array:  # fmt: skip
        del key
        features = self.embedding.apply(adapted.params["embedding"], x)
        return cosine_logits(adapted.params, features, adapted)


@register_algorithm("leo")
@dataclasses.dataclass(frozen=True)
class LEOConfig(LearnerConfig):
    """LEO (Rusu et al. 2019): generate head weights from latent codes, adapt the codes.

    Attributes:
      latent_dim: the codes' width.
      inner_lr: the latent step size.
      inner_steps: latent steps (training and test).
      scale_init: the initial scale of the cosine logits.
    """

    latent_dim: int = 16
    inner_lr: float = 1.0
    inner_steps: int = 5
    scale_init: float = 10.0
    fixed_way: ClassVar[bool] = False
    per_task_weights: ClassVar[bool] = False
    kinds: ClassVar[tuple[str, ...]] = ("classification",)

    def build(self, env: BuildEnv) -> LEO:
        body = env.features()
        inner = InnerLoop(optax.sgd(self.inner_lr), steps=self.inner_steps)
        return LEO(body, env.feature_width(body, self.algorithm), self.latent_dim, inner,
                   self.scale_init, task_chunk=env.task_chunk)  # fmt: skip

    def validate(self, name: str) -> None:
        if self.latent_dim < 1 or self.inner_steps < 0 or not self.inner_lr > 0:
            raise ConfigError(f"Config {name}: latent_dim must be >= 1, inner_steps >= 0 and "
                              "inner_lr > 0.")  # fmt: skip
        if not self.scale_init > 0:
            raise ConfigError(f"Config {name}: scale_init must be > 0, got {self.scale_init}.")
