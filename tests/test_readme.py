"""The Python examples of README.md run as written, one block after the other."""

from __future__ import annotations

import functools
import io
import re
from pathlib import Path

import matplotlib
import pytest
import scanpy as sc

import spacon as sp

README = Path(__file__).parents[1] / "README.md"
#: A fenced block opened by ```python at the start of a line, up to the closing fence.
_PYTHON_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)


def readme_blocks() -> list[str]:
    """The source of every ```python block of the README, in order."""
    return _PYTHON_BLOCK.findall(README.read_text(encoding="utf-8"))


def test_readme_has_python_examples():
    blocks = readme_blocks()
    assert blocks, "README.md has no ```python block"
    for block in blocks:
        compile(block, str(README), "exec")  # a syntax error fails here, named by the file


@pytest.mark.parametrize(
    "demo_size",
    [
        pytest.param(None, id="as-written", marks=pytest.mark.slow),  # ~25 s on 2 CPU cores
        pytest.param((500, 80), id="small-demo"),
    ],
)
def test_readme_python_blocks_run(demo_size, monkeypatch, tmp_path):
    """Execute the blocks in one namespace, as a user pasting them into a session would.

    ``as-written`` runs them unchanged; ``small-demo`` only makes ``sp.datasets.flatmap``
    smaller (``(n_spots, n_genes)``) so that it takes seconds: every call, argument and
    default is still the README's own. Figures go to matplotlib's Agg backend and no
    window opens.
    """
    import matplotlib.pyplot as plt

    monkeypatch.chdir(tmp_path)  # files the examples write (a saved model) land here
    plt.close("all")
    matplotlib.use("Agg")  # left on: no test of this suite wants a window
    monkeypatch.setattr(plt, "show", lambda *args, **kwargs: None)
    if demo_size is not None:
        n_spots, n_genes = demo_size
        small = functools.partial(sp.datasets.flatmap, n_spots=n_spots, n_genes=n_genes)
        monkeypatch.setattr(sp.datasets, "flatmap", small)
    verbosity, logfile = sc.settings.verbosity, sc.settings.logfile
    sc.settings.verbosity = "info"
    sc.settings.logfile = log = io.StringIO()  # scanpy logs through its own handler
    namespace: dict = {"__name__": "__readme__"}
    try:
        for number, block in enumerate(readme_blocks(), start=1):
            code = compile(block, f"README.md, python block {number}", "exec")
            exec(code, namespace)  # noqa: S102 - the README's own examples
    finally:
        plt.close("all")
        sc.settings.verbosity, sc.settings.logfile = verbosity, logfile
    adata = namespace.get("adata")
    assert adata is not None and sp.Key.obs.domains in adata.obs
    # the one-liner ran on the demo's signed functional connectivity, without a threshold
    assert "negative weights of `fc`" in log.getvalue()


def test_distribution_name_is_not_the_published_spacon():
    """PyPI's `spacon` is the published implementation: this one installs under another
    name (the module stays `spacon`), and every install hint says that name."""
    import importlib.metadata
    import tomllib

    root = README.parent
    name = tomllib.loads((root / "pyproject.toml").read_text())["project"]["name"]
    assert name != "spacon"
    assert sp.__version__ == importlib.metadata.version(name)  # what __init__ and --version read
    for doc in (README, root / "docs" / "installation.md"):
        text = " ".join(doc.read_text(encoding="utf-8").split())  # lines joined
        assert f"pip install {name}" in text, doc.name
        assert re.search(r"cannot (share an|live in one) environment", text), doc.name
    # an install hint naming the other distribution would install the other package
    wrong = re.compile(r"pip install ['\"]?spacon(?![-\w])")
    allowed = "`pip install spacon` gets the published implementation"
    offenders = []
    for path in [README, *root.glob("docs/**/*.md"), *root.glob("src/spacon/**/*.py")]:
        for line in path.read_text(encoding="utf-8").splitlines():
            if wrong.search(line) and allowed not in line and "installs that one" not in line:
                offenders.append(f"{path.relative_to(root)}: {line.strip()}")
    assert not offenders, f"say `pip install {name}...`, not `spacon`:\n" + "\n".join(offenders)
