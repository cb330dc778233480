"""The encoder/decoder toolkit of the Neural Process family.

Every model of the family reads a *context* set ``{(x_i, y_i)}`` (with a mask: context sizes
vary from task to task while shapes stay static) and returns a predictive `Gaussian` at target
inputs. The pieces:

- `SetEncoder`: per-example features ``h_i = MLP([x_i, y_i])``, optionally followed by
  self-attention among the examples (ANP, Kim et al. 2019, section 3);
- `PooledEncoder`: ``r = MLP_post(mean_i h_i)`` (CNP, Garnelo et al. 2018a, eq. 3), or a
  Gaussian over a latent ``z`` from the same pooled features (NP, Garnelo et al. 2018b);
- `AttentiveEncoder`: cross-attention from each target input to the context (ANP, eq. 4);
- `GaussianDecoder`: ``(mean, scale)`` from ``[representation, x]`` with a bounded scale
  ``min_scale + (1 - min_scale) softplus(.)`` (Le et al. 2018);
- `set_conv`, `Conv1D` and `ConvDecoderCNN`: the SetConv layers and the CNN of ConvCNP (Gordon et al.
  2020, section 3).

`MultiheadAttention` is the attention block of the Set Transformer (Lee et al. 2019, eq. 6-7):
``H = LayerNorm(Q + Attention(Q, K, V))``, ``out = LayerNorm(H + relu(Linear(H)))``.
"""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
from flax import nnx, struct

from metajax.models.mlp import MLP

_LOG_2PI = math.log(2 * math.pi)
# The logit of a padded context example: attention never reads it, and no NaN appears.
_MASKED = -1e9


@struct.dataclass
class Gaussian:
    """A diagonal Gaussian, the predictive distribution of every model of the family.

    Attributes:
      mean: ``[..., d]`` means.
      scale: ``[..., d]`` standard deviations (positive).

    Example:
      >>> import jax.numpy as jnp
      >>> round(float(Gaussian(jnp.zeros(1), jnp.ones(1)).log_prob(jnp.zeros(1))), 4)
      -0.9189
    """

    mean: chex.Array
    scale: chex.Array

    def log_prob(self, y: chex.Array) -> chex.Array:
        """``log N(y; mean, scale^2)``, summed over the last axis (one value per point)."""
        z = (y - self.mean) / self.scale
        return jnp.sum(-0.5 * z**2 - jnp.log(self.scale) - 0.5 * _LOG_2PI, axis=-1)

    def sample(self, key: chex.PRNGKey, num: int | None = None) -> chex.Array:
        """A reparameterized sample (``num`` samples on a new leading axis if given)."""
        shape = self.mean.shape if num is None else (num, *self.mean.shape)
        return self.mean + self.scale * jax.random.normal(key, shape, self.mean.dtype)

    def kl(self, other: Gaussian) -> chex.Array:
        """``KL(self || other)``, summed over the last axis."""
        ratio = (self.scale / other.scale) ** 2
        diff = ((self.mean - other.mean) / other.scale) ** 2
        return 0.5 * jnp.sum(ratio + diff - 1.0 - jnp.log(ratio), axis=-1)


def bounded_gaussian(raw: chex.Array, min_scale: float) -> Gaussian:
    """Splits ``raw [..., 2d]`` into a mean and a scale ``min_scale + (1 - min_scale)
    softplus(.)``: the scale never collapses to zero (Le et al. 2018)."""
    mean, raw_scale = jnp.split(raw, 2, axis=-1)
    return Gaussian(mean, min_scale + (1 - min_scale) * jax.nn.softplus(raw_scale))


def masked_mean(h: chex.Array, mask: chex.Array | None) -> chex.Array:
    """The mean of ``h [n, d]`` over the rows where ``mask [n]`` holds (all if None)."""
    if mask is None:
        return h.mean(0)
    w = mask.astype(h.dtype)
    return (h * w[:, None]).sum(0) / jnp.maximum(w.sum(), 1)


