"""The documentation covers the public API.

Every name in ``hmnumba.__all__`` and in each public submodule (its
``__all__``, or else the functions and classes it defines whose names do not
start with ``_``) must appear in the API reference (``docs/*.rst``: an
``autosummary`` entry or an ``auto*`` / ``data`` directive), and functions and
classes must have a numpydoc Examples section with at least one ``>>>``
line. The examples themselves run twice: in this test suite
(``--doctest-modules``, setup.cfg) and in the documentation build
(``sphinx-build -b doctest``, ``.ci/run``). This test needs no Sphinx: it
reads the reST sources.

A new public module is covered automatically; a module that is an
implementation detail (its public names re-exported elsewhere, or numba
kernels) goes into ``INTERNAL`` below with the reason.
"""
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import hmnumba

DOCS = Path(__file__).resolve().parent.parent / "docs"

INTERNAL = {
    "hmnumba.hmatrix": "HMatrix is documented as hmnumba.HMatrix",
    "hmnumba.construct": "the adaptive build behind HMatrix.from_dense / from_kernel",
    "hmnumba.kernel_functions": "re-exported by hmnumba.kernels (its __all__)",
    "hmnumba.h2matrix": "H2Matrix is documented as hmnumba.H2Matrix",
    "hmnumba.h2build": "the build behind H2Matrix.from_kernel",
    "hmnumba.h2dense": "the build behind H2Matrix.from_dense",
    "hmnumba.h2schedule": "the schedules of the H2Matrix products",
    "hmnumba.pinn.layers": "re-exported by hmnumba.pinn (its __all__)",
    "hmnumba.pinn.network": "re-exported by hmnumba.pinn (its __all__)",
    "hmnumba.pinn.problems": "re-exported by hmnumba.pinn (its __all__)",
    "hmnumba.pinn.train": "re-exported by hmnumba.pinn (its __all__)",
}
# Packages whose submodules are all internal: their public surface is the
# package's own __all__.
INTERNAL_PACKAGES = {
    "hmnumba.experiments": "one module per figure behind REGISTRY and reproduce()",
    "hmnumba.kernels": "numba kernels and integer codes only (DESIGN.md section 1; "
                       "docs/kernels.rst describes the files)",
}

_DIRECTIVE = re.compile(
    r"^\.\. (?:py:)?(auto)?(module|currentmodule|function|class|data|exception|autosummary)"
    r"::\s*(\S*)\s*$")


def public_modules():
    """``hmnumba`` and every importable submodule that is not private or internal."""
    names = ["hmnumba"]
    for info in pkgutil.walk_packages(hmnumba.__path__, "hmnumba."):
        parts = info.name.split(".")
        if any(p.startswith("_") for p in parts) or info.name in INTERNAL:
            continue
        if any(info.name.startswith(pkg + ".") for pkg in INTERNAL_PACKAGES):
            continue
        names.append(info.name)
    return sorted(names)


def public_names(modname):
    module = importlib.import_module(modname)
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return sorted(name for name, obj in vars(module).items()
                  if not name.startswith("_")
                  and (inspect.isclass(obj) or inspect.isfunction(obj))
                  and getattr(obj, "__module__", None) == modname)


def documented():
    """Full names listed in the reST sources, and the ``data`` entries with an example.

    Returns ``(names, data_with_example)``: every name an ``autosummary``
    table or an ``auto*`` / ``data`` / ``module`` directive documents, and the
    ``.. data::`` names whose directive body holds a ``>>>`` example.
    """
    names, data_examples = set(), set()
    for path in sorted(DOCS.rglob("*.rst")):
        if "_build" in path.parts or "generated" in path.parts or "_templates" in path.parts:
            continue
        current = None
        lines = path.read_text(encoding="utf-8").splitlines()
        i = 0
        while i < len(lines):
            match = _DIRECTIVE.match(lines[i])
            i += 1
            if not match:
                continue
            auto, kind, arg = match.groups()
            body = []
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith(" ")):
                body.append(lines[i])
                i += 1
            if kind in ("module", "currentmodule"):
                current = arg or current
                if kind == "module":
                    names.add(arg)
                continue
            entries = [arg] if kind != "autosummary" else [
                b.strip().lstrip("~") for b in body
                if b.strip() and not b.strip().startswith(":")]
            for entry in entries:
                full = entry if entry.startswith("hmnumba") or current is None \
                    else f"{current}.{entry}"
                names.add(full)
                if kind == "data" and any(b.strip().startswith(">>>") for b in body):
                    data_examples.add(full)
    return names, data_examples


def _resolve(full):
    """The object a full dotted name refers to (module attribute lookups)."""
    parts = full.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(full)


def has_examples(obj):
    doc = inspect.getdoc(obj) or ""
    match = re.search(r"^Examples\n-{8,}\n", doc, flags=re.M)
    return bool(match) and ">>>" in doc[match.end():]


CASES = [(mod, name) for mod in public_modules() for name in public_names(mod)]


@pytest.fixture(scope="module")
def reference():
    names, data_examples = documented()
    ids = set()
    for full in names:
        try:
            ids.add(id(_resolve(full)))
        except (ImportError, AttributeError):
            pass
    return names, data_examples, ids


def test_public_modules_are_found():
    mods = public_modules()
    for expected in ("hmnumba", "hmnumba.kernels", "hmnumba.io", "hmnumba.compressor",
                     "hmnumba.baselines", "hmnumba.cli"):
        assert expected in mods
    assert not set(mods) & set(INTERNAL)


@pytest.mark.parametrize("modname, name", CASES, ids=[f"{m}.{n}" for m, n in CASES])
def test_public_name_is_in_api_reference(reference, modname, name):
    names, _, ids = reference
    obj = getattr(importlib.import_module(modname), name)
    full = f"{modname}.{name}"
    # A re-exported object counts wherever it is documented (hmnumba.io.load
    # is hmnumba.load); a module in __all__ is documented by its automodule.
    assert full in names or (not isinstance(obj, (str, int, float)) and id(obj) in ids), (
        f"{full} is public but not in the API reference: add it to an autosummary "
        f"table in docs/api.rst (or list its module in tests/test_docs.py INTERNAL)")


@pytest.mark.parametrize("modname, name", CASES, ids=[f"{m}.{n}" for m, n in CASES])
def test_public_name_has_examples(reference, modname, name):
    _, data_examples, _ = reference
    obj = getattr(importlib.import_module(modname), name)
    if inspect.ismodule(obj):
        return      # its own public names are checked one by one
    if inspect.isclass(obj) or inspect.isroutine(obj):
        assert has_examples(obj), (
            f"{modname}.{name}: its docstring needs a numpydoc 'Examples' section "
            f"with a runnable '>>>' example")
    else:
        assert has_examples(obj) or f"{modname}.{name}" in data_examples, (
            f"{modname}.{name}: give its '.. data::' entry in docs/api.rst an example")


def test_documented_names_exist():
    """Every entry of the reference points at an object (Sphinx would fail later)."""
    names, _ = documented()
    missing = []
    for full in sorted(names):
        try:
            _resolve(full)
        except (ImportError, AttributeError):
            missing.append(full)
    assert not missing, f"documented but not importable: {missing}"
