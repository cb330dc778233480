"""Class-indexed image data sets, held on the device once, in uint8.

Few-shot classification samples episodes from a data set grouped by class. Storing it as one
array ``[classes, examples_per_class, H, W, C]`` lets an episode be gathered with a handful of
index operations inside the compiled meta-step, so the accelerator never waits on a host input
pipeline. Classes with fewer examples are padded; ``counts`` says how many are real.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from metajax.errors import InputError


def check_raw_images(raw: Any, *, allow_bool: bool = False) -> np.ndarray:
    """``raw`` as uint8 pixels, as image data sets store them; anything else is an error.

    Images already scaled to floats in [0, 1] would pass through ``astype(uint8)`` as
    near-black images and give near-constant predictions, so they are refused.

    Raises:
      InputError: a float or out-of-range integer array; the message says how to convert it.
    """
    arr = np.asarray(raw)
    if arr.dtype == np.uint8 or (allow_bool and arr.dtype == bool):
        return arr
    if arr.size and np.issubdtype(arr.dtype, np.integer) and arr.min() >= 0 and arr.max() <= 255:
        return arr.astype(np.uint8)
    lo, hi = (
        (arr.min(), arr.max()) if arr.size and np.issubdtype(arr.dtype, np.number) else (None, None)
    )
    hint = (
        " They look scaled to [0, 1]: pass (x * 255).round().astype(np.uint8)."
        if np.issubdtype(arr.dtype, np.floating) and lo is not None and lo >= 0 and hi <= 1
        else ""
    )
    raise InputError(
        f"Expected raw images as the data set stores them (uint8 pixels, 0..255"
        f"{', or bool' if allow_bool else ''}), as in training; got {arr.dtype} values in "
        f"[{lo}, {hi}].{hint}"
    )


def to_float(images: jax.Array) -> jax.Array:
    """uint8 pixels to the float32 model input in [0, 1]; the one conversion training,
    evaluation and `metajax.load` all use."""
    return jnp.asarray(images).astype(jnp.float32) / 255.0


@dataclasses.dataclass(frozen=True, eq=False)
class ClassImages:
    """Images grouped by class.

    Attributes:
      images: uint8 ``[classes, max_examples, H, W, C]``; rows past ``counts[c]`` are padding.
      counts: int32 ``[classes]``, the real examples of each class.
      names: each class's name (for Omniglot ``"Greek/character03"``).
      groups: int32 ``[classes]``, each class's group index (for Omniglot its alphabet).
      group_names: the name of each group index.
    """

    images: jax.Array
    counts: jax.Array
    names: tuple[str, ...]
    groups: jax.Array
    group_names: tuple[str, ...]

    def __post_init__(self):
        c = self.images.shape[0]
        if self.images.ndim != 5:
            raise ValueError(
                f"ClassImages.images must be [classes, examples, H, W, C], got shape {self.images.shape}."
            )
        if self.images.dtype != jnp.uint8:
            raise ValueError(f"ClassImages.images must be uint8, got {self.images.dtype}.")
        if self.counts.shape != (c,) or self.groups.shape != (c,) or len(self.names) != c:
            raise ValueError(
                f"ClassImages: {c} classes of images, but counts {self.counts.shape}, groups "
                f"{self.groups.shape} and {len(self.names)} names."
            )

    @property
    def num_classes(self) -> int:
        return self.images.shape[0]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[2:])

    @property
    def min_count(self) -> int:
        return int(np.min(np.asarray(self.counts)))

    @staticmethod
    def from_lists(
        per_class: Sequence[np.ndarray], names: Sequence[str], group_of: Sequence[str]
    ) -> ClassImages:
        """Builds from one ``[n_c, H, W, C]`` uint8 array per class, padding to the largest n_c.

        Example:
          >>> import numpy as np
          >>> data = ClassImages.from_lists(
          ...     [np.zeros((3, 4, 4, 1), np.uint8), np.ones((2, 4, 4, 1), np.uint8)],
          ...     names=["a/1", "b/1"], group_of=["a", "b"])
          >>> data.images.shape, data.counts.tolist()
          ((2, 3, 4, 4, 1), [3, 2])
        """
        if not per_class:
            raise ValueError("ClassImages.from_lists: no classes given.")
        longest = max(len(x) for x in per_class)
        images = np.zeros((len(per_class), longest, *per_class[0].shape[1:]), np.uint8)
        for i, x in enumerate(per_class):
            images[i, : len(x)] = x
        group_names = tuple(dict.fromkeys(group_of))
        index = {g: i for i, g in enumerate(group_names)}
        return ClassImages(
            images=jnp.asarray(images),
            counts=jnp.asarray([len(x) for x in per_class], jnp.int32),
            names=tuple(names),
            groups=jnp.asarray([index[g] for g in group_of], jnp.int32),
            group_names=group_names,
        )

    def select(self, class_indices: Sequence[int]) -> ClassImages:
        """A subset of the classes, in the given order (for splits)."""
        idx = np.asarray(class_indices, dtype=np.int64)
        kept_groups = np.asarray(self.groups)[idx]
        used = list(dict.fromkeys(kept_groups.tolist()))
        remap = {g: i for i, g in enumerate(used)}
        return ClassImages(
            images=self.images[idx],
            counts=self.counts[idx],
            names=tuple(self.names[i] for i in idx),
            groups=jnp.asarray([remap[g] for g in kept_groups.tolist()], jnp.int32),
            group_names=tuple(self.group_names[g] for g in used),
        )


def cached(
    path: str | os.PathLike,
    build: Callable[[], tuple[Sequence[np.ndarray], Sequence[str], Sequence[str]]],
) -> ClassImages:
    """`ClassImages` from an ``.npz`` cache at ``path``, built and saved on the first call.

    Args:
      path: the cache file; its name should identify the source (for example by checksum).
      build: returns ``(per_class, names, group_of)`` for `ClassImages.from_lists`.

    The file is written to a temporary name and renamed, so an interrupted run never leaves a
    truncated cache behind. A cache that cannot be read anyway (truncated by a full disk,
    damaged, or written by another version) is rebuilt from the source, with a warning.
    """
    path = Path(path)
    if path.exists():
        try:
            with np.load(path) as z:
                counts = z["counts"]
                per_class = [z["images"][i, :n] for i, n in enumerate(counts)]
                names, groups = z["names"].tolist(), z["groups"].tolist()
            return ClassImages.from_lists(per_class, names, groups)
        except Exception as err:  # zip, pickle, EOF or a missing key: the cache is unusable
            warnings.warn(
                f"The decoded-data cache {path} is unreadable ({type(err).__name__}: {err}); "
                "rebuilding it from the verified archive.",
                stacklevel=2,
            )
    per_class, names, groups = build()
    data = ClassImages.from_lists(per_class, names, groups)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_cache(path, data, names, groups)
    except OSError as err:  # the cache only saves time: a full disk must not stop the run
        warnings.warn(
            f"Could not write the decoded-data cache {path} ({err}); continuing without it "
            "(the next run decodes the archive again).",
            stacklevel=2,
        )
    return data


def _write_cache(path: Path, data: ClassImages, names, groups) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(
                f,
                images=np.asarray(data.images),
                counts=np.asarray(data.counts),
                names=np.array(list(names)),
                groups=np.array(list(groups)),
            )
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
