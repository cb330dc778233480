"""Image completion: an image is a function from pixel coordinates to intensities, and a task
is to predict every pixel from a few (Garnelo et al. 2018a, section 4.2; Kim et al. 2019,
section 4.2). On Omniglot characters this makes a Neural Process a few-shot generative model:
given a handful of a new character's pixels, it completes the character.

Each task takes one image of the data set (a random class, a random example), lists its
pixels in a random order as ``x = (row, col)`` scaled to [-1, 1] and ``y`` the intensity in
[0, 1], and uses the first ``n ~ U{min_context, ..., max_context - 1}`` as the context and
the rest as the targets. Shapes stay static: the support holds the first ``max_context``
pixels (masked past ``n``), the query every pixel from ``min_context`` on (masked before
``n``), so the two are disjoint and together cover the image.
"""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp

from metajax.core.types import Split, Task
from metajax.datasets.images import ClassImages, to_float
from metajax.errors import InputError


def pixel_coordinates(height: int, width: int) -> chex.Array:
    """``[height * width, 2]`` (row, col) of each pixel in row-major order, scaled to [-1, 1].

    Example:
      >>> pixel_coordinates(2, 3).tolist()
      [[-1.0, -1.0], [-1.0, 0.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 0.0], [1.0, 1.0]]
    """
    rows = jnp.linspace(-1.0, 1.0, height)
    cols = jnp.linspace(-1.0, 1.0, width)
    return jnp.stack(jnp.meshgrid(rows, cols, indexing="ij"), -1).reshape(-1, 2)


@dataclasses.dataclass(frozen=True, eq=False)
class ImageCompletion:
    """Pixels of one image per task, a random few as the context.

    Attributes:
      data: the images (`metajax.datasets.images.ClassImages`).
      min_context, max_context: the context size is drawn from ``[min_context, max_context)``.

    Example:
      >>> import numpy as np, jax
      >>> data = ClassImages.from_lists([np.zeros((2, 4, 4, 1), np.uint8)] * 3,
      ...                               ["a", "b", "c"], ["g"] * 3)
      >>> task = ImageCompletion(data, min_context=2, max_context=6).sample(jax.random.key(0))
      >>> task.support.x.shape, task.query.x.shape
      ((6, 2), (14, 2))
    """

    data: ClassImages
    min_context: int = 3
    max_context: int = 200

    def __post_init__(self):
        pixels = self.num_pixels
        if not 1 <= self.min_context < self.max_context <= pixels:
            raise InputError(
                f"ImageCompletion needs 1 <= min_context < max_context <= {pixels} pixels, got "
                f"{self.min_context} and {self.max_context}."
            )

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.data.image_shape)

    @property
    def num_pixels(self) -> int:
        h, w, _ = self.data.image_shape
        return h * w

    def sample(self, key: chex.PRNGKey) -> Task:
        k_class, k_example, k_order, k_size = jax.random.split(key, 4)
        c = jax.random.randint(k_class, (), 0, self.data.num_classes)
        e = jax.random.randint(k_example, (), 0, self.data.counts[c])
        h, w, channels = self.image_shape
        values = to_float(self.data.images[c, e]).reshape(-1, channels)
        order = jax.random.permutation(k_order, self.num_pixels)
        x, y = pixel_coordinates(h, w)[order], values[order]
        n = jax.random.randint(k_size, (), self.min_context, self.max_context)
        index = jnp.arange(self.num_pixels)
        lo, hi = self.min_context, self.max_context
        return Task(
            support=Split(x[:hi], y[:hi], index[:hi] < n),
            query=Split(x[lo:], y[lo:], index[lo:] >= n),
            info={"num_context": n, "class": c, "example": e},
        )
