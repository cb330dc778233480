"""Built-in models (Flax NNX modules); turn one into a pure function with `metajax.from_nnx`."""

from metajax.models.conv4 import Conv4, TransductiveBatchNorm, max_pool_2x2
from metajax.models.mlp import MLP

__all__ = ["MLP", "Conv4", "TransductiveBatchNorm", "max_pool_2x2"]
