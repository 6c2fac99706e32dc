"""Sphinx configuration of the spacon documentation."""

import shutil
import sys
import zlib
from importlib.metadata import version as _version
from pathlib import Path

_DOCS = Path(__file__).parent
sys.path.insert(0, str(_DOCS / "_ext"))  # key_table: the Key page's tables

project = "spacon"
author = "spacon developers"
copyright = "2026, spacon developers"
release = _version("spacon-sc")  # the distribution name; the module is `spacon`

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "key_table",
]
autosummary_generate = True
autodoc_typehints = "description"
autodoc_member_order = "bysource"
napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_rtype = False
myst_enable_extensions = ["colon_fence", "dollarmath"]
nb_execution_mode = "off"
templates_path = ["_templates"]

_GENERATED = _DOCS / "generated"  # git-ignored, like autosummary's pages
_GENERATED.mkdir(exist_ok=True)

# The tutorials live in notebooks/ (stored without outputs, and not executed here: see
# nb_execution_mode); Sphinx reads only below docs/, so each build copies them in.
(_GENERATED / "tutorials").mkdir(exist_ok=True)
for _notebook in sorted((_DOCS.parent / "notebooks").glob("*.ipynb")):
    shutil.copyfile(_notebook, _GENERATED / "tutorials" / _notebook.name)

# Links into the docs of the packages spacon works with. Each inventory is fetched from the
# web; without a network (CI) the empty local one is read instead, so an offline build still
# passes `-W` (the names then show as plain code, without links).
_OFFLINE_INVENTORY = _GENERATED / "offline_objects.inv"
_OFFLINE_INVENTORY.write_bytes(
    b"# Sphinx inventory version 2\n# Project: none\n# Version: \n"
    b"# The remainder of this file is compressed using zlib.\n" + zlib.compress(b"")
)
_OFFLINE = (None, str(_OFFLINE_INVENTORY))
intersphinx_mapping = {
    "python": ("https://docs.python.org/3/", _OFFLINE),
    "anndata": ("https://anndata.readthedocs.io/en/stable/", _OFFLINE),
    "scanpy": ("https://scanpy.readthedocs.io/en/stable/", _OFFLINE),
    "squidpy": ("https://squidpy.readthedocs.io/en/stable/", _OFFLINE),
    "torch": ("https://pytorch.org/docs/stable/", _OFFLINE),
    "numpy": ("https://numpy.org/doc/stable/", _OFFLINE),
    "scipy": ("https://docs.scipy.org/doc/scipy/", _OFFLINE),
    "pandas": ("https://pandas.pydata.org/docs/", _OFFLINE),
}
intersphinx_timeout = 10
nitpicky = False
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
html_theme = "furo"
html_title = "spacon"
suppress_warnings = ["myst.header"]

