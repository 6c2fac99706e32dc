"""Sphinx configuration of the spacon documentation."""

from importlib.metadata import version as _version

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
]
autosummary_generate = True
autodoc_typehints = "description"
autodoc_member_order = "bysource"
napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_rtype = False
myst_enable_extensions = ["colon_fence", "dollarmath"]
nb_execution_mode = "off"
intersphinx_mapping = {}
nitpicky = False
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
html_theme = "furo"
html_title = "spacon"
suppress_warnings = ["myst.header"]
