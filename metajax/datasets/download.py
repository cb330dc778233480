"""Locating, downloading and verifying data files, with clear errors when offline."""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from metajax.errors import UserError


class DataFileError(UserError, RuntimeError):
    """A data file is missing and cannot be downloaded, or fails its checksum."""


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The data folder: ``explicit``, else ``$METAJAX_DATA_DIR``, else ``~/.cache/metajax``."""
    if explicit is not None:
        return Path(explicit).expanduser()
    env = os.environ.get("METAJAX_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "metajax"


def cache_dir() -> Path:
    """Where decoded arrays are cached: ``$METAJAX_CACHE_DIR``, else ``~/.cache/metajax/decoded``.

    Kept apart from the data folder, which may be read-only (a shared mount).
    """
    env = os.environ.get("METAJAX_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "metajax" / "decoded"


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, checksum: tuple[str, str]) -> None:
    """Raises `DataFileError` unless ``path`` has the ``(algorithm, hexdigest)`` checksum."""
    algorithm, expected = checksum
    got = file_digest(path, algorithm)
    if got != expected:
        raise DataFileError(
            f"{path} is corrupt or not the expected file: its {algorithm} is {got}, expected "
            f"{expected}. Delete it and download it again."
        )


def fetch(name: str, url: str, checksum: tuple[str, str], folder: Path) -> Path:
    """Returns ``folder/name``, downloading it from ``url`` if missing; checks its checksum.

    Raises:
      DataFileError: the file is missing and the download failed (for example offline),
        naming the file, the URL and the folder to put it in; or the checksum is wrong.
    """
    path = folder / name
    if not path.exists():
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".part")
            os.close(fd)
            try:
                urllib.request.urlretrieve(url, tmp)
                verify(Path(tmp), checksum)
                os.replace(tmp, path)
            finally:
                Path(tmp).unlink(missing_ok=True)
        except (urllib.error.URLError, OSError, ValueError) as err:
            raise DataFileError(
                f"{name} is not in {folder} and could not be downloaded from {url} ({err}). "
                f"Download it on a machine with internet access and put it at {path}, or pass "
                "--data-dir (or set METAJAX_DATA_DIR) to the folder that holds it."
            ) from None
    verify(path, checksum)
    return path
