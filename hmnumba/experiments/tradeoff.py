"""Experiment 1 (paper Fig. 2a, 4b): compression-accuracy trade-off.

The hidden-to-hidden layers of the trained PINN are compressed by the
H-matrix (tolerance sweep), global truncated SVD (rank sweep), magnitude
pruning (sparsity sweep) and integer quantization (2/4/8 bits); for each
network the compression ratio of the hidden weights and the relative L2
error of the PDE solution on the problem's test grid are recorded.
"""
from hmnumba.experiments._context import target_l2
from hmnumba.experiments._verdict import CONTRADICTS, PARTLY, SUPPORTS, combine
from hmnumba.experiments._verdict import verdict as verdict_of

NAME = "tradeoff"
TITLE = "Compression-accuracy trade-off"
FIGURE = "fig1_tradeoff.png"
CLAIM = ("H-matrices keep the PINN's accuracy at higher compression ratios than SVD, "
         "pruning and quantization (Fig. 4b), while SVD's accuracy barely changes with its "
         "compression level (Fig. 2a).")
METHODS = ("hmatrix", "svd", "pruning", "quantization")


def sweep(ctx):
    """``(method, params)`` for every compressed network of the sweep."""
    c = ctx.config
    return ([("hmatrix", dict(tol=t)) for t in c.h_tols]
            + [("svd", dict(rank=r)) for r in c.svd_ranks]
            + [("pruning", dict(sparsity=s)) for s in c.sparsities]
            + [("quantization", dict(bits=b)) for b in c.bits])


def run(ctx):
    """Compress the trained PINN by every method of the sweep.

    Returns
    -------
    dict
        ``dense`` (relative L2 of the uncompressed network) and ``entries``
        (per method, a list of rows from :meth:`Context.entry`).
    """
    dense = ctx.train()
    entries = {m: [] for m in METHODS}
    for method, params in sweep(ctx):
        entries[method].append(ctx.entry(method, ctx.compress(method, **params), **params))
    return dict(dense=dict(relative_l2=ctx.problem.relative_l2(dense),
                           relative_l2_train=ctx.relative_l2_train(dense),
                           hidden_nbytes=dense.hidden_nbytes),
                entries=entries)


def best_ratios(result):
    """Per method, the largest compression ratio whose relative L2 is at most
    the target (:func:`~hmnumba.experiments._context.target_l2`; 0 if none),
    and the target."""
    target = target_l2(result["dense"]["relative_l2"])
    best = {}
    for method, rows in result["entries"].items():
        ok = [r["compression_ratio"] for r in rows if r["relative_l2"] <= target]
        best[method] = max(ok) if ok else 0.0
    return best, target


#: Fig. 2a: SVD's accuracy "clusters around 0.975-0.978 despite varying
#: compression levels"; a spread of accuracy (1 - relative L2) over the SVD
#: sweep of at most this counts as flat.
FLAT_SPREAD = 0.01


def svd_flatness(result):
    """Spread (max - min) of SVD's accuracy over its sweep, and its range of ratios."""
    rows = result["entries"]["svd"]
    acc = [r["accuracy"] if "accuracy" in r else 1.0 - r["relative_l2"] for r in rows]
    ratios = [r["compression_ratio"] for r in rows]
    return max(acc) - min(acc), min(ratios), max(ratios)


