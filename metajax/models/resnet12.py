"""ResNet-12, the standard deeper backbone of few-shot image classification.

Oreshkin et al. 2018 (TADAM) and Lee et al. 2019 (MetaOptNet): four residual blocks, each of
three 3x3 convolutions with batch norm and leaky ReLU (slope 0.1), a 1x1 convolution with
batch norm on the shortcut, then 2x2 max-pooling; widths (64, 160, 320, 640); global average
pooling gives the features. Batch norm is transductive (batch statistics, no running state),
as in `Conv4`, so the model stays a pure function of its parameters. DropBlock, which some
papers add, is left out.
"""

from __future__ import annotations

from collections.abc import Sequence

import chex
import jax
from flax import nnx

from metajax.models.conv4 import (
    CONV_CHOICES,
    CONV_IMPLS,
    TransductiveBatchNorm,
    max_pool_2x2,
    resolve_conv,
)


def _conv(a: int, b: int, size: int, conv: str, rngs: nnx.Rngs) -> nnx.Conv:
    return nnx.Conv(
        a,
        b,
        (size, size),
        padding="SAME",
        use_bias=False,  # batch norm's bias follows
        conv_general_dilated=CONV_IMPLS[conv],
        rngs=rngs,
    )


class ResidualBlock(nnx.Module):
    """Three 3x3 conv-BN layers with a 1x1 conv-BN shortcut, leaky ReLU, 2x2 max-pool."""

    def __init__(self, in_channels: int, out_channels: int, *, conv: str, rngs: nnx.Rngs):
        widths = [in_channels, out_channels, out_channels, out_channels]
        self.convs = nnx.List(
            [_conv(a, b, 3, conv, rngs) for a, b in zip(widths[:-1], widths[1:], strict=True)]
        )
        self.norms = nnx.List([TransductiveBatchNorm(out_channels) for _ in range(3)])
        self.shortcut = _conv(in_channels, out_channels, 1, conv, rngs)
        self.shortcut_norm = TransductiveBatchNorm(out_channels)

    def __call__(self, x: chex.Array) -> chex.Array:
        h = x
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            h = norm(conv(h))
            if i < 2:
                h = jax.nn.leaky_relu(h, 0.1)
        h = jax.nn.leaky_relu(h + self.shortcut_norm(self.shortcut(x)), 0.1)
        return max_pool_2x2(h)


class ResNet12(nnx.Module):
    """ResNet-12 features (``num_classes=0``) or logits.

    Args:
      in_channels: image channels.
      num_classes: output logits; ``0`` returns the ``widths[-1]`` pooled features.
      widths: channels of the four blocks.
      conv: ``"auto"`` (default), ``"ffi"``, ``"xla"``, ``"taps"`` or ``"im2col"`` (see
        `Conv4`).
      rngs: NNX random streams.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> net = ResNet12(3, 5, widths=(8, 8, 16, 16), rngs=nnx.Rngs(0))
      >>> net(jnp.zeros((2, 32, 32, 3))).shape
      (2, 5)
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        widths: Sequence[int] = (64, 160, 320, 640),
        conv: str = "auto",
        rngs: nnx.Rngs,
    ):
        if conv not in CONV_CHOICES:
            raise ValueError(f"ResNet12: conv must be one of {sorted(CONV_CHOICES)}, got {conv!r}.")
        conv = resolve_conv(conv)
        if len(widths) != 4:
            raise ValueError(f"ResNet12 has four blocks; got widths {tuple(widths)}.")
        chans = [in_channels, *widths]
        self.blocks = nnx.List(
            [
                ResidualBlock(a, b, conv=conv, rngs=rngs)
                for a, b in zip(chans[:-1], chans[1:], strict=True)
            ]
        )
        self.feature_dim = widths[-1]
        self.head = nnx.Linear(self.feature_dim, num_classes, rngs=rngs) if num_classes else None

    def features(self, x: chex.Array) -> chex.Array:
        if min(x.shape[1:3]) < 16:
            raise ValueError(
                f"ResNet12 pools by 2 four times, so it needs images of at least 16x16; got "
                f"{x.shape[1:3]}."
            )
        for block in self.blocks:
            x = block(x)
        return x.mean(axis=(1, 2))

    def __call__(self, x: chex.Array) -> chex.Array:
        h = self.features(x)
        return h if self.head is None else self.head(h)
