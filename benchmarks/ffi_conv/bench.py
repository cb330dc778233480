"""Prototype measurement for issue 4's FFI lever: a convolution custom call (blocked im2col +
OpenBLAS SGEMM, ``conv.cc``) against XLA's convolution, forward only, on ProtoNet (d)'s layer
shapes (32 tasks x 80 images). Prints GFLOP/s per layer, two alternating rounds each.

    pip install scipy-openblas32      # headers and libscipy_openblas.so (7.9 MB wheel)
    python -m benchmarks.ffi_conv.bench

Needs g++; compiles ``conv.cc`` against jaxlib's FFI headers into a temporary folder.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import tempfile
import time
from pathlib import Path

import jax
import numpy as np


def build(out_dir: Path) -> ctypes.CDLL:
    import scipy_openblas32 as blas

    lib = out_dir / "libmjconv.so"
    cmd = ["g++", "-O3", "-march=native", "-std=c++17", "-shared", "-fPIC",
           str(Path(__file__).with_name("conv.cc")), f"-I{jax.ffi.include_dir()}",
           f"-I{blas.get_include_dir()}", f"-L{blas.get_lib_dir()}", "-lscipy_openblas",
           f"-Wl,-rpath,{blas.get_lib_dir()}", "-o", str(lib)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True)
    return ctypes.cdll.LoadLibrary(str(lib))


def ffi_conv(x: jax.Array, w: jax.Array) -> jax.Array:
    out = jax.ShapeDtypeStruct((*x.shape[:3], w.shape[-1]), x.dtype)
    return jax.ffi.ffi_call("metajax_conv_fwd", out, vmap_method="sequential")(x, w)


def xla_conv(x: jax.Array, w: jax.Array) -> jax.Array:
    dims = ("NHWC", "HWIO", "NHWC")
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dims)


def gflops(fn, x, w, flops: float, reps: int = 5) -> float:
    fn(x, w).block_until_ready()
    start = time.perf_counter()
    for _ in range(reps):
        fn(x, w).block_until_ready()
    return flops * reps / (time.perf_counter() - start) / 1e9


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        lib = build(Path(tmp))
        jax.ffi.register_ffi_target("metajax_conv_fwd", jax.ffi.pycapsule(lib.MjConvFwd),
                                    platform="cpu")  # fmt: skip
        print(f"load average before: {os.getloadavg()[0]:.2f}")
        kx, kw = jax.random.split(jax.random.key(0))
        for size, channels in [(28, 1), (14, 64), (7, 64), (3, 64)]:
            x = jax.random.normal(kx, (2560, size, size, channels))
            w = 0.1 * jax.random.normal(kw, (3, 3, channels, 64))
            ffi, xla = jax.jit(ffi_conv), jax.jit(xla_conv)
            np.testing.assert_allclose(ffi(x, w), xla(x, w), rtol=2e-4, atol=2e-3)
            flops = 2.0 * 2560 * size * size * 9 * channels * 64
            rounds = [(gflops(ffi, x, w, flops), gflops(xla, x, w, flops)) for _ in range(2)]
            print(f"{size:>2}x{size:<2} {channels:>2}->64  FFI " +
                  " ".join(f"{a:6.1f}" for a, _ in rounds) + "  XLA " +
                  " ".join(f"{b:6.1f}" for _, b in rounds) + "  GFLOP/s")  # fmt: skip


if __name__ == "__main__":
    main()