def verdict(result):
    """Two parts, decided from the numbers: Fig. 4b, the H-matrix reaches the
    largest compression ratio at the target accuracy; Fig. 2a, SVD's accuracy
    is flat (spread <= :data:`FLAT_SPREAD`) across its compression levels.
    Supports if both hold, partly if one does, contradicts if neither."""
    best, target = best_ratios(result)
    h = best["hmatrix"]
    others = {m: r for m, r in best.items() if m != "hmatrix"}
    winner = max(others, key=others.get)
    listing = ", ".join(f"{m} {r:.2f}" if r > 0 else f"{m} none" for m, r in others.items())
    head = (f"Keeping relative L2 <= {target:.1e} (dense: "
            f"{result['dense']['relative_l2']:.1e}), the H-matrix reaches compression ratio "
            + (f"{h:.2f}" if h > 0 else "none") + f" where the baselines reach {listing}")
    wins = h > others[winner]
    spread, lo, hi = svd_flatness(result)
    flat = spread <= FLAT_SPREAD
    head += (f" ({'the H-matrix compresses most' if wins else f'{winner} compresses more'}); "
             f"SVD's accuracy spans {spread:.3f} over ratios {lo:.2f}-{hi:.2f} "
             f"({'flat' if flat else 'not flat'}, the paper's Fig. 2a reads flat)")
    outcome = combine([wins, flat])
    tail = {SUPPORTS: ": supports both parts of the claim.",
            PARTLY: (": supports the Fig. 4b part only." if wins else
                     ": supports the Fig. 2a part only."),
            CONTRADICTS: ": contradicts both parts of the claim here."}[outcome]
    return verdict_of(outcome, head + tail)


def _setting(row):
    """``tol=...`` / ``rank=...`` / ... of a row, for tables."""
    return ", ".join(f"{k}={row[k]:g}" for k in ("tol", "rank", "sparsity", "bits") if k in row)


def summary_table(result, levels=(1e-1, 1e-2, 1e-3)):
    """Markdown rows: per method, the largest compression ratio (and its
    setting) whose relative L2 stays within each level."""
    lines = ["| method | " + " | ".join(f"largest ratio with rel. L2 <= {lv:g}" for lv in levels)
             + " |", "| --- | " + " | ".join("---:" for _ in levels) + " |"]
    for method, rows in result["entries"].items():
        cells = []
        for lv in levels:
            ok = [r for r in rows if r["relative_l2"] <= lv]
            best = max(ok, key=lambda r: r["compression_ratio"]) if ok else None
            cells.append(f"{best['compression_ratio']:.2f} ({_setting(best)})" if best else "-")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def table(result):
    """Markdown rows: the summary (:func:`summary_table`), then method,
    setting, ratio, relative L2, accuracy of every network."""
    lines = summary_table(result) + [""]
    lines += ["| method | setting | compression ratio | relative L2 (test) | "
              "accuracy = 1 - rel. L2 |",
             "| --- | --- | ---: | ---: | ---: |",
             f"| dense | - | 1.00 | {result['dense']['relative_l2']:.3e} | "
             f"{1 - result['dense']['relative_l2']:.4f} |"]
    for method, rows in result["entries"].items():
        for r in rows:
            lines.append(f"| {method} | {_setting(r)} | {r['compression_ratio']:.2f} | "
                         f"{r['relative_l2']:.3e} | {r['accuracy']:.4f} |")
    return lines


def plot(result, path):
    """Relative L2 and accuracy against compression ratio per method (PNG at ``path``)."""
    from hmnumba.experiments._plot import METHOD_STYLE, pyplot, save
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    d = result["dense"]["relative_l2"]
    for method, rows in result["entries"].items():
        rows = sorted(rows, key=lambda r: r["compression_ratio"])
        x = [r["compression_ratio"] for r in rows]
        ax1.plot(x, [r["relative_l2"] for r in rows], **METHOD_STYLE[method])
        ax2.plot(x, [r["accuracy"] for r in rows], **METHOD_STYLE[method])
    ax1.axhline(d, color="black", ls="--", lw=1, label=f"dense ({d:.1e})")
    ax2.axhline(1 - d, color="black", ls="--", lw=1, label="dense")
    ax1.set_yscale("log")
    ax1.set_ylabel("relative L2 error of the PDE solution")
    ax2.set_ylabel("accuracy = 1 - relative L2 (the paper's axis)")
    ax2.set_ylim(max(-0.05, min(ax2.get_ylim()[0], 0.5)), 1.02)
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.set_xlabel("compression ratio of the hidden weights")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Fig. 1: compression-accuracy trade-off (hidden layers of a trained PINN)")
    save(fig, path)
