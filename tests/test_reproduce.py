"""``hmnumba reproduce --quick``: report, JSON and one figure per experiment
(the paper's six figures, the NTK check, the three theorem checks and the
compression study), with finite numbers, the H-matrix error bound, and
verdicts decided from the numbers (every branch of every verdict:
tests/test_verdicts.py, tests/test_study.py).

The run is done once, in-process, with the compression study at its tiny
sizes (``StudyConfig.tiny``: every family and code path, fine-tuning
included, two seeds) and the speed experiment at widths 128 and 256; the
quick profile's own study sizes are checked without running them. The
console script runs once, on one experiment, without matplotlib."""
import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from hmnumba.cli import main
from hmnumba.experiments import REGISTRY, families, study
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
    from hmnumba.experiments import _context, reproduce
    out = tmp_path_factory.mktemp("reproduce") / "out"
    quick = _context.Config.quick

    def quick_with_tiny_study(cls, problem=None, seed=0):
        # two timing widths instead of three: what is checked is the same
        return dataclasses.replace(quick(problem, seed), study="tiny",
                                   speed_widths=[128, 256], speed_repeats=3)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_context.Config, "quick", classmethod(quick_with_tiny_study))
        reproduce(out, quick=True, progress=False,
                  command=f"hmnumba reproduce --quick --out {out}")
    return out, json.loads((out / "results.json").read_text()), None


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


def test_study_covers_every_family(quick_run):
    out, data, _ = quick_run
    from hmnumba.experiments.families import FAMILIES, FAMILY_TITLES
    study_result = data["results"]["study"]
    assert study_result["config"]["profile"] == "tiny"
    assert set(study_result["summary"]) == set(FAMILIES)
    for nets in study_result["summary"].values():
        for entry in nets.values():
            assert len(entry["seeds"]) == len(study.StudyConfig.tiny().seeds)
    report = (out / "report.md").read_text()
    for title in FAMILY_TITLES.values():
        assert title in report
    assert "float16 cast" in report and "full-rank Glorot" in report
    assert "after fine-tuning" in report
    assert any("rank-4 start" in name for name in study_result["summary"]["pinn"])
    assert any("glorot" in name for name in study_result["summary"]["pinn"])
    # family b has linear and one-hidden-layer operator networks
    assert any("mlp" in name for name in study_result["summary"]["operator"])
    assert any("mlp" not in name for name in study_result["summary"]["operator"])
    # the low-precision H-matrix option is judged like every other method
    assert "H-matrix (auto, low-precision factors, outliers)" in report
    for nets in study_result["summary"].values():
        for entry in nets.values():
            assert all("hmatrix-lowp" in level for level in entry["ratios"]["task"])
    # the stored summary is the median and spread of the stored networks
    assert study.summarise(study_result["networks"]) == study_result["summary"]
    entry = study_result["summary"]["operator"]["helmholtz1d n48"]
    runs = [r for r in study_result["networks"] if r["name"] == "helmholtz1d n48"]
    for j in range(3):
        for method in study.METHODS:
            vals = [study._ratio(r["methods"][method]["best"]["task"][j]) for r in runs]
            assert entry["ratios"]["task"][j][method] == [float(np.median(vals)), min(vals),
                                                          max(vals)]


def test_every_study_network_runs_and_every_method_reports(quick_run):
    networks = quick_run[1]["results"]["study"]["networks"]
    assert {r["family"] for r in networks} == set(families.FAMILIES)
    assert {r["family"] for r in networks if r["finetuned"]} == {"pinn", "operator", "digits"}
    for res in networks:
        assert set(res["methods"]) == set(study.METHODS)
        assert finite(res["dense_task_error"])
        for name, m in res["methods"].items():
            assert m["curve"], name
            for row in m["curve"]:
                assert row["nbytes"] > 0 and finite(row["ratio"])
                assert finite(row["weight_error"]) and finite(row["task_error"])
            assert ("task_ft" in m["best"]) == res["finetuned"]
            for metric, key in (("weight", "weight_error"), ("task", "task_error"),
                                ("task_ft", "task_error_ft")):
                targets = res["levels"]["weight" if metric == "weight" else "task"]
                for best, target in zip(m["best"].get(metric, []), targets):
                    assert best is None or best[key] <= target
        for t in res["timing"].values():
            assert t["low"] <= t["speedup"] <= t["high"]
            assert t["faster"] == (t["low"] > 1.0)
        assert res["spectra"]["global_rank"] >= 1


def test_quick_study_profile_covers_every_family_with_three_seeds():
    """What the quick run's study holds, without running it."""
    cfg = study.StudyConfig.quick()
    assert len(cfg.seeds) == 3
    specs = cfg.networks
    assert {s["family"] for s in specs} == set(families.FAMILIES)
    pinns = [s for s in specs if s["family"] == "pinn"]
    assert {s["problem"] for s in pinns} == set(families.PINN_PROBLEMS)
    assert any(s.get("init_rank") is None for s in pinns)          # full-rank Glorot start
    assert any(s.get("init_rank") == 8 for s in pinns)             # the labelled variant
    ops = [s for s in specs if s["family"] == "operator"]
    assert {s["problem"] for s in ops} == set(families.OPERATORS)
    assert any(s.get("hidden") for s in ops) and any(not s.get("hidden") for s in ops)
    assert {s["family"] for s in specs if s.get("finetune")} == {"pinn", "operator", "digits"}
    full = study.StudyConfig.full()
    assert {s["family"] for s in full.networks} == set(families.FAMILIES)
    assert len(full.seeds) >= 3
    widths = {s["width"] for s in full.networks if s["family"] == "pinn"}
    assert min(widths) == 64 and max(widths) == 1024
    assert any(s["family"] == "pinn" and s.get("finetune") for s in full.networks)


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
def test_console_script_without_matplotlib_writes_the_report_without_figures(tmp_path):
    # matplotlib hidden from the console script by a package that fails to import
    fake = tmp_path / "fake" / "matplotlib"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('matplotlib hidden by the test')\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(fake.parent),
                                                      env.get("PYTHONPATH")]))
    out = tmp_path / "out"
    proc = subprocess.run([console_script(), "reproduce", "--quick", "--only", "heatmaps",
                           "--out", str(out)], capture_output=True, text=True, timeout=600,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no figures" in proc.stdout
    assert not list(out.glob("*.png"))
    report = (out / "report.md").read_text()
    assert "No figure: matplotlib is not installed" in report
    assert "hmnumba reproduce --quick --only heatmaps --out" in report
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
