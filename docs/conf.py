"""Sphinx configuration for hmnumba.

Build (what ``.ci/run`` does, warnings are errors)::

    python3 -m pip install -e ".[docs]"
    python3 -m sphinx -W -b html docs docs/_build/html
    python3 -m sphinx -W -b doctest docs docs/_build/doctest

The second command executes every example: the ``>>>`` blocks of the guide
pages and of every docstring that the API reference pulls in through
autodoc (numpydoc "Examples" sections), plus the ``testcode`` blocks of the
guide pages. A failing example fails the build.
"""

import os
import sys

# The examples run as the test suite runs them (conftest.py): numba's CUDA
# simulator is on, so examples that move a matrix to ``"cuda"`` run on the
# CPU without a GPU ("auto" never picks the simulator). It must be set before
# numba is first imported.
os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

# Build from a checkout even without `pip install -e .`.
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

project = "hmnumba"
author = "hmnumba developers"
copyright = "hmnumba developers"
from hmnumba import __version__ as release  # noqa: E402  (a broken import must fail the build)

version = release

# numba flags features hmnumba uses (first-class functions) as experimental;
# in the doctest output that is noise (setup.cfg filters it for pytest too).
import warnings  # noqa: E402

from numba.core.errors import NumbaExperimentalFeatureWarning  # noqa: E402

warnings.filterwarnings("ignore", category=NumbaExperimentalFeatureWarning)

# Some examples compress small or random matrices on purpose; their
# CompressionWarning is noise here (setup.cfg filters it for pytest too; the
# warning's own example records it whatever this filter says).
from hmnumba.exceptions import CompressionWarning  # noqa: E402

warnings.filterwarnings("ignore", category=CompressionWarning)

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]
templates_path = ["_templates"]

# --- API reference -----------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "none"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
# numpydoc turns "Examples" into a rubric followed by ordinary doctest
# blocks, which the doctest builder below runs.
numpydoc_use_plots = False
numpydoc_xref_param_type = False

# --- Examples are executed (``sphinx-build -b doctest``) --------------------
# Every page is one doctest group; its examples share a namespace, like one
# interactive session. The numba CUDA simulator is left off: CUDA examples are
# written so that they run on the CPU backend (or skip) without a GPU.
doctest_global_setup = """
import numpy as np
"""
doctest_test_doctest_blocks = "default"

# --- Markdown (docs/benchmarks.md) ------------------------------------------
myst_heading_anchors = 3

# --- HTML --------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"hmnumba {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
}
html_static_path = []


def _skip_member(app, what, name, obj, skip, options):
    # scikit-learn adds ``set_<method>_request`` (metadata routing) to every
    # estimator class; they are scikit-learn's API, documented there.
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_member)
