"""Data sets for few-shot learning, stored class-indexed for on-device episode sampling."""

from metajax.datasets.images import ClassImages

__all__ = ["ClassImages"]
