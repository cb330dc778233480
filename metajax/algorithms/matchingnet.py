"""Matching Networks (Vinyals, Blundell, Lillicrap, Kavukcuoglu and Wierstra, NeurIPS 2016).

A query ``x`` is labelled by attention over the support set ``S = {(x_i, y_i)}`` (eq. 1),

    P(y = k | x, S) = sum_i a(x, x_i) [y_i = k],

with the attention a softmax over cosine similarities of the embeddings (eq. 2),

    a(x, x_i) = exp(c(f(x), g(x_i))) / sum_j exp(c(f(x), g(x_j))).

Without full context embeddings, ``f = g`` is one embedding network ``f'``. With them
(``fce=True``, section 2.1.2 and Appendix A.1/A.2), each support example is embedded in the
context of the whole support set by a bidirectional LSTM over the sequence ``f'(x_1..n)``,

    g(x_i, S) = h_fwd_i + h_bwd_i + f'(x_i),

and each query by an attention LSTM of ``K`` processing steps that reads the embedded
support,

    h^_k, c_k = LSTM([f'(x), r_{k-1}], h_{k-1}, c_{k-1}),   h_k = h^_k + f'(x),
    r_k = sum_i softmax_i(h_k^T g(x_i)) g(x_i),             f(x, S) = h_K,

(the read ``r`` is fed as an input beside ``f'(x)`` rather than concatenated to the state).
The bidirectional LSTM sees the support in the episode's order, so with FCE the prediction
depends on that order, as in the paper. The cosine is multiplied by a scale ``alpha = exp(log_scale)``, learned with the
embedding (TADAM's metric scaling, Oreshkin et al. 2018, section 2.1; ``scale_init=1`` with
``learn_scale=False`` is the paper's unscaled cosine): a softmax over values in [-1, 1] cannot
become confident. The meta-loss is the query negative log-likelihood ``-log P(y | x, S)``.
Unlike ProtoNet, every support example votes on its own: with one shot per class the two
coincide up to the softmax over examples rather than class means.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import chex
import jax
import jax.numpy as jnp
from flax import struct

from metajax.algorithms.protonet import MetricClassifier
from metajax.algorithms.protonet_cosine import scaled_cosine_params, unit_norm
from metajax.config import BuildEnv, ConfigError, LearnerConfig, register_algorithm
from metajax.core.functional import Model
from metajax.core.types import Params, Split
from metajax.models.recurrent import lstm_params, lstm_step, run_lstm

# Log-probability of a label no support example has: never predicted, no -inf in the loss.
_ABSENT = -1e9


@struct.dataclass
class SupportMemory:
    """A Matching Network's adapted predictor: the support set, embedded.

    Attributes:
      params: the meta-parameters (``{"embedding": ..., "log_scale": ...}``, and ``"fce"``).
      keys: ``[n, features]`` unit-norm support embeddings ``g(x_i) / |g(x_i)|``.
      labels: ``[n]`` the support labels.
      embedded: ``[n, features]`` the embeddings ``g(x_i, S)`` themselves, which the
        attention LSTM reads (full context embeddings); ``None`` without them.
    """

    params: Params
    keys: chex.Array
    labels: chex.Array
    embedded: chex.Array | None = None


@dataclasses.dataclass(frozen=True)
class MatchingNet(MetricClassifier):
    """Matching Networks: cosine attention over the support examples.

    Labels are integers ``0 .. n - 1`` for a support set of ``n`` examples; ``predict``
    returns ``[queries, n]`` log-probabilities, -1e9 for labels no support example has.

    Attributes:
      model: the embedding network ``f'``.
      scale_init: the initial scale of the cosine similarities.
      learn_scale: meta-learn the scale (else it stays ``scale_init``).
      fce_dim: the embedding's width, to turn on full context embeddings (0: off).
      fce_steps: the attention LSTM's processing steps ``K``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from metajax import from_function
      >>> net = MatchingNet(from_function(lambda p, x: x * p, lambda k: jnp.float32(1.0)))
      >>> support = Split(jnp.array([[1.0, 0.0], [0.0, 1.0]]), jnp.array([0, 1]))
      >>> memory = net.adapt(net.init(jax.random.key(0)), support)
      >>> net.attention(memory, jnp.array([[2.0, 0.0]])).round(4).tolist()
      [[1.0, 0.0]]
    """

    model: Model
    scale_init: float = 10.0
    learn_scale: bool = True
    fce_dim: int = 0
    fce_steps: int = 5
    fixed_way: ClassVar[bool] = False

    def init(self, key: chex.PRNGKey) -> Params:
        k_model, k_fw, k_bw, k_att = jax.random.split(key, 4)
        params = scaled_cosine_params(self.model, k_model, self.scale_init)
        if self.fce_dim:
            d = self.fce_dim
            params["fce"] = {"forward": lstm_params(k_fw, d, d),
                             "backward": lstm_params(k_bw, d, d),
                             "attention": lstm_params(k_att, 2 * d, d)}  # fmt: skip
        return params

    def embed_support(self, params: Params, x: chex.Array) -> chex.Array:
        """``g(x_i, S)``: ``f'(x_i)``, plus the bidirectional LSTM's states with FCE."""
        emb = self.model.apply(params["embedding"], x)
        if not self.fce_dim:
            return emb
        fce = params["fce"]
        return emb + run_lstm(fce["forward"], emb) + run_lstm(fce["backward"], emb, reverse=True)

    def embed_queries(self, adapted: SupportMemory, x: chex.Array) -> chex.Array:
        """``f(x, S)``: ``f'(x)``, or with FCE the attention LSTM's last state."""
        emb = self.model.apply(adapted.params["embedding"], x)
        if not self.fce_dim:
            return emb
        params, memory = adapted.params["fce"]["attention"], adapted.embedded

        def step(carry, _):
            h, c, read = carry
            h_hat, c = lstm_step(params, (h, c), jnp.concatenate([emb, read], -1))
            h = h_hat + emb
            read = jax.nn.softmax(h @ memory.T, axis=-1) @ memory
            return (h, c, read), None

        zeros = jnp.zeros_like(emb)
        (h, _, _), _ = jax.lax.scan(step, (zeros, zeros, zeros), None, length=self.fce_steps)
        return h

    def adapt(
        self,
        meta_params: Params,
        context: Split,
        key: chex.PRNGKey | None = None,
        *,
        steps: int | None = None,
    ) -> SupportMemory:
        """Embeds the support set (``steps`` is ignored: no inner loop)."""
        del key, steps
        embedded = self.embed_support(meta_params, context.x)
        return SupportMemory(meta_params, unit_norm(embedded), context.y,
                             embedded if self.fce_dim else None)  # fmt: skip

    def attention(self, adapted: SupportMemory, x: chex.Array) -> chex.Array:
        """``[queries, n]`` attention ``a(x, x_i)`` of eq. 2; each row sums to one."""
        queries = unit_norm(self.embed_queries(adapted, x))
        log_scale = adapted.params["log_scale"]
        if not self.learn_scale:
            log_scale = jax.lax.stop_gradient(log_scale)
        return jax.nn.softmax(jnp.exp(log_scale) * queries @ adapted.keys.T, axis=-1)

    def predict(
        self, adapted: SupportMemory, x: chex.Array, key: chex.PRNGKey | None = None
    ) -> chex.Array:
        """``[queries, n]`` log P(y = k | x, S) of eq. 1 (the rows are log-probabilities, so
        `MetricClassifier`'s cross-entropy is their negative log-likelihood)."""
        del key
        n = adapted.labels.shape[0]
        votes = self.attention(adapted, x) @ jax.nn.one_hot(adapted.labels, n)
        present = jnp.zeros(n, bool).at[adapted.labels].set(True)
        return jnp.where(present, jnp.log(jnp.maximum(votes, 1e-30)), _ABSENT)


@register_algorithm("matchingnet")
@dataclasses.dataclass(frozen=True)
class MatchingNetConfig(LearnerConfig):
    """Matching Networks (Vinyals et al. 2016): cosine attention over the support examples.

    Attributes:
      scale_init: the initial scale of the cosine similarities.
      learn_scale: meta-learn the scale (false with scale_init=1: the paper's plain cosine).
      fce: full context embeddings (a bidirectional LSTM over the support, an attention LSTM
        for the queries).
      fce_steps: the attention LSTM's processing steps.
    """

    scale_init: float = 10.0
    learn_scale: bool = True
    fce: bool = False
    fce_steps: int = 5
    fixed_way: ClassVar[bool] = False
    per_task_weights: ClassVar[bool] = False
    kinds: ClassVar[tuple[str, ...]] = ("classification",)

    def build(self, env: BuildEnv) -> MatchingNet:
        features = env.features()
        return MatchingNet(
            features,
            scale_init=self.scale_init,
            learn_scale=self.learn_scale,
            fce_dim=env.feature_width(features, self.algorithm) if self.fce else 0,
            fce_steps=self.fce_steps,
            task_chunk=env.task_chunk,
        )

    def validate(self, name: str) -> None:
        if not self.scale_init > 0:
            raise ConfigError(f"Config {name}: scale_init must be > 0, got {self.scale_init}.")
        if self.fce_steps < 1:
            raise ConfigError(f"Config {name}: fce_steps must be >= 1, got {self.fce_steps}.")
