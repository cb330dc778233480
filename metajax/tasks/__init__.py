"""Task distributions: pure, jittable ``sample(key) -> Task``."""

from metajax.tasks.sinusoid import Sinusoid

__all__ = ["Sinusoid"]
