"""The Neural Process toolkit's attention block (`metajax.models.neural_process`)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from metajax.models.neural_process import MultiheadAttention


def test_attention_weights_sum_to_one_over_unmasked_keys_and_ignore_masked_ones():
    block = MultiheadAttention(6, 6, 6, 8, 2, rngs=nnx.Rngs(0))
    h = jax.random.normal(jax.random.key(1), (5, 6))
    mask = jnp.array([True, True, False, True, False])
    weights = np.asarray(block.weights(h, h, mask))
    chex.assert_shape(weights, (2, 5, 5))
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6)
    assert (weights[..., ~np.asarray(mask)] == 0).all()
    # A masked key's value does not reach the output.
    changed = h.at[2].set(100.0)
    out, out_changed = block(h, h, h, mask), block(h, changed, changed, mask)
    np.testing.assert_allclose(out, out_changed, atol=1e-6)
