"""An LSTM cell as pure functions over a parameter dict, for recurrences run under
``lax.scan`` (Matching Networks' full context embeddings)."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from metajax.core.types import Params


def lstm_params(key: chex.PRNGKey, in_dim: int, hidden: int) -> Params:
    """``{"kernel": [in_dim + hidden, 4 hidden], "bias": [4 hidden]}``: LeCun-normal weights,
    and a forget-gate bias of 1 (Jozefowicz et al. 2015), so early gradients flow through time.

    Example:
      >>> import jax
      >>> lstm_params(jax.random.key(0), 3, 2)["kernel"].shape
      (5, 8)
    """
    kernel = jax.random.normal(key, (in_dim + hidden, 4 * hidden)) / jnp.sqrt(in_dim + hidden)
    bias = jnp.zeros((4 * hidden,)).at[hidden : 2 * hidden].set(1.0)
    return {"kernel": kernel, "bias": bias}


def lstm_step(params: Params, state: tuple[chex.Array, chex.Array],
              x: chex.Array) -> tuple[chex.Array, chex.Array]:  # fmt: skip
    """One LSTM step (Hochreiter and Schmidhuber 1997, with a forget gate):
    ``(h, c) -> (h', c')`` for inputs ``x [..., in_dim]`` and states ``[..., hidden]``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> p = lstm_params(jax.random.key(0), 3, 2)
      >>> h, c = lstm_step(p, (jnp.zeros(2), jnp.zeros(2)), jnp.ones(3))
      >>> h.shape, bool((jnp.abs(h) < 1).all())
      ((2,), True)
    """
    h, c = state
    gates = jnp.concatenate([x, h], -1) @ params["kernel"] + params["bias"]
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    return jax.nn.sigmoid(o) * jnp.tanh(c), c


def run_lstm(params: Params, xs: chex.Array, reverse: bool = False) -> chex.Array:
    """The hidden states ``[n, hidden]`` of an LSTM run over the sequence ``xs [n, in_dim]``
    from zero states (``reverse``: from the last element to the first, outputs in input
    order)."""
    hidden = params["bias"].shape[0] // 4
    zeros = jnp.zeros((hidden,), xs.dtype)

    def step(state, x):
        state = lstm_step(params, state, x)
        return state, state[0]

    _, hs = jax.lax.scan(step, (zeros, zeros), xs, reverse=reverse)
    return hs
