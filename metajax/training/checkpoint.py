"""Checkpoints of a training state, through Orbax.

Layout: ``checkpoints/step_000000120/`` is one Orbax checkpoint (``orbax-checkpoint``,
the format Flax users expect) with two items: ``state``, the pytree, and ``meta``, JSON
that identifies what wrote it:

- ``algorithm`` and ``config``: the run's algorithm and config name;
- ``arrays``: each leaf's path, dtype and shape, and ``fingerprint``, a hash of that list;
- ``checksum``: a SHA-256 of the leaves' bytes, checked after reading, so that a damaged
  file is never restored silently.

Orbax writes a checkpoint into a temporary folder and renames it when complete, so a crash
mid-write never leaves a partial checkpoint and never touches the earlier ones; it keeps the
newest ``keep`` and can write in a background thread (`Checkpointer` with
``async_save=True``). On restore, a damaged newest checkpoint is skipped, with a warning,
for the newest readable one; the damaged folder is renamed ``step_N.corrupt``, never
deleted. A checkpoint written for another algorithm or model is refused: that is a mislabelled
run, not damage.

Runs of metajax 0.1 wrote ``step_000000120.npz`` (the leaves, in order); they are still read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from metajax.errors import StorageError, UserError, file_errors, storage_error

FORMAT = "metajax-orbax-1"
_LEGACY = re.compile(r"^step_(\d+)\.npz$")
_ORBAX = re.compile(r"^step_(\d+)$")
_DIGITS = 9

# Orbax logs every save and restore at INFO through absl; a training run's output should
# not scroll with them.
logging.getLogger("absl").setLevel(logging.WARNING)


class CheckpointError(UserError, RuntimeError):
    """A checkpoint is missing, corrupt, or does not fit the run it is restored into."""


class _Damaged(Exception):
    """A checkpoint that cannot be read (internal: the caller falls back to an older one)."""


def describe(tree: Any) -> list[str]:
    """One ``"path dtype[shape]"`` line per leaf of ``tree``: what a checkpoint must match.

    Example:
      >>> describe({"w": np.zeros((2, 3), np.float32), "b": np.zeros(3, np.float32)})
      ["['b'] float32[3]", "['w'] float32[2, 3]"]
    """
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    return [f"{jax.tree_util.keystr(p)} {np.dtype(x.dtype)}{list(np.shape(x))}" for p, x in leaves]


def fingerprint(tree: Any) -> str:
    """A short hash of `describe` (``tree``'s paths, dtypes and shapes)."""
    return hashlib.sha256("\n".join(describe(tree)).encode()).hexdigest()[:16]


def _checksum(leaves: list[np.ndarray]) -> str:
    digest = hashlib.sha256()
    for leaf in leaves:
        digest.update(np.ascontiguousarray(leaf).tobytes())
    return digest.hexdigest()


def _host(tree: Any) -> Any:
    """``tree`` as numpy arrays on this host (a copy, safe from buffer donation)."""
    return jax.tree.map(lambda x: np.array(jax.device_get(x)), tree)


def _step_dir(directory: Path, step: int) -> Path:
    return directory / f"step_{step:0{_DIGITS}d}"


def checkpoint_steps(directory: str | os.PathLike) -> list[int]:
    """The steps of the complete checkpoints in ``directory`` (both formats), ascending."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    steps = set()
    for p in directory.iterdir():
        if (m := _LEGACY.match(p.name)) or (m := _ORBAX.match(p.name)) and p.is_dir():
            steps.add(int(m.group(1)))
    return sorted(steps)


class Checkpointer:
    """Writes a run's checkpoints: ``save(step, tree)``, keeping the newest ``keep``.

    Args:
      directory: the checkpoint folder (created if missing).
      keep: how many checkpoints to keep (at least 1).
      metadata: JSON values stored with every checkpoint (``algorithm``, ``config``) and
        checked on restore.
      async_save: write in a background thread; `wait` (or `close`) blocks until written.
        The tree is copied to the host first, so the caller may donate its buffers.

    Raises (from `save`, `wait` and `close`):
      metajax.errors.StorageError: the disk is full or read-only, or a file is in the way.
        The earlier checkpoints are intact.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        keep: int = 3,
        metadata: Mapping[str, Any] | None = None,
        async_save: bool = False,
    ):
        self.directory = Path(directory).absolute()
        self.metadata = dict(metadata or {})
        with file_errors("create the checkpoint folder", self.directory):
            self.directory.mkdir(parents=True, exist_ok=True)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max(keep, 1),
            step_prefix="step",
            step_format_fixed_length=_DIGITS,
            enable_async_checkpointing=async_save,
            # Only this process writes (the trainer's state is replicated on every process).
            multiprocessing_options=ocp.options.MultiprocessingOptions(
                primary_host=jax.process_index(), active_processes={jax.process_index()}
            ),
            create=False,
            # Folders of saves a crash interrupted (never complete, never read) are removed.
            cleanup_tmp_directories=True,
        )
        with self._errors("open the checkpoint folder"):
            self._manager = ocp.CheckpointManager(self.directory, options=options)

    def _errors(self, action: str):
        return _orbax_errors(action, self.directory)

    def save(self, step: int, tree: Any) -> Path:
        """Writes ``tree`` as the checkpoint of ``step`` (replacing one of that step that
        `restore` found damaged); returns its folder."""
        host = _host(tree)
        leaves = jax.tree.leaves(host)
        meta = {
            **self.metadata,
            "format": FORMAT,
            "step": int(step),
            "arrays": describe(host),
            "fingerprint": fingerprint(host),
            "checksum": _checksum(leaves),
        }
        with self._errors("write a checkpoint in"):
            self._manager.save(
                int(step),
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(host), meta=ocp.args.JsonSave(meta)
                ),
                force=True,
            )
        return _step_dir(self.directory, step)

    def wait(self) -> None:
        """Blocks until the checkpoints being written in the background are on disk."""
        with self._errors("write a checkpoint in"):
            self._manager.wait_until_finished()

    def close(self) -> None:
        with self._errors("write a checkpoint in"):
            self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _orbax_errors:
    """Turns a file-system error raised anywhere in Orbax (which chains and wraps them) into
    one `StorageError` that names the folder."""

    def __init__(self, action: str, path: Path):
        self.action, self.path = action, path

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, err, tb) -> bool:
        if err is None or isinstance(err, UserError):
            return False
        cause = err
        while cause is not None and not isinstance(cause, OSError):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            text = str(err)
            for code, words in ((28, "No space left"), (30, "Read-only file system")):
                if words in text:
                    cause = OSError(code, words)
        if cause is None:
            return False
        raise storage_error(cause, self.action, self.path) from err


