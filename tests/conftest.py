"""Shared test helpers."""

import os

# Tests run on the CPU; keep XLA from grabbing every core's thread pool twice over.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The CLI's persistent compilation cache stays out of the user's home during tests
# (test_cli.py checks it in a subprocess with its own folder).
os.environ.setdefault("METAJAX_COMPILATION_CACHE", "off")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from metajax.datasets.omniglot_runs import write_runs  # noqa: E402

SHARED_OMNIGLOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "omniglot"


@pytest.fixture
def one_shot_runs(tmp_path):
    """A factory: ``one_shot_runs(num_runs)`` -> (folder, truth); see `write_runs`."""
    if not (SHARED_OMNIGLOT / "images_background_small2.zip").exists():
        pytest.skip("../shared/data/omniglot is not beside the repository")

    def make(num_runs: int = 2, seed: int = 0):
        # small2's alphabets that small1 lacks (unseen by the minimal1 configs), >= 20 chars.
        folder = tmp_path / "all_runs"
        archive = SHARED_OMNIGLOT / "images_background_small2.zip"
        alphabets = ["Sanskrit", "Japanese_(katakana)"]
        return folder, write_runs(archive, alphabets, folder, num_runs, seed)

    return make


@pytest.fixture
def offline_data(tmp_path, monkeypatch):
    """No network (a download attempt fails as offline) and a fresh decode cache per test."""
    import urllib.error
    import urllib.request

    monkeypatch.setenv("METAJAX_CACHE_DIR", str(tmp_path / "cache"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(urllib.request, "urlretrieve", offline)
