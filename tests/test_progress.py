"""Progress bars: no TqdmWarning in Jupyter, no bar redraws in a log file."""

from __future__ import annotations

import io

import pytest

from spacon._progress import tqdm


def test_no_bar_when_the_stream_is_not_a_terminal():
    log = io.StringIO()
    bar = tqdm(range(50), file=log, desc="epochs")
    assert bar.disable
    for _ in bar:
        pass
    assert log.getvalue() == ""  # a log file gets no redraws


def test_bar_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    term = Terminal()
    for _ in tqdm(range(3), file=term, desc="epochs"):
        pass
    assert "epochs" in term.getvalue()
    assert tqdm(range(3), file=term, disable=True).disable


@pytest.mark.slow
def test_import_in_a_jupyter_kernel_prints_no_tqdm_warning():
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    book = nbformat.v4.new_notebook()
    book.cells = [
        nbformat.v4.new_code_cell("import spacon"),
        nbformat.v4.new_code_cell(
            "from spacon._progress import tqdm\nfor _ in tqdm(range(3), desc='steps'): pass"
        ),
    ]
    nbclient.NotebookClient(book, timeout=120, kernel_name="python3").execute()
    text = "\n".join(str(out) for cell in book.cells for out in cell.outputs)
    assert "IProgress" not in text and "TqdmWarning" not in text
