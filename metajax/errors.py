"""The errors a user can fix: a config, a data file, a run folder, an input, the disk.

Every one derives from `UserError`, which the command line prints as one line (exit 2);
any other exception is a bug in metajax and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator


class UserError(Exception):
    """Base of the errors whose message says what to change."""


class InputError(UserError, ValueError):
    """Inputs that do not fit: an impossible episode, a support set of another width."""


class StorageError(UserError, OSError):
    """A file could not be written or read because of the file system: the disk is full,
    it is read-only, a file stands where a folder should be, or permission is denied."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


_ADVICE = {
    errno.ENOSPC: "the disk is full. Free space and rerun the same command: the run resumes "
    "from its newest checkpoint, which is intact",
    errno.EDQUOT: "the disk quota is exhausted. Free space and rerun the same command: the "
    "run resumes from its newest checkpoint, which is intact",
    errno.EROFS: "the file system is read-only. Choose a --workdir on a writable one",
    errno.EACCES: "permission denied. Choose a --workdir you can write to",
    errno.EPERM: "permission denied. Choose a --workdir you can write to",
    errno.ENOTDIR: "a file stands where a folder is needed. Choose another --workdir, or "
    "move that file away",
    errno.EEXIST: "a file stands where a folder is needed. Choose another --workdir, or "
    "move that file away",
    errno.EISDIR: "a folder stands where a file is needed. Move it away",
}


def storage_error(err: OSError, action: str, path: str | os.PathLike) -> StorageError:
    """``err`` as a `StorageError` whose message names ``path`` and what to do."""
    advice = _ADVICE.get(err.errno, f"{err.strerror or err}. Check the path and the disk")
    out = StorageError(f"Cannot {action} {os.fspath(path)}: {advice}.")
    out.errno, out.filename = err.errno, os.fspath(path)
    return out


@contextlib.contextmanager
def file_errors(action: str, path: str | os.PathLike) -> Iterator[None]:
    """Turns an `OSError` raised inside the block into a `StorageError` naming ``path``.

    Example:
      >>> with file_errors("write", "/proc/metajax-no-such-file"):
      ...     open("/proc/metajax-no-such-file", "w")
      Traceback (most recent call last):
      ...
      metajax.errors.StorageError: Cannot write /proc/metajax-no-such-file: No such file or directory. Check the path and the disk.
    """
    try:
        yield
    except StorageError:
        raise
    except OSError as err:
        raise storage_error(err, action, path) from err
