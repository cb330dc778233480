"""A CPU convolution that JAX can differentiate to any order, in both modes, and vmap.

Two primitives call the C++ kernels of ``metajax/kernels/conv.cc`` through XLA's FFI, both on a leading
group axis ``G`` (tasks with their own kernels; ``G = 1`` for one kernel):

    F(x, w)[g, n, i, j, o]  = sum_{a, b, c} x[g, n, i + a - p_t, j + b - p_l, c] w[g, a, b, c, o]
    K(x, dy)[g, a, b, c, o] = sum_{n, i, j} x[g, n, i + a - p_t, j + b - p_l, c] dy[g, n, i, j, o]

Both are bilinear, and their adjoints close over the pair, which is what makes every order of
derivative (second-order MAML's gradient of a gradient, iMAML's ``jvp`` of ``grad``) run on
the same kernels:

    <F(x, w), dy> = <w, K(x, dy)> = <x, D(dy, w)>,   D(dy, w) = F(dy, flip(w)^T)

where ``D``, the input gradient, is the forward convolution of ``dy`` with the kernel flipped
in space and transposed in channels, and the complementary padding ``kh - 1 - p``. So:
``F``'s transposes are ``D`` (in x) and ``K`` (in w); ``K``'s are ``D(dy, ct)`` (in x) and
``F(x, ct)`` (in dy). JVPs follow from bilinearity (``jax.interpreters.ad.defbilinear``).

Under ``vmap`` the mapped axis folds into ``G`` (per-task kernels: one call runs every task's
GEMMs in turn, like PyTorch's task loop) or, for a kernel shared by the batch, into the
image axis.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from metajax.kernels import build
from metajax.models.conv_ops import Padding, _check_supported, _pairs, im2col_conv

Pads = tuple[tuple[int, int], tuple[int, int]]

conv_forward_p = Primitive("metajax_conv_forward")
conv_kernel_grad_p = Primitive("metajax_conv_kernel_grad")

SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _out_size(size: int, kernel: int, pads: tuple[int, int]) -> int:
    return size + pads[0] + pads[1] - kernel + 1


def _forward_abstract(x, w, *, padding: Pads):
    g, n, h, wd, c = x.shape
    if w.shape[0] != g or w.shape[3] != c or x.dtype != w.dtype:
        raise ValueError(f"metajax conv: input {x.shape} {x.dtype} and kernel {w.shape} "
                         f"{w.dtype} do not match.")  # fmt: skip
    oh = _out_size(h, w.shape[1], padding[0])
    ow = _out_size(wd, w.shape[2], padding[1])
    return jax.core.ShapedArray((g, n, oh, ow, w.shape[4]), x.dtype)


def _kernel_grad_abstract(x, dy, *, padding: Pads, kernel: tuple[int, int]):
    return jax.core.ShapedArray((x.shape[0], *kernel, x.shape[4], dy.shape[4]), x.dtype)


@functools.cache
def _compiled(prim: Primitive, params: tuple):
    return jax.jit(lambda *a: prim.bind(*a, **dict(params)))


def _impl(prim: Primitive):
    # Outside jit the primitive runs as a one-op program, compiled once per shape and params.
    def impl(*args, **params):
        return _compiled(prim, tuple(sorted(params.items())))(*args)

    return impl


def _lowering(target: str):
    def lower(ctx, *args, padding: Pads, **_):
        build.load()  # registers the FFI targets before XLA sees the custom call
        rule = jax.ffi.ffi_lowering(target)
        return rule(ctx, *args, pad_top=np.int64(padding[0][0]), pad_left=np.int64(padding[1][0]))

    return lower


def input_grad(dy: chex.Array, w: chex.Array, padding: Pads, in_hw: tuple[int, int]):
    """``D(dy, w)``: the input gradient of the grouped convolution, as a forward convolution of
    ``dy`` with the flipped, channel-transposed kernel and the complementary padding."""
    kh, kw = w.shape[1], w.shape[2]
    flipped = jnp.flip(w, (1, 2)).swapaxes(3, 4)
    pads = tuple(
        (k - 1 - p[0], size - out + p[0])
        for k, p, size, out in zip((kh, kw), padding, in_hw, dy.shape[2:4], strict=True)
    )
    return conv_forward_p.bind(dy, flipped, padding=pads)


def _forward_transpose_x(ct, x, w, *, padding):
    return input_grad(ct, w, padding, x.aval.shape[2:4])


def _forward_transpose_w(ct, x, w, *, padding):
    return conv_kernel_grad_p.bind(x, ct, padding=padding, kernel=tuple(w.aval.shape[1:3]))


def _kernel_grad_transpose_x(ct, x, dy, *, padding, kernel):
    return input_grad(dy, ct, padding, x.aval.shape[2:4])


def _kernel_grad_transpose_dy(ct, x, dy, *, padding, kernel):
    return conv_forward_p.bind(x, ct, padding=padding)


def _to_front(a, dim, size):
    if dim is None:
        return jnp.broadcast_to(a, (size, *a.shape))
    return jnp.moveaxis(a, dim, 0)


def _batch(prim: Primitive):
    def rule(args, dims, **params):
        size = next(a.shape[d] for a, d in zip(args, dims, strict=True) if d is not None)
        x, other = args
        if prim is conv_forward_p and dims[1] is None and other.shape[0] == 1:
            # One kernel for the whole batch: the mapped axis becomes more images.
            x = jnp.moveaxis(x, dims[0], 1)  # [1, size, N, ...]
            y = prim.bind(x.reshape(1, -1, *x.shape[3:]), other, **params)
            return y.reshape(size, 1, -1, *y.shape[2:]), 0
        front = [_to_front(a, d, size) for a, d in zip(args, dims, strict=True)]
        out = prim.bind(*(a.reshape(-1, *a.shape[2:]) for a in front), **params)
        return out.reshape(size, -1, *out.shape[1:]), 0

    return rule


for _prim, _abstract, _target, _transposes in (
    (conv_forward_p, _forward_abstract, "metajax_conv_forward",
     (_forward_transpose_x, _forward_transpose_w)),
    (conv_kernel_grad_p, _kernel_grad_abstract, "metajax_conv_kernel_grad",
     (_kernel_grad_transpose_x, _kernel_grad_transpose_dy)),
):  # fmt: skip
    _prim.def_impl(_impl(_prim))
    _prim.def_abstract_eval(_abstract)
    mlir.register_lowering(_prim, _lowering(_target), platform="cpu")
    ad.defbilinear(_prim, *_transposes)
    batching.primitive_batchers[_prim] = _batch(_prim)


def ffi_conv(
    x: chex.Array,
    kernel: chex.Array,
    window_strides: Sequence[int] = (1, 1),
    padding: Padding = "SAME",
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    precision: Any = None,
    **unsupported: Any,
) -> chex.Array:
    """A 2-D NHWC convolution on metajax's C++ kernel (blocked im2col + OpenBLAS GEMM).

    It has the signature of ``jax.lax.conv_general_dilated``, so it can be passed as
    ``flax.nnx.Conv(..., conv_general_dilated=ffi_conv)``. It is differentiable to any order
    in forward and reverse mode, and under ``vmap`` with a kernel per task it runs the tasks'
    GEMMs in turn instead of XLA:CPU's slow grouped convolution. CPU only; float32 and
    float64 (other dtypes, such as bfloat16 under mixed precision, take `im2col_conv`).
    Unit strides, no dilation, one feature group and NHWC/HWIO layouts, as `im2col_conv`.

    Args:
      x: ``[batch, height, width, in_channels]``.
      kernel: ``[kh, kw, in_channels, out_channels]``.
      window_strides: must be ones.
      padding: ``"SAME"``, ``"VALID"`` or ``((top, bottom), (left, right))``.
      lhs_dilation, rhs_dilation: must be absent or ones.
      dimension_numbers: absent or NHWC/HWIO/NHWC.
      feature_group_count: must be 1.
      precision: ignored (the kernel computes in the operands' dtype).

    Returns:
      ``[batch, out_height, out_width, out_channels]``, equal to ``conv_general_dilated``'s
      result up to float rounding.

    Raises:
      KernelUnavailableError: the kernel could not be built here (no C++ compiler, or no
        ``scipy-openblas32``); the message says which. ``conv="auto"`` avoids it.

    Example:
      >>> import jax.numpy as jnp
      >>> x, k = jnp.ones((2, 5, 5, 3)), jnp.ones((3, 3, 3, 4))
      >>> float(ffi_conv(x, k, (1, 1), "SAME")[0, 2, 2, 0])  # 3*3*3 ones
      27.0
    """
    _check_supported("ffi_conv", x, kernel, window_strides, lhs_dilation, rhs_dilation,
                     dimension_numbers, feature_group_count, unsupported)  # fmt: skip
    dtype = jnp.result_type(x, kernel)
    if dtype not in SUPPORTED_DTYPES:
        return im2col_conv(x, kernel, window_strides, padding, precision=precision)
    if jax.default_backend() != "cpu":
        raise ValueError(
            f"ffi_conv is metajax's CPU kernel; the default backend is {jax.default_backend()}. "
            "Use conv='auto' (XLA's convolution there) or conv='xla'."
        )
    reason = build.unavailable_reason()
    if reason is not None:
        raise build.KernelUnavailableError(
            f"ffi_conv: metajax's CPU convolution kernel is unavailable: {reason} "
            "Use conv='im2col' or conv='auto' instead."
        )
    pads = tuple(tuple(int(v) for v in p) for p in _pairs(padding, kernel.shape[:2]))
    y = conv_forward_p.bind(x.astype(dtype)[None], kernel.astype(dtype)[None], padding=pads)
    return y[0]
