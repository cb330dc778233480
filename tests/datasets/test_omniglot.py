"""Omniglot from the real small archives in ../shared/data/omniglot, and the offline errors."""

import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from metajax.datasets import download, omniglot
from metajax.datasets.download import DataFileError

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "omniglot"
needs_data = pytest.mark.skipif(
    not (SHARED / "images_background_small1.zip").exists(),
    reason="../shared/data/omniglot is not beside the repository",
)


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("METAJAX_CACHE_DIR", str(tmp_path / "cache"))


@needs_data
def test_minimal1_split_from_the_real_archives():
    train, test = omniglot.load_split("minimal1", SHARED)
    assert train.group_names == ("Balinese", "Early_Aramaic", "Greek", "Korean", "Latin")
    assert train.num_classes == 24 + 22 + 24 + 40 + 26
    # small2's alphabets that small1 lacks.
    assert test.group_names == ("Japanese_(katakana)", "Sanskrit", "Tagalog")
    assert test.num_classes == 47 + 42 + 17
    assert train.images.shape[1:] == (20, 28, 28, 1) and str(train.images.dtype) == "uint8"
    assert (np.asarray(train.counts) == 20).all()
    img = np.asarray(train.images[0, 0, ..., 0])
    # Strokes as 1 (255): a character is mostly background, with antialiased edges.
    assert 0.02 < (img > 127).mean() < 0.4
    assert len(np.unique(img)) > 10
    # The decoded arrays are cached and reused.
    cached = list(Path(download.cache_dir()).glob("*.npz"))
    assert len(cached) == 2
    again, _ = omniglot.load_split("minimal1", SHARED)
    np.testing.assert_array_equal(np.asarray(again.images), np.asarray(train.images))
    assert again.names == train.names
    # A cache truncated by a full disk is rebuilt from the verified archive, with a warning.
    for path in cached:
        path.write_bytes(path.read_bytes()[:1000])
    with pytest.warns(UserWarning, match="decoded-data cache .* is unreadable .*rebuilding"):
        rebuilt, _ = omniglot.load_split("minimal1", SHARED)
    np.testing.assert_array_equal(np.asarray(rebuilt.images), np.asarray(train.images))
    assert all(path.stat().st_size > 10_000 for path in cached)


def test_preprocess_antialiases_one_bit_images():
    # Pillow would resize a mode "1" image with nearest-neighbour whatever the filter.
    one_bit = np.ones((105, 105), bool)
    one_bit[40:60, 10:95] = False  # a black bar (ink)
    out = omniglot.preprocess(one_bit)
    assert out.shape == (1, 28, 28, 1)
    values = np.unique(out)
    assert values.max() == 255 and values.min() == 0
    assert len(values) > 2, "an antialiased resize leaves grey edge pixels"


def test_missing_full_archive_offline_is_a_clear_error(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlretrieve", offline)
    with pytest.raises(DataFileError) as err:
        omniglot.load_split("lake", tmp_path)
    message = str(err.value)
    assert "images_background.zip" in message and str(tmp_path) in message
    assert (
        "https://github.com/brendenlake/omniglot/raw/master/python/images_background.zip" in message
    )
    assert not list(tmp_path.glob("*.part"))


def test_corrupt_archive_is_a_clear_error(tmp_path):
    (tmp_path / "images_background_small1.zip").write_bytes(b"not the archive")
    with pytest.raises(DataFileError, match="corrupt or not the expected file: its sha256"):
        omniglot.load_archive("images_background_small1", tmp_path)


def test_unknown_split_and_archive():
    with pytest.raises(ValueError, match="Unknown Omniglot split 'vinyal'"):
        omniglot.load_split("vinyal")
    with pytest.raises(ValueError, match="Unknown Omniglot archive"):
        omniglot.load_archive("images_small3")


def test_vinyals_order_is_fixed():
    a, b = omniglot.vinyals_order(1623), omniglot.vinyals_order(1623)
    np.testing.assert_array_equal(a, b)
    assert sorted(a.tolist()) == list(range(1623))
