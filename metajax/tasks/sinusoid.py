"""Sinusoid regression tasks (Finn, Abbeel and Levine, ICML 2017, section 5.1).

Each task is ``y = A sin(x - phase)`` with ``A ~ U[0.1, 5]``, ``phase ~ U[0, pi]`` and inputs
``x ~ U[-5, 5]``; the learner sees ``k_shot`` points and is scored on ``k_query`` more.
"""

from __future__ import annotations

import dataclasses
import math

import chex
import jax
import jax.numpy as jnp

from metajax.core.types import Split, Task


@dataclasses.dataclass(frozen=True)
class Sinusoid:
    """The sinusoid task distribution; ``sample(key)`` is pure and jittable.

    Attributes:
      k_shot: support points per task (K).
      k_query: query points per task.
      amplitude: the range of ``A``.
      phase: the range of the phase.
      x_range: the range of the inputs.

    Example:
      >>> import jax
      >>> task = Sinusoid(k_shot=10, k_query=10).sample(jax.random.key(0))
      >>> task.support.x.shape, task.query.y.shape
      ((10, 1), (10, 1))
    """

    k_shot: int = 10
    k_query: int = 10
    amplitude: tuple[float, float] = (0.1, 5.0)
    phase: tuple[float, float] = (0.0, math.pi)
    x_range: tuple[float, float] = (-5.0, 5.0)

    def __post_init__(self):
        if self.k_shot < 1 or self.k_query < 1:
            raise ValueError(
                f"Sinusoid needs k_shot >= 1 and k_query >= 1, got k_shot={self.k_shot}, "
                f"k_query={self.k_query}."
            )

    def sample(self, key: chex.PRNGKey) -> Task:
        k_amp, k_phase, k_x = jax.random.split(key, 3)
        amplitude = jax.random.uniform(
            k_amp, (), minval=self.amplitude[0], maxval=self.amplitude[1]
        )
        phase = jax.random.uniform(k_phase, (), minval=self.phase[0], maxval=self.phase[1])
        n = self.k_shot + self.k_query
        x = jax.random.uniform(k_x, (n, 1), minval=self.x_range[0], maxval=self.x_range[1])
        y = self.function(amplitude, phase, x)
        return Task(
            support=Split(x[: self.k_shot], y[: self.k_shot]),
            query=Split(x[self.k_shot :], y[self.k_shot :]),
            info={"amplitude": amplitude, "phase": phase},
        )

    @staticmethod
    def function(amplitude: chex.Array, phase: chex.Array, x: chex.Array) -> chex.Array:
        """The task's true curve ``A sin(x - phase)``."""
        return amplitude * jnp.sin(x - phase)
