"""Omniglot (Lake, Salakhutdinov and Tenenbaum, Science 2015): 1623 handwritten characters
from 50 alphabets, 20 drawings each, as class-indexed uint8 arrays.

Archives come from the data set's official repository (``brendenlake/omniglot``, folder
``python/``). They are decoded once (strokes as 1, resized with antialiasing) and cached.

Splits:
  - ``vinyals``: the 1623 characters of background and evaluation sets in a fixed order
    (`vinyals_order`); the first 1200 meta-train, the rest meta-test; each 90-degree
    rotation is its own class (Vinyals et al. 2016; used by MAML and ProtoNets).
  - ``lake``: meta-train on the 30 background alphabets, meta-test on the 20 evaluation ones.
  - ``minimal1`` / ``minimal2``: meta-train on ``images_background_small1`` / ``small2``
    only (the Omniglot Challenge's minimal setting); meta-test on the other small set's
    alphabets that this one lacks.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np

from metajax.datasets.download import DataFileError, cache_dir, data_dir, fetch
from metajax.datasets.images import ClassImages, cached, check_raw_images
from metajax.errors import InputError

_BASE = "https://github.com/brendenlake/omniglot/raw/master/python/"
# sha256 of the small sets as shipped upstream; md5 of the full sets as published by
# torchvision for the same upstream files.
ARCHIVES: dict[str, tuple[str, str]] = {
    "images_background": ("md5", "68d2efa1b9178cc56df9314c21c6e718"),
    "images_evaluation": ("md5", "6b91aef0f799c5bb55b94e3f2daec811"),
    "images_background_small1": (
        "sha256",
        "f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4",
    ),
    "images_background_small2": (
        "sha256",
        "3ccaa407515a8778e5d0861875af38b17e418f301ad5bb3b5a6b65d901a41c7f",
    ),
}
SPLITS = ("vinyals", "lake", "minimal1", "minimal2")
VINYALS_TRAIN_CLASSES = 1200


def preprocess(images: np.ndarray, image_size: int = 28) -> np.ndarray:
    """Raw Omniglot images to the model's input: strokes as 1, ``image_size`` square, uint8.

    Accepts what the archives hold: ``[H, W]`` or ``[n, H, W]`` arrays of bool (True =
    background, as a 1-bit PNG decodes) or uint8 (255 = background). Pillow ignores the
    resampling filter on 1-bit images, so images are converted to 8-bit before the
    antialiased resize.

    Returns:
      uint8 ``[n, image_size, image_size, 1]`` with 255 for ink.

    Example:
      >>> blank = np.ones((105, 105), bool)
      >>> preprocess(blank).shape, int(preprocess(blank).max())
      ((1, 28, 28, 1), 0)
    """
    from PIL import Image

    arr = check_raw_images(images, allow_bool=True)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise InputError(f"preprocess expects [H, W] or [n, H, W] images, got shape {arr.shape}.")
    gray = arr.astype(np.uint8) * 255 if arr.dtype == bool else arr.astype(np.uint8)
    out = np.empty((len(gray), image_size, image_size, 1), np.uint8)
    for i, img in enumerate(gray):
        small = Image.fromarray(img, mode="L").resize((image_size, image_size), Image.LANCZOS)
        out[i, ..., 0] = 255 - np.asarray(small)
    return out


def _decode_archive(path: Path, image_size: int) -> tuple[list[np.ndarray], list[str], list[str]]:
    from PIL import Image

    per_char: dict[tuple[str, str], list[tuple[str, np.ndarray]]] = {}
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            parts = name.split("/")
            if name.startswith("/") or ".." in parts or ":" in name or "\\" in name:
                # Absolute or parent paths are never Omniglot's. Members are read in memory
                # and never extracted, but such a name must not become a class name either.
                raise DataFileError(
                    f"{path} has a member with an unsafe path: {name!r}; it is not an Omniglot "
                    "archive."
                )
            if len(parts) != 4 or not parts[3].endswith(".png"):
                continue
            _, alphabet, character, file = parts
            img = np.asarray(Image.open(io.BytesIO(zf.read(name))).convert("L"))
            per_char.setdefault((alphabet, character), []).append((file, img))
    if not per_char:
        raise ValueError(
            f"{path} holds no images in the layout <set>/<alphabet>/<character>/*.png."
        )
    keys = sorted(per_char)
    images = [preprocess(np.stack([im for _, im in sorted(per_char[k])]), image_size) for k in keys]
    return images, [f"{a}/{c}" for a, c in keys], [a for a, _ in keys]


def load_archive(
    archive: str, root: str | os.PathLike | None = None, image_size: int = 28
) -> ClassImages:
    """One Omniglot archive as `ClassImages`, decoded once and cached.

    Args:
      archive: one of `ARCHIVES` (``"images_background_small1"``, ...).
      root: the folder with the zip (see `metajax.datasets.download.data_dir`).
      image_size: the side of the resized images.

    Raises:
      DataFileError: the archive is missing and cannot be downloaded, or is corrupt.
    """
    if archive not in ARCHIVES:
        raise ValueError(f"Unknown Omniglot archive {archive!r}; known: {', '.join(ARCHIVES)}.")
    folder = data_dir(root)
    zip_path = fetch(f"{archive}.zip", _BASE + f"{archive}.zip", ARCHIVES[archive], folder)
    digest = ARCHIVES[archive][1][:12]
    return cached(
        cache_dir() / f"omniglot_{archive}_{image_size}px_{digest}.npz",
        lambda: _decode_archive(zip_path, image_size),
    )


def _concat(*sets: ClassImages) -> ClassImages:
    per_class = [
        np.asarray(s.images[i, : int(s.counts[i])]) for s in sets for i in range(s.num_classes)
    ]
    names = [n for s in sets for n in s.names]
    groups = [s.group_names[int(g)] for s in sets for g in np.asarray(s.groups)]
    return ClassImages.from_lists(per_class, names, groups)


def vinyals_order(num_classes: int) -> np.ndarray:
    """The fixed permutation of the 1623 sorted characters whose first 1200 meta-train.

    Characters are sorted by (set, alphabet, character), background set first, then
    permuted by ``numpy.random.RandomState(1)``; documented here so the split is reproducible.
    """
    return np.random.RandomState(1).permutation(num_classes)


def load_split(
    split: str, root: str | os.PathLike | None = None, image_size: int = 28
) -> tuple[ClassImages, ClassImages]:
    """The meta-train and meta-test data of an Omniglot split (see the module docstring).

    Returns:
      ``(train, test)`` as `ClassImages`.

    Raises:
      ValueError: an unknown split.
      DataFileError: an archive the split needs is missing (offline) or corrupt.
    """
    if split == "minimal1" or split == "minimal2":
        own, other = ("small1", "small2") if split == "minimal1" else ("small2", "small1")
        train = load_archive(f"images_background_{own}", root, image_size)
        other_set = load_archive(f"images_background_{other}", root, image_size)
        seen = set(train.group_names)
        keep = [
            i
            for i in range(other_set.num_classes)
            if other_set.group_names[int(other_set.groups[i])] not in seen
        ]
        return train, other_set.select(keep)
    if split == "lake":
        return (
            load_archive("images_background", root, image_size),
            load_archive("images_evaluation", root, image_size),
        )
    if split == "vinyals":
        everything = _concat(
            load_archive("images_background", root, image_size),
            load_archive("images_evaluation", root, image_size),
        )
        order = vinyals_order(everything.num_classes)
        return (
            everything.select(order[:VINYALS_TRAIN_CLASSES]),
            everything.select(order[VINYALS_TRAIN_CLASSES:]),
        )
    raise ValueError(f"Unknown Omniglot split {split!r}; known: {', '.join(SPLITS)}.")
