"""Task distributions: pure, jittable ``sample(key) -> Task``."""

from metajax.tasks.completion import ImageCompletion
from metajax.tasks.episodes import Episodes
from metajax.tasks.gp import GaussianProcess
from metajax.tasks.sinusoid import Sinusoid

__all__ = ["Episodes", "GaussianProcess", "ImageCompletion", "Sinusoid"]
