"""Documentation: every public function is documented, listed in docs/api.md, and the site builds."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import spacon as sp

ROOT = Path(__file__).parents[1]
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
