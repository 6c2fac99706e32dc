"""The tutorials in notebooks/ execute top to bottom (on smaller data) and are stored clean."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


def test_tutorials_exist():
    names = {path.name for path in NOTEBOOKS}
    assert {"tutorial_1_flatmap.ipynb", "tutorial_2_osmfish.ipynb"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_has_no_stored_outputs(path):
    book = json.loads(path.read_text())
    for cell in book["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("SPACON_TUTORIAL_QUICK", "1")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # Jupyter's own inline backend
    book = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        book, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()
    code = [cell for cell in book.cells if cell.cell_type == "code"]
    text = "\n".join(out.get("text", "") for cell in code for out in cell.outputs)
    assert "ARI" in text
    assert "IProgress" not in text and "TqdmWarning" not in text
    # every cell that plots shows its figure, once (no figure drawn twice, none missing)
    for cell in code:
        images = sum("image/png" in out.get("data", {}) for out in cell.outputs)
        plots = "sp.pl." in cell.source
        assert images == int(plots), (cell.source, images)
