"""metajax's C++ kernels for XLA:CPU (``conv.cc``), built on first use and called through
XLA's FFI; `metajax.models.conv_ffi` defines the differentiable convolution on them."""

from metajax.kernels.build import KernelUnavailableError, available

__all__ = ["KernelUnavailableError", "available"]
