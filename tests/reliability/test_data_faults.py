"""Damaged and hostile data files: truncated archives, unsafe zip members."""

import io
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metajax.datasets import omniglot
from metajax.datasets.download import DataFileError
from metajax.datasets.images import cached

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "omniglot"


def _png() -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.full((105, 105), 255, np.uint8)).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize(
    "member", ["../../escape/Greek/char01/a.png", "/tmp/abs/Greek/char01/a.png",
               "set/../Greek/a.png", "set/Greek/../a.png"],
)  # fmt: skip
def test_zip_members_with_parent_or_absolute_paths_write_nothing_outside_the_cache(
    member, tmp_path
):
    archive = tmp_path / "data" / "hostile.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("set/Greek/char01/ok.png", _png())
        zf.writestr(member, _png())
    before = {p for p in tmp_path.parent.rglob("*")}
    cache = tmp_path / "cache" / "hostile.npz"
    with pytest.raises(DataFileError, match="unsafe path"):
        cached(cache, lambda: omniglot._decode_archive(archive, 28))
    assert {p for p in tmp_path.parent.rglob("*")} == before  # nothing written anywhere
    assert not Path("/tmp/abs").exists()


@pytest.mark.skipif(not (SHARED / "images_background_small1.zip").exists(),
                    reason="../shared/data/omniglot is not beside the repository")  # fmt: skip
def test_a_truncated_archive_is_refused_by_its_checksum(tmp_path, monkeypatch):
    monkeypatch.setenv("METAJAX_CACHE_DIR", str(tmp_path / "cache"))
    name = "images_background_small1.zip"
    shutil.copy(SHARED / name, tmp_path / name)
    with open(tmp_path / name, "r+b") as f:
        f.truncate((tmp_path / name).stat().st_size // 2)  # a download cut off half-way
    with pytest.raises(DataFileError, match=f"{name}.*corrupt or not the expected file"):
        omniglot.load_archive("images_background_small1", tmp_path)
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())
