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
    assert main(["eval", str(workdir)]) == 0
    assert "95% CI" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "nope"], "Unknown config 'nope'"),
        (["train", "sinusoid-maml", "--set", "bogus=1"], "Valid keys"),
        (["eval", "/nonexistent/run"], "is not a metajax run"),
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
