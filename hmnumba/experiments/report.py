"""The report writer: ``results.json`` (every number) and ``report.md``
(machine, versions, seeds, command, and per result the figure, a table and
one sentence on the paper's claim)."""
import datetime
import json
import os
import platform
import sys

import numpy as np

from hmnumba.experiments._verdict import WORDS as VERDICT


def machine():
    """Platform, processor and CPU counts of this machine."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return dict(platform=platform.platform(), machine=platform.machine(),
                processor=platform.processor() or platform.machine(),
                cpu_count=os.cpu_count(), usable_cpus=usable)


def versions():
    """Versions of Python and the libraries the results depend on."""
    import numba
    import scipy
    import sklearn

    import hmnumba
    out = dict(python=platform.python_version(), numpy=np.__version__,
               numba=numba.__version__, scipy=scipy.__version__, sklearn=sklearn.__version__,
               hmnumba=hmnumba.__version__)
    try:
        import matplotlib
        out["matplotlib"] = matplotlib.__version__
    except ImportError:  # pragma: no cover - reproduce() checks first
        pass
    return out


def _public(value):
    """``value`` without the figure-only (``_``-prefixed) keys, JSON-ready."""
    if isinstance(value, dict):
        return {str(k): _public(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, (list, tuple)):
        return [_public(v) for v in value]
    if isinstance(value, np.ndarray):
        return _public(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def write(out, ctx, results, wall_time, command=None):
    """Write ``out/results.json`` and ``out/report.md``; returns the JSON data."""
    from hmnumba.experiments.registry import REGISTRY
    cfg = ctx.config
    command = command or " ".join(["hmnumba"] + sys.argv[1:])
    data = dict(command=command,
                date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                wall_time=wall_time, machine=machine(), versions=versions(),
                config=cfg.to_dict(),
                training=dict(sizes=ctx.sizes(), seconds=ctx.train_seconds,
                              epochs=int(ctx.history["epochs"]),
                              relative_l2=float(ctx.history["relative_l2"][-1]),
                              relative_l2_train=ctx.relative_l2_train(ctx.model)),
                results=_public(results))
    tmp = out / ".results.json.tmp"
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, out / "results.json")
    lines = _markdown(data, results, REGISTRY)
    tmp = out / ".report.md.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, out / "report.md")
    return data


def _markdown(data, results, registry):
    """The lines of ``report.md``."""
    cfg, m, v, tr = data["config"], data["machine"], data["versions"], data["training"]
    lines = [
        "# hmnumba reproduce: the paper's numerical results", "",
        f"- **Command:** `{data['command']}`",
        f"- **Date (UTC):** {data['date']}; wall time {data['wall_time']:.1f} s",
        f"- **Machine:** {m['platform']}, {m['processor']}, {m['cpu_count']} CPUs "
        f"({m['usable_cpus']} usable); {cfg['threads']} numba/BLAS thread(s) used",
        "- **Versions:** " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"- **Seed:** {cfg['seed']} (initialisation, samples, clustering, timing batches)",
        f"- **Profile:** {cfg['profile']}; problem `{cfg['problem']}`; PINN {tr['sizes']} "
        f"(tanh, rank-{cfg['init_rank']} start of the hidden-to-hidden weights), "
        f"{tr['epochs']} L-BFGS iterations on {cfg['n_collocation']} collocation and "
        f"{cfg['n_boundary']} boundary points in {tr['seconds']:.1f} s: relative L2 "
        f"{tr['relative_l2']:.2e} on the test grid ({tr['relative_l2_train']:.2e} on the "
        "training points)",
        f"- **H-matrix:** leaf size {cfg['leaf_size']}, adaptive partition, PCA clustering, "
        "ACA; compression ratio = dense bytes / stored bytes of the hidden-to-hidden weights",
        "", "## Summary", "",
        "| # | result | verdict | what the numbers say |", "| --- | --- | --- | --- |"]
    for k, (name, res) in enumerate(results.items(), 1):
        ver = res["verdict"]
        sentence = ver["sentence"].replace("|", "\\|")     # a table cell
        lines.append(f"| {k} | {registry[name].TITLE} | {VERDICT[ver['outcome']]} | "
                     f"{sentence} |")
    for k, (name, res) in enumerate(results.items(), 1):
        module = registry[name]
        lines += ["", f"## {k}. {module.TITLE}", "",
                  f"**Paper's claim:** {module.CLAIM}", "",
                  f"**Verdict ({VERDICT[res['verdict']['outcome']]}):** "
                  f"{res['verdict']['sentence']}", ""]
        if res.get("figure", module.FIGURE):
            lines += [f"![{module.TITLE}]({module.FIGURE})", ""]
        else:
            lines += ["_No figure: matplotlib is not installed (pip install "
                      "'hmnumba[plot]')._", ""]
        if hasattr(module, "table"):
            lines += module.table(res)
        lines.append("")
        lines.append(f"_{res['seconds']:.1f} s._")
    return lines
