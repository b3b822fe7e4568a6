"""hmnumba.warmup and ``hmnumba warmup``: one line per kernel group."""
import io

import pytest

from hmnumba import warmup as wu
from hmnumba.cli import main


def test_warmup_prints_one_line_per_group_and_returns_seconds():
    out = io.StringIO()
    seconds = wu.warmup(["products", "pinn"], out=out)
    lines = out.getvalue().splitlines()
    assert [line.split()[0] for line in lines] == ["products", "pinn"]
    assert set(seconds) == {"products", "pinn"} and all(s >= 0 for s in seconds.values())
    assert wu.cache_is_warm() in (True, False)


def test_unknown_group_names_the_argument():
    with pytest.raises(ValueError, match="groups must be one of"):
        wu.warmup(["everything"])


def test_announce_speaks_only_when_the_cache_looks_cold(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(wu, "cache_is_warm", lambda: True)
    assert wu.announce(out) is False and out.getvalue() == ""
    monkeypatch.setattr(wu, "cache_is_warm", lambda: False)
    assert wu.announce(out) is True
    assert out.getvalue().startswith("compiling numba kernels (first run only")
    assert f"about {sum(wu.COLD_SECONDS.values())} s" in out.getvalue()
    out = io.StringIO()
    assert wu.announce(out, ["h2"]) is True
    assert f"about {wu.COLD_SECONDS['h2']} s" in out.getvalue()
    assert set(wu.COLD_SECONDS) == set(wu.GROUPS)


def test_cli_warmup(capsys):
    assert main(["warmup", "--only", "products"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[-1].split()[0] == "products"
    with pytest.raises(SystemExit) as exc:   # argparse refuses an unknown group
        main(["warmup", "--only", "bogus"])
    assert exc.value.code == 2
