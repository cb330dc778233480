"""Issue 5's tables: the optimization-based family on sinusoid regression and on the Omniglot
minimal setting, one `metajax train` run per row, then one Markdown table.

    python experiments/family_table.py sinusoid [--root runs/family] [--only maml,reptile]
    python experiments/family_table.py omniglot --data-dir ../shared/data/omniglot
    python experiments/family_table.py ablation --data-dir ../shared/data/omniglot

Each run writes ``results.json`` in its workdir (``ROOT/TABLE/ROW``); a row whose results
already exist is not rerun, so a table fills in over several sittings and the printed table
always comes from the saved files. Wall time, peak RSS and the load average before each run
are recorded next to them (``run.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SINUSOID = [
    (f"{alg} K={k}", f"sinusoid-{alg}", [f"k_shot={k}"])
    for k in (5, 10)
    for alg in ("maml", "fomaml", "reptile", "metasgd", "anil", "imaml")
]
OMNIGLOT = [
    (alg, f"omniglot-minimal-{alg}", [])
    for alg in ("maml", "fomaml", "reptile", "metasgd", "anil", "imaml", "mamlpp", "protonet")
]
# MAML++'s switches added one at a time to plain MAML, on omniglot-minimal-mamlpp's setting.
_OFF = ["multi_step_loss=false", "first_order_steps=0", "per_step_bn=false", "lslr=false",
        "lr_schedule=constant"]  # fmt: skip
ABLATION = [
    ("MAML (all off)", "omniglot-minimal-mamlpp", _OFF),
    ("+ multi-step loss", "omniglot-minimal-mamlpp", ["multi_step_loss=true", *_OFF[1:]]),
    ("+ derivative-order annealing", "omniglot-minimal-mamlpp",
     ["per_step_bn=false", "lslr=false", "lr_schedule=constant"]),
    ("+ per-step BN weights", "omniglot-minimal-mamlpp", ["lslr=false", "lr_schedule=constant"]),
    ("+ LSLR", "omniglot-minimal-mamlpp", ["lr_schedule=constant"]),
    ("+ cosine meta-lr (MAML++)", "omniglot-minimal-mamlpp", []),
]  # fmt: skip
TABLES = {"sinusoid": SINUSOID, "omniglot": OMNIGLOT, "ablation": ABLATION}


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in label.lower()).strip("-")


def run_row(workdir: Path, config: str, overrides: list[str], data_dir: str | None) -> None:
    argv = ["metajax", "train", config, "--workdir", str(workdir), "--no-progress"]
    if data_dir:
        argv += ["--data-dir", data_dir]
    for assignment in overrides:
        argv += ["--set", assignment]
    load = os.getloadavg()[0]
    print("$", " ".join(argv), f"(load average {load:.2f})", flush=True)
    t0 = time.perf_counter()
    child = subprocess.Popen(argv)
    _, status, usage = os.wait4(child.pid, 0)  # this child's own peak RSS
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status):
        sys.exit(f"{config} failed ({os.waitstatus_to_exitcode(status)}); see its output above.")
    record = {"argv": argv, "wall_s": round(wall, 1), "load_before": round(load, 2),
              "peak_rss_mb": round(usage.ru_maxrss / 1024)}  # fmt: skip
    (workdir / "run.json").write_text(json.dumps(record, indent=1) + "\n")


def _cell(metric: dict) -> str:
    diverged = f" ({metric['nonfinite']} tasks diverged)" if metric.get("nonfinite") else ""
    return f"{metric['mean']:.3f} +/- {metric['ci95']:.3f}{diverged}"


def table(rows, root: Path) -> str:
    lines = []
    for label, config, overrides in rows:
        workdir = root / _slug(label)
        if not (workdir / "results.json").exists():
            continue
        result = json.loads((workdir / "results.json").read_text())
        run = (
            json.loads((workdir / "run.json").read_text())
            if (workdir / "run.json").exists()
            else {}
        )
        metrics = result["metrics"]
        if "accuracy" in metrics:
            acc = metrics["accuracy"]
            cells = [f"{100 * acc['mean']:.1f}% +/- {100 * acc['ci95']:.1f}"]
        else:
            cells = [_cell(metrics[k]) for k in ("mse_after_0", "mse_after_1", "mse_after_10")]
        setting = " ".join(f"`{o}`" for o in overrides)
        lines.append(
            f"| {label} | `{config}` {setting} | {' | '.join(cells)} | {result['step']:,} | "
            f"{result['train_s']:.0f} s | {run.get('wall_s', float('nan')):.0f} s | "
            f"{run.get('load_before', float('nan')):.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", choices=sorted(TABLES))
    parser.add_argument("--root", default="runs/family")
    parser.add_argument("--data-dir")
    parser.add_argument("--only", help="comma-separated row labels or configs to run")
    parser.add_argument("--print-only", action="store_true", help="do not run missing rows")
    args = parser.parse_args()
    rows = TABLES[args.table]
    root = Path(args.root) / args.table
    wanted = set(args.only.split(",")) if args.only else None
    for label, config, overrides in rows:
        workdir = root / _slug(label)
        if args.print_only or (workdir / "results.json").exists():
            continue
        if wanted and label not in wanted and config not in wanted:
            continue
        run_row(workdir, config, overrides, args.data_dir)
    print(table(rows, root))


if __name__ == "__main__":
    main()
