"""metajax's CPU convolution kernel (`metajax.models.ffi_conv`, C++ in
``metajax/kernels/conv.cc``) against XLA's convolution, layer by layer on Conv4's Omniglot
shapes: the forward pass and the kernel gradient, for one task's 80 images (how the few-shot
configs run on CPU: tasks in turn) and for a meta-batch's 2,560. Prints ms and GFLOP/s, the
median of alternating rounds.

    python -m benchmarks.ffi_conv.bench
"""

from __future__ import annotations

import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from metajax.models.conv_ffi import conv_forward_p, conv_kernel_grad_p

DIMS = ("NHWC", "HWIO", "NHWC")
PADS = ((1, 1), (1, 1))


def _xla_forward(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=DIMS)


def _xla_kernel_grad(x, dy):
    w = jnp.zeros((3, 3, x.shape[-1], dy.shape[-1]), x.dtype)
    return jax.vjp(lambda w: _xla_forward(x, w), w)[1](dy)[0]


def _seconds(fn, *args) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def main(rounds: int = 7) -> None:
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    print(
        "images layer        ffi fwd           XLA fwd           ffi kernel grad   XLA kernel grad"
    )
    ffi_fwd = jax.jit(lambda x, w: conv_forward_p.bind(x[None], w[None], padding=PADS)[0])
    ffi_kgrad = jax.jit(lambda x, dy: conv_kernel_grad_p.bind(
        x[None], dy[None], padding=PADS, kernel=(3, 3))[0])  # fmt: skip
    xla_fwd, xla_kgrad = jax.jit(_xla_forward), jax.jit(_xla_kernel_grad)
    for images in (80, 2560):
        for size, channels in [(28, 1), (14, 64), (7, 64), (3, 64)]:
            kx, kw = jax.random.split(jax.random.key(size))
            x = jax.random.normal(kx, (images, size, size, channels))
            w = 0.1 * jax.random.normal(kw, (3, 3, channels, 64))
            dy = xla_fwd(x, w)
            np.testing.assert_allclose(ffi_fwd(x, w), dy, rtol=1e-3, atol=1e-3)
            np.testing.assert_allclose(ffi_kgrad(x, dy), xla_kgrad(x, dy), rtol=1e-3, atol=1e-1)
            flops = 2.0 * images * size * size * 9 * channels * 64
            cells = [(ffi_fwd, (x, w)), (xla_fwd, (x, w)), (ffi_kgrad, (x, dy)),
                     (xla_kgrad, (x, dy))]  # fmt: skip
            for fn, args in cells:
                _seconds(fn, *args)  # compile
            times = [[] for _ in cells]
            for _ in range(rounds):
                for i, (fn, args) in enumerate(cells):
                    times[i].append(_seconds(fn, *args))
            row = "".join(f"{1e3 * (t := statistics.median(ts)):7.2f} ms {flops / t / 1e9:5.1f}   "
                          for ts in times)  # fmt: skip
            print(f"{images:6d} {size:2d}x{size:<2d}x{channels:<2d}  {row}")


if __name__ == "__main__":
    main()
