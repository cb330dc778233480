"""The CLI on Omniglot: a short ProtoNet run on the real minimal set, and the clear error of
a paper-setting config whose full archives are not on this machine."""

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from metajax.cli import main

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "omniglot"


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("METAJAX_CACHE_DIR", str(tmp_path / "cache"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(urllib.request, "urlretrieve", offline)


@pytest.mark.slow
@pytest.mark.skipif(
    not SHARED.exists(), reason="../shared/data/omniglot is not beside the repository"
)
def test_minimal_protonet_trains_and_evaluates_at_another_way(tmp_path, capsys):
    workdir = tmp_path / "pn"
    argv = [
        "train",
        "omniglot-minimal-protonet",
        "--data-dir",
        str(SHARED),
        "--workdir",
        str(workdir),
        "--set",
        "steps=4",
        "--set",
        "train_way=5",
        "--set",
        "eval_tasks=20",
        "--no-progress",
    ]
    assert main(argv) == 0
    assert "accuracy" in capsys.readouterr().out
    assert main(["eval", str(workdir), "--json", "--n-way", "20", "--tasks", "10"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["config"] == "omniglot-minimal-protonet"
    assert set(result["metrics"]) == {"accuracy"}
    assert 0.0 <= result["metrics"]["accuracy"]["mean"] <= 1.0


def test_paper_config_without_the_full_archives_is_a_clear_error(tmp_path, capsys):
    argv = [
        "train",
        "omniglot-protonet",
        "--data-dir",
        str(tmp_path / "empty"),
        "--workdir",
        str(tmp_path / "run"),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert (
        "images_background.zip is not in" in err and "could not be downloaded from https://" in err
    )
    assert "Traceback" not in err
