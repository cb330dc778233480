"""Orbax checkpoints: round trip, retention, identity checks, damage and the old format."""

import errno

import chex
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from metajax.errors import StorageError
from metajax.training import checkpoint
from metajax.training.checkpoint import CheckpointError


def _tree(v=1.0):
    return {"a": jnp.full((2, 3), v), "b": (jnp.arange(4), jnp.float32(v))}


def test_round_trip_retention_and_layout(tmp_path):
    for step in (10, 20, 30, 40):
        checkpoint.save(tmp_path, step, _tree(float(step)), keep=2, metadata={"algorithm": "x"})
    assert checkpoint.checkpoint_steps(tmp_path) == [30, 40]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_000000030", "step_000000040"]
    step, tree = checkpoint.restore(tmp_path, _tree(), expect={"algorithm": "x"})
    assert step == 40
    chex.assert_trees_all_equal(tree, _tree(40.0))
    assert tree["b"][0].dtype == np.int32
    assert checkpoint.restore(tmp_path, _tree(), step=30)[0] == 30


def test_a_failed_write_is_one_clear_error_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    checkpoint.save(tmp_path, 1, _tree(1.0))

    def disk_full(*args, **kwargs):  # what tensorstore raises when a write hits ENOSPC
        raise ValueError(
            'RESOURCE_EXHAUSTED: Error writing "a/0.0": Failed to write 183094 bytes to file 7: '
            "No space left on device [os_error_code='28']"
        )

    monkeypatch.setattr(ocp.CheckpointManager, "save", disk_full)
    with pytest.raises(
        StorageError, match=f"Cannot write a checkpoint in {tmp_path}.*disk is full"
    ):
        checkpoint.save(tmp_path, 2, _tree(2.0))
    assert checkpoint.checkpoint_steps(tmp_path) == [1]
    chex.assert_trees_all_equal(checkpoint.restore(tmp_path, _tree())[1], _tree(1.0))


def test_another_model_or_algorithm_is_refused_with_what_differs(tmp_path):
    with pytest.raises(CheckpointError, match="No checkpoint"):
        checkpoint.restore(tmp_path, _tree())
    checkpoint.save(tmp_path, 5, _tree(), metadata={"algorithm": "maml"})
    other_shape = {"a": jnp.zeros((3, 3)), "b": (jnp.arange(4), jnp.float32(0))}
    with pytest.raises(
        CheckpointError, match=r"array 0: saved \['a'\] float32\[2, 3\].*expects \['a'\] float32\[3"
    ):
        checkpoint.restore(tmp_path, other_shape)
    with pytest.raises(CheckpointError, match="has 3 arrays, the run expects 1"):
        checkpoint.restore(tmp_path, {"a": jnp.zeros((2, 3))})
    with pytest.raises(CheckpointError, match="written by algorithm 'maml'.*names 'anil'"):
        checkpoint.restore(tmp_path, _tree(), expect={"algorithm": "anil"})
    # A mislabelled run is not damage: nothing was set aside.
    assert checkpoint.checkpoint_steps(tmp_path) == [5]


def _damage_arrays(folder):
    files = [p for p in (folder / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    assert files
    for p in files:
        p.write_bytes(b"\0" * 7)


def test_a_damaged_newest_checkpoint_falls_back_to_the_newest_readable_one(tmp_path):
    for step in (1, 2, 3):
        checkpoint.save(tmp_path, step, _tree(float(step)))
    _damage_arrays(tmp_path / "step_000000003")
    (tmp_path / "step_000000002" / "meta" / "metadata").write_text('{"format": "metaj')
    with pytest.warns(UserWarning, match=r"step_000000003: its arrays are unreadable") as record:
        step, tree = checkpoint.restore(tmp_path, _tree())
    assert step == 1
    chex.assert_trees_all_equal(tree, _tree(1.0))
    assert "step_000000002: its metadata is unreadable" in str(record[0].message)
    # Kept for inspection under another name, never deleted; the step can be written again.
    assert (tmp_path / "step_000000003.corrupt").is_dir()
    assert (tmp_path / "step_000000002.corrupt").is_dir()
    checkpoint.save(tmp_path, 3, _tree(3.0))
    assert checkpoint.restore(tmp_path, _tree())[0] == 3


def test_silent_bit_rot_is_caught_by_the_checksum(tmp_path, monkeypatch):
    checkpoint.save(tmp_path, 1, _tree(1.0))
    checkpoint.save(tmp_path, 2, _tree(2.0))
    real = ocp.StandardCheckpointer.restore

    def rotten(self, path, target):  # the bytes decode, but to other values
        out = real(self, path, target)
        if "step_000000002" in str(path):
            out["a"] = out["a"] + 1
        return out

    monkeypatch.setattr(ocp.StandardCheckpointer, "restore", rotten)
    with pytest.raises(CheckpointError, match="do not match their checksum"):
        checkpoint.restore(tmp_path, _tree(), step=2)
    with pytest.warns(UserWarning, match="do not match their checksum"):
        assert checkpoint.restore(tmp_path, _tree())[0] == 1


def test_nothing_readable_is_an_error_that_names_each_file(tmp_path):
    checkpoint.save(tmp_path, 1, _tree(1.0))
    _damage_arrays(tmp_path / "step_000000001")
    with pytest.raises(CheckpointError, match=r"No readable checkpoint.*step_000000001"):
        checkpoint.restore(tmp_path, _tree(), set_aside=False)
    assert checkpoint.checkpoint_steps(tmp_path) == [1]  # set_aside=False leaves it


def test_checkpoints_of_metajax_0_1_are_still_read(tmp_path):
    leaves = [np.full((2, 3), 7.0, np.float32), np.arange(4, dtype=np.int32), np.float32(7)]
    np.savez(tmp_path / "step_000000050.npz", *leaves)
    step, tree = checkpoint.restore(tmp_path, _tree())
    assert step == 50
    chex.assert_trees_all_equal(tree, _tree(7.0))
    (tmp_path / "step_000000050.npz").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="unreadable or corrupt"):
        checkpoint.restore(tmp_path, _tree(), set_aside=False)


def test_a_file_where_the_checkpoint_folder_should_be_is_a_storage_error(tmp_path):
    (tmp_path / "checkpoints").write_text("")
    with pytest.raises(StorageError, match="checkpoints: a file stands where a folder") as info:
        checkpoint.save(tmp_path / "checkpoints", 1, _tree())
    assert info.value.errno in (errno.EEXIST, errno.ENOTDIR)
