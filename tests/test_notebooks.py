"""The quickstart notebook runs top to bottom (with few steps)."""

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"


@pytest.mark.slow
def test_quickstart_executes(monkeypatch):
    monkeypatch.setenv("METAJAX_QUICKSTART_STEPS", "300")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    ).execute()
    outputs = "".join(
        o.get("text", "")
        for cell in nb.cells
        if cell.cell_type == "code"
        for o in cell.get("outputs", [])
    )
    assert "meta-loss: first 100 steps" in outputs and "mse_after_10" in outputs
    assert any(
        "image/png" in o.get("data", {}) for cell in nb.cells for o in cell.get("outputs", [])
    ), "the adaptation plot should render"
    assert os.environ["METAJAX_QUICKSTART_STEPS"] == "300"
