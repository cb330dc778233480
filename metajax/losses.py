"""Losses and metrics on ``(predictions, targets)``, averaged over the examples."""

from __future__ import annotations

import chex
import jax.numpy as jnp
import optax

from metajax.core.learner import Metric


def mse(predictions: chex.Array, targets: chex.Array) -> chex.Array:
    """Mean squared error over all elements.

    Example:
      >>> import jax.numpy as jnp
      >>> float(mse(jnp.array([1.0, 3.0]), jnp.array([0.0, 1.0])))
      2.5
    """
    chex.assert_equal_shape([predictions, targets])
    return jnp.mean((predictions - targets) ** 2)


def cross_entropy(logits: chex.Array, labels: chex.Array) -> chex.Array:
    """Softmax cross-entropy of ``logits [n, classes]`` against integer ``labels [n]``."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def accuracy(logits: chex.Array, labels: chex.Array) -> chex.Array:
    """The fraction of ``argmax(logits)`` equal to ``labels``."""
    return jnp.mean(jnp.argmax(logits, -1) == labels)


MSE = Metric("mse", mse)
"""The regression test metric, mean squared error (``mse_after_k`` in evaluations)."""

ACCURACY = Metric("accuracy", accuracy)
"""The classification test metric, the fraction of correct labels."""
