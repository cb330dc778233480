"""Damaged, deleted, relabelled and contended run folders."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import pytest
from _reliability import assert_same_params, small_config

from metajax.cli import main
from metajax.config import Experiment
from metajax.training import checkpoint, runfiles
from metajax.training.lock import WorkdirLock
from metajax.training.trainer import NonFiniteLossError, train


def test_a_torn_metrics_line_is_dropped_on_resume(tmp_path, reference_run, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = Path("run")  # relative, as `metajax train` defaults to runs/NAME
    train(small_config("steps=8"), run)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 1')  # the line a full disk tore
    with pytest.warns(
        UserWarning, match=r"metrics.jsonl: dropped 1 unreadable line\(s\) \(line 5\)"
    ):
        train(small_config("steps=16"), run)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6, 8, 10, 12, 14, 16]
    assert_same_params(run, reference_run(16))


@pytest.mark.parametrize("name", ["config.json", "metrics.jsonl"])
def test_a_truncated_run_file_is_named_in_the_error(name, tmp_path, capsys):
    run = tmp_path / "run"
    train(small_config("steps=4"), run)
    text = (run / name).read_text()
    if name == "metrics.jsonl":
        (run / name).write_bytes(b"\xff\xfe" + b"\0" * 10)  # unreadable as lines: dropped
        train(small_config("steps=6"), run)
        return
    (run / name).write_text(text[: len(text) // 2])
    argv = ["train", "sinusoid-maml", "--workdir", str(run), "--no-progress",
            "--set", "steps=6", "hidden=8", "meta_batch_size=2", "eval_tasks=4"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{run / name} is unreadable" in err and "Traceback" not in err
    assert main(["eval", str(run)]) == 2
    assert f"{run / name} is unreadable" in capsys.readouterr().err


def test_a_damaged_newest_checkpoint_is_skipped_and_kept(tmp_path, reference_run):
    run = tmp_path / "run"
    train(small_config("steps=8"), run)
    newest = run / "checkpoints" / "step_000000008"
    for p in (newest / "state").rglob("*"):
        if p.is_file() and p.parent.name == "d":
            p.write_bytes(p.read_bytes()[:3])
    with pytest.warns(UserWarning, match=r"restoring step 4 instead: .*step_000000008: its arrays"):
        train(small_config("steps=16"), run)
    assert (run / "checkpoints" / "step_000000008.corrupt").is_dir()  # set aside, not deleted
    assert_same_params(run, reference_run(16))


def test_a_hand_relabelled_run_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    train(small_config("steps=4"), run)
    saved = json.loads((run / "config.json").read_text())
    saved["algorithm"] = "anil"  # MAML's checkpoints, a config naming ANIL
    saved["learner"] = {k: v for k, v in saved["learner"].items() if k != "first_order"}
    saved["learner"].pop("remat", None)
    (run / "config.json").write_text(json.dumps(saved))
    assert main(["eval", str(run)]) == 2
    err = capsys.readouterr().err
    assert "written by algorithm 'maml'" in err and "names 'anil'" in err


def test_two_trainers_on_one_workdir_the_second_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from metajax.training.lock import WorkdirLock; "
         f"WorkdirLock({str(run)!r}).acquire(); print('locked', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        argv = ["train", "sinusoid-maml", "--workdir", str(run), "--no-progress",
                "--set", "steps=2", "hidden=8", "meta_batch_size=2", "eval_tasks=4"]  # fmt: skip
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"in use by another metajax trainer (pid {holder.pid})" in err
        assert not (run / "checkpoints").exists()  # refused before anything was written
    finally:
        holder.kill()
        holder.wait()
    # The holder was killed: its lock is stale, and the next trainer takes it over.
    with pytest.warns(UserWarning, match=f"stale lock .* of pid {holder.pid}"):
        assert main(argv) == 0
    assert not (run / ".lock").exists()


def test_a_lock_of_a_reused_pid_is_stale(tmp_path):
    """The pid of a killed trainer now runs another program: its start time tells them apart."""
    (tmp_path / ".lock").write_text(
        json.dumps({"host": os.uname().nodename, "pid": os.getpid(), "started": "1"})
    )
    with pytest.warns(UserWarning, match="stale lock"), WorkdirLock(tmp_path):
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()


def test_metrics_deleted_mid_run_are_recreated(tmp_path, monkeypatch):
    run = tmp_path / "run"
    real = runfiles.MetricsLog.write
    calls = []

    def write_then_delete(self, record):
        calls.append(record["step"])
        if len(calls) == 3:
            (run / "metrics.jsonl").unlink()
        return real(self, record)

    monkeypatch.setattr(runfiles.MetricsLog, "write", write_then_delete)
    with pytest.warns(UserWarning, match="metrics.jsonl was deleted or replaced during the run"):
        train(small_config("steps=12"), run)
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [6, 8, 10, 12]  # every line after the deletion


class _PoisonAt:
    """Delegates to a learner, but puts a NaN into the query targets of one meta-step."""

    def __init__(self, learner, step):
        self.learner, self.step = learner, step

    def __getattr__(self, name):
        return getattr(self.learner, name)

    def update(self, state, tasks, key):
        poison = jnp.where(state.step == self.step, jnp.nan, 0.0)
        query = tasks.query.replace(y=tasks.query.y + poison)
        return self.learner.update(state, tasks.replace(query=query), key)


def test_a_nan_in_one_meta_batch_stops_at_that_step_with_the_last_good_checkpoint(tmp_path):
    config = small_config("steps=20")
    built = config.build()
    poisoned = Experiment(_PoisonAt(built.learner, 9), built.train_tasks, built.test_tasks,
                          built.optimizer)  # fmt: skip
    with pytest.raises(NonFiniteLossError, match="NaN/Inf at step 9 .*kept \\(step 8 in") as info:
        train(config, tmp_path, experiment=poisoned)
    assert info.value.step == 9
    assert checkpoint.checkpoint_steps(tmp_path / "checkpoints") == [4, 8]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert all(math.isfinite(v) for line in lines for v in json.loads(line).values())
    # Without the poison the same run goes on from step 8.
    train(config, tmp_path)


def test_results_and_eval_json_have_null_not_nan(tmp_path, capsys, monkeypatch):
    import numpy as np

    import metajax.cli
    from metajax.training.evaluate import mean_ci95

    def half_diverged(*args, **kwargs):  # one of two test tasks' adaptation diverged
        return {"mse": mean_ci95(np.array([0.5, np.nan])), "loss": mean_ci95(np.array([1.0, 2.0]))}

    monkeypatch.setattr(metajax.cli, "evaluate", half_diverged)
    run = tmp_path / "run"
    argv = ["train", "sinusoid-maml", "--workdir", str(run), "--no-progress",
            "--set", "steps=2", "hidden=8", "meta_batch_size=2", "eval_tasks=4"]  # fmt: skip
    assert main(argv) == 0
    assert "1 tasks diverged" in capsys.readouterr().out
    text = (run / "results.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    results = json.loads(text)["metrics"]
    assert results["mse"] == {"mean": None, "ci95": None, "nonfinite": 1}
    assert results["loss"]["mean"] == 1.5
    assert main(["eval", str(run), "--json"]) == 0
    out = capsys.readouterr().out
    assert "NaN" not in out and json.loads(out)["metrics"]["mse"]["nonfinite"] == 1


def test_regression_predict_checks_shapes_and_never_advises_n_way(tmp_path):
    import numpy as np

    import metajax
    from metajax.errors import InputError

    train(small_config("steps=2"), tmp_path)
    learner = metajax.load(tmp_path)
    x, y = np.linspace(-5, 5, 10, dtype=np.float32)[:, None], np.zeros((10, 1), np.float32)
    assert learner.predict(x, y, x).shape == (10, 1)
    for args, message in [
        ((x[:, 0], y, x), r"support_x gives model inputs of shape \[10\]; .*trained on \[n, 1\]"),
        ((x, y[:, 0], x), r"support_y has shape \[10\]; .*targets of shape \[n, 1\]"),
        ((x, y, np.full_like(x, np.nan)), "query_x holds NaN or Inf"),
        ((x, np.zeros((10, 3), np.float32), x), r"targets of shape \[n, 1\]"),
    ]:
        with pytest.raises(InputError, match=message) as info:
            learner.predict(*args)
        assert "n_way" not in str(info.value) and "ProtoNet" not in str(info.value)
