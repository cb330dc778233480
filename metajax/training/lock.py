"""A run folder's lock: one trainer per ``--workdir``.

`train` creates ``WORKDIR/.lock`` (exclusively, ``O_CREAT | O_EXCL``) holding its host, pid
and the process's start time, and removes it on exit. A second trainer finds the file, sees
that its owner still runs, and stops with an error naming it. A lock left by a killed
process is stale: its pid is gone (or is now another process, with another start time), so
the next trainer takes it over with a warning.
"""

from __future__ import annotations

import json
import os
import socket
import warnings
from pathlib import Path

from metajax.errors import file_errors, storage_error
from metajax.training.runfiles import RunError

LOCK_NAME = ".lock"


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (Linux), else ``None``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; the fields after its ')' are fixed.
    return stat.rpartition(")")[2].split()


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), else ``None``."""
    fields = _stat(pid)
    return fields[19] if fields else None


def _alive(owner: dict) -> bool:
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    fields = _stat(pid)
    if fields is None:
        return True  # no /proc: the pid exists, which is all that can be known
    if fields[0] in ("Z", "X"):
        return False  # killed, not yet reaped by its parent
    started = owner.get("started")
    return started is None or fields[19] == started


class WorkdirLock:
    """Holds ``workdir/.lock`` from `acquire` to `release` (or the ``with`` block's end).

    Raises:
      RunError: another live process holds the lock (named in the message), or the lock
        belongs to another host, whose processes cannot be checked from here.
    """

    def __init__(self, workdir: str | os.PathLike):
        self.path = Path(workdir) / LOCK_NAME
        self._mine: str | None = None

    def acquire(self) -> WorkdirLock:
        me = {"host": socket.gethostname(), "pid": os.getpid(), "started": _start_time(os.getpid())}
        text = json.dumps(me)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._check_stale(me["host"])
                continue
            except OSError as err:
                raise storage_error(err, "lock", self.path) from err
            with file_errors("lock", self.path), os.fdopen(fd, "w") as f:
                f.write(text)
            self._mine = text
            return self
        raise RunError(f"Could not take the lock {self.path}: other trainers keep taking it.")

    def _check_stale(self, host: str) -> None:
        try:
            owner = json.loads(self.path.read_text() or "{}")
        except FileNotFoundError:
            return  # released meanwhile
        except (OSError, ValueError):
            owner = {}  # a lock torn by a crash while it was written
        if not isinstance(owner, dict):
            owner = {}
        if owner.get("host", host) != host:
            raise RunError(
                f"{self.path.parent} is locked by a trainer on host {owner['host']} (pid "
                f"{owner.get('pid')}). Wait for it to finish, or, if it no longer runs, delete "
                f"{self.path}."
            )
        if owner and _alive(owner):
            raise RunError(
                f"{self.path.parent} is in use by another metajax trainer (pid {owner['pid']}). "
                "Wait for it to finish or stop it, or use another --workdir. (Lock file: "
                f"{self.path}.)"
            )
        warnings.warn(
            f"Taking over the stale lock {self.path} of pid {owner.get('pid')}, which no longer "
            "runs (it was killed or crashed).",
            stacklevel=3,
        )
        self.path.unlink(missing_ok=True)

    def release(self) -> None:
        if self._mine is None:
            return
        try:
            if self.path.read_text() == self._mine:
                self.path.unlink()
        except OSError:
            pass  # already gone, or the disk is gone: nothing more to release
        self._mine = None

    def __enter__(self) -> WorkdirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
