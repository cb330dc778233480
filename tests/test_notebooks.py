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


SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "omniglot"


@pytest.mark.slow
@pytest.mark.skipif(
    not SHARED.exists(), reason="../shared/data/omniglot is not beside the repository"
)
def test_fewshot_omniglot_executes(tmp_path, monkeypatch):
    monkeypatch.setenv("METAJAX_FEWSHOT_STEPS", "20")
    monkeypatch.setenv("METAJAX_DATA_DIR", str(SHARED))
    monkeypatch.setenv("METAJAX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    path = NOTEBOOK.parent / "fewshot_omniglot.ipynb"
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    text = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    assert "meta-test:  106 characters" in text and "5-way 1-shot test accuracy" in text
    assert "raw logits shape: (5, 5)" in text
    images = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    assert images == 2, "the episode grid and the predictions should render"


@pytest.mark.slow
def test_neural_processes_executes(monkeypatch):
    monkeypatch.setenv("METAJAX_NP_STEPS", "100")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    path = NOTEBOOK.parent / "neural_processes.ipynb"
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    text = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    assert "CNP: mean log-likelihood" in text and "ConvCNP: mean log-likelihood" in text
    assert "context_log_likelihood" in text and "log_likelihood_context_40" in text
    assert "function samples: (8, 300, 1)" in text
    images = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    assert images == 3, "the tasks, the predictions and the function samples should render"
