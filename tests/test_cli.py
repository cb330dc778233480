"""The metajax command line: list, train, eval --json, and its errors."""

import json

import pytest

from metajax.cli import main

SMALL = [
    "--set",
    "steps=300",
    "--set",
    "hidden=16,16",
    "--set",
    "eval_tasks=100",
    "--set",
    "steps_per_dispatch=50",
    "--no-progress",
]


def test_list_shows_configs_algorithms_tasks(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for word in ("sinusoid-maml", "sinusoid-fomaml", "sinusoid-pretrained", "MAML", "Sinusoid"):
        assert word in out


def test_train_then_eval_json(tmp_path, capsys):
    workdir = tmp_path / "run"
    assert main(["train", "sinusoid-maml", "--workdir", str(workdir), *SMALL]) == 0
    out = capsys.readouterr().out
    assert "mse_after_10" in out and (workdir / "adaptation.png").stat().st_size > 10_000
    assert main(["eval", str(workdir), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["config"] == "sinusoid-maml"
    assert set(result["metrics"]) == {"mse_after_0", "mse_after_1", "mse_after_10"}
    for value in result["metrics"].values():
        assert set(value) == {"mean", "ci95"} and value["ci95"] > 0
    # train saved what it printed, and eval of the saved run reproduces it.
    saved = json.loads((workdir / "results.json").read_text())
    assert saved["config"] == "sinusoid-maml" and saved["train_s"] > 0
    assert saved["metrics"] == result["metrics"]
    assert main(["eval", str(workdir)]) == 0
    assert "95% CI" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "nope"], "Unknown config 'nope'"),
        (["train", "sinusoid-maml", "--set", "bogus=1"], "Valid keys"),
        (["eval", "/nonexistent/run"], "is not a metajax run"),
        (["train", "sinusoid-maml", "--set", "cg_steps=9"], "'cg_steps' is a setting of imaml"),
        (["train", "sinusoid-maml", "--data-dir", "/tmp"], "reads no data files"),
    ],
)
def test_errors_exit_2_with_a_message(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_set_takes_several_assignments_at_once():
    from metajax.cli import build_parser

    args = build_parser().parse_args(
        ["train", "sinusoid-maml", "--set", "steps=3", "seed=2", "--set", "meta_batch_size=4"]
    )
    assert args.set == ["steps=3", "seed=2", "meta_batch_size=4"]


HITS = """
import sys, jax
hits = []
jax.monitoring.register_event_listener(
    lambda name, **kw: hits.append(1) if name == "/jax/compilation_cache/cache_hits" else None
)
from metajax.cli import main
assert main(sys.argv[1:]) == 0
print("cache hits:", len(hits))
"""


@pytest.mark.slow
def test_persistent_compilation_cache_is_written_and_reused(tmp_path):
    import os
    import subprocess
    import sys

    env = dict(os.environ, METAJAX_COMPILATION_CACHE=str(tmp_path / "xla"))
    argv = [sys.executable, "-c", HITS, "train", "sinusoid-maml", "--set", "steps=20",
            "hidden=8", "eval_tasks=10", "steps_per_dispatch=10", "--no-progress"]  # fmt: skip
    hits = []
    for run in ("a", "b"):
        proc = subprocess.run(
            argv + ["--workdir", str(tmp_path / run)], env=env, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        hits.append(int(proc.stdout.split("cache hits:")[1]))
    assert any(n.startswith("jit_run-") for n in os.listdir(tmp_path / "xla"))
    # A fresh cache has nothing to hit; the second run finds its programs there.
    assert hits[0] == 0 and hits[1] >= 1


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--tasks", "0"], "--tasks must be >= 2"),
        (["--tasks", "-5"], "--tasks must be >= 2"),
        (["--n-way", "0"], "--n-way must be >= 1"),
        (["--k-shot", "0"], "--k-shot must be >= 1"),
    ],
)
def test_eval_flags_are_validated(flags, message, capsys):
    assert main(["eval", "/nonexistent/run", *flags]) == 2
    assert message in capsys.readouterr().err


def test_an_internal_error_keeps_its_traceback(monkeypatch):
    import metajax.cli as cli

    def broken(*args, **kwargs):
        raise ValueError("an internal bug")

    monkeypatch.setattr(cli, "run_config", broken)
    with pytest.raises(ValueError, match="an internal bug"):
        main(["train", "sinusoid-maml", "--set", "steps=1"])
