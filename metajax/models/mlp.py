"""The fully connected network of the MAML paper's regression experiments."""

from __future__ import annotations

from collections.abc import Sequence

import chex
import jax
from flax import nnx


class MLP(nnx.Module):
    """ReLU MLP; the default ``hidden=(40, 40)`` is the sinusoid network of Finn et al. 2017, 5.1.

    Args:
      in_features: input width.
      out_features: output width.
      hidden: widths of the hidden layers.
      rngs: NNX random streams for initialization.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> MLP(1, 1, rngs=nnx.Rngs(0))(jnp.zeros((5, 1))).shape
      (5, 1)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = (40, 40),
        *,
        rngs: nnx.Rngs,
    ):
        widths = [in_features, *hidden]
        self.hidden = nnx.List(
            [nnx.Linear(a, b, rngs=rngs) for a, b in zip(widths[:-1], widths[1:], strict=True)]
        )
        self.out = nnx.Linear(widths[-1], out_features, rngs=rngs)

    def __call__(self, x: chex.Array) -> chex.Array:
        for layer in self.hidden:
            x = jax.nn.relu(layer(x))
        return self.out(x)
