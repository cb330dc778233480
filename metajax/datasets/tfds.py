"""Any ``tensorflow_datasets`` image-classification data set as `ClassImages`.

Needs the optional extra: ``pip install 'metajax[tfds]'``. Examples are read through
``tfds.data_source`` (random access over ArrayRecord files), which needs no TensorFlow.
"""

from __future__ import annotations

import os

import numpy as np

from metajax.datasets.images import ClassImages


def from_tfds(
    name: str,
    split: str,
    *,
    image_key: str = "image",
    label_key: str = "label",
    group_key: str | None = None,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
) -> ClassImages:
    """Reads a TFDS data set and groups its images by label.

    Args:
      name: the TFDS name, such as ``"omniglot"`` or ``"cifar100"``.
      split: a TFDS split, such as ``"train"`` or ``"train[:50%]"``.
      image_key: the feature holding ``[H, W, C]`` uint8 images.
      label_key: the feature holding integer class labels (a ``ClassLabel``, whose names
        become the class names).
      group_key: an optional feature whose value groups classes (for TFDS Omniglot,
        ``"alphabet"``); each class takes the value of its first example.
      data_dir: TFDS's data folder (TFDS's default when ``None``).
      download: let TFDS download and prepare the data set if it is missing.

    Returns:
      `ClassImages` with one class per label that occurs in the split, in label order.

    Example::

        data = from_tfds("omniglot", "train", group_key="alphabet")
        tasks = Episodes(data, n_way=5, k_shot=1, k_query=15)
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:
        raise ImportError(
            "from_tfds needs tensorflow-datasets: pip install 'metajax[tfds]'."
        ) from err
    builder = tfds.builder(name, data_dir=data_dir)
    features = builder.info.features
    for key in (image_key, label_key, group_key):
        if key is not None and key not in features:
            raise ValueError(
                f"TFDS {name!r} has no feature {key!r}; its features are {sorted(features)}."
            )
    if download:
        builder.download_and_prepare(file_format="array_record")
    source = builder.as_data_source(split=split)
    by_label: dict[int, list[np.ndarray]] = {}
    group_of: dict[int, object] = {}
    for example in source:
        label = int(example[label_key])
        image = np.asarray(example[image_key])
        if image.ndim == 2:
            image = image[..., None]
        by_label.setdefault(label, []).append(image)
        if group_key is not None:
            group_of.setdefault(label, example[group_key])
    if not by_label:
        raise ValueError(f"TFDS {name!r} split {split!r} holds no examples.")
    dtypes = {str(im.dtype) for ims in by_label.values() for im in ims}
    if dtypes != {"uint8"}:
        raise ValueError(f"TFDS {name!r}: {image_key!r} must hold uint8 images, got {dtypes}.")
    shapes = {im.shape for ims in by_label.values() for im in ims}
    if len(shapes) != 1:
        raise ValueError(
            f"TFDS {name!r}: images of several shapes {sorted(shapes)}; resize them to one "
            "shape first (ClassImages holds one array)."
        )
    labels = sorted(by_label)
    label_names = getattr(features[label_key], "names", None)
    names = [label_names[i] if label_names else str(i) for i in labels]

    def group_name(label: int) -> str:
        if group_key is None:
            return name
        value = group_of[label]
        group_names = getattr(features[group_key], "names", None)
        return group_names[int(value)] if group_names else str(np.asarray(value))

    per_class = [np.stack(by_label[i]) for i in labels]
    return ClassImages.from_lists(per_class, names, [group_name(i) for i in labels])