def _mlp(in_dim: int, width: int, depth: int, out_dim: int, rngs: nnx.Rngs) -> MLP:
    """``depth`` linear layers, ReLU between them: ``in -> width ... -> out``."""
    return MLP(in_dim, out_dim, (width,) * (depth - 1), rngs=rngs)


class MultiheadAttention(nnx.Module):
    """Multi-head attention with the Set Transformer's residuals and layer norms.

    Args:
      query_dim, key_dim, value_dim: input widths.
      width: the output width (split over ``heads``).
      heads: attention heads; ``width`` must be a multiple.
      rngs: NNX random streams.
    """

    def __init__(self, query_dim: int, key_dim: int, value_dim: int, width: int, heads: int, *,
                 rngs: nnx.Rngs):  # fmt: skip
        if width % heads:
            raise ValueError(f"MultiheadAttention: width {width} is not a multiple of {heads}.")
        self.heads = heads
        self.q = nnx.Linear(query_dim, width, rngs=rngs)
        # No key bias: it adds the same logit to every key, which the softmax ignores; its
        # gradient would be pure rounding noise, which Adam would amplify into steps.
        self.k = nnx.Linear(key_dim, width, use_bias=False, rngs=rngs)
        self.v = nnx.Linear(value_dim, width, rngs=rngs)
        self.out = nnx.Linear(width, width, rngs=rngs)
        self.norm1 = nnx.LayerNorm(width, rngs=rngs)
        self.norm2 = nnx.LayerNorm(width, rngs=rngs)

    def weights(self, q: chex.Array, k: chex.Array, mask: chex.Array | None) -> chex.Array:
        """``[heads, queries, keys]`` attention weights; each row sums to one over the
        unmasked keys."""
        qh, kh = (a.reshape(a.shape[0], self.heads, -1) for a in (self.q(q), self.k(k)))
        logits = jnp.einsum("mhd,nhd->hmn", qh, kh) / math.sqrt(qh.shape[-1])
        if mask is not None:
            logits = jnp.where(mask[None, None, :], logits, _MASKED)
        return jax.nn.softmax(logits, axis=-1)

    def __call__(self, q: chex.Array, k: chex.Array, v: chex.Array,
                 mask: chex.Array | None = None) -> chex.Array:  # fmt: skip
        vh = self.v(v).reshape(v.shape[0], self.heads, -1)
        attended = jnp.einsum("hmn,nhd->mhd", self.weights(q, k, mask), vh)
        h = self.norm1(self.q(q) + attended.reshape(q.shape[0], -1))
        return self.norm2(h + jax.nn.relu(self.out(h)))


class SetEncoder(nnx.Module):
    """Per-example features of a set: ``h_i = MLP([x_i, y_i])`` then ``attention_layers``
    rounds of masked self-attention (ANP's encoder; none for CNP and NP).

    Args:
      x_dim, y_dim: input and output widths.
      width: the feature width.
      depth: linear layers of the MLP.
      attention_layers: self-attention rounds after the MLP.
      heads: attention heads.
      rngs: NNX random streams.
    """

    def __init__(self, x_dim: int, y_dim: int, width: int, depth: int,
                 attention_layers: int = 0, heads: int = 8, *, rngs: nnx.Rngs):  # fmt: skip
        self.mlp = _mlp(x_dim + y_dim, width, depth, width, rngs)
        self.attention = nnx.List([MultiheadAttention(width, width, width, width, heads,
                                                      rngs=rngs)
                                   for _ in range(attention_layers)])  # fmt: skip

    def __call__(self, x: chex.Array, y: chex.Array, mask: chex.Array | None) -> chex.Array:
        h = self.mlp(jnp.concatenate([x, y], -1))
        for layer in self.attention:
            h = layer(h, h, h, mask)
        return h


