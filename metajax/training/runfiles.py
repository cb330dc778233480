"""The files of a run folder besides its checkpoints: ``config.json``, ``metrics.jsonl``,
``results.json``.

The checkpoint is the truth of a run; these files are written so that a crash, a full disk or
a deleted file never blocks the run from resuming:

- JSON files are written to a temporary name and renamed over the old one, so a reader sees
  the old file or the new one, never half of one;
- ``metrics.jsonl`` is appended line by line; on resume, lines past the checkpoint and a
  half-written (torn) line are dropped, with a warning;
- a ``metrics.jsonl`` deleted while the run writes it is noticed and recreated;
- every file-system error names the file and what to do (`metajax.errors.StorageError`).
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from pathlib import Path

from metajax import config as config_lib
from metajax.errors import file_errors
from metajax.files import dumps, write_atomic


class RunError(config_lib.ConfigError):
    """A run folder that cannot be used: another config's run, an unreadable file."""


def read_json(path: str | os.PathLike) -> dict:
    """The JSON object in ``path``.

    Raises:
      RunError: the file is unreadable or not valid JSON; the message names it.
    """
    path = Path(path)
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise RunError(
            f"{path} is unreadable ({err}): the file is damaged. Restore it, or use another "
            "--workdir."
        ) from err
    if not isinstance(value, dict):
        raise RunError(f"{path} holds {type(value).__name__}, not a JSON object: restore it.")
    return value


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The records of a ``metrics.jsonl``; lines that do not parse (a line torn by a crash
    or a full disk) are skipped with a warning that names them."""
    path = Path(path)
    if not path.exists():
        return []
    with file_errors("read", path):
        lines = path.read_text(errors="replace").splitlines()
    records, torn = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            torn.append(number)
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
        else:
            torn.append(number)
    if torn:
        warnings.warn(
            f"{path}: dropped {len(torn)} unreadable line(s) (line {', '.join(map(str, torn))}), "
            "left by an interrupted write; the checkpoint holds the run's state.",
            stacklevel=2,
        )
    return records


def trim_metrics(path: str | os.PathLike, last_step: int) -> None:
    """Keeps the records of ``metrics.jsonl`` up to ``last_step`` (the checkpoint a run
    resumes from) and drops torn lines, atomically."""
    path = Path(path)
    if not path.exists():
        return
    keep = [r for r in read_metrics(path) if r["step"] <= last_step]
    write_atomic(path, "".join(dumps(r) + "\n" for r in keep))


class MetricsLog:
    """Appends records to ``metrics.jsonl`` as JSON lines, flushed after each.

    If the file is deleted or replaced while the log is open, the next `write` recreates it
    (with a warning) rather than writing on into the unlinked file. ``path=None`` discards
    the records (for processes that do not write).
    """

    def __init__(self, path: str | os.PathLike | None):
        self.path = None if path is None else Path(path)
        self._file = None
        if self.path is not None:
            self._open()

    def _open(self) -> None:
        with file_errors("write", self.path):
            self._file = open(self.path, "a")  # noqa: SIM115 (held open across writes)

    def _still_there(self) -> bool:
        try:
            on_disk = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(self._file.fileno())
        return (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino)

    def write(self, record: dict) -> None:
        if self.path is None:
            return
        if not self._still_there():
            warnings.warn(
                f"{self.path} was deleted or replaced during the run; recreated it. Lines "
                "written before are lost; the checkpoints are not affected.",
                stacklevel=2,
            )
            self._file.close()
            self._open()
        with file_errors("write", self.path):
            self._file.write(dumps(record) + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            # A flush that fails at close: the failure was reported by write already.
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
