"""A full disk or a broken file system at every write the trainer makes: one clear error that
names the file, the earlier checkpoints intact, and a rerun that resumes to the same bits."""

import builtins
import errno
import json
import os
import shutil
import subprocess

import orbax.checkpoint as ocp
import pytest
from _reliability import SMALL, assert_same_params, small_config

from metajax.cli import main
from metajax.errors import StorageError
from metajax.training import checkpoint
from metajax.training.trainer import train


class _FullDisk:
    """An ``open`` whose files accept ``budget`` bytes in all, then fail with ENOSPC, the
    way a full disk tears a write (the bytes before the failure are written)."""

    def __init__(self, budget: int):
        self.budget = budget

    def __call__(self, path, mode="r", *args, **kwargs):
        f = builtins.open(path, mode, *args, **kwargs)  # noqa: SIM115 (returned open)
        if "r" in mode:
            return f
        disk = self
        real_write = f.write

        class Torn:
            def __getattr__(self, name):
                return getattr(f, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                f.close()

            def write(self, text):
                room = max(disk.budget, 0)
                disk.budget -= len(text)
                if len(text) > room:
                    real_write(text[:room])
                    f.flush()
                    raise OSError(errno.ENOSPC, "No space left on device")
                return real_write(text)

        return Torn()


def _tensorstore_enospc(*args, **kwargs):
    raise ValueError(
        'RESOURCE_EXHAUSTED: Error writing "params/0.0" in OCDBT database: Failed to write 4096 '
        "bytes to file 7: No space left on device [os_error_code='28']"
    )


@pytest.mark.parametrize("where", ["config", "metrics", "checkpoint"])
def test_disk_full_at_each_write_is_clear_and_the_rerun_resumes_bitwise(
    where, tmp_path, monkeypatch, reference_run
):
    run = tmp_path / "run"
    config = small_config("steps=16")
    if where == "checkpoint":
        train(small_config("steps=8"), run)  # checkpoints at 4 and 8 exist before the fault
        monkeypatch.setattr(ocp.CheckpointManager, "save", _tensorstore_enospc)
        expected = "Cannot write a checkpoint in .*checkpoints: the disk is full"
    elif where == "config":
        monkeypatch.setattr("metajax.files.open", _FullDisk(20), raising=False)
        expected = "Cannot write .*config.json: the disk is full"
    else:
        monkeypatch.setattr("metajax.training.runfiles.open", _FullDisk(150), raising=False)
        expected = "Cannot write .*metrics.jsonl: the disk is full"
    with pytest.raises(StorageError, match=expected):
        train(config, run)
    assert not (run / ".lock").exists()  # released on the way out
    if where == "checkpoint":
        assert checkpoint.checkpoint_steps(run / "checkpoints") == [4, 8]
    if where == "metrics":  # the fault tore the last line
        assert not (run / "metrics.jsonl").read_text().endswith("\n")
    monkeypatch.undo()  # space is freed
    with (
        pytest.warns(UserWarning, match="dropped 1 unreadable line")
        if where == "metrics"
        else (_no_warning())
    ):
        train(config, run)
    assert_same_params(run, reference_run(16))
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 16


class _no_warning:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_disk_full_writing_results_is_a_clear_cli_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("metajax.files.open", _FullDisk(10**9), raising=False)
    original = main.__globals__["write_atomic"]

    def results_fail(path, text):
        if path.name == "results.json":
            raise StorageError(f"Cannot write {path}: the disk is full.")
        return original(path, text)

    monkeypatch.setitem(main.__globals__, "write_atomic", results_fail)
    argv = ["train", "sinusoid-maml", "--workdir", str(tmp_path / "run"), "--no-progress",
            "--set", "steps=4", "hidden=8", "meta_batch_size=2", "eval_tasks=4"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("metajax: error: Cannot write")
    assert "results.json" in err and "Traceback" not in err


@pytest.mark.parametrize("layout", ["is_a_file", "under_a_file"])
def test_workdir_that_is_or_is_under_a_file_is_named(layout, tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    workdir = blocker if layout == "is_a_file" else blocker / "run"
    argv = ["train", "sinusoid-maml", "--workdir", str(workdir), "--no-progress",
            "--set", "steps=2", "hidden=8"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"Cannot create the run folder {workdir}" in err or str(workdir) in err
    assert "a file stands where a folder is needed" in err and "Traceback" not in err


def test_read_only_file_system_is_named(tmp_path, monkeypatch, capsys):
    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr("pathlib.Path.mkdir", read_only)
    argv = ["train", "sinusoid-maml", "--workdir", str(tmp_path / "ro"), "--no-progress",
            "--set", "steps=2", "hidden=8"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'ro'}: the file system is read-only" in err


def _mount_tmpfs(path, size):
    path.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True)  # fmt: skip
    return done.returncode == 0


def _used_bytes(path):
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def test_a_real_full_disk_stops_cleanly_and_the_run_resumes_elsewhere(
    tmp_path, reference_run, capsys
):
    """A real tmpfs (where this machine permits mounting one): real ENOSPC from Orbax's
    tensorstore writes and from Python's, not an injected one.

    How much a checkpoint takes on a tmpfs depends on the machine (page size, huge pages,
    Orbax's files), so the disk is sized from a probe run on it: room for the run's files, two
    checkpoints and half of a third.
    """
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "256m"):
        pytest.skip("mounting a tmpfs is not permitted here")
    try:
        argv = ["train", "sinusoid-maml", "--workdir", str(disk / "probe"), "--no-progress",
                "--set", *small_config_sets(), "steps=2", "hidden=40", "checkpoint_every=2",
                "keep_checkpoints=50"]  # fmt: skip
        assert main(argv) == 0
        one_checkpoint = _used_bytes(disk)
        steps = argv.index("steps=2")
        argv[steps] = "steps=4"
        assert main(argv) == 0
        per_checkpoint = _used_bytes(disk) - one_checkpoint
        assert per_checkpoint > 0
        shutil.rmtree(disk / "probe")
        size = one_checkpoint + int(1.5 * per_checkpoint)
        resized = subprocess.run(["mount", "-o", f"remount,size={size}", str(disk)],
                                 capture_output=True)  # fmt: skip
        if resized.returncode:
            pytest.skip(f"resizing the tmpfs is not permitted here: {resized.stderr!r}")
        capsys.readouterr()

        argv[3], argv[steps] = str(disk / "run"), "steps=16"
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "the disk is full" in err and str(disk / "run") in err and "Traceback" not in err
        kept = checkpoint.checkpoint_steps(disk / "run" / "checkpoints")
        # The space is freed (the run moves to a bigger disk) and it resumes from what it kept.
        shutil.copytree(disk / "run", tmp_path / "moved")
    finally:
        subprocess.run(["umount", str(disk)], check=False)
    assert 0 < len(kept) < 8, (
        f"the disk ({size} bytes, {per_checkpoint} per checkpoint) should fill after some "
        f"checkpoints, not before any; kept {kept}"
    )
    argv[3] = str(tmp_path / "moved")
    assert main(argv) == 0
    capsys.readouterr()
    whole = tmp_path / "whole"
    argv[3] = str(whole)
    assert main(argv) == 0
    assert_same_params(tmp_path / "moved", whole)


def small_config_sets():
    return [
        s for s in SMALL if not s.startswith(("checkpoint_every", "keep_checkpoints", "hidden"))
    ]
