"""CIFAR-FS and FC100: few-shot splits of CIFAR-100 (``cifar-100-python.tar.gz``).

- **CIFAR-FS** (Bertinetto et al., ICLR 2019): 100 fine classes split at random into 64
  training, 16 validation and 20 test classes.
- **FC100** (Oreshkin et al., NeurIPS 2018, "TADAM"): split by superclass, so that test
  classes are semantically far from the training ones: 12 superclasses (60 classes) for
  training, 4 (20) for validation and 4 (20) for test.

Both use all 600 images of a class (CIFAR-100's train and test files together), 32x32 RGB.
The class lists below are the ones the papers' code releases use.
"""

from __future__ import annotations

import os
import pickle
import tarfile

import numpy as np

from metajax.datasets.download import DataFileError, data_dir, fetch
from metajax.datasets.images import ClassImages

URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
ARCHIVE = "cifar-100-python.tar.gz"
CHECKSUM = ("md5", "eb9058c3a382ffc7106e4002c42a8d85")

# CIFAR-FS: validation and test fine classes; training is the other 64.
CIFAR_FS = {
    "val": (
        "beaver", "otter", "flatfish", "shark", "lamp", "television", "beetle", "butterfly",
        "sea", "camel", "cattle", "crab", "crocodile", "maple_tree", "motorcycle", "tractor",
    ),
    "test": (
        "whale", "poppy", "rose", "sweet_pepper", "telephone", "bed", "table", "wardrobe",
        "leopard", "plain", "chimpanzee", "fox", "snail", "worm", "baby", "man", "woman",
        "bicycle", "pickup_truck", "rocket",
    ),
}  # fmt: skip
# FC100: superclasses of each split.
FC100 = {
    "train": (
        "fish", "flowers", "food_containers", "fruit_and_vegetables",
        "household_electrical_devices", "household_furniture", "large_man-made_outdoor_things",
        "large_natural_outdoor_scenes", "reptiles", "trees", "vehicles_1", "vehicles_2",
    ),
    "val": (
        "large_carnivores", "large_omnivores_and_herbivores", "non-insect_invertebrates",
        "small_mammals",
    ),
    "test": ("aquatic_mammals", "insects", "medium_mammals", "people"),
}  # fmt: skip
SPLITS = ("train", "val", "test")


def _unpickle(tar: tarfile.TarFile, member: str) -> dict:
    try:
        f = tar.extractfile(f"cifar-100-python/{member}")
    except KeyError:
        f = None
    if f is None:
        raise DataFileError(
            f"{tar.name} has no cifar-100-python/{member}: it is not CIFAR-100's python archive "
            f"({URL})."
        )
    return pickle.load(f, encoding="bytes")


def load_cifar100(root: str | os.PathLike | None = None) -> ClassImages:
    """All 100 fine classes of CIFAR-100, 600 images each (train and test files together),
    grouped by superclass.

    Args:
      root: the folder with ``cifar-100-python.tar.gz`` (see `metajax.datasets.download`);
        downloaded from `URL` if missing, then checked against its md5.

    Returns:
      `ClassImages` of ``[100, 600, 32, 32, 3]`` uint8, classes in CIFAR-100's label order.

    Raises:
      DataFileError: the archive is missing and cannot be downloaded, is corrupt, or is not
        CIFAR-100's python archive.
    """
    path = fetch(ARCHIVE, URL, CHECKSUM, data_dir(root))
    try:
        with tarfile.open(path, "r:gz") as tar:
            meta = _unpickle(tar, "meta")
            parts = [_unpickle(tar, m) for m in ("train", "test")]
    except (tarfile.TarError, OSError, EOFError, pickle.UnpicklingError) as err:
        raise DataFileError(
            f"{path} could not be read ({err}); delete it and download it again."
        ) from err
    fine_names = [n.decode() for n in meta[b"fine_label_names"]]
    coarse_names = [n.decode() for n in meta[b"coarse_label_names"]]
    data = np.concatenate([p[b"data"] for p in parts])
    fine = np.concatenate([p[b"fine_labels"] for p in parts])
    coarse = np.concatenate([p[b"coarse_labels"] for p in parts])
    # Rows are channel-major: 1024 red, then green, then blue values.
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    per_class, groups = [], []
    for c in range(len(fine_names)):
        rows = np.flatnonzero(fine == c)  # file order, stable
        per_class.append(images[rows])
        groups.append(coarse_names[int(coarse[rows[0]])] if len(rows) else "")
    return ClassImages.from_lists(per_class, fine_names, groups)


def load_split(benchmark: str, split: str, root: str | os.PathLike | None = None) -> ClassImages:
    """One split of CIFAR-FS or FC100.

    Args:
      benchmark: ``"cifar-fs"`` or ``"fc100"``.
      split: ``"train"``, ``"val"`` or ``"test"``.
      root: the folder with ``cifar-100-python.tar.gz``.

    Returns:
      The split's classes, in CIFAR-100's label order.
    """
    if benchmark not in ("cifar-fs", "fc100") or split not in SPLITS:
        raise ValueError(
            f"Unknown split {benchmark!r}/{split!r}: benchmark is cifar-fs or fc100, split is "
            f"one of {SPLITS}."
        )
    data = load_cifar100(root)
    if benchmark == "cifar-fs":
        named = set(CIFAR_FS["val"]) | set(CIFAR_FS["test"])
        missing = named - set(data.names)
        wanted = (
            [n not in named for n in data.names]
            if split == "train"
            else [n in CIFAR_FS[split] for n in data.names]
        )
    else:
        missing = set(FC100[split]) - set(data.group_names)
        groups = np.asarray(data.groups)
        wanted = [data.group_names[g] in FC100[split] for g in groups]
    if missing:
        raise DataFileError(
            f"CIFAR-100's archive lacks the {benchmark} classes {sorted(missing)}: it is not the "
            f"official {ARCHIVE}."
        )
    return data.select(np.flatnonzero(wanted))
