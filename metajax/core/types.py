"""Core pytrees: a `Split` of examples, a `Task` of support and query splits.

A task distribution is anything with a pure, jittable ``sample(key) -> Task``. Because
sampling is a pure function of a key, a meta-batch is ``jax.vmap(dist.sample)(keys)``: it is
built inside the compiled meta-step, on the device, with no host round trip.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import chex
import jax
import jax.numpy as jnp
from flax import struct

PyTree = Any
Params = Any


@struct.dataclass
class Split:
    """A set of examples: inputs ``x`` of shape ``[n, ...]`` and targets ``y`` of shape ``[n, ...]``.

    Attributes:
      x: the inputs.
      y: the targets.
      mask: ``[n]`` bool, which rows are examples; ``None``: all of them. Sets whose size
        varies from task to task (a Gaussian-process function's context, between 3 and 46
        points) keep a static shape this way, so a meta-batch stays one array and one program.
    """

    x: chex.Array
    y: chex.Array
    mask: chex.Array | None = None

    def weights(self) -> chex.Array:
        """``[n]`` float weights: 1 for an example, 0 for padding."""
        if self.mask is None:
            return jnp.ones(self.x.shape[0], jnp.float32)
        return self.mask.astype(jnp.float32)

    def __len__(self) -> int:
        return self.x.shape[0]


def join(a: Split, b: Split) -> Split:
    """The union of two sets, masks included.

    Example:
      >>> import jax.numpy as jnp
      >>> s = join(Split(jnp.zeros((2, 1)), jnp.zeros((2, 1))),
      ...          Split(jnp.ones((3, 1)), jnp.ones((3, 1)), jnp.array([True, False, True])))
      >>> s.mask.tolist()
      [True, True, True, False, True]
    """
    return Split(
        jnp.concatenate([a.x, b.x]),
        jnp.concatenate([a.y, b.y]),
        jnp.concatenate([a.weights(), b.weights()]) > 0,
    )


@struct.dataclass
class Task:
    """One task: a support split to adapt on, a query split to evaluate on.

    Attributes:
      support: the examples to adapt on (a Neural Process's context).
      query: the examples to evaluate on (its targets).
      info: per-task metadata (for the sinusoid: amplitude and phase), as arrays so that a
        batch of tasks stays a pytree with a leading task axis.
      shared_points: static; ``True`` when ``support`` and ``query`` hold the *same* points
        (the same ``x`` and ``y``) under disjoint masks, as a Gaussian-process function's
        context and targets do. Learners that score all of a task's points then read the
        points once (`Task.points`) instead of a doubled, half-masked set.
    """

    support: Split
    query: Split
    info: Mapping[str, chex.Array] = struct.field(default_factory=dict)
    shared_points: bool = struct.field(pytree_node=False, default=False)

    def points(self) -> Split:
        """All of the task's examples, support and query, as one masked `Split`.

        Example:
          >>> import jax.numpy as jnp
          >>> x, inside = jnp.zeros((4, 1)), jnp.array([True, True, False, False])
          >>> Task(Split(x, x, inside), Split(x, x, ~inside), shared_points=True).points().x.shape
          (4, 1)
          >>> Task(Split(x, x, inside), Split(x, x, ~inside)).points().x.shape
          (8, 1)
        """
        s, q = self.support, self.query
        if self.shared_points:
            if s.x.shape != q.x.shape or s.y.shape != q.y.shape:
                raise ValueError(
                    "Task.shared_points says support and query hold the same points, but their "
                    f"shapes differ: x {s.x.shape} and {q.x.shape}, y {s.y.shape} and "
                    f"{q.y.shape}. Build the task with shared_points=False."
                )
            return Split(s.x, s.y, (s.weights() + q.weights()) > 0)
        return join(s, q)


@runtime_checkable
class TaskDistribution(Protocol):
    """A distribution over tasks: ``sample`` must be pure and jittable."""

    def sample(self, key: chex.PRNGKey) -> Task:
        """Draws one task from ``key``."""
        ...


def sample_tasks(dist: TaskDistribution, key: chex.PRNGKey, num_tasks: int) -> Task:
    """Draws a meta-batch of tasks with ``vmap``; every leaf gains a leading task axis.

    Args:
      dist: the task distribution.
      key: a PRNG key.
      num_tasks: the meta-batch size (static).

    Returns:
      A `Task` whose leaves have shape ``[num_tasks, ...]``.

    Example:
      >>> import jax
      >>> from metajax.tasks import Sinusoid
      >>> tasks = sample_tasks(Sinusoid(k_shot=5), jax.random.key(0), 8)
      >>> tasks.support.x.shape
      (8, 5, 1)
    """
    return jax.vmap(dist.sample)(jax.random.split(key, num_tasks))
