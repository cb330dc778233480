"""Built-in models: shapes, pooling, transductive batch norm."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from metajax import from_nnx
from metajax.core.inner import InnerLoop
from metajax.models import MLP, Conv4, ResNet12, TransductiveBatchNorm, max_pool_2x2


def test_mlp_paper_shape():
    model = from_nnx(lambda r: MLP(1, 1, rngs=r))
    params = model.init(jax.random.key(0))
    n = sum(x.size for x in jax.tree.leaves(params))
    assert n == (1 * 40 + 40) + (40 * 40 + 40) + (40 * 1 + 1)
    chex.assert_shape(model.apply(params, jnp.zeros((7, 1))), (7, 1))


def test_conv4_shapes_and_feature_size():
    for size, channels in ((28, 1), (84, 3)):
        net = Conv4(channels, 5, image_size=size, rngs=nnx.Rngs(0))
        x = jax.random.normal(jax.random.key(1), (6, size, size, channels))
        # Shapes by tracing alone: running an 84x84 batch adds seconds and checks nothing more.
        chex.assert_shape(jax.eval_shape(net, x), (6, 5))
        chex.assert_shape(jax.eval_shape(net.features, x), (6, net.feature_dim))
    assert Conv4(1, 5, image_size=28, rngs=nnx.Rngs(0)).feature_dim == 64
    assert Conv4(3, 5, image_size=84, rngs=nnx.Rngs(0)).feature_dim == 64 * 5 * 5
    with pytest.raises(ValueError, match="image_size >= 16"):
        Conv4(1, 5, image_size=8, rngs=nnx.Rngs(0))


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 9), st.integers(2, 9), st.integers(1, 3), st.integers(0, 1000))
def test_max_pool_matches_reduce_window(h, w, c, seed):
    x = jax.random.normal(jax.random.key(seed), (2, h, w, c))
    expected = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    # Compiled as one program per shape; op by op, each example compiles every primitive.
    np.testing.assert_array_equal(jax.jit(max_pool_2x2)(x), expected)


def test_transductive_batch_norm_uses_batch_statistics():
    bn = TransductiveBatchNorm(3)
    x = 5 + 2 * jax.random.normal(jax.random.key(0), (64, 4, 4, 3))
    y = bn(x)
    np.testing.assert_allclose(y.mean((0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(y.std((0, 1, 2)), 1, atol=1e-3)
    # No running state: the same input gives the same output, however often it is called.
    chex.assert_trees_all_close(bn(x), y)


def test_conv4_meta_gradient_through_an_inner_step():
    import optax

    from metajax import MAML, losses
    from metajax.core.types import Split, Task

    model = from_nnx(lambda r: Conv4(1, 3, image_size=16, filters=4, rngs=r))
    maml = MAML(model, losses.cross_entropy, InnerLoop(optax.sgd(0.1)))
    params = maml.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (6, 16, 16, 1))
    y = jnp.array([0, 1, 2, 0, 1, 2])
    task = Task(support=Split(x, y), query=Split(x[::-1], y[::-1]))
    grads, metrics = jax.jit(maml.meta_grad)(params, task, jax.random.key(2))
    chex.assert_trees_all_equal_shapes(grads, params)
    assert np.isfinite(float(metrics["meta_loss"]))
    assert float(optax.tree.norm(grads)) > 0


def test_resnet12_paper_shape_and_residual_structure():
    net = ResNet12(3, 0, rngs=nnx.Rngs(0))
    params = from_nnx(lambda r: ResNet12(3, 0, rngs=r)).init(jax.random.key(0))
    # Per block: 3x3 convs (a->b, b->b, b->b) and a 1x1 shortcut, no conv biases; 4 BNs.
    widths = [3, 64, 160, 320, 640]
    expected = sum(
        9 * a * b + 9 * b * b * 2 + a * b + 4 * 2 * b
        for a, b in zip(widths[:-1], widths[1:], strict=True)
    )
    assert sum(x.size for x in jax.tree.leaves(params)) == expected  # ~12.4M, as in MetaOptNet
    x = jax.random.normal(jax.random.key(1), (2, 84, 84, 3))
    chex.assert_shape(jax.eval_shape(net.features, x), (2, 640))
    small = ResNet12(3, 5, widths=(4, 4, 8, 8), rngs=nnx.Rngs(0))
    chex.assert_shape(small(x[:, :32, :32]), (2, 5))
    with pytest.raises(ValueError, match="at least 16x16"):
        small(x[:, :8, :8])
    with pytest.raises(ValueError, match="four blocks"):
        ResNet12(3, 5, widths=(4, 4), rngs=nnx.Rngs(0))
    # The shortcut carries the input: with every 3x3 kernel zeroed the block is not zero.
    block = small.blocks[0]
    for conv in block.convs:
        conv.kernel[...] = 0
    y = block(x[:, :32, :32])
    assert float(jnp.abs(y).max()) > 0.1
