"""metajax's C++ convolution (`ffi_conv`): every order of derivative in both modes, checked
against finite differences in float64 and against XLA's convolution; vmap with per-task and
shared kernels; determinism; the fallbacks and errors."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

from metajax import MAML, from_nnx, kernels, losses
from metajax.core.inner import InnerLoop
from metajax.core.types import Split, Task
from metajax.kernels import build
from metajax.models import Conv4, resolve_conv
from metajax.models.conv_ffi import conv_kernel_grad_p, ffi_conv

DIMS = ("NHWC", "HWIO", "NHWC")


def _xla(x, k, strides=(1, 1), padding="SAME"):
    return jax.lax.conv_general_dilated(x, k, strides, padding, dimension_numbers=DIMS)


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


@pytest.mark.parametrize("padding", ["SAME", "VALID", ((2, 0), (0, 1))])
@pytest.mark.parametrize("cin", [1, 5])  # a short reduction (direct loops) and the GEMM path
def test_derivatives_of_every_order_match_finite_differences(x64, padding, cin):
    kx, kk = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, (2, 5, 4, cin), jnp.float64)
    k = jax.random.normal(kk, (3, 2, cin, 3), jnp.float64)

    def f(x, k):
        return jnp.sum(jnp.tanh(ffi_conv(x, k, (1, 1), padding)))

    # order 2 in both modes covers the transposes of the kernel-gradient primitive too.
    check_grads(f, (x, k), order=2, modes=("fwd", "rev"), eps=1e-5, atol=1e-5, rtol=1e-5)


def test_second_order_maml_and_imaml_hvp_equal_xla(x64):
    """Second-order MAML's meta-gradient (grad of grad, vmapped per-task kernels) and the
    Hessian-vector product iMAML solves with (jvp of grad) equal XLA's convolution's."""
    kx, kk = jax.random.split(jax.random.key(1))
    x = jax.random.normal(kx, (3, 4, 6, 6, 2), jnp.float64)  # 3 tasks
    k = jax.random.normal(kk, (3, 3, 2, 4), jnp.float64)

    def meta_loss(conv, k, x):
        inner = lambda k: jnp.mean(jnp.sin(conv(x, k, (1, 1), "SAME")) ** 2)  # noqa: E731
        adapted = k - 0.5 * jax.grad(inner)(k)
        return jnp.mean(jnp.cos(conv(x, adapted, (1, 1), "SAME")))

    def meta_grad(conv):
        per_task = jax.vmap(jax.grad(meta_loss, argnums=1), in_axes=(None, None, 0))
        return jax.jit(per_task, static_argnums=0)(conv, k, x)

    chex.assert_trees_all_close(meta_grad(ffi_conv), meta_grad(_xla), rtol=1e-10, atol=1e-12)

    def hvp(conv):
        loss = lambda k: jnp.sum(jnp.sin(conv(x[0], k, (1, 1), "SAME")))  # noqa: E731
        return jax.jvp(jax.grad(loss), (k,), (jnp.ones_like(k),))[1]

    chex.assert_trees_all_close(hvp(ffi_conv), hvp(_xla), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mapped", ["both", "input", "kernel"])
def test_vmap_folds_tasks_into_the_kernel_call(mapped):
    kx, kk = jax.random.split(jax.random.key(2))
    x = jax.random.normal(kx, (3, 4, 7, 7, 3))
    k = jax.random.normal(kk, (3, 3, 3, 3, 8))
    in_axes = {"both": (0, 0), "input": (0, None), "kernel": (None, 0)}[mapped]
    xs, ks = (x if in_axes[0] == 0 else x[0]), (k if in_axes[1] == 0 else k[0])
    got = jax.jit(jax.vmap(lambda a, b: ffi_conv(a, b), in_axes))(xs, ks)
    want = jax.vmap(_xla, in_axes)(xs, ks)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # Nested vmap (tasks of tasks) folds twice.
    nested = jax.vmap(jax.vmap(lambda a, b: ffi_conv(a, b)))(x[None], k[None])
    np.testing.assert_allclose(nested[0], jax.vmap(_xla)(x, k), rtol=1e-5, atol=1e-5)


def test_conv4_maml_meta_gradient_equals_xla_under_vmap_and_task_loop(x64):
    """Second-order MAML on Conv4 (float64: batch norm over few images amplifies float32
    rounding in second order): the C++ kernel, vmapped or task by task, gives XLA's meta-
    gradient. The conv biases' exact gradient is 0 (batch norm removes them): atol covers
    their rounding noise."""
    model = {c: from_nnx(lambda r, c=c: Conv4(1, 3, image_size=32, filters=8, conv=c, rngs=r))
             for c in ("ffi", "xla")}  # fmt: skip
    params = jax.tree.map(lambda a: a.astype(jnp.float64), model["xla"].init(jax.random.key(0)))
    x = jax.random.uniform(jax.random.key(1), (4, 9, 32, 32, 1), jnp.float64)
    y = jnp.tile(jnp.arange(3), (4, 3))
    tasks = Task(Split(x, y), Split(x[:, ::-1], y), {})
    keys = jax.random.split(jax.random.key(2), 4)
    grads = {}
    for conv, chunk in (("xla", None), ("ffi", None), ("ffi", 1)):
        maml = MAML(model[conv], losses.cross_entropy, InnerLoop(optax.sgd(0.4)), task_chunk=chunk)
        grads[conv, chunk] = jax.jit(maml.batch_meta_grad)(params, tasks, keys)[0]
    assert float(optax.tree.norm(grads["xla", None])) > 1.0
    chex.assert_trees_all_close(grads["ffi", None], grads["xla", None], rtol=1e-8, atol=1e-12)
    chex.assert_trees_all_close(grads["ffi", 1], grads["xla", None], rtol=1e-8, atol=1e-12)


def test_kernel_gradient_is_deterministic():
    """The weight gradient sums blocks of images on several threads; the sum's order is fixed,
    so repeated calls agree bit for bit."""
    kx, kd = jax.random.split(jax.random.key(3))
    x = jax.random.normal(kx, (2, 300, 14, 14, 16))
    dy = jax.random.normal(kd, (2, 300, 14, 14, 16))
    grad = jax.jit(lambda x, dy: conv_kernel_grad_p.bind(x, dy, padding=((1, 1), (1, 1)),
                                                         kernel=(3, 3)))  # fmt: skip
    first = np.asarray(grad(x, dy))
    for _ in range(3):
        np.testing.assert_array_equal(np.asarray(grad(x, dy)), first)
    want = jax.vmap(lambda x, dy: jax.grad(lambda k: jnp.vdot(_xla(x, k), dy))(
        jnp.zeros((3, 3, 16, 16))))(x, dy)  # fmt: skip
    np.testing.assert_allclose(first, want, rtol=1e-3, atol=1e-2)


def test_other_dtypes_take_the_xla_matmul_path():
    x = jnp.ones((2, 5, 5, 3), jnp.bfloat16)
    k = jnp.ones((3, 3, 3, 4), jnp.bfloat16)
    y = jax.jit(ffi_conv)(x, k)
    assert y.dtype == jnp.bfloat16
    assert float(y[0, 2, 2, 0]) == 27.0


def test_unavailable_kernel_is_a_clear_error_and_auto_falls_back(monkeypatch):
    reason = "no C++ compiler found (looked for $CXX, g++ and c++)"
    monkeypatch.setattr(build, "unavailable_reason", lambda: reason)
    with pytest.raises(kernels.KernelUnavailableError, match=r"no C\+\+ compiler.*conv='im2col'"):
        ffi_conv(jnp.ones((1, 4, 4, 1)), jnp.ones((3, 3, 1, 2)))
    monkeypatch.setattr(kernels, "available", lambda: False)
    assert resolve_conv("auto", "cpu") == "im2col"
    assert resolve_conv("auto", "gpu") == "xla"
    monkeypatch.setattr(kernels, "available", lambda: True)
    assert resolve_conv("auto", "cpu") == "ffi"
    with pytest.raises(ValueError, match="conv must be one of"):
        resolve_conv("winograd")
