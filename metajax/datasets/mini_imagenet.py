"""mini-ImageNet (Vinyals et al. 2016) with the class split of Ravi and Larochelle (ICLR 2017).

100 ImageNet classes, 600 images each, 84x84 RGB: 64 classes meta-train, 16 validate, 20
meta-test. The data derive from ImageNet and have no official download, so this loader reads
the two forms users usually have, from ``<data dir>/mini-imagenet/``:

- the split CSVs ``train.csv``, ``val.csv``, ``test.csv`` (lines ``filename,label`` after a
  header, as in Ravi and Larochelle's release) with the images in ``images/``; images are
  resized to ``image_size`` once and the result cached;
- the pickles ``mini-imagenet-cache-{train,val,test}.pkl`` (a dict with ``image_data``,
  uint8 ``[N, 84, 84, 3]``, and ``class_dict``, class name to row indices), as made by Ren et
  al.'s release and used by learn2learn.

If both are present the pickle is used.
"""

from __future__ import annotations

import csv
import hashlib
import os
import pickle
from pathlib import Path

import numpy as np

from metajax.datasets.download import DataFileError, cache_dir, data_dir
from metajax.datasets.images import ClassImages, cached

SPLITS = ("train", "val", "test")
CLASSES = {"train": 64, "val": 16, "test": 20}
FOLDER = "mini-imagenet"


def _missing(folder: Path, split: str) -> DataFileError:
    return DataFileError(
        f"mini-ImageNet's {split} split is not in {folder}. mini-ImageNet derives from ImageNet "
        "and has no official download: put there either mini-imagenet-cache-"
        f"{split}.pkl, or {split}.csv (Ravi and Larochelle's split) with the images in "
        f"{folder / 'images'}; or pass --data-dir (METAJAX_DATA_DIR) to the folder that holds "
        f"{FOLDER}/."
    )


def _from_pickle(path: Path) -> ClassImages:
    try:
        with path.open("rb") as f:
            blob = pickle.load(f)
        images, class_dict = blob["image_data"], blob["class_dict"]
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, OSError) as err:
        raise DataFileError(
            f"{path} is not a mini-ImageNet cache pickle (a dict with image_data and "
            f"class_dict): {err!r}. Delete it and fetch it again."
        ) from err
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise DataFileError(
            f"{path}: image_data must be uint8 [N, H, W, 3], got {images.dtype} {images.shape}."
        )
    names = sorted(class_dict)
    per_class = [images[np.asarray(class_dict[n])] for n in names]
    return ClassImages.from_lists(per_class, names, names)


def _decode_csv(
    csv_path: Path, image_folder: Path, image_size: int
) -> tuple[list[np.ndarray], list[str], list[str]]:
    from PIL import Image

    by_class: dict[str, list[str]] = {}
    with csv_path.open(newline="") as f:
        rows = list(csv.reader(f))
    for row in rows[1:]:  # header: filename,label
        if len(row) != 2:
            raise DataFileError(f"{csv_path}: expected lines 'filename,label', got {row}.")
        by_class.setdefault(row[1], []).append(row[0])
    names = sorted(by_class)
    per_class = []
    for name in names:
        stack = []
        for file in by_class[name]:
            path = image_folder / file
            if not path.exists():
                raise DataFileError(f"{path} is listed in {csv_path.name} but missing.")
            with Image.open(path) as img:
                img = img.convert("RGB").resize((image_size, image_size), Image.LANCZOS)
                stack.append(np.asarray(img, np.uint8))
        per_class.append(np.stack(stack))
    return per_class, names, names


def load_split(
    split: str, root: str | os.PathLike | None = None, image_size: int = 84
) -> ClassImages:
    """One mini-ImageNet split as `ClassImages` (classes sorted by WordNet id).

    Args:
      split: ``"train"`` (64 classes), ``"val"`` (16) or ``"test"`` (20).
      root: the data folder holding ``mini-imagenet/`` (see `metajax.datasets.download`).
      image_size: the side of the images read from the CSV form (the pickles are 84x84).

    Raises:
      DataFileError: neither form of the split is present, or a file is corrupt.
    """
    if split not in SPLITS:
        raise ValueError(f"Unknown mini-ImageNet split {split!r}; known: {', '.join(SPLITS)}.")
    folder = data_dir(root) / FOLDER
    pkl = folder / f"mini-imagenet-cache-{split}.pkl"
    if pkl.exists():
        return _from_pickle(pkl)
    csv_path = folder / f"{split}.csv"
    if not csv_path.exists():
        raise _missing(folder, split)
    digest = hashlib.sha256(csv_path.read_bytes()).hexdigest()[:12]
    return cached(
        cache_dir() / f"mini_imagenet_{split}_{image_size}px_{digest}.npz",
        lambda: _decode_csv(csv_path, folder / "images", image_size),
    )
