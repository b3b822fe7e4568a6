"""Experiment 4 (paper Fig. 4a): generalisation.

For the networks of the trade-off sweep, the relative L2 error on the
training collocation points against the error on the test grid, both
against the compression ratio: does compression open a gap between them?
"""
import numpy as np

from hmnumba.experiments import tradeoff
from hmnumba.experiments._context import target_l2
from hmnumba.experiments._verdict import CONTRADICTS, SUPPORTS, UNTESTED
from hmnumba.experiments._verdict import verdict as verdict_of

NAME = "generalisation"
TITLE = "Generalisation (training vs test error)"
FIGURE = "fig4_generalisation.png"
CLAIM = ("Compressed networks generalise as well as the dense one: the test error follows "
         "the training error as the compression ratio grows.")


def run(ctx):
    """Training- and test-set relative L2 of every network of the sweep.

    Returns
    -------
    dict
        ``dense`` (``relative_l2``, ``relative_l2_train``), ``entries`` per
        method (``compression_ratio``, ``relative_l2``, ``relative_l2_train``
        and the setting), and ``n_train``, ``n_test`` (number of points).
    """
    dense = ctx.train()
    entries = {}
    for method, params in tradeoff.sweep(ctx):
        row = ctx.entry(method, ctx.compress(method, **params), **params)
        keep = ("compression_ratio", "relative_l2", "relative_l2_train", *params)
        entries.setdefault(method, []).append({k: row[k] for k in keep})
    return dict(dense=dict(relative_l2=ctx.problem.relative_l2(dense),
                           relative_l2_train=ctx.relative_l2_train(dense)),
                entries=entries, n_train=int(ctx.x_train.shape[0]),
                n_test=int(ctx.problem.test_grid().shape[0]))


def gap(row):
    """Test over training relative L2 (1 = no generalisation gap)."""
    return row["relative_l2"] / max(row["relative_l2_train"], 1e-300)


def verdict(result):
    """Supports if no H-matrix network within the target relative L2 has a
    test/training error ratio above 1.5 times the dense network's."""
    g0 = gap(result["dense"])
    target = target_l2(result["dense"]["relative_l2"])
    rows = [r for r in result["entries"]["hmatrix"] if r["relative_l2"] <= target]
    if not rows:
        return verdict_of(UNTESTED, f"No H-matrix network kept relative L2 <= "
                          f"{target:.1e}, so the gap cannot be judged at useful accuracy.")
    worst = max(rows, key=gap)
    head = (f"Test/training error ratio: dense {g0:.2f}; H-matrix networks with relative L2 "
            f"<= {target:.1e} (compression ratios up to "
            f"{max(r['compression_ratio'] for r in rows):.2f}) at most {gap(worst):.2f} (at "
            f"ratio {worst['compression_ratio']:.2f})")
    if gap(worst) <= 1.5 * g0:
        return verdict_of(SUPPORTS, head + ": compression opens no generalisation "
                          "gap, supports the claim.")
    return verdict_of(CONTRADICTS, head + ": compression widens the gap, contradicts "
                      "the claim here.")


def plot(result, path):
    """Training and test relative L2 and their ratio against the compression ratio."""
    from hmnumba.experiments._plot import METHOD_STYLE, pyplot, save
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for method, rows in result["entries"].items():
        rows = sorted(rows, key=lambda r: r["compression_ratio"])
        x = [r["compression_ratio"] for r in rows]
        style = METHOD_STYLE[method]
        ax1.plot(x, [r["relative_l2"] for r in rows], **style)
        ax1.plot(x, [r["relative_l2_train"] for r in rows], color=style["color"],
                 marker=style["marker"], ls="--", mfc="none", alpha=0.7)
        ax2.plot(x, [gap(r) for r in rows], ls="none", **style)
    d = result["dense"]
    ax1.axhline(d["relative_l2"], color="black", lw=1, label="dense, test")
    ax1.axhline(d["relative_l2_train"], color="black", lw=1, ls="--",
                label="dense, training (dashed: training set)")
    ax2.axhline(gap(d), color="black", lw=1, label="dense")
    ax1.set_yscale("log")
    ax1.set_ylabel("relative L2 (solid: test grid, dashed: training points)")
    ax2.set_ylabel("test / training relative L2")
    ax2.set_yscale("log")
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.set_xlabel("compression ratio of the hidden weights")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Fig. 4: generalisation ({result['n_train']} training points, "
                 f"{result['n_test']} test points)")
    save(fig, path)


def table(result):
    """Markdown rows for the H-matrix and SVD networks."""
    d = result["dense"]
    lines = ["| method | setting | ratio | relative L2 (training) | relative L2 (test) | "
             "test / training |", "| --- | --- | ---: | ---: | ---: | ---: |",
             f"| dense | - | 1.00 | {d['relative_l2_train']:.2e} | {d['relative_l2']:.2e} | "
             f"{gap(d):.2f} |"]
    for method in ("hmatrix", "svd"):
        for r in result["entries"][method]:
            setting = ", ".join(f"{k}={r[k]:g}" for k in ("tol", "rank") if k in r)
            lines.append(f"| {method} | {setting} | {r['compression_ratio']:.2f} | "
                         f"{r['relative_l2_train']:.2e} | {r['relative_l2']:.2e} | "
                         f"{gap(r):.2f} |")
    return lines
