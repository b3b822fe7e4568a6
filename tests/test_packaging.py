"""Packaging metadata and the install instructions agree with each other.

pyproject.toml declares the licence, the floors, the extras and the type
marker; the README and docs/getting_started.rst state the same commands.
"""
import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")   # Python 3.11+

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
README = (ROOT / "README.md").read_text(encoding="utf-8")
GETTING_STARTED = (ROOT / "docs" / "getting_started.rst").read_text(encoding="utf-8")


def _name(requirement):
    return re.split(r"[\[<>=! ;]", requirement, maxsplit=1)[0].lower()


def test_licence_file_and_field():
    assert PROJECT["project"]["license"] == "BSD-3-Clause"
    assert PROJECT["project"]["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text(encoding="utf-8").startswith("BSD 3-Clause License")


def test_type_marker_is_package_data():
    assert (ROOT / "hmnumba" / "py.typed").is_file()
    assert "py.typed" in PROJECT["tool"]["setuptools"]["package-data"]["hmnumba"]


def test_all_extra_holds_every_other_extra():
    extras = PROJECT["project"]["optional-dependencies"]
    everything = {_name(r) for r in extras["all"]}
    for name, requirements in extras.items():
        missing = {_name(r) for r in requirements} - everything
        assert not missing, f"[all] lacks {missing} of [{name}]"


def test_floors_are_declared_for_every_dependency():
    deps = PROJECT["project"]["dependencies"]
    assert all(">=" in d for d in deps), deps
    floors = {_name(d): d.split(">=")[1] for d in deps}
    # validate_data (hmnumba.compressor) and FrozenEstimator need scikit-learn 1.6.
    assert tuple(int(p) for p in floors["scikit-learn"].split(".")[:2]) >= (1, 6)


@pytest.mark.parametrize("extra", ["test", "plot"])
def test_readme_install_line_names_every_package_of_an_extra(extra):
    line = next(ln for ln in README.splitlines() if f'-e ".[{extra}]"    #' in ln)
    comment = line.split("#", 1)[1].lower()
    for requirement in PROJECT["project"]["optional-dependencies"][extra]:
        assert _name(requirement).split("-")[0] in comment, (requirement, line)


@pytest.mark.parametrize("command", [
    'python3 -m pip install -e ".[plot]" && python3 -m hmnumba demo',
    'python3 -m pip install -e ".[test]" && python3 -m pytest -q',
    "python3 -m sphinx -W -b html docs docs/_build/html",
])
def test_readme_and_getting_started_give_the_same_commands(command):
    assert command in README
    assert command in GETTING_STARTED
