"""``hmnumba reproduce --quick``: report, JSON and one figure per experiment
(the paper's six figures, the NTK check, the three theorem checks and the
compression study), with finite numbers, the H-matrix error bound, and
verdicts decided from the numbers (every branch of every verdict:
tests/test_verdicts.py)."""
import json
import math
import os
import shutil
import subprocess
import sys

import pytest

from hmnumba.cli import main
from hmnumba.experiments import REGISTRY
from hmnumba.experiments._verdict import OUTCOMES

pytest.importorskip("matplotlib")

METHODS = ("hmatrix", "svd", "pruning", "quantization")


def console_script():
    exe = shutil.which("hmnumba", path=os.path.dirname(sys.executable))
    if exe is None:
        pytest.fail(f"the hmnumba console script is not installed beside {sys.executable}; "
                    "run `pip install -e .`")
    return exe


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce") / "out"
    proc = subprocess.run([console_script(), "reproduce", "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads((out / "results.json").read_text()), proc.stdout


def finite(x):
    return isinstance(x, (int, float)) and math.isfinite(x)


def test_report_json_and_every_figure_exist(quick_run):
    out, data, _ = quick_run
    figures = sorted(p.name for p in out.glob("*.png"))
    assert figures == sorted(m.FIGURE for m in REGISTRY.values())
    assert len(figures) == 11
    for name in figures:
        head = (out / name).read_bytes()[:8]
        assert head == b"\x89PNG\r\n\x1a\n" and (out / name).stat().st_size > 10_000
    report = (out / "report.md").read_text()
    for needle in ("hmnumba reproduce --quick --out", "CPUs", "numba", "numpy", "scipy",
                   "hmnumba", "Seed", data["versions"]["numpy"]):
        assert needle in report
    for module in REGISTRY.values():
        assert module.TITLE in report and f"({module.FIGURE})" in report
        assert data["results"][module.NAME]["verdict"]["sentence"] in report


def test_study_covers_every_family_with_three_seeds(quick_run):
    out, data, _ = quick_run
    from hmnumba.experiments.families import FAMILIES, FAMILY_TITLES
    study = data["results"]["study"]
    assert set(study["summary"]) == set(FAMILIES)
    for nets in study["summary"].values():
        for entry in nets.values():
            assert len(entry["seeds"]) == 3
    report = (out / "report.md").read_text()
    for title in FAMILY_TITLES.values():
        assert title in report
    assert "float16 cast" in report and "full-rank Glorot" in report
    assert any("rank-8 start" in name for name in study["summary"]["pinn"])
    # family b has linear and one-hidden-layer operator networks
    assert any("mlp" in name for name in study["summary"]["operator"])
    assert any("mlp" not in name for name in study["summary"]["operator"])
    # the low-precision H-matrix option is judged like every other method
    assert "H-matrix (auto, low-precision factors, outliers)" in report
    for nets in study["summary"].values():
        for entry in nets.values():
            assert all("hmatrix-lowp" in level for level in entry["ratios"]["task"])
    for res in study["networks"]:
        for m in res["methods"].values():
            assert all(finite(r["task_error"]) and r["ratio"] > 0 for r in m["curve"])


def test_pinn_is_really_trained(quick_run):
    _, data, _ = quick_run
    tr = data["training"]
    assert tr["epochs"] > 50
    assert tr["relative_l2"] < 1e-2        # a trained PINN, not an initialisation


def test_every_method_entry_is_finite(quick_run):
    _, data, _ = quick_run
    res = data["results"]
    for method in METHODS:
        rows = res["tradeoff"]["entries"][method]
        assert rows, method
        for r in rows:
            for key in ("compression_ratio", "relative_l2", "relative_l2_train", "accuracy"):
                assert finite(r[key]), (method, key, r)
            assert r["compression_ratio"] > 0 and r["relative_l2"] >= 0
            assert all(finite(e) for e in r["weight_errors"])
    for method, rows in res["speed"]["entries"].items():
        assert len(rows) == len(res["speed"]["widths"])
        for r in rows:
            assert all(finite(r[k]) and r[k] > 0 for k in ("median", "q25", "q75", "min"))
            assert r["min"] <= r["median"] <= r["max"]
    for method in ("svd", "hmatrix"):
        for r in res["propagation"]["entries"][method]:
            assert all(finite(d) for d in r["deviation"])
        for r in res["ntk"]["entries"][method]:
            assert finite(r["relative_difference"])
            assert all(finite(s) for s in r["spectrum"])
    assert all(finite(v) for v in res["dynamic"]["relative_l2"])
    assert all(finite(v) and v > 0 for v in res["dynamic"]["compression_ratio"])


def test_hmatrix_error_bound_holds_everywhere(quick_run):
    _, data, _ = quick_run
    res = data["results"]
    for r in res["tradeoff"]["entries"]["hmatrix"]:
        assert r["error_bounds"] and all(b <= r["tol"] for b in r["error_bounds"])
        # the bound is an upper bound of the measured weight error
        assert all(w <= b * (1 + 1e-6) + 1e-12
                   for w, b in zip(r["weight_errors"], r["error_bounds"]))
    hm = res["heatmaps"]
    assert hm["error_bound"] <= hm["tol"] and hm["relative_error"] <= hm["tol"]
    for r in res["speed"]["entries"]["hmatrix"]:
        assert r["error_bound"] <= r["tol"]
    for rc in res["dynamic"]["recompress"]:
        assert all(b <= res["dynamic"]["tol"] for b in rc["error_bounds"])


def test_theorem_experiments_report_their_bounds(quick_run):
    _, data, _ = quick_run
    res = data["results"]
    adv = res["adversarial"]
    assert len(adv["entries"]) == len(adv["tols"]) and adv["radii"]
    for row in adv["entries"]:
        for p in row["radii"]:
            assert finite(p["max"]) and p["max"] > 0 and p["holds"] is True
            assert p["max"] <= p["bound"]
    ntk = res["ntk"]
    for r in ntk["entries"]["hmatrix"]:
        f = r["factors"]
        assert f["n_params"] != ntk["n_params"]           # another parametrisation
        assert all(finite(x) for x in f["spectrum"]) and isinstance(f["pd"], bool)
        assert r["bound_holds"] is True
    for r in res["conditioning"]["rows"]:
        for key in ("kappa_holds", "kappa_eff_holds"):
            assert r[key] in (True, None)
    for s in res["refinement"]["steps"]:
        assert s["holds"] is True


def test_verdicts_are_decided_from_the_stored_numbers(quick_run):
    _, data, _ = quick_run
    for name, module in REGISTRY.items():
        stored = data["results"][name]
        assert stored["verdict"] == module.verdict(stored)
        assert stored["verdict"]["outcome"] in OUTCOMES


def test_figures_required_without_matplotlib_is_a_clear_error(monkeypatch, tmp_path):
    from hmnumba.experiments import reproduce
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"hmnumba\[plot\]"):
        reproduce(tmp_path / "out", figures=True, progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_without_matplotlib_the_report_is_written_without_figures(monkeypatch, tmp_path,
                                                                 capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    out = tmp_path / "out"
    assert main(["reproduce", "--quick", "--only", "heatmaps", "--out", str(out)]) == 0
    assert "no figures" in capsys.readouterr().out
    assert not list(out.glob("*.png"))
    report = (out / "report.md").read_text()
    assert "No figure: matplotlib is not installed" in report
    assert json.loads((out / "results.json").read_text())["results"]["heatmaps"]["figure"] \
        is None


@pytest.mark.parametrize("argv", [["--problem", "wave3d"], ["--only", "nonsense"],
                                  ["--seed", "-1"]])
def test_bad_options_exit_2_before_any_work(argv, tmp_path, capsys):
    assert main(["reproduce", "--quick", "--out", str(tmp_path / "out"), *argv]) == 2
    assert "error" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_figures_leave_the_matplotlib_backend_alone(tmp_path):
    """Drawing a figure (here the heat maps, whose rank panel is H.plot())
    neither forces a backend nor touches pyplot, so a notebook keeps its own."""
    script = f"""
import matplotlib
matplotlib.use("svg")
import numpy as np
from hmnumba import HMatrix
from hmnumba.experiments import heatmaps
x = np.linspace(0, 1, 96)
W = np.exp(-np.abs(x[:, None] - x[None, :]))
H = HMatrix.from_dense(W, tol=1e-6, leaf_size=16)
result = dict(tol=1e-6, layer=1, shape=[96, 96], relative_error=1e-7, compression_ratio=1.5,
              _W=W, _Wh=H.to_dense(), _H=H)
heatmaps.plot(result, {str(tmp_path / "fig.png")!r})
import sys
pyplot_loaded = "matplotlib.pyplot" in sys.modules
print(matplotlib.get_backend(), pyplot_loaded)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["svg", "False"]
    assert (tmp_path / "fig.png").stat().st_size > 10_000
