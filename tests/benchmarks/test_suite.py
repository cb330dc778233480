"""The benchmark suite's own machinery, on the smallest workload: its workers run, report
every field, and the two JAX implementations start from the same meta-loss."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_suite_measures_metajax_and_plain_jax_on_the_same_meta_batch(tmp_path):
    record = tmp_path / "suite.jsonl"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.suite",
            "--workloads",
            "e",
            "--impls",
            "metajax,jax",
            "--steps",
            "1",
            "--record",
            str(record),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in record.read_text().splitlines()]
    assert [r["impl"] for r in rows] == ["metajax", "jax"]
    for row in rows:
        assert "error" not in row, row
        for field in ("tasks_per_s", "steps_per_s", "compile_s", "peak_rss_mb", "gflops_per_s"):
            assert row[field] > 0, (field, row)
        assert row["tasks_per_s"] == pytest.approx(25 * row["steps_per_s"])
    # Same data, same initial weights: the same step-0 meta-loss (the peers' check).
    assert rows[0]["meta_loss_0"] == pytest.approx(rows[1]["meta_loss_0"], rel=1e-5)
    assert "workload e: metajax tasks/s against jax" in proc.stdout
