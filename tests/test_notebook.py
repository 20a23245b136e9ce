"""CI runs the Kaggle notebook headless on the synthetic data and checks the submission it writes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pandas as pd
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

from test_predict import trained_checkpoint

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "kaggle_submission.ipynb"


def kernel_of_this_interpreter(folder: Path) -> KernelManager:
    """A kernel running sys.executable, from a throw-away kernelspec: works in a fresh clone where no
    kernel was ever registered, and never picks up another environment's `python3` kernel."""
    spec = folder / "kernels" / "birdclef-test"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "birdclef test", "language": "python"}))
    specs = KernelSpecManager(kernel_dirs=[str(folder / "kernels")])
    return KernelManager(kernel_name="birdclef-test", kernel_spec_manager=specs)


def cell_text(cell) -> str:
    return "".join(out.get("text", "") for out in cell.get("outputs", []))


def test_notebook_writes_a_valid_submission(tiny_dataset, tmp_path, monkeypatch):
    ckpt = trained_checkpoint(tiny_dataset)
    out = tmp_path / "working" / "submission.csv"
    # The kernel inherits this environment; the default backend (onnx) exports the checkpoint on the fly.
    monkeypatch.setenv("BIRDCLEF_PIPELINE", str(tmp_path / "no-wheels-needed"))
    monkeypatch.setenv("BIRDCLEF_CKPTS", str(ckpt))
    monkeypatch.setenv("BIRDCLEF_SOUNDSCAPES", str(tiny_dataset / "test_soundscapes"))
    monkeypatch.setenv("BIRDCLEF_OUT", str(out))
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # where the kernel's on-the-fly export goes

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(notebook, km=kernel_of_this_interpreter(tmp_path), timeout=300,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()

    sample = pd.read_csv(tiny_dataset / "sample_submission.csv")
    submission = pd.read_csv(out)
    assert list(submission.columns) == list(sample.columns)
    assert submission["row_id"].tolist() == sample["row_id"].tolist()
    assert submission.iloc[:, 1:].apply(lambda col: col.between(0, 1).all()).all()

    cells = {cell.get("id"): cell for cell in notebook.cells}
    assert "install skipped" in cell_text(cells["install"])  # the dev environment is left alone
    assert "projected for 700 soundscapes" in cell_text(cells["budget"])
