"""Built-in models (Flax NNX modules); turn one into a pure function with `metajax.from_nnx`."""

from metajax.models.conv4 import Conv4, TransductiveBatchNorm, max_pool_2x2, resolve_conv
from metajax.models.conv_ffi import ffi_conv
from metajax.models.conv_ops import im2col_conv, tap_conv
from metajax.models.mlp import MLP
from metajax.models.resnet12 import ResNet12

__all__ = [
    "MLP",
    "Conv4",
    "ResNet12",
    "TransductiveBatchNorm",
    "ffi_conv",
    "im2col_conv",
    "max_pool_2x2",
    "resolve_conv",
    "tap_conv",
]
