"""The TFDS adapter on TFDS's own mock data (real feature specs, generated examples)."""

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from metajax.datasets.tfds import from_tfds  # noqa: E402
from metajax.tasks import Episodes  # noqa: E402


def _examples(name, split):
    """The mock examples, read independently of the adapter."""
    return list(tfds.data_source(name, split=split))


def test_mnist_grouped_by_label_matches_the_examples():
    with tfds.testing.mock_data(num_examples=60):
        data = from_tfds("mnist", "train")
        examples = _examples("mnist", "train")
    labels = np.array([int(e["label"]) for e in examples])
    present = sorted(set(labels.tolist()))
    assert data.names == tuple(str(i) for i in present)  # mnist's ClassLabel names are digits
    assert data.image_shape == (28, 28, 1) and str(data.images.dtype) == "uint8"
    np.testing.assert_array_equal(np.asarray(data.counts), [np.sum(labels == c) for c in present])
    # Each class holds exactly its examples, in order.
    for row, c in enumerate(present):
        expected = np.stack([np.asarray(e["image"]) for e in examples if int(e["label"]) == c])
        np.testing.assert_array_equal(np.asarray(data.images[row, : len(expected)]), expected)


def test_omniglot_groups_by_alphabet_and_feeds_episodes():
    with tfds.testing.mock_data(num_examples=200):
        data = from_tfds("omniglot", "train", group_key="alphabet")
        examples = _examples("omniglot", "train")
    assert data.image_shape == (105, 105, 3)
    alphabet_names = tfds.builder("omniglot").info.features["alphabet"].names
    first = {}
    for e in examples:
        first.setdefault(int(e["label"]), alphabet_names[int(e["alphabet"])])
    groups = np.asarray(data.groups)
    label_names = tfds.builder("omniglot").info.features["label"].names
    for row, name in enumerate(data.names):
        assert data.group_names[groups[row]] == first[label_names.index(name)]
    # Mock data has ~1 example per class; an episode needing 2 per class is refused clearly.
    with pytest.raises(ValueError, match="examples"):
        Episodes(data, n_way=5, k_shot=1, k_query=5)


def test_unknown_feature_is_a_clear_error():
    with (
        tfds.testing.mock_data(num_examples=5),
        pytest.raises(ValueError, match="has no feature 'pixels'"),
    ):
        from_tfds("mnist", "train", image_key="pixels")
