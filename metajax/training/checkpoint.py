"""Atomic checkpoints of any pytree, as ``.npz`` files of its leaves.

A checkpoint is written to a temporary file in the same folder, flushed to disk, then renamed
over its final name (``os.replace`` is atomic on POSIX), so a crash mid-write never leaves a
truncated checkpoint and never touches the previous ones. Older checkpoints are pruned only
after the new one is in place.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import jax
import numpy as np

from metajax.errors import UserError

_NAME = re.compile(r"^step_(\d+)\.npz$")


class CheckpointError(UserError, RuntimeError):
    """A checkpoint is missing, corrupt, or does not fit the run it is restored into."""


def checkpoint_steps(directory: str | os.PathLike) -> list[int]:
    """The steps of the checkpoints in ``directory``, ascending."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(int(m.group(1)) for p in directory.iterdir() if (m := _NAME.match(p.name)))


def save(directory: str | os.PathLike, step: int, tree: Any, *, keep: int = 3) -> Path:
    """Writes ``tree`` as ``directory/step_{step}.npz`` atomically; keeps the newest ``keep``.

    Args:
      directory: the checkpoint folder (created if missing).
      step: the training step, part of the file name.
      tree: any pytree of arrays.
      keep: how many checkpoints to keep (at least 1).

    Returns:
      The path of the new checkpoint.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    leaves = [np.asarray(x) for x in jax.tree.leaves(tree)]
    path = directory / f"step_{step:09d}.npz"
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp_", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, *leaves)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    for old in checkpoint_steps(directory)[: -max(keep, 1)]:
        (directory / f"step_{old:09d}.npz").unlink(missing_ok=True)
    return path


def restore(directory: str | os.PathLike, target: Any, step: int | None = None) -> tuple[int, Any]:
    """Restores the checkpoint at ``step`` (default: the newest) into the structure of ``target``.

    Args:
      directory: the checkpoint folder.
      target: a pytree with the structure, shapes and dtypes of the saved one.
      step: which checkpoint; ``None`` for the newest.

    Returns:
      ``(step, tree)``.

    Raises:
      CheckpointError: no checkpoint, an unreadable file, or a structure that does not match.
    """
    steps = checkpoint_steps(directory)
    if not steps:
        raise CheckpointError(f"No checkpoint in {directory}: nothing to restore.")
    step = steps[-1] if step is None else step
    path = Path(directory) / f"step_{step:09d}.npz"
    target_leaves, treedef = jax.tree.flatten(target)
    try:
        with np.load(path) as data:
            leaves = [data[f"arr_{i}"] for i in range(len(data.files))]
    except Exception as err:  # a zip, pickle or IO error: all mean the file is unusable
        raise CheckpointError(f"Checkpoint {path} is unreadable or corrupt: {err}") from err
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
    return step, jax.tree.unflatten(treedef, leaves)