class PooledEncoder(nnx.Module):
    """A set to one vector: ``MLP_post(mean_i h_i)`` over the `SetEncoder` features.

    With ``latent=True`` the output is a `Gaussian` over ``z`` (mean and a scale
    ``0.1 + 0.9 sigmoid(.)``, as Kim et al. 2019), else the deterministic ``r``.

    Args:
      x_dim, y_dim: input and output widths.
      width: the feature width; ``out_dim`` the output width (of ``r`` or ``z``).
      pre_depth, post_depth: linear layers before and after the mean.
      attention_layers, heads: self-attention of the `SetEncoder`.
      latent: output a Gaussian.
      rngs: NNX random streams.
    """

    def __init__(self, x_dim: int, y_dim: int, width: int, out_dim: int, pre_depth: int,
                 post_depth: int, attention_layers: int = 0, heads: int = 8,
                 latent: bool = False, *, rngs: nnx.Rngs):  # fmt: skip
        self.latent = latent
        self.set = SetEncoder(x_dim, y_dim, width, pre_depth, attention_layers, heads,
                              rngs=rngs)  # fmt: skip
        self.post = _mlp(width, width, post_depth, 2 * out_dim if latent else out_dim, rngs)

    def __call__(self, x: chex.Array, y: chex.Array,
                 mask: chex.Array | None) -> chex.Array | Gaussian:  # fmt: skip
        out = self.post(masked_mean(self.set(x, y, mask), mask))
        if not self.latent:
            return out
        mean, raw = jnp.split(out, 2, axis=-1)
        return Gaussian(mean, 0.1 + 0.9 * jax.nn.sigmoid(raw))


class AttentiveEncoder(nnx.Module):
    """ANP's deterministic path: each target input attends to the context (eq. 4).

    Queries and keys are an MLP of the inputs (shared); values are the `SetEncoder`
    features of the context examples, with self-attention.

    Args:
      x_dim, y_dim: input and output widths.
      width: the feature width.
      depth: linear layers of the value MLP (the query/key MLP has 2).
      attention_layers, heads: self-attention rounds among the values, and heads.
      rngs: NNX random streams.
    """

    def __init__(self, x_dim: int, y_dim: int, width: int, depth: int,
                 attention_layers: int = 2, heads: int = 8, *, rngs: nnx.Rngs):  # fmt: skip
        self.values = SetEncoder(x_dim, y_dim, width, depth, attention_layers, heads, rngs=rngs)
        self.embed = _mlp(x_dim, width, 2, width, rngs)
        self.cross = MultiheadAttention(width, width, width, width, heads, rngs=rngs)

    def __call__(self, x_target: chex.Array, x: chex.Array, y: chex.Array,
                 mask: chex.Array | None) -> chex.Array:  # fmt: skip
        return self.cross(self.embed(x_target), self.embed(x), self.values(x, y, mask), mask)

    def attention(self, x_target: chex.Array, x: chex.Array,
                  mask: chex.Array | None) -> chex.Array:  # fmt: skip
        """``[heads, targets, context]`` cross-attention weights."""
        return self.cross.weights(self.embed(x_target), self.embed(x), mask)


class GaussianDecoder(nnx.Module):
    """``p(y | representation, x)``: an MLP of ``[representation, x]`` to a `Gaussian` with
    a bounded scale (`bounded_gaussian`).

    The first layer is applied by parts, the same as on the concatenation: ``W [r; x] + b =
    W_r r + W_x x + b``. A part that is the same for every target (CNP's ``r``, a latent
    ``z``) is multiplied once per task instead of once per target, which removes most of the
    first layer's work (its ``x`` part is ``x_dim`` wide).

    Args:
      x_dim, representation_dim, y_dim: widths.
      width: hidden width; depth: linear layers.
      min_scale: the scale's lower bound.
      rngs: NNX random streams.
    """

    def __init__(self, x_dim: int, representation_dim: int, y_dim: int, width: int,
                 depth: int, min_scale: float, *, rngs: nnx.Rngs):  # fmt: skip
        self.min_scale = min_scale
        self.mlp = _mlp(x_dim + representation_dim, width, depth, 2 * y_dim, rngs)

    def __call__(self, representation: chex.Array, x: chex.Array,
                 shared: chex.Array | None = None) -> Gaussian:  # fmt: skip
        """``representation``: ``[d]`` for the task or ``[targets, d]``; ``shared``: a
        further ``[d']`` vector for the task (the input is ``[representation, shared, x]``)."""
        layers = [*self.mlp.hidden, self.mlp.out]
        first = layers[0]
        kernel = first.kernel[...]
        per_task = first.bias[...]
        per_target = x @ kernel[kernel.shape[0] - x.shape[-1] :]
        parts = [representation] + ([] if shared is None else [shared])
        row = 0
        for part in parts:
            term = part @ kernel[row : row + part.shape[-1]]
            row += part.shape[-1]
            if part.ndim == 1:
                per_task = per_task + term
            else:
                per_target = per_target + term
        h = per_target + per_task
        for layer in layers[1:]:
            h = layer(jax.nn.relu(h))
        return bounded_gaussian(h, self.min_scale)


