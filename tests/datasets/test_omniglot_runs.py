"""Lake et al.'s one-shot runs: the loader reads the official layout, from a folder or a zip."""

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from metajax.datasets.download import DataFileError
from metajax.datasets.omniglot_runs import load_one_shot_runs, one_shot_error_rates, write_runs


def test_runs_from_a_folder_and_from_the_zip_agree_and_label_correctly(one_shot_runs, tmp_path):
    folder, truth = one_shot_runs(3)
    runs = load_one_shot_runs(folder)
    assert [r.name for r in runs] == ["run01", "run02", "run03"]
    for run in runs:
        assert run.support_x.shape == run.query_x.shape == (20, 105, 105)
        assert run.support_x.dtype == np.uint8 and run.support_x.max() == 255
        np.testing.assert_array_equal(run.support_y, np.arange(20))
        assert sorted(run.query_y.tolist()) == list(range(20))  # one test item per class
        # A test item's label is the class whose training image shows the same character.
        classes, items = truth[run.name]
        assert [classes[label] for label in run.query_y] == items
    # The official zip holds the run folders at its top level.
    archive = shutil.make_archive(str(tmp_path / "all_runs"), "zip", folder)
    for a, b in zip(runs, load_one_shot_runs(archive), strict=True):
        for field in ("support_x", "support_y", "query_x", "query_y"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_a_perfect_and_a_constant_predictor(one_shot_runs):
    folder, _ = one_shot_runs(2)
    runs = load_one_shot_runs(folder)
    by_query = {r.query_x.tobytes(): r.query_y for r in runs}

    def oracle(sx, sy, qx):
        return np.eye(20)[by_query[np.asarray(qx).tobytes()]]

    np.testing.assert_array_equal(one_shot_error_rates(oracle, runs), [0.0, 0.0])
    constant = one_shot_error_rates(lambda sx, sy, qx: np.tile(np.eye(20)[0], (20, 1)), runs)
    np.testing.assert_allclose(constant, [19 / 20, 19 / 20])
    with pytest.raises(ValueError, match=r"logits of shape \(20, 5\), expected \(20, 20\)"):
        one_shot_error_rates(lambda sx, sy, qx: np.zeros((20, 5)), runs)


def test_missing_incomplete_or_foreign_paths_are_clear_errors(one_shot_runs, tmp_path):
    with pytest.raises(DataFileError, match="all_runs.zip from https://"):
        load_one_shot_runs(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFileError, match="holds no runNN/class_labels.txt"):
        load_one_shot_runs(tmp_path / "empty")
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    with pytest.raises(DataFileError, match="not a readable zip"):
        load_one_shot_runs(tmp_path / "bad.zip")
    folder, _ = one_shot_runs(1)
    (folder / "run01" / "test" / "item07.png").unlink()
    with pytest.raises(DataFileError, match="missing run01/test/item07.png"):
        load_one_shot_runs(folder)
    with zipfile.ZipFile(tmp_path / "x.zip", "w") as zf:
        zf.writestr("run01/class_labels.txt", "only-one-path\n")
    with pytest.raises(DataFileError, match="must hold lines"):
        load_one_shot_runs(tmp_path / "x.zip")


def test_write_runs_needs_twenty_characters(one_shot_runs, tmp_path):
    one_shot_runs(1)  # skips without the shared data
    archive = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "omniglot"
    with pytest.raises(ValueError, match="'Tagalog' has 17 characters"):
        write_runs(archive / "images_background_small2.zip", ["Tagalog"], tmp_path / "r", 1)
