"""Shared test helpers."""

import os

# Tests run on the CPU; keep XLA from grabbing every core's thread pool twice over.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import zipfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

SHARED_OMNIGLOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "omniglot"


def write_one_shot_runs(
    folder: Path, num_runs: int, seed: int = 0
) -> dict[str, tuple[list[str], list[str]]]:
    """Writes runs in the layout of Lake et al.'s ``all_runs.zip`` from the small2 alphabets
    that small1 lacks (unseen by the minimal1 configs): per run, one alphabet, 20 characters,
    one drawer's image for training and another's for test, the raw archive PNGs unchanged.

    Returns, per run, ``(classes, items)``: the character of each training class
    (``class01`` first) and of each test item (``item01`` first), so that tests can check
    the labels a loader derives.
    """
    rng = np.random.RandomState(seed)
    with zipfile.ZipFile(SHARED_OMNIGLOT / "images_background_small2.zip") as zf:
        pngs = [n for n in zf.namelist() if n.endswith(".png")]
        alphabets = ["Japanese_(katakana)", "Sanskrit"]  # >= 20 characters each
        truth = {}
        for r in range(1, num_runs + 1):
            run = f"run{r:02d}"
            alphabet = alphabets[r % 2]
            characters = sorted({n.split("/")[2] for n in pngs if n.split("/")[1] == alphabet})
            chosen = [characters[i] for i in rng.choice(len(characters), 20, replace=False)]
            order = rng.permutation(20)  # test item m shows class order[m]
            lines = []
            for k, character in enumerate(chosen):
                drawings = sorted(n for n in pngs if f"/{alphabet}/{character}/" in n)
                a, b = rng.choice(len(drawings), 2, replace=False)
                m = int(np.flatnonzero(order == k)[0])
                for sub, name, src in (
                    ("training", f"class{k + 1:02d}.png", drawings[a]),
                    ("test", f"item{m + 1:02d}.png", drawings[b]),
                ):
                    (folder / run / sub).mkdir(parents=True, exist_ok=True)
                    (folder / run / sub / name).write_bytes(zf.read(src))
            for m in range(20):
                lines.append(
                    f"{run}/test/item{m + 1:02d}.png {run}/training/class{order[m] + 1:02d}.png"
                )
            (folder / run / "class_labels.txt").write_text("\n".join(lines) + "\n")
            truth[run] = (chosen, [chosen[order[m]] for m in range(20)])
    return truth


@pytest.fixture
def one_shot_runs(tmp_path):
    """A factory: ``one_shot_runs(num_runs)`` -> (folder, truth); see `write_one_shot_runs`."""
    if not (SHARED_OMNIGLOT / "images_background_small2.zip").exists():
        pytest.skip("../shared/data/omniglot is not beside the repository")

    def make(num_runs: int = 2, seed: int = 0):
        folder = tmp_path / "all_runs"
        return folder, write_one_shot_runs(folder, num_runs, seed)

    return make
