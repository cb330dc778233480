"""Image completion tasks: every pixel once, coordinates and values that match the image,
disjoint context and targets, and the completion configs through the command line."""

from pathlib import Path

import jax
import numpy as np
import pytest

from metajax.cli import main
from metajax.core.types import sample_tasks
from metajax.datasets.images import ClassImages
from metajax.errors import InputError
from metajax.tasks.completion import ImageCompletion, pixel_coordinates


def _data():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (3, 5, 6, 1), dtype=np.uint8) for _ in range(4)]
    return ClassImages.from_lists(images, list("abcd"), ["g"] * 4), images


def test_each_task_is_one_image_with_every_pixel_once():
    data, images = _data()
    dist = ImageCompletion(data, min_context=2, max_context=12)
    tasks = jax.jit(lambda k: sample_tasks(dist, k, 200))(jax.random.key(0))
    tasks = jax.tree.map(np.asarray, tasks)  # checked on the host: no per-task device ops
    for i in range(20):
        task = jax.tree.map(lambda a, i=i: a[i], tasks)
        context, targets = np.asarray(task.support.mask), np.asarray(task.query.mask)
        n = int(task.info["num_context"])
        assert context.sum() == n and targets.sum() == 30 - n
        x = np.concatenate([task.support.x[context], task.query.x[targets]])
        y = np.concatenate([task.support.y[context], task.query.y[targets]])
        assert len({tuple(p) for p in x.round(4).tolist()}) == 30, "each pixel exactly once"
        image = images[int(task.info["class"])][int(task.info["example"])] / 255.0
        rows = np.round((x[:, 0] + 1) / 2 * 4).astype(int)
        cols = np.round((x[:, 1] + 1) / 2 * 5).astype(int)
        np.testing.assert_allclose(y[:, 0], image[rows, cols, 0], rtol=1e-6)
    sizes = np.asarray(tasks.info["num_context"])
    assert sizes.min() == 2 and sizes.max() == 11
    # The pixel order is random, so the first N points are a random subset.
    first = np.asarray(tasks.support.x[:, 0])
    assert len({tuple(p) for p in first.round(4).tolist()}) > 20


def test_coordinates_and_bad_sizes():
    np.testing.assert_allclose(np.asarray(pixel_coordinates(3, 2))[[0, -1]], [[-1, -1], [1, 1]])
    data, _ = _data()
    with pytest.raises(InputError, match="max_context <= 30 pixels"):
        ImageCompletion(data, max_context=31)


SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "omniglot"


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data/omniglot is not beside the repo")
@pytest.mark.parametrize("algorithm", ["cnp", "anp"])
def test_completion_configs_train_and_plot(algorithm, tmp_path, capsys):
    workdir = tmp_path / "run"
    argv = ["train", f"omniglot-completion-{algorithm}", "--workdir", str(workdir),
            "--data-dir", str(SHARED), "--no-progress", "--set", "steps=4",
            "eval_tasks=4", "steps_per_dispatch=2", "width=16", "meta_batch_size=2",
            "max_context=40", "eval_context_sizes=10,30"]  # fmt: skip
    if algorithm == "anp":
        argv.append("heads=2")
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "log_likelihood_context_10" in out and "log_likelihood_context_30" in out
    assert (workdir / "completion.png").stat().st_size > 10_000


def test_convcnp_is_refused_for_images(tmp_path, capsys):
    argv = ["train", "omniglot-completion-cnp", "--workdir", str(tmp_path / "r"),
            "--set", "algorithm=convcnp"]  # fmt: skip
    assert main(argv) == 2
    assert "convcnp is 1-D here" in capsys.readouterr().err
