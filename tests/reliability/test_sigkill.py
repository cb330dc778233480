"""SIGKILL at 20 random points of a real `metajax train` process, many of them inside
checkpoint writes: every resume continues to the bits of the uninterrupted run."""

import os
import random
import signal
import subprocess
import sys
import time

import pytest
from _reliability import assert_same_params

from metajax.training import checkpoint

pytestmark = pytest.mark.slow

SETS = ["--set", "steps=120", "hidden=8", "meta_batch_size=2", "eval_tasks=4",
        "steps_per_dispatch=1", "checkpoint_every=2", "keep_checkpoints=3", "log_every=1"]  # fmt: skip


def test_twenty_kills_each_resume_bitwise(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           # Restarts reuse the compiled programs, so the kills land in training, not compiling.
           "METAJAX_COMPILATION_CACHE": str(tmp_path / "xla")}  # fmt: skip
    cmd = [sys.executable, "-m", "metajax.cli", "train", "sinusoid-maml", *SETS, "--no-progress"]
    broken = tmp_path / "broken"
    rng = random.Random(0)
    kills = []
    for _ in range(20):
        before = checkpoint.checkpoint_steps(broken / "checkpoints")
        proc = subprocess.Popen([*cmd, "--workdir", str(broken)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
        # Wait until this process has written a checkpoint of its own, then kill it at a
        # random moment: with a save every 2 steps, often mid-write.
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None:
            now = checkpoint.checkpoint_steps(broken / "checkpoints")
            if now and now[-1] > (before[-1] if before else 0):
                break
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.05))
        if proc.poll() is not None:
            break  # finished before the kill: the remaining kills have nothing to hit
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills.append(checkpoint.checkpoint_steps(broken / "checkpoints")[-1])
    assert len(kills) >= 15, f"the run finished after only {len(kills)} kills"
    assert kills == sorted(kills)  # each restart resumed, none started over
    done = subprocess.run([*cmd, "--workdir", str(broken)], env=env, capture_output=True,
                          text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    whole = subprocess.run([*cmd, "--workdir", str(tmp_path / "whole")], env=env,
                           capture_output=True, text=True)  # fmt: skip
    assert whole.returncode == 0, whole.stderr[-2000:]
    assert_same_params(broken, tmp_path / "whole")
    # The metrics log has each step once, in order, whatever the kills tore.
    import json

    steps = [
        json.loads(line)["step"] for line in (broken / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == list(range(1, 121))
