"""Convolution as shifted slices and one matrix product (im2col).

Under ``vmap`` with per-task weights (MAML's adapted parameters), XLA:CPU lowers a convolution
to a grouped convolution that runs an order of magnitude slower than the same work as matrix
products. Forming the patches explicitly turns each convolution into a (batched) GEMM, and its
backward pass into GEMMs plus the adjoints of slicing and padding, all of which XLA:CPU runs
well. The price is memory: the patch tensor is ``kh * kw`` times the input.

Measured on a 2-core CPU, first-order MAML, Conv4 on 5-way 1-shot Omniglot, 8 tasks: 13.9 s
a meta-step with XLA's convolution under ``vmap``, 1.6 s with `im2col_conv` under ``vmap`` and
1.0 s with `im2col_conv` one task at a time (``task_chunk=1``). metajax's C++ kernel
(`metajax.models.ffi_conv`) is faster again and is the CPU default where it builds;
`im2col_conv` is the fallback where it does not (and the path for bfloat16).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import chex
import jax.numpy as jnp

Padding = str | Sequence[tuple[int, int]]


def _pairs(padding: Padding, kernel: tuple[int, int]) -> list[tuple[int, int]]:
    if isinstance(padding, str):
        if padding.upper() == "VALID":
            return [(0, 0), (0, 0)]
        if padding.upper() == "SAME":
            return [((k - 1) // 2, k - 1 - (k - 1) // 2) for k in kernel]
        raise ValueError(f"im2col_conv: padding must be 'SAME', 'VALID' or pairs, got {padding!r}.")
    return [tuple(p) for p in padding]


def _is_nhwc(dimension_numbers: Any) -> bool:
    if isinstance(dimension_numbers, tuple) and all(isinstance(d, str) for d in dimension_numbers):
        return tuple(dimension_numbers) == ("NHWC", "HWIO", "NHWC")
    specs = tuple(tuple(s) for s in dimension_numbers)
    # ConvDimensionNumbers of NHWC/HWIO/NHWC: (batch, feature, spatial...) axis indices.
    return specs == ((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))


def _check_supported(
    name: str,
    x: chex.Array,
    kernel: chex.Array,
    window_strides: Sequence[int],
    lhs_dilation: Sequence[int] | None,
    rhs_dilation: Sequence[int] | None,
    dimension_numbers: Any,
    feature_group_count: int,
    unsupported: dict[str, Any],
) -> None:
    problems = []
    if tuple(window_strides) != (1, 1):
        problems.append(f"window_strides={tuple(window_strides)}")
    for option, dilation in (("lhs_dilation", lhs_dilation), ("rhs_dilation", rhs_dilation)):
        if dilation is not None and tuple(dilation) != (1, 1):
            problems.append(f"{option}={tuple(dilation)}")
    if feature_group_count != 1:
        problems.append(f"feature_group_count={feature_group_count}")
    if dimension_numbers is not None and not _is_nhwc(dimension_numbers):
        problems.append(f"dimension_numbers={dimension_numbers}")
    unsupported = {k: v for k, v in unsupported.items() if v is not None}
    if unsupported:
        problems.append(f"options {sorted(unsupported)}")
    if x.ndim != 4 or kernel.ndim != 4 or x.shape[-1] != kernel.shape[2]:
        problems.append(f"input shape {x.shape} with kernel shape {kernel.shape}")
    if problems:
        raise ValueError(
            f"{name} supports unit-stride, undilated, ungrouped NHWC convolutions only; got "
            + ", ".join(problems)
            + ". Use jax.lax.conv_general_dilated (Conv4(conv='xla')) for these."
        )


def im2col_conv(
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
    """A 2-D NHWC convolution computed as im2col patches times the kernel matrix.

    It has the signature of ``jax.lax.conv_general_dilated``, so it can be passed as
    ``flax.nnx.Conv(..., conv_general_dilated=im2col_conv)``. Only unit strides, no dilation,
    one feature group and NHWC/HWIO layouts are supported; anything else raises.

    Args:
      x: ``[batch, height, width, in_channels]``.
      kernel: ``[kh, kw, in_channels, out_channels]``.
      window_strides: must be ones.
      padding: ``"SAME"``, ``"VALID"`` or ``((top, bottom), (left, right))``.
      lhs_dilation, rhs_dilation: must be absent or ones.
      dimension_numbers: absent or NHWC/HWIO/NHWC.
      feature_group_count: must be 1.
      precision: passed to the matrix product.

    Returns:
      ``[batch, out_height, out_width, out_channels]``, equal to ``conv_general_dilated``'s
      result up to float rounding.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> x, k = jnp.ones((2, 5, 5, 3)), jnp.ones((3, 3, 3, 4))
      >>> im2col_conv(x, k, (1, 1), "SAME").shape
      (2, 5, 5, 4)
      >>> float(im2col_conv(x, k, (1, 1), "SAME")[0, 2, 2, 0])  # 3*3*3 ones
      27.0
    """
    _check_supported(
        "im2col_conv",
        x,
        kernel,
        window_strides,
        lhs_dilation,
        rhs_dilation,
        dimension_numbers,
        feature_group_count,
        unsupported,
    )
    kh, kw, cin, cout = kernel.shape
    (top, bottom), (left, right) = _pairs(padding, (kh, kw))
    x = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    out_h, out_w = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    # Patch channels ordered (i, j, c), the row-major order of the HWIO kernel's first 3 axes.
    patches = jnp.concatenate(
        [x[:, i : i + out_h, j : j + out_w, :] for i in range(kh) for j in range(kw)], axis=-1
    )
    return jnp.dot(patches, kernel.reshape(kh * kw * cin, cout), precision=precision)


def tap_conv(
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
    """A 2-D NHWC convolution as a sum of one matrix product per kernel tap.

    ``out = sum_{i,j} shift_{i,j}(x) @ kernel[i, j]``: no patch tensor is formed, so memory
    traffic is ``kh * kw`` input-sized slices instead of one ``kh * kw`` times larger
    concatenation, which XLA:CPU writes slowly. Its backward pass is matrix products and
    padded adds. Measured on a 2-core CPU (``python -m benchmarks.conv_study``): one layer's
    forward pass is the fastest of the formulations, but in a whole Conv4 meta-step
    XLA:CPU transposes the output gradient for every tap's weight gradient, and the step is
    slower than with `im2col_conv`, which stays the CPU default. Same signature and
    restrictions as `im2col_conv`.

    Args:
      x: ``[batch, height, width, in_channels]``.
      kernel: ``[kh, kw, in_channels, out_channels]``.
      window_strides: must be ones.
      padding: ``"SAME"``, ``"VALID"`` or ``((top, bottom), (left, right))``.
      lhs_dilation, rhs_dilation: must be absent or ones.
      dimension_numbers: absent or NHWC/HWIO/NHWC.
      feature_group_count: must be 1.
      precision: passed to the matrix products.

    Returns:
      ``[batch, out_height, out_width, out_channels]``, equal to ``conv_general_dilated``'s
      result up to float rounding (the taps are summed in a different order).

    Example:
      >>> import jax.numpy as jnp
      >>> x, k = jnp.ones((2, 5, 5, 3)), jnp.ones((3, 3, 3, 4))
      >>> float(tap_conv(x, k, (1, 1), "SAME")[0, 2, 2, 0])  # 3*3*3 ones
      27.0
      >>> float(tap_conv(x, k, (1, 1), "SAME")[0, 0, 0, 0])  # a corner sees 2*2*3 ones
      12.0
    """
    _check_supported("tap_conv", x, kernel, window_strides, lhs_dilation, rhs_dilation,
                     dimension_numbers, feature_group_count, unsupported)  # fmt: skip
    kh, kw, cin, cout = kernel.shape
    (top, bottom), (left, right) = _pairs(padding, (kh, kw))
    x = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    out_h, out_w = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    out = None
    for i in range(kh):
        for j in range(kw):
            tap = jnp.dot(x[:, i : i + out_h, j : j + out_w, :], kernel[i, j], precision=precision)
            out = tap if out is None else out + tap
    return out
