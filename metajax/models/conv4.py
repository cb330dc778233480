"""The standard 4-block convolutional backbone of few-shot learning.

Vinyals et al. 2016 and Finn et al. 2017 (section 5.2): four blocks of 3x3 convolution with
64 filters, batch normalization, ReLU and 2x2 max-pooling, then a linear classifier.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
from flax import nnx

from metajax import kernels
from metajax.models.conv_ffi import ffi_conv
from metajax.models.conv_ops import im2col_conv, tap_conv

CONV_IMPLS = {
    "xla": jax.lax.conv_general_dilated,
    "im2col": im2col_conv,
    "taps": tap_conv,
    "ffi": ffi_conv,
}
CONV_CHOICES = ("auto", *CONV_IMPLS)


def resolve_conv(conv: str, backend: str | None = None) -> str:
    """The convolution ``conv`` names on ``backend``: ``"auto"`` is metajax's C++ kernel
    (`ffi_conv`) on CPU where it builds, else `im2col_conv` on CPU, and XLA's own convolution
    on GPU and TPU; any other name is returned as is.

    Why: on CPU, XLA's convolution runs at 40-52 GFLOP/s at best and a tenth of that under
    ``vmap`` with per-task kernels or inside a loop body; the C++ kernel holds 82-150 on the
    64-channel layers in all three settings (``benchmarks/RESULTS.md``).

    Args:
      conv: ``"auto"`` or a key of ``CONV_IMPLS``.
      backend: a JAX backend name; default ``jax.default_backend()``.

    Returns:
      A key of ``CONV_IMPLS``.

    Example:
      >>> resolve_conv("auto", "gpu"), resolve_conv("im2col", "cpu")
      ('xla', 'im2col')
    """
    if conv not in CONV_CHOICES:
        raise ValueError(f"conv must be one of {sorted(CONV_CHOICES)}, got {conv!r}.")
    if conv != "auto":
        return conv
    if (backend or jax.default_backend()) != "cpu":
        return "xla"
    return "ffi" if kernels.available() else "im2col"


def max_pool_2x2(x: chex.Array) -> chex.Array:
    """2x2 max-pooling with stride 2 (floor on odd sizes) by reshape and max.

    Gives the same values as ``lax.reduce_window`` but its backward pass is a plain
    elementwise select, much faster on CPU than reduce-window's scatter.
    """
    n, h, w, c = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2]
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class TransductiveBatchNorm(nnx.Module):
    """Batch normalization with batch statistics at meta-train and meta-test time.

    This is the MAML paper's setting: no running averages are kept, so the module is a pure
    function of its parameters (scale and bias) and its input batch.
    """

    def __init__(self, features: int, epsilon: float = 1e-5):
        self.scale = nnx.Param(jnp.ones((features,)))
        self.bias = nnx.Param(jnp.zeros((features,)))
        self.epsilon = epsilon

    def __call__(self, x: chex.Array) -> chex.Array:
        axes = tuple(range(x.ndim - 1))
        mean = x.mean(axes)
        var = x.var(axes)
        return (x - mean) * jax.lax.rsqrt(var + self.epsilon) * self.scale + self.bias


class Conv4(nnx.Module):
    """Four conv blocks (3x3 conv, batch norm, ReLU, 2x2 max-pool) and a linear head.

    Args:
      in_channels: image channels (1 for Omniglot, 3 for mini-ImageNet).
      num_classes: output logits (N of N-way); ``0`` returns the flattened features.
      image_size: input height and width, to size the head.
      filters: channels of each block.
      conv: how a convolution is computed; all give the same outputs and parameters.
        ``"auto"`` (default): the fastest on the backend (`resolve_conv`: metajax's C++ kernel
        on CPU, XLA's on GPU/TPU); ``"ffi"`` (`ffi_conv`): the C++ kernel, blocked im2col
        and OpenBLAS GEMMs; ``"xla"``: ``lax.conv_general_dilated``; ``"im2col"``
        (`im2col_conv`): patches times a matrix in XLA; ``"taps"`` (`tap_conv`): one matrix
        product per kernel tap.
      pooled_blocks: how many blocks (the first ones) max-pool. With fewer than 4 and
        ``num_classes=0`` the output is the spatial feature map ``[n, h, w, filters]``
        (Relation Networks' embedding pools in its first two blocks only).
      rngs: NNX random streams.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> Conv4(1, 5, image_size=28, rngs=nnx.Rngs(0))(jnp.zeros((2, 28, 28, 1))).shape
      (2, 5)
      >>> Conv4(1, 0, pooled_blocks=2, rngs=nnx.Rngs(0))(jnp.zeros((2, 28, 28, 1))).shape
      (2, 7, 7, 64)
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        image_size: int = 28,
        filters: int = 64,
        conv: str = "auto",
        pooled_blocks: int = 4,
        rngs: nnx.Rngs,
    ):
        if conv not in CONV_CHOICES:
            raise ValueError(f"Conv4: conv must be one of {sorted(CONV_CHOICES)}, got {conv!r}.")
        conv = resolve_conv(conv)
        channels = [in_channels] + [filters] * 4
        self.convs = nnx.List(
            [
                nnx.Conv(
                    a,
                    b,
                    (3, 3),
                    padding="SAME",
                    conv_general_dilated=CONV_IMPLS[conv],
                    rngs=rngs,
                )
                for a, b in zip(channels[:-1], channels[1:], strict=True)
            ]
        )
        self.norms = nnx.List([TransductiveBatchNorm(filters) for _ in range(4)])
        if not 0 <= pooled_blocks <= 4 or (pooled_blocks < 4 and num_classes):
            raise ValueError(
                f"Conv4: pooled_blocks must be in [0, 4], and 4 with a head; got {pooled_blocks}."
            )
        self.pooled_blocks = pooled_blocks
        size = image_size // 2**pooled_blocks  # 2x2 poolings, each rounding down
        if size < 1:
            raise ValueError(
                f"Conv4 pools by 2 {pooled_blocks} times, so it needs image_size >= "
                f"{2**pooled_blocks}; got {image_size}. Resize the images or use fewer blocks."
            )
        self.feature_dim = filters * size * size
        self.head = nnx.Linear(self.feature_dim, num_classes, rngs=rngs) if num_classes else None

    def features(self, x: chex.Array) -> chex.Array:
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            x = jax.nn.relu(norm(conv(x)))
            x = max_pool_2x2(x) if i < self.pooled_blocks else x
        return x.reshape(x.shape[0], -1) if self.pooled_blocks == 4 else x

    def __call__(self, x: chex.Array) -> chex.Array:
        h = self.features(x)
        return h if self.head is None else self.head(h)
