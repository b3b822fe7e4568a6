"""The command line: the demo runs and reports, bad input exits with 2."""
import subprocess
import sys

import pytest

from hmnumba.cli import main


def test_demo_prints_build_ratio_error_and_speedup(capsys):
    assert main(["demo", "--n", "1500", "--tol", "1e-5"]) == 0
    out = capsys.readouterr().out
    for needle in ("H-matrix build", "compression ratio", "error bound", "speed-up",
                   "weight-like"):
        assert needle in out


def test_bad_input_exits_with_status_2_and_one_line(capsys):
    assert main(["demo", "--n", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hmnumba: error:")


def test_bad_tol_names_the_argument(capsys):
    assert main(["demo", "--n", "100", "--tol", "2"]) == 2
    assert "tol" in capsys.readouterr().err


def test_module_entry_point_shows_help():
    proc = subprocess.run([sys.executable, "-m", "hmnumba", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "demo" in proc.stdout


@pytest.mark.parametrize("argv", [[], ["nonsense"]])
def test_missing_or_unknown_command_is_a_usage_error(argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
