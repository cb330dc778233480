"""The CLI on Omniglot: short runs on the real minimal set, `metajax.load`, and the clear error
of a paper-setting config whose full archives are not on this machine."""

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import metajax
from metajax.cli import main
from metajax.datasets import omniglot
from metajax.errors import InputError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "omniglot"
needs_data = pytest.mark.skipif(
    not SHARED.exists(), reason="../shared/data/omniglot is not beside the repository"
)


def _train(config: str, workdir: Path, *assignments: str) -> int:
    """`metajax train CONFIG` on the shared minimal set, with `--set` overrides."""
    argv = ["train", config, "--data-dir", str(SHARED), "--workdir", str(workdir), "--no-progress"]
    for assignment in assignments:
        argv += ["--set", assignment]
    return main(argv)


pytestmark = pytest.mark.usefixtures("offline_data")


@pytest.mark.slow
@needs_data
def test_minimal_protonet_trains_and_evaluates_at_another_way(tmp_path, capsys, monkeypatch):
    import os

    monkeypatch.delenv("METAJAX_DATA_DIR", raising=False)
    workdir = tmp_path / "pn"
    assert (
        _train("omniglot-minimal-protonet", workdir, "steps=4", "train_way=5", "eval_tasks=20") == 0
    )
    assert "accuracy" in capsys.readouterr().out
    # The run records its data folder; eval and load find it without --data-dir.
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["benchmark"]["data_dir"] == str(SHARED.resolve())
    assert "METAJAX_DATA_DIR" not in os.environ
    assert main(["eval", str(workdir), "--json", "--n-way", "20", "--tasks", "10"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["config"] == "omniglot-minimal-protonet"
    assert set(result["metrics"]) == {"accuracy"}
    assert 0.0 <= result["metrics"]["accuracy"]["mean"] <= 1.0


def test_paper_config_without_the_full_archives_is_a_clear_error(tmp_path, capsys):
    argv = ["train", "omniglot-protonet", "--data-dir", str(tmp_path / "empty"),
            "--workdir", str(tmp_path / "run")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert (
        "images_background.zip is not in" in err and "could not be downloaded from https://" in err
    )
    assert "Traceback" not in err


@pytest.mark.slow
@needs_data
def test_load_predicts_from_raw_archive_images(tmp_path, capsys, one_shot_runs):
    workdir = tmp_path / "pn"
    assert (
        _train("omniglot-minimal-protonet", workdir, "steps=30", "train_way=5", "eval_tasks=20")
        == 0
    )
    learner = metajax.load(workdir)
    # Three Tagalog characters (unseen in training), straight from the archive as 1-bit images.
    with zipfile.ZipFile(SHARED / "images_background_small2.zip") as zf:
        names = sorted(
            n for n in zf.namelist() if "/Tagalog/character0" in n and n.endswith(".png")
        )
        raw = {n: np.asarray(Image.open(io.BytesIO(zf.read(n)))) for n in names}
    chars = sorted({n.split("/")[2] for n in names})[:3]
    support = [next(v for n, v in raw.items() if f"/{c}/" in n) for c in chars]
    query = [[v for n, v in raw.items() if f"/{c}/" in n][1] for c in chars]
    assert support[0].dtype == bool and support[0].shape == (105, 105)
    logits = learner.predict(np.stack(support), np.arange(3), np.stack(query))
    assert logits.shape == (3, 3)
    # The learner preprocesses exactly as training did: the same pixels as the cached data set.
    _, test = omniglot.load_split("minimal1", SHARED)
    index = test.names.index(f"Tagalog/{chars[0]}")
    np.testing.assert_array_equal(
        omniglot.preprocess(support[0])[0], np.asarray(test.images[index, 0])
    )
    with pytest.raises(ValueError, match="3 support inputs but 2 labels"):
        learner.predict(np.stack(support), np.arange(2), np.stack(query))
    # Inputs unlike training's are refused with what was expected, never silently mispredicted.
    sx, qx = np.stack(support), np.stack(query)
    as_floats = (~sx).astype(np.float32)  # ink 1.0, "already scaled to [0, 1]"
    with pytest.raises(InputError, match=r"uint8 pixels, 0..255.*scaled to \[0, 1\]"):
        learner.predict(as_floats, np.arange(3), qx)
    with pytest.raises(InputError, match=r"labels 0..C-1, each at least once; got \[-1, 0, 1\]"):
        learner.predict(sx, np.array([-1, 0, 1]), qx)
    with pytest.raises(InputError, match=r"shape \[n\], got shape \[3, 3\] \(one-hot"):
        learner.predict(sx, np.eye(3, dtype=np.int32), qx)
    with pytest.raises(InputError, match=r"integer class indices, got float32"):
        learner.predict(sx, np.arange(3, dtype=np.float32), qx)
    with pytest.raises(InputError, match=r"\[H, W\] or \[n, H, W\] images, got shape"):
        learner.predict(sx, np.arange(3), qx[..., None])

    # Lake's one-shot runs, in their official layout, built from the unseen small2 alphabets.
    runs, _ = one_shot_runs(3)
    capsys.readouterr()
    assert main(["eval", str(workdir), "--omniglot-runs", str(runs)]) == 0
    out = capsys.readouterr().out
    assert "run01" in out and "run03" in out and "people: 4.5%" in out
    assert main(["eval", str(workdir), "--omniglot-runs", str(runs), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    rates = result["metrics"]["run_error_rates"]
    assert len(rates) == 3 and all(0 <= r <= 1 for r in rates)
    assert result["metrics"]["error_rate"]["mean"] == pytest.approx(np.mean(rates))
    # Better than chance (19/20 errors; 3 SD below it over 60 items) after 30 steps.
    assert result["metrics"]["error_rate"]["mean"] < 0.85
    assert main(["eval", str(workdir), "--omniglot-runs", str(tmp_path / "none")]) == 2
    assert "all_runs.zip from https://" in capsys.readouterr().err


@pytest.mark.slow
@needs_data
def test_maml_run_refuses_another_way_at_eval(tmp_path, capsys, one_shot_runs):
    workdir = tmp_path / "fomaml"
    assert (
        _train("omniglot-minimal-fomaml", workdir, "steps=2", "meta_batch_size=2", "eval_tasks=4")
        == 0
    )
    capsys.readouterr()
    assert main(["eval", str(workdir), "--n-way", "20"]) == 2
    assert "n_way=20" in capsys.readouterr().err
    # Lake's runs are 20-way; a 5-way MAML head cannot answer them.
    runs, _ = one_shot_runs(1)
    assert main(["eval", str(workdir), "--omniglot-runs", str(runs)]) == 2
    assert "outputs 5 logits" in capsys.readouterr().err
    assert main(["eval", str(workdir), "--json", "--tasks", "4"]) == 0


FAMILY = ["reptile", "metasgd", "anil", "imaml", "mamlpp"]


@pytest.mark.parametrize(
    "config", [f"{data}-{alg}" for data in ("omniglot", "miniimagenet") for alg in FAMILY]
)
def test_family_paper_configs_stop_at_the_missing_archive_error(tmp_path, capsys, config):
    argv = ["train", config, "--data-dir", str(tmp_path / "empty"),
            "--workdir", str(tmp_path / "run")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "is not in" in err and "Traceback" not in err
    if config.startswith("omniglot"):
        assert "images_background.zip" in err and "could not be downloaded from https://" in err
    else:
        assert "mini-ImageNet's train split" in err and "--data-dir" in err


@needs_data
@pytest.mark.parametrize("alg", FAMILY)
def test_minimal_family_configs_build_a_whole_meta_step(monkeypatch, tmp_path_factory, alg):
    """Each minimal config's meta-step, traced on the real data's shapes (no compilation)."""
    import jax

    from metajax.config import get_config, override
    from metajax.training.trainer import init_state, make_meta_step

    monkeypatch.setenv("METAJAX_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "decoded"))
    config = override(get_config(f"omniglot-minimal-{alg}"), [f"data_dir={SHARED}", "filters=8"])
    exp = config.build()
    state = init_state(exp.learner, exp.optimizer, seed=0)
    step = make_meta_step(exp.learner, exp.train_tasks, config.meta_batch_size)
    new, metrics = jax.eval_shape(step, state)
    assert jax.tree.structure(new.params) == jax.tree.structure(state.params)
    assert metrics["meta_loss"].shape == ()


@needs_data
def test_minimal_mamlpp_trains_and_evaluates_on_real_omniglot(tmp_path, capsys):
    """Two meta-steps of a narrow Conv4 MAML++ (every switch on) on the real minimal set, then
    the test episodes, through the CLI."""
    workdir = tmp_path / "mamlpp"
    small = ["steps=2", "filters=8", "image_size=16", "meta_batch_size=2", "eval_tasks=4"]
    assert _train("omniglot-minimal-mamlpp", workdir, *small) == 0
    assert "accuracy" in capsys.readouterr().out
    metrics = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["step"] == 2 and np.isfinite(metrics[-1]["meta_loss"])
    assert json.loads((workdir / "results.json").read_text())["step"] == 2
