"""Writes Lake-format one-shot runs for the minimal setting, then evaluates a run on them.

Lake et al.'s official runs (``all_runs.zip``) use the evaluation alphabets, which the minimal
setting does not have here. This builds the same benchmark (20 runs, each 20-way 1-shot
within one alphabet) from the small2 alphabets that small1 lacks, which a ``minimal1`` run
never saw, and evaluates with ``metajax eval --omniglot-runs``.

    python experiments/minimal_one_shot_runs.py RUN_DIR [--data-dir ../shared/data/omniglot]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from metajax.cli import main
from metajax.datasets.download import data_dir
from metajax.datasets.omniglot_runs import write_runs

ALPHABETS = ("Sanskrit", "Japanese_(katakana)")  # Tagalog has only 17 characters


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir")
    parser.add_argument("--data-dir")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    archive = data_dir(args.data_dir) / "images_background_small2.zip"
    with tempfile.TemporaryDirectory() as tmp:
        write_runs(archive, ALPHABETS, Path(tmp), args.runs, args.seed)
        return main(["eval", args.workdir, "--omniglot-runs", tmp] + ["--json"] * args.json)


if __name__ == "__main__":
    sys.exit(run())
