"""Sphinx configuration for hmnumba (minimal).

Build: ``python3 -m pip install -e ".[docs]" && python3 -m sphinx -b html docs docs/_build/html``
"""

import os
import sys

# Build from a checkout even without `pip install -e .`.
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

project = "hmnumba"
author = "hmnumba developers"
try:
    from hmnumba import __version__ as release
except Exception:  # docs of a half-installed tree still build
    release = "unknown"
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
]

# Optional extensions: the docs build (with fewer features) without them.
for _ext in ("numpydoc", "myst_parser"):
    try:
        __import__(_ext)
    except ImportError:
        continue
    extensions.append(_ext)

source_suffix = {".rst": "restructuredtext"}
if "myst_parser" in extensions:
    source_suffix[".md"] = "markdown"

autosummary_generate = True
numpydoc_show_class_members = False

exclude_patterns = ["_build"]
templates_path = []

try:
    import pydata_sphinx_theme  # noqa: F401

    html_theme = "pydata_sphinx_theme"
except ImportError:
    html_theme = "alabaster"
html_title = f"hmnumba {release}"
