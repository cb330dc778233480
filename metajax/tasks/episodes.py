"""N-way K-shot episodes over a class-indexed image data set, sampled on the device.

An episode draws ``n_way`` classes without replacement (optionally all from one group, as in
within-alphabet Omniglot episodes), ``k_shot + k_query`` examples without replacement from each
class, and labels the classes with a random permutation of ``0 .. n_way - 1``. With
``rotations=True`` each class rotated by 0, 90, 180 and 270 degrees is a class of its own, the
standard Omniglot augmentation (Santoro et al. 2016; Vinyals et al. 2016). Sampling is a pure
function of a key, so ``vmap`` makes a meta-batch inside the compiled step.
"""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np

from metajax.core.types import Split, Task
from metajax.datasets.images import ClassImages, to_float
from metajax.errors import InputError


def _top_k_without_replacement(key: chex.PRNGKey, valid: chex.Array, k: int) -> chex.Array:
    """``k`` distinct indices drawn uniformly among those where ``valid`` is true."""
    scores = jnp.where(valid, jax.random.uniform(key, valid.shape), -1.0)
    return jax.lax.top_k(scores, k)[1]


@dataclasses.dataclass(frozen=True, eq=False)
class Episodes:
    """The N-way K-shot Q-query task distribution over a `ClassImages` data set.

    Attributes:
      data: the data set (on the device).
      n_way: classes per episode.
      k_shot: support examples per class.
      k_query: query examples per class.
      within_group: draw all of an episode's classes from one group (e.g. one alphabet).
      rotations: treat the 4 rotations of every class as distinct classes.

    Raises:
      ValueError: at construction, if the data set cannot supply such an episode.

    Example:
      >>> import numpy as np, jax
      >>> data = ClassImages.from_lists([np.zeros((4, 8, 8, 1), np.uint8)] * 6,
      ...                               [f"c{i}" for i in range(6)], ["g"] * 6)
      >>> task = Episodes(data, n_way=5, k_shot=1, k_query=2).sample(jax.random.key(0))
      >>> task.support.x.shape, task.query.y.shape
      ((5, 8, 8, 1), (10,))
    """

    data: ClassImages
    n_way: int
    k_shot: int
    k_query: int
    within_group: bool = False
    rotations: bool = False

    def __post_init__(self):
        if min(self.n_way, self.k_shot, self.k_query) < 1:
            raise InputError(
                f"Episodes need n_way, k_shot and k_query >= 1; got {self.n_way}, "
                f"{self.k_shot}, {self.k_query}."
            )
        per_class = self.k_shot + self.k_query
        if per_class > self.data.min_count:
            counts = np.asarray(self.data.counts)
            short = int(np.argmin(counts))
            raise InputError(
                f"A {self.k_shot}-shot {self.k_query}-query episode needs {per_class} examples "
                f"per class, but class {self.data.names[short]!r} has only {counts[short]}. "
                "Lower k_shot or k_query."
            )
        available = self.classes_per_group.max() if self.within_group else self.num_classes
        if self.n_way > available:
            where = "in its largest group" if self.within_group else "in all"
            raise InputError(
                f"A {self.n_way}-way episode needs {self.n_way} distinct classes, but the data "
                f"set has {available} {where}{' (rotations included)' if self.rotations else ''}. "
                "Lower n_way, or turn on rotations."
            )
        if self.rotations and self.data.image_shape[0] != self.data.image_shape[1]:
            raise InputError(f"rotations need square images, got {self.data.image_shape}.")

    @property
    def num_rotations(self) -> int:
        return 4 if self.rotations else 1

    @property
    def num_classes(self) -> int:
        """Classes, each rotation counted as its own."""
        return self.data.num_classes * self.num_rotations

    @property
    def classes_per_group(self) -> np.ndarray:
        groups = np.asarray(self.data.groups)
        return np.bincount(groups, minlength=len(self.data.group_names)) * self.num_rotations

    def sample(self, key: chex.PRNGKey) -> Task:
        k_group, k_classes, k_examples, k_labels = jax.random.split(key, 4)
        r = self.num_rotations
        class_group = jnp.repeat(self.data.groups, r)  # virtual class v = base * r + rotation
        valid = jnp.ones(self.num_classes, bool)
        if self.within_group:
            eligible = jnp.asarray(self.classes_per_group >= self.n_way)
            group = jax.random.choice(k_group, eligible.size, p=eligible / eligible.sum())
            valid = class_group == group
        chosen = _top_k_without_replacement(k_classes, valid, self.n_way)
        base, rotation = chosen // r, chosen % r

        per_class = self.k_shot + self.k_query
        max_examples = self.data.images.shape[1]

        def examples(k, c):
            return _top_k_without_replacement(
                k, jnp.arange(max_examples) < self.data.counts[c], per_class
            )

        picks = jax.vmap(examples)(jax.random.split(k_examples, self.n_way), base)
        images = self.data.images[base[:, None], picks]  # [n_way, per_class, H, W, C]
        if self.rotations:
            turned = jnp.stack([jnp.rot90(images, k, axes=(2, 3)) for k in range(4)])
            images = jnp.take_along_axis(turned, rotation[None, :, None, None, None, None], 0)[0]
        labels = jax.random.permutation(k_labels, self.n_way)
        x = to_float(images)
        y = jnp.broadcast_to(labels[:, None], (self.n_way, per_class))
        shape = x.shape[2:]
        support = Split(x[:, : self.k_shot].reshape(-1, *shape), y[:, : self.k_shot].reshape(-1))
        query = Split(x[:, self.k_shot :].reshape(-1, *shape), y[:, self.k_shot :].reshape(-1))
        return Task(
            support=support,
            query=query,
            info={"classes": base, "rotations": rotation, "labels": labels},
        )
