"""Compiling and loading metajax's C++ kernels (XLA FFI handlers) on first use.

The kernels (``conv.cc``) are compiled once per machine with the system C++ compiler against
jaxlib's FFI headers (``jax.ffi.include_dir()``) and the ``scipy-openblas32`` wheel's CBLAS,
then cached under ``$METAJAX_KERNEL_CACHE`` (default ``~/.cache/metajax/kernels``), keyed by a
hash of the source, the jax and OpenBLAS versions and the compiler. A build takes a few seconds;
later processes load the cached library. Where no compiler or no OpenBLAS is found, `available`
says so and the models fall back to their pure-XLA convolutions.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import jax

SOURCE = Path(__file__).with_name("conv.cc")
TARGETS = {
    "metajax_conv_forward": "MetajaxConvForward",
    "metajax_conv_kernel_grad": "MetajaxConvKernelGrad",
}


class KernelUnavailableError(RuntimeError):
    """metajax's C++ kernels could not be built or loaded on this machine."""


def cache_dir() -> Path:
    """Where compiled kernels are kept: ``$METAJAX_KERNEL_CACHE``, else
    ``~/.cache/metajax/kernels``."""
    env = os.environ.get("METAJAX_KERNEL_CACHE", "")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "metajax" / "kernels"


def _compiler() -> str:
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not compiler:
        raise KernelUnavailableError(
            "no C++ compiler found (looked for $CXX, g++ and c++); install one "
            "(e.g. `apt-get install g++`) to build metajax's CPU convolution kernel."
        )
    return compiler


def _openblas():
    try:
        import scipy_openblas32
    except ImportError as err:  # a dependency of metajax, but an install can lack it
        raise KernelUnavailableError(
            "the scipy-openblas32 package is missing; `pip install scipy-openblas32`."
        ) from err
    return scipy_openblas32


def _command(compiler: str, blas, output: Path) -> list[str]:
    return [
        compiler, "-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", str(SOURCE),
        f"-I{jax.ffi.include_dir()}", f"-I{blas.get_include_dir()}",
        f"-L{blas.get_lib_dir()}", f"-l{blas.get_library()}",
        f"-Wl,-rpath,{blas.get_lib_dir()}", "-o", str(output),
    ]  # fmt: skip


def _cpu_features() -> bytes:
    # -march=native code must not be loaded on another CPU sharing the cache (NFS homes).
    try:
        with open("/proc/cpuinfo", "rb") as f:
            return next((line for line in f if line.startswith((b"flags", b"Features"))), b"")
    except OSError:
        return b""


def library_path() -> Path:
    """The cached shared library's path for this source, jax, OpenBLAS, compiler and CPU (it
    may not exist yet)."""
    compiler, blas = _compiler(), _openblas()
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), jax.__version__.encode(), blas.__version__.encode(),
                 blas.get_lib_dir().encode(), version.encode(), platform.machine().encode(),
                 _cpu_features()):  # fmt: skip
        key.update(part)
    return cache_dir() / f"libmetajax_kernels-{key.hexdigest()[:16]}.so"


def build() -> Path:
    """Compiles the kernels into the cache unless they are there already.

    Returns:
      The shared library's path.

    Raises:
      KernelUnavailableError: no compiler, no OpenBLAS, or the compiler failed (its output is
        in the message).
    """
    path = library_path()
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    # Compile to a private name, then rename: processes building at once (pytest-xdist
    # workers) never load a half-written library.
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)
    os.close(fd)
    try:
        done = subprocess.run(_command(_compiler(), _openblas(), Path(tmp)),
                              capture_output=True, text=True)  # fmt: skip
        if done.returncode != 0:
            raise KernelUnavailableError(
                f"compiling {SOURCE.name} failed (exit {done.returncode}):\n{done.stderr[-3000:]}"
            )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


@functools.cache
def load() -> ctypes.CDLL:
    """Builds (once per machine) and loads the kernels, and registers them as XLA:CPU FFI
    targets (once per process).

    Returns:
      The loaded library.

    Raises:
      KernelUnavailableError: as `build`.
    """
    library = ctypes.cdll.LoadLibrary(str(build()))
    for target, symbol in TARGETS.items():
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)),
                                    platform="cpu")  # fmt: skip
    return library


@functools.cache
def unavailable_reason() -> str | None:
    """Why the kernels cannot be used here, or None when they can (building them if needed)."""
    try:
        load()
    except (KernelUnavailableError, OSError) as err:
        return str(err)
    return None


def available() -> bool:
    """Whether metajax's CPU kernels are built and loaded (building them on first call).

    Example:
      >>> from metajax.kernels import build
      >>> isinstance(build.available(), bool)
      True
    """
    return unavailable_reason() is None
