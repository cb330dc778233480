"""Two `metajax train --distributed` processes on 127.0.0.1 (gloo collectives on CPU) equal
one process with two devices; only process 0 writes, both restore, and resume is bitwise."""

import json
import os
import socket
import subprocess
import sys

import pytest
from _reliability import assert_same_params

pytestmark = pytest.mark.slow

SETS = ["--set", "hidden=16", "meta_batch_size=26", "eval_tasks=10", "shard_tasks=true",
        "steps_per_dispatch=10", "checkpoint_every=50"]  # fmt: skip
TRAIN = [sys.executable, "-m", "metajax.cli", "train", "sinusoid-maml", "--no-progress", *SETS]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(workdir, steps, tmp_path):
    port = _free_port()
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "METAJAX_COMPILATION_CACHE": "off"}
    env.pop("XLA_FLAGS", None)  # one CPU device per process
    procs = []
    for rank in (0, 1):
        if rank == 0:  # the flags...
            extra, penv = ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                           "--process-id", "0"], env  # fmt: skip
        else:  # ...or the environment variables the README names
            extra = []
            penv = {**env, "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
                    "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"}  # fmt: skip
        out = open(tmp_path / f"rank{rank}_{steps}.txt", "w")  # noqa: SIM115 (closed below)
        cmd = [*TRAIN, f"steps={steps}", "--workdir", str(workdir), "--distributed", *extra]
        procs.append((subprocess.Popen(cmd, env=penv, stdout=out, stderr=subprocess.STDOUT), out))
    for proc, out in procs:
        try:
            proc.wait(timeout=240)
        finally:
            proc.kill()
            out.close()
    logs = [(tmp_path / f"rank{r}_{steps}.txt").read_text() for r in (0, 1)]
    for proc_out, log in zip(procs, logs, strict=True):
        assert proc_out[0].returncode == 0, log[-3000:]
    return logs


def test_two_processes_equal_one_process_with_two_devices_and_resume_bitwise(tmp_path):
    multi = tmp_path / "multi"
    logs = _two_processes(multi, 100, tmp_path)
    assert all("trained to step 100" in log for log in logs)
    assert sorted(p.name for p in (multi / "checkpoints").iterdir()) == [
        "step_000000050", "step_000000100"]  # fmt: skip
    # Extending the run: every process restores step 100 from the shared folder.
    logs = _two_processes(multi, 200, tmp_path)
    # Both processes report the same evaluation (the same replicated parameters).
    evaluations = [log.split("evaluation")[1].split("metajax: wrote")[0] for log in logs]
    assert evaluations[0] == evaluations[1]
    assert "wrote" in logs[0] and "wrote" not in logs[1]  # only process 0 writes

    single = tmp_path / "single"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "METAJAX_COMPILATION_CACHE": "off",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}  # fmt: skip
    done = subprocess.run([*TRAIN, "steps=200", "--workdir", str(single)], env=env,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_params(multi, single)
    last = [json.loads((w / "metrics.jsonl").read_text().splitlines()[-1]) for w in (multi, single)]
    assert last[0]["meta_loss"] == last[1]["meta_loss"]


def test_distributed_flags_are_validated(capsys):
    from metajax.cli import main

    assert main(["train", "sinusoid-maml", "--coordinator", "127.0.0.1:1"]) == 2
    assert "only apply with --distributed" in capsys.readouterr().err
    argv = ["train", "sinusoid-maml", "--distributed", "--coordinator", "127.0.0.1:1"]
    assert main([*argv, "--num-processes", "2"]) == 2
    assert "needs all three" in capsys.readouterr().err
    assert main([*argv, "--num-processes", "2", "--process-id", "2"]) == 2
    assert "--process-id must be in [0, --num-processes)" in capsys.readouterr().err