# ---- ConvCNP -----------------------------------------------------------------------------------


def set_conv(x_from: chex.Array, values: chex.Array, x_to: chex.Array,
             log_length: chex.Array, normalize: bool = False) -> chex.Array:  # fmt: skip
    """A SetConv layer (Gordon et al. 2020, eq. 4): ``out_c(t) = sum_i phi_c(t - x_i) v_ic``
    with an EQ kernel ``phi_c(d) = exp(-d^2 / (2 l_c^2))`` of one length per channel;
    ``normalize`` divides by ``sum_i phi_c(t - x_i)`` (kernel interpolation, for reading a
    dense grid back at the targets).

    Args:
      x_from: ``[n, 1]`` input locations.
      values: ``[n, channels]`` values there (zero rows for padding).
      x_to: ``[m, 1]`` output locations.
      log_length: ``[channels]`` log length scales.

    Returns:
      ``[m, channels]``. A permutation of the inputs permutes the sum's terms only, and a
      shift of both location sets leaves every distance unchanged.
    """
    d2 = (x_to[:, None, 0] - x_from[None, :, 0]) ** 2
    weights = jnp.exp(-0.5 * d2[..., None] / jnp.exp(2 * log_length))
    out = jnp.einsum("mnc,nc->mc", weights, values)
    return out / (weights.sum(1) + 1e-8) if normalize else out


class Conv1D(nnx.Module):
    """A "same"-padded 1-D convolution as one matrix product over unfolded windows: XLA:CPU
    runs it several times faster than its convolution op, forward and backward, and it is
    the same math on every backend.

    Args:
      in_channels, out_channels: widths; kernel_size: the window, in grid points.
      rngs: NNX random streams.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *,
                 rngs: nnx.Rngs):  # fmt: skip
        init = nnx.initializers.he_normal()
        self.kernel_size = kernel_size
        self.kernel = nnx.Param(init(rngs.params(), (kernel_size * in_channels, out_channels)))
        self.bias = nnx.Param(jnp.zeros((out_channels,)))

    def __call__(self, h: chex.Array) -> chex.Array:
        k = self.kernel_size
        padded = jnp.pad(h, ((k // 2, k - 1 - k // 2), (0, 0)))
        windows = jnp.concatenate([padded[i : i + h.shape[0]] for i in range(k)], -1)
        return windows @ self.kernel[...] + self.bias[...]


class ConvDecoderCNN(nnx.Module):
    """The CNN of a 1-D ConvCNP on ``[grid, channels]``: ``layers + 1`` "same"-padded
    convolutions (`Conv1D`) with ReLU between them, He-initialized.

    Args:
      in_channels: input width; channels: hidden and output width.
      layers: convolutions after the first; kernel_size: their width.
      rngs: NNX random streams.
    """

    def __init__(self, in_channels: int, channels: int, layers: int, kernel_size: int, *,
                 rngs: nnx.Rngs):  # fmt: skip
        widths = [in_channels] + [channels] * (layers + 1)
        self.convs = nnx.List([Conv1D(a, b, kernel_size, rngs=rngs)
                               for a, b in zip(widths[:-1], widths[1:], strict=True)])  # fmt: skip

    def __call__(self, h: chex.Array) -> chex.Array:
        for i, conv in enumerate(self.convs):
            h = conv(h if i == 0 else jax.nn.relu(h))
        return h