def save(
    directory: str | os.PathLike,
    step: int,
    tree: Any,
    *,
    keep: int = 3,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Writes ``tree`` as ``directory/step_{step}/`` (Orbax, atomically); keeps the newest
    ``keep``.

    Args:
      directory: the checkpoint folder (created if missing).
      step: the training step, part of the folder name.
      tree: any pytree of arrays.
      keep: how many checkpoints to keep (at least 1).
      metadata: JSON values stored beside it and checked by `restore`'s ``expect``.

    Returns:
      The checkpoint's folder.
    """
    with Checkpointer(directory, keep=keep, metadata=metadata) as ckpt:
        return ckpt.save(step, tree)


def restore(
    directory: str | os.PathLike,
    target: Any,
    step: int | None = None,
    *,
    expect: Mapping[str, Any] | None = None,
    set_aside: bool = True,
) -> tuple[int, Any]:
    """Restores a checkpoint into the structure of ``target``.

    With ``step=None``, the newest readable one: a damaged newer one is skipped with a
    warning that names it and why, and renamed ``step_N.corrupt`` (kept, never deleted).

    Args:
      directory: the checkpoint folder.
      target: a pytree with the structure, shapes and dtypes of the saved one.
      step: which checkpoint; ``None`` for the newest readable one.
      expect: metadata the checkpoint must carry, e.g. ``{"algorithm": "maml"}`` (a key the
        checkpoint lacks, as in older runs, is not checked).
      set_aside: rename a damaged checkpoint ``step_N.corrupt`` (so that training can write
        step N again); ``False`` leaves the folder as it is (a reader, not the trainer).

    Returns:
      ``(step, tree)``, the tree's leaves as numpy arrays.

    Raises:
      CheckpointError: no checkpoint; none readable; or one of another algorithm, model or
        optimizer than ``target`` and ``expect`` describe.
    """
    directory = Path(directory)
    steps = checkpoint_steps(directory)
    if not steps:
        raise CheckpointError(f"No checkpoint in {directory}: nothing to restore.")
    if step is not None:
        if step not in steps:
            raise CheckpointError(f"No checkpoint of step {step} in {directory}; it has {steps}.")
        try:
            return step, _read(directory, step, target, expect or {})
        except _Damaged as err:
            raise CheckpointError(str(err)) from err
    skipped = []
    for candidate in reversed(steps):
        try:
            tree = _read(directory, candidate, target, expect or {})
        except _Damaged as err:
            skipped.append(str(err))
            if set_aside:
                _set_aside(directory, candidate)
            continue
        if skipped:
            warnings.warn(
                f"Skipped damaged checkpoint(s), restoring step {candidate} instead: "
                + " ".join(skipped),
                stacklevel=2,
            )
        return candidate, tree
    raise CheckpointError(
        f"No readable checkpoint in {directory}: " + " ".join(skipped) + " Restore the folder "
        "from a backup, or use another --workdir to start over."
    )


def _set_aside(directory: Path, step: int) -> None:
    """Renames a damaged checkpoint out of the way (so the step can be written again)."""
    for path in (_step_dir(directory, step), directory / f"step_{step:0{_DIGITS}d}.npz"):
        if path.exists():
            aside = path.with_name(f"{path.name}.corrupt")
            if aside.exists():
                aside = path.with_name(f"{path.name}.corrupt-{time.time_ns()}")
            # A read-only folder: the checkpoint stays, and is skipped again next time.
            with contextlib.suppress(OSError):
                path.rename(aside)


def _read(directory: Path, step: int, target: Any, expect: Mapping[str, Any]) -> Any:
    folder = _step_dir(directory, step)
    if not folder.is_dir():
        return _read_npz(directory / f"step_{step:0{_DIGITS}d}.npz", target)
    try:
        meta = json.loads((folder / "meta" / "metadata").read_text())
    except (OSError, ValueError) as err:
        raise _Damaged(f"{folder}: its metadata is unreadable ({err}).") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise _Damaged(f"{folder}: its metadata is not a metajax checkpoint's.")
    _check_fits(folder, meta, target, expect)
    host_target = _host(target)
    try:
        restored = ocp.StandardCheckpointer().restore((folder / "state").absolute(), host_target)
    except Exception as err:  # tensorstore, zarr, OCDBT: all mean the files are damaged
        detail = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        raise _Damaged(
            f"{folder}: its arrays are unreadable ({type(err).__name__}: {detail})."
        ) from err
    leaves = [np.asarray(x) for x in jax.tree.leaves(restored)]
    if _checksum(leaves) != meta.get("checksum"):
        raise _Damaged(f"{folder}: its arrays do not match their checksum (damaged on disk).")
    return jax.tree.unflatten(jax.tree.structure(target), leaves)


def _check_fits(folder: Path, meta: dict, target: Any, expect: Mapping[str, Any]) -> None:
    for key, want in expect.items():
        if key in meta and meta[key] != want:
            raise CheckpointError(
                f"{folder} was written by {key} {meta[key]!r}, but this run's config.json "
                f"names {want!r}: the run folder was edited or mixed up. Restore its "
                "config.json, or use another --workdir."
            )
    want = describe(target)
    got = meta.get("arrays", [])
    if got != want:
        if len(got) != len(want):
            detail = f"it has {len(got)} arrays, the run expects {len(want)}"
        else:
            i = next(i for i, (a, b) in enumerate(zip(got, want, strict=True)) if a != b)
            detail = f"array {i}: saved {got[i]}, the run expects {want[i]}"
        raise CheckpointError(
            f"{folder} does not fit this run ({detail}; fingerprint "
            f"{meta.get('fingerprint')} against {fingerprint(target)}): it was written by a "
            "different model, optimizer or config."
        )


def _read_npz(path: Path, target: Any) -> Any:
    """A checkpoint of metajax 0.1: the leaves in order, checked against ``target``."""
    target_leaves, treedef = jax.tree.flatten(target)
    try:
        with np.load(path) as data:
            leaves = [data[f"arr_{i}"] for i in range(len(data.files))]
    except Exception as err:  # a zip, pickle or IO error: all mean the file is unusable
        raise _Damaged(f"{path} is unreadable or corrupt ({err}).") from err
    if len(leaves) != len(target_leaves):
        raise CheckpointError(
            f"Checkpoint {path} has {len(leaves)} arrays but the run expects "
            f"{len(target_leaves)}: it was written by a different model or optimizer."
        )
    for i, (got, want) in enumerate(zip(leaves, target_leaves, strict=True)):
        want = np.asarray(want) if not hasattr(want, "shape") else want
        if got.shape != tuple(want.shape) or got.dtype != want.dtype:
            raise CheckpointError(
                f"Checkpoint {path}, array {i}: saved {got.dtype}{list(got.shape)}, the run "
                f"expects {want.dtype}{list(want.shape)}: a different model or config."
            )
    return jax.tree.unflatten(treedef, leaves)


__all__ = [
    "CheckpointError",
    "Checkpointer",
    "StorageError",
    "checkpoint_steps",
    "describe",
    "fingerprint",
    "restore",
    "save",
]
