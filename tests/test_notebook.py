"""The training notebook runs top to bottom (nbclient) on the EMOTIC-format fixture it generates."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO_ROOT / "emonet-training-from-scratch.ipynb"
KERNEL_NAME = "emonet-test-python"


def _install_kernelspec(root: Path) -> None:
    """A kernelspec running this interpreter (the venv), found through JUPYTER_PATH: works on a fresh CI
    machine where no kernel was ever installed, and never picks another Python."""
    spec_dir = root / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "emonet test kernel",
        "language": "python",
        "env": {"PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                "PYDEVD_DISABLE_FILE_VALIDATION": "1"},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))


def test_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and "DATA_ROOT" in tagged[0].source and "EPOCHS" in tagged[0].source


def test_notebook_executes_on_generated_fixture(tmp_path, monkeypatch):
    _install_kernelspec(tmp_path / "jupyter")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    out = tmp_path / "out"
    # Like papermill: an injected cell after the parameters cell overrides them.
    injected = nbformat.v4.new_code_cell(
        f"DATA_ROOT = {str(tmp_path / 'no_such_dataset')!r}\nOUTPUT_DIR = {str(out)!r}\nDEVICE = 'cpu'\n"
        "EPOCHS = 2\nIMAGE_SIZE = 64\nLIMIT = 16\nARCH = 'resnet18_dual_head'",
        metadata={"tags": ["injected-parameters"]},
    )
    nb.cells.insert(index + 1, injected)
    started = time.perf_counter()
    client = nbclient.NotebookClient(nb, kernel_name=KERNEL_NAME, timeout=300,
                                     resources={"metadata": {"path": str(REPO_ROOT)}})
    client.execute()
    elapsed = time.perf_counter() - started
    text = "\n".join(
        o.get("text", "") if o.get("output_type") == "stream" else str(o.get("data", {}).get("text/plain", ""))
        for c in nb.cells if c.cell_type == "code" for o in c.outputs
    )
    assert "not found: using the EMOTIC-format fixture" in text
    assert (out / "emotic_fixture" / "annot_arrs_train.csv").is_file()
    for name in ("best.pth", "last.pth", "log.csv", "curves.png", "curves_all.png", "training_state.pt"):
        assert (out / name).is_file(), name
    assert "test: mAP" in text
    images = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert images >= 4  # samples, augmentation, curves, V/A scatter
    assert elapsed < 240, f"notebook took {elapsed:.0f}s"
