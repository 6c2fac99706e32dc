"""Documentation: every public function is documented, listed in docs/api.md, and the site builds."""

from __future__ import annotations

import importlib.util
import inspect
import re
import subprocess
import sys
from html import unescape
from pathlib import Path

import pytest

import spacon as sp

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
NAMESPACES = {"pp": sp.pp, "tl": sp.tl, "pl": sp.pl, "io": sp.io, "datasets": sp.datasets}


def public_objects():
    for name, module in NAMESPACES.items():
        for attr in module.__all__:
            yield f"{name}.{attr}", getattr(module, attr)


@pytest.mark.parametrize("name,obj", list(public_objects()), ids=lambda v: v if isinstance(v, str) else "")
def test_public_function_documented_and_listed(name, obj):
    doc = inspect.getdoc(obj)
    assert doc and "Examples" in doc or inspect.isclass(obj), f"{name} lacks an Examples section"
    assert f"   {name}\n" in (ROOT / "docs" / "api.md").read_text(), f"{name} missing from docs/api.md"


@pytest.mark.slow
def test_sphinx_builds_without_warnings(tmp_path):
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_nb")
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         str(ROOT / "docs"), str(tmp_path / "html")],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = tmp_path / "html"
    for notebook in NOTEBOOKS:  # each tutorial is a page of the site
        page = html / "generated" / "tutorials" / f"{notebook.stem}.html"
        assert page.is_file(), f"{notebook.name} is not in the site"
    key_page = unescape((html / "generated" / "spacon.Key.html").read_text(encoding="utf-8"))
    for _, key, code, _ in [*key_table.named_keys(), *key_table.derived_keys()]:
        assert f"'{key}'" in key_page and code in key_page, key
    for page in ("scanpy_users", "tutorials", "benchmarks"):
        assert (html / f"{page}.html").is_file(), page


def _load_key_table():
    """docs/_ext/key_table.py, the extension that draws the Key page's tables."""
    spec = importlib.util.spec_from_file_location("key_table", DOCS / "_ext" / "key_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


key_table = _load_key_table()


def test_key_page_lists_every_key_name():
    """The Key page's table is read from `spacon.Key`: every key name, each described."""
    named = {code: (slot, key, text) for slot, key, code, text in key_table.named_keys()}
    expected = {
        f"Key.{slot}.{attr}": (slot, value)
        for slot, names in vars(sp.Key).items()
        if isinstance(names, type) and not slot.startswith("_")
        for attr, value in vars(names).items()
        if isinstance(value, str) and not attr.startswith("_")
    }
    assert {code: row[:2] for code, row in named.items()} == expected
    assert {"obsm", "obsp", "obs", "uns", "layers"} <= {slot for slot, _ in expected.values()}
    undescribed = [code for code, (_, _, text) in named.items() if not text]
    assert not undescribed, f"give these a `#:` comment in spacon/_constants.py: {undescribed}"
    derived = {key for _, key, _, _ in key_table.derived_keys()}
    assert {"spatial_distances", "spatial_neighbors", "connectome_neighbors", "spacon_refined"} <= derived
    # the Key page is drawn with the template that holds the table
    assert ":template: key.rst" in (DOCS / "api.md").read_text()
    assert ".. spacon-key-table::" in (DOCS / "_templates" / "key.rst").read_text()


def test_site_has_tutorials_scanpy_page_and_intersphinx():
    index = (DOCS / "index.md").read_text()
    for page in ("tutorials", "scanpy_users", "benchmarks"):
        assert f"\n{page}\n" in index, f"{page} is not in the index's toctree"
    assert "generated/tutorials/*" in (DOCS / "tutorials.md").read_text()
    conf = (DOCS / "conf.py").read_text()
    assert 'nb_execution_mode = "off"' in conf  # the notebooks are stored without outputs
    for name in ("scanpy", "anndata", "squidpy", "torch"):
        assert f'    "{name}": ("https://' in conf, f"no intersphinx link to {name}"


@pytest.mark.parametrize("name,obj", list(public_objects()), ids=lambda v: v if isinstance(v, str) else "")
def test_docstrings_cite_what_users_have(name, obj):
    """Not the repository's benchmarks/ (not installed): the site's benchmarks page."""
    doc = inspect.getdoc(obj) or ""
    assert "benchmarks/" not in doc, f"{name} cites a file of the repository's benchmarks/"
    for page in re.findall(r":doc:`/?([\w/]+)`", doc):
        assert (DOCS / f"{page}.md").is_file(), f"{name} links to a missing page {page!r}"
