"""Lake et al.'s 20-way within-alphabet one-shot classification runs (Science 2015).

The official Omniglot repository ships them as ``python/one-shot-classification/all_runs.zip``:
twenty runs ``run01`` ... ``run20``, each with one training image per class
(``training/class01.png`` ... ``class20.png``), twenty test images (``test/item01.png`` ...)
and ``class_labels.txt``, whose lines pair a test image with its training image::

    run01/test/item01.png run01/training/class12.png

A run is one 20-way 1-shot episode drawn from a single evaluation alphabet. The figure reported
is the error rate averaged over the 20 runs; people make 4.5% errors (Lake et al. 2015,
Fig. 4).
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from metajax.datasets.download import DataFileError
from metajax.errors import InputError

URL = (
    "https://github.com/brendenlake/omniglot/raw/master/python/one-shot-classification/all_runs.zip"
)
HUMAN_ERROR_RATE = 0.045
_LABELS = re.compile(r"(?:^|/)(run\d+)/class_labels\.txt$")


@dataclasses.dataclass(frozen=True)
class OneShotRun:
    """One run: raw images as the archive holds them (uint8, 255 = background).

    Attributes:
      name: ``run01`` ... ``run20``.
      support_x: ``[20, H, W]`` training images, one per class, in class-file order.
      support_y: ``[20]`` labels ``0 .. 19`` (``classKK.png`` is label ``KK - 1`` in order).
      query_x: ``[20, H, W]`` test images, in ``class_labels.txt`` order.
      query_y: ``[20]`` the label of each test image's class.
    """

    name: str
    support_x: np.ndarray
    support_y: np.ndarray
    query_x: np.ndarray
    query_y: np.ndarray


class _Files:
    """Read access to a folder or a zip by '/'-separated relative names."""

    def __init__(self, path: Path):
        self.path = path
        if path.is_dir():
            self.names = [p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()]
            self.read = lambda name: (path / name).read_bytes()
        else:
            try:
                zf = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError) as err:
                raise DataFileError(
                    f"{path} is not a readable zip ({err}). Pass all_runs.zip from {URL} "
                    "or its unzipped folder."
                ) from err
            self.names = zf.namelist()
            self.read = zf.read


def _image(files: _Files, name: str) -> np.ndarray:
    from PIL import Image

    try:
        data = files.read(name)
    except (KeyError, FileNotFoundError) as err:
        raise DataFileError(f"{files.path}: missing {name}, named in class_labels.txt.") from err
    return np.asarray(Image.open(io.BytesIO(data)).convert("L"))


def load_one_shot_runs(path: str | os.PathLike) -> list[OneShotRun]:
    """Reads Lake's one-shot runs from ``all_runs.zip`` or its unzipped folder.

    Args:
      path: the zip, or a folder holding ``run01`` ... (directly or one level down).

    Returns:
      The runs, sorted by name.

    Raises:
      DataFileError: the path is missing, holds no runs, or a run is incomplete.
    """
    path = Path(path)
    if not path.exists():
        raise DataFileError(
            f"No one-shot runs at {path}. Download all_runs.zip from {URL} and pass the zip "
            "or the folder it unzips to."
        )
    files = _Files(path)
    label_files = sorted(n for n in files.names if _LABELS.search(n))
    if not label_files:
        raise DataFileError(
            f"{path} holds no runNN/class_labels.txt. Pass all_runs.zip from {URL} or the "
            "folder it unzips to (run01 ... run20)."
        )
    runs = []
    for label_file in label_files:
        run = _LABELS.search(label_file).group(1)
        root = label_file[: -len(f"{run}/class_labels.txt")]
        pairs = [
            line.split() for line in files.read(label_file).decode().splitlines() if line.strip()
        ]
        if any(len(p) != 2 for p in pairs):
            raise DataFileError(
                f"{path}: {label_file} must hold lines 'runNN/test/itemMM.png "
                "runNN/training/classKK.png'."
            )
        classes = sorted({train for _, train in pairs})
        label_of = {c: i for i, c in enumerate(classes)}
        runs.append(
            OneShotRun(
                name=run,
                support_x=np.stack([_image(files, root + c) for c in classes]),
                support_y=np.arange(len(classes), dtype=np.int32),
                query_x=np.stack([_image(files, root + test) for test, _ in pairs]),
                query_y=np.array([label_of[train] for _, train in pairs], np.int32),
            )
        )
    return runs


def one_shot_error_rates(
    predict: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
    runs: Sequence[OneShotRun],
) -> np.ndarray:
    """The error rate of a few-shot learner on each run.

    Args:
      predict: ``predict(support_x, support_y, query_x) -> logits`` on raw images, such as
        ``metajax.load(workdir).predict``.
      runs: from `load_one_shot_runs`.

    Returns:
      ``[len(runs)]`` fractions of misclassified test images.

    Example:
      >>> run = OneShotRun("run01", np.eye(2)[:, :, None], np.arange(2), np.eye(2)[:, :, None],
      ...                  np.array([1, 0]))
      >>> one_shot_error_rates(lambda sx, sy, qx: np.eye(2), [run])  # predicts 0, 1
      array([1.])
    """
    rates = []
    for run in runs:
        logits = np.asarray(predict(run.support_x, run.support_y, run.query_x))
        if logits.shape != (len(run.query_y), len(run.support_y)):
            raise InputError(
                f"{run.name}: the learner returned logits of shape {logits.shape}, expected "
                f"{(len(run.query_y), len(run.support_y))} for a {len(run.support_y)}-way run."
            )
        rates.append(float(np.mean(logits.argmax(-1) != run.query_y)))
    return np.array(rates)


def write_runs(
    archive: str | os.PathLike,
    alphabets: Sequence[str],
    folder: str | os.PathLike,
    num_runs: int = 20,
    seed: int = 0,
) -> dict[str, tuple[list[str], list[str]]]:
    """Writes runs in the layout of ``all_runs.zip`` from an Omniglot archive's alphabets.

    For a setting without Lake's runs (the minimal one, say), this builds the same benchmark
    from held-out alphabets: per run one alphabet (taken in turn), 20 of its characters, one
    drawer's image for training and another's for test, the archive's PNGs unchanged.

    Args:
      archive: an Omniglot zip (``images_background_small2.zip``, ...).
      alphabets: the alphabets to draw runs from; each needs at least 20 characters.
      folder: where ``run01`` ... go.
      num_runs: how many runs.
      seed: seeds ``numpy.random.RandomState`` for the choices.

    Returns:
      Per run, ``(classes, items)``: the character of each training class (``class01``
      first) and of each test item (``item01`` first).
    """
    rng = np.random.RandomState(seed)
    folder = Path(folder)
    with zipfile.ZipFile(archive) as zf:
        pngs = [n.split("/") for n in zf.namelist() if n.endswith(".png")]
        drawings: dict[str, dict[str, list[str]]] = {}
        for parts in pngs:
            if len(parts) == 4:
                drawings.setdefault(parts[1], {}).setdefault(parts[2], []).append("/".join(parts))
        truth = {}
        for r in range(num_runs):
            alphabet = alphabets[r % len(alphabets)]
            characters = sorted(drawings.get(alphabet, {}))
            if len(characters) < 20:
                raise InputError(
                    f"write_runs: alphabet {alphabet!r} has {len(characters)} characters in "
                    f"{archive}; a run needs 20."
                )
            run = f"run{r + 1:02d}"
            chosen = [characters[i] for i in rng.choice(len(characters), 20, replace=False)]
            order = rng.permutation(20)  # test item m shows class order[m]
            for sub in ("training", "test"):
                (folder / run / sub).mkdir(parents=True, exist_ok=True)
            for k, character in enumerate(chosen):
                files = sorted(drawings[alphabet][character])
                a, b = rng.choice(len(files), 2, replace=False)
                m = int(np.flatnonzero(order == k)[0])
                (folder / run / "training" / f"class{k + 1:02d}.png").write_bytes(zf.read(files[a]))
                (folder / run / "test" / f"item{m + 1:02d}.png").write_bytes(zf.read(files[b]))
            lines = [
                f"{run}/test/item{m + 1:02d}.png {run}/training/class{order[m] + 1:02d}.png"
                for m in range(20)
            ]
            (folder / run / "class_labels.txt").write_text("\n".join(lines) + "\n")
            truth[run] = (chosen, [chosen[order[m]] for m in range(20)])
    return truth
