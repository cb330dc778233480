"""The matmul convolutions (im2col, taps, and the C++ kernel `ffi_conv`): values and gradients
equal XLA's convolution, alone and under vmap."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from metajax import from_nnx
from metajax.models import Conv4
from metajax.models.conv_ffi import ffi_conv
from metajax.models.conv_ops import im2col_conv, tap_conv

CONVS = {"im2col": im2col_conv, "taps": tap_conv, "ffi": ffi_conv}


def _xla(x, k, strides, padding):
    return jax.lax.conv_general_dilated(
        x, k, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


@pytest.mark.parametrize("name", sorted(CONVS))
@settings(max_examples=20, deadline=None)
@given(
    st.integers(3, 8),
    st.integers(3, 8),
    st.sampled_from([1, 3]),
    st.sampled_from([(1, 1), (3, 3), (2, 3)]),
    st.sampled_from(["SAME", "VALID", ((1, 0), (2, 1))]),
    st.integers(0, 1000),
)
def test_matmul_conv_equals_xla_convolution(name, h, w, cin, kernel, padding, seed):
    kx, kk = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(kx, (2, h, w, cin))
    k = jax.random.normal(kk, (*kernel, cin, 4))
    # Compiled: one program per example, not one per primitive and shape.
    conv, xla = (jax.jit(f, static_argnums=(2, 3)) for f in (CONVS[name], _xla))
    np.testing.assert_allclose(
        conv(x, k, (1, 1), padding), xla(x, k, (1, 1), padding), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("name", sorted(CONVS))
@pytest.mark.parametrize("vmapped", [False, True])
def test_matmul_conv_gradients_equal_xla_gradients(name, vmapped):
    kx, kk = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, (3, 2, 6, 6, 2))
    k = jax.random.normal(kk, (3, 3, 3, 2, 5))  # per-task kernels, as MAML's adapted weights

    def loss(conv, x, k):
        return jnp.sum(jnp.sin(conv(x, k, (1, 1), "SAME")))

    def grads(conv):
        g = jax.grad(loss, argnums=(1, 2))
        f = jax.vmap(lambda x, k: g(conv, x, k)) if vmapped else lambda x, k: g(conv, x[0], k[0])
        return jax.jit(f)(x, k)

    chex.assert_trees_all_close(grads(CONVS[name]), grads(_xla), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", sorted(CONVS))
def test_matmul_conv_refuses_what_it_does_not_implement(name):
    im2col_conv = CONVS[name]
    x, k = jnp.ones((1, 5, 5, 2)), jnp.ones((3, 3, 2, 4))
    with pytest.raises(ValueError, match=r"window_strides=\(2, 2\)"):
        im2col_conv(x, k, (2, 2), "SAME")
    with pytest.raises(ValueError, match="feature_group_count=2"):
        im2col_conv(x, k, (1, 1), "SAME", feature_group_count=2)
    with pytest.raises(ValueError, match="rhs_dilation"):
        im2col_conv(x, k, (1, 1), "SAME", rhs_dilation=(2, 2))
    with pytest.raises(ValueError, match="kernel shape"):
        im2col_conv(jnp.ones((1, 5, 5, 3)), k, (1, 1), "SAME")
    with pytest.raises(ValueError, match=f"{im2col_conv.__name__} supports"):
        im2col_conv(x, k, (1, 1), "SAME", lhs_dilation=(2, 1))
    with pytest.raises(ValueError, match="conv must be one of"):
        Conv4(1, 5, conv="winograd", rngs=nnx.Rngs(0))


@pytest.mark.parametrize("name", sorted(CONVS))
def test_conv4_matmul_conv_and_xla_share_params_and_outputs(name):
    xla = from_nnx(lambda r: Conv4(1, 5, image_size=28, filters=8, conv="xla", rngs=r))
    i2c = from_nnx(lambda r: Conv4(1, 5, image_size=28, filters=8, conv=name, rngs=r))
    params = xla.init(jax.random.key(0))
    chex.assert_trees_all_equal_shapes_and_dtypes(params, i2c.init(jax.random.key(0)))
    x = jax.random.uniform(jax.random.key(1), (6, 28, 28, 1))
    np.testing.assert_allclose(i2c.apply(params, x), xla.apply(params, x), rtol=1e-4, atol=1e-4)
