"""Atomic checkpoints and clear errors on bad ones."""

import chex
import jax.numpy as jnp
import numpy as np
import pytest

from metajax.training import checkpoint
from metajax.training.checkpoint import CheckpointError


def _tree(v=1.0):
    return {"a": jnp.full((2, 3), v), "b": (jnp.arange(4), jnp.float32(v))}


def test_round_trip_and_pruning(tmp_path):
    for step in (10, 20, 30, 40):
        checkpoint.save(tmp_path, step, _tree(float(step)), keep=2)
    assert checkpoint.checkpoint_steps(tmp_path) == [30, 40]
    step, tree = checkpoint.restore(tmp_path, _tree())
    assert step == 40
    chex.assert_trees_all_equal(tree, jax_tree := _tree(40.0))
    assert jax_tree["b"][0].dtype == np.asarray(tree["b"][0]).dtype
    assert not list(tmp_path.glob(".tmp_*"))


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    checkpoint.save(tmp_path, 1, _tree(1.0))

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", explode)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(tmp_path, 2, _tree(2.0))
    assert checkpoint.checkpoint_steps(tmp_path) == [1]
    assert not list(tmp_path.glob(".tmp_*"))
    chex.assert_trees_all_equal(checkpoint.restore(tmp_path, _tree())[1], _tree(1.0))


def test_corrupt_and_mismatched_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="No checkpoint"):
        checkpoint.restore(tmp_path, _tree())
    checkpoint.save(tmp_path, 5, _tree())
    with pytest.raises(
        CheckpointError, match=r"array 0: saved float32\[2, 3\].*expects float32\[3, 3\]"
    ):
        checkpoint.restore(tmp_path, {"a": jnp.zeros((3, 3)), "b": (jnp.arange(4), jnp.float32(0))})
    with pytest.raises(CheckpointError, match="has 3 arrays but the run expects 1"):
        checkpoint.restore(tmp_path, {"a": jnp.zeros((2, 3))})
    (tmp_path / "step_000000005.npz").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="unreadable or corrupt"):
        checkpoint.restore(tmp_path, _tree())
