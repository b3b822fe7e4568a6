"""Experiment 6 (paper Fig. 6): error propagation across layers.

Every hidden-to-hidden layer of the trained PINN is compressed by SVD and by
the H-matrix at tolerances ``config.propagation_tols``; on the test points
each layer's activations are compared with the dense network's,
``||a_l - a_l^dense||_F / ||a_l^dense||_F`` (the last entry is the output u).
"""
import numpy as np

from hmnumba.experiments._verdict import CONTRADICTS, PARTLY, SUPPORTS, UNTESTED, combine
from hmnumba.experiments._verdict import verdict as verdict_of

NAME = "propagation"
TITLE = "Error propagation across layers"
FIGURE = "fig6_propagation.png"
CLAIM = ("SVD accumulates error across the layers, while the H-matrix keeps much lower "
         "deviations from the dense network at every tolerance (Fig. 6).")
MAX_POINTS = 4096


def activations(model, x):
    """Every layer's output (after the activation; the last is ``u``) at ``x (N, d)``."""
    act = {"tanh": np.tanh, "sin": np.sin}[model.activation]
    S = np.ascontiguousarray(x.T)[:, None, :]
    out = []
    for i, layer in enumerate(model.layers):
        Z = layer.forward(S)
        S = Z if i == len(model.layers) - 1 else act(Z)
        out.append(S[:, 0, :].copy())
    return out


def run(ctx):
    """Per-layer relative deviations for SVD and H-matrix at each tolerance.

    Returns
    -------
    dict
        ``tols``, ``layers`` (1-based layer numbers), ``compressed`` (which
        of them are compressed) and, per method, one row per tolerance with
        ``tol``, ``deviation`` (one per layer) and ``compression_ratio``.
    """
    dense = ctx.train()
    x = ctx.problem.test_grid()
    if x.shape[0] > MAX_POINTS:
        x = x[np.random.default_rng(ctx.config.seed).choice(x.shape[0], MAX_POINTS,
                                                             replace=False)]
    ref = activations(dense, x)
    out = {}
    for method in ("svd", "hmatrix"):
        rows = []
        for tol in ctx.config.propagation_tols:
            model = ctx.compress(method, tol=tol)
            acts = activations(model, x)
            dev = [float(np.linalg.norm(a - r) / np.linalg.norm(r)) for a, r in zip(acts, ref)]
            rows.append(dict(tol=tol, deviation=dev,
                             compression_ratio=dense.hidden_nbytes / model.hidden_nbytes))
        out[method] = rows
    return dict(tols=list(ctx.config.propagation_tols),
                layers=list(range(1, len(dense.layers) + 1)),
                compressed=[i + 1 for i in dense.hidden_layers], n_points=int(x.shape[0]),
                entries=out)


def additive_bound(result, row):
    """Per layer, ``tol`` times the number of compressed layers up to it: the
    deviation if every layer added its relative weight error and nothing
    amplified it."""
    return [row["tol"] * sum(1 for c in result["compressed"] if c <= layer)
            for layer in result["layers"]]


def slope(result, method="hmatrix"):
    """Log-log slope of the output deviation against tol."""
    rows = result["entries"][method]
    tols = np.array([r["tol"] for r in rows])
    outdev = np.array([r["deviation"][-1] for r in rows])
    ok = outdev > 1e-12      # exactly stored layers leave only round-off: no slope there
    return float(np.polyfit(np.log(tols[ok]), np.log(outdev[ok]), 1)[0]) \
        if ok.sum() >= 2 else float("nan")


def growth(result, row):
    """Output deviation over the deviation after the first compressed layer:
    how much the error grows on its way through the network."""
    first = result["layers"].index(result["compressed"][0])
    d0 = row["deviation"][first]
    return row["deviation"][-1] / d0 if d0 > 0 else float("nan")


def verdict(result):
    """Against SVD at the same tolerances (Fig. 6): at each tol where both
    are inexact, the H-matrix wins if its output deviation is below SVD's
    and its growth across the layers (:func:`growth`) is no larger than
    SVD's. Supports if it wins at every such tol, contradicts if at none,
    partly otherwise; untested if no tol leaves both inexact. The additive
    bound (tol x compressed layers so far) is reported alongside."""
    h_rows = {r["tol"]: r for r in result["entries"]["hmatrix"]}
    s_rows = {r["tol"]: r for r in result["entries"]["svd"]}
    tols = [t for t in h_rows if t in s_rows and h_rows[t]["deviation"][-1] > 1e-12
            and s_rows[t]["deviation"][-1] > 1e-12]
    if not tols:
        return verdict_of(UNTESTED, "No tolerance left both the H-matrix and SVD inexact, so "
                          "their error propagation cannot be compared.")
    wins, parts = [], []
    for t in tols:
        h, sv = h_rows[t], s_rows[t]
        gh, gs = growth(result, h), growth(result, sv)
        win = h["deviation"][-1] < sv["deviation"][-1] and not gh > gs
        wins.append(win)
        parts.append(f"tol {t:g}: output {h['deviation'][-1]:.1e} vs {sv['deviation'][-1]:.1e}, "
                     f"growth {gh:.2f} vs {gs:.2f}")
    held = [r["tol"] for r in result["entries"]["hmatrix"]
            if all(d <= b for d, b in zip(r["deviation"], additive_bound(result, r)))]
    s = slope(result)
    head = (f"H-matrix vs SVD ({'; '.join(parts)}); the H-matrix's output deviation scales "
            f"like tol^{s:.2f}; it wins at "
            f"{sum(wins)} of {len(wins)} tolerance(s); the additive bound holds for the "
            f"H-matrix at tol {', '.join(f'{t:g}' for t in held) or 'none'}")
    outcome = combine(wins)
    tail = {SUPPORTS: ": lower and no faster-growing error than SVD everywhere, supports the "
                      "claim.",
            PARTLY: ": better than SVD at some tolerances only, partly supports the claim.",
            CONTRADICTS: ": the H-matrix does not control the error better than SVD here, "
                         "contradicts the claim."}[outcome]
    return verdict_of(outcome, head + tail)


def plot(result, path):
    """Per-layer deviations for SVD and H-matrix at each tol (PNG at ``path``)."""
    from hmnumba.experiments._plot import METHOD_STYLE, pyplot, save
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    cmap = plt.get_cmap("viridis")
    # layers before the first compressed one are exact (deviation 0): not drawn
    first = result["layers"].index(result["compressed"][0])
    layers = result["layers"][first:]
    labels = [f"{l}" if l < result["layers"][-1] else "u" for l in layers]
    for ax, method in zip(axes, ("svd", "hmatrix")):
        rows = result["entries"][method]
        for k, r in enumerate(rows):
            ax.plot(layers, np.maximum(r["deviation"][first:], 1e-18), marker="o",
                    color=cmap(k / max(1, len(rows) - 1)),
                    label=f"tol {r['tol']:g} (ratio {r['compression_ratio']:.2f})")
        ax.set_yscale("log")
        ax.set_xticks(layers)
        ax.set_xticklabels(labels)
        ax.set_xlabel("layer (compressed: " + ", ".join(map(str, result["compressed"])) + ")")
        ax.set_title(METHOD_STYLE[method]["label"])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("relative deviation of the activations from dense")
    fig.suptitle(f"Fig. 6: error propagation across layers ({result['n_points']} test points)")
    save(fig, path)


def table(result):
    """Markdown rows: method, tol, ratio, deviation per layer."""
    heads = [f"layer {l}" if l < result["layers"][-1] else "u" for l in result["layers"]]
    lines = ["| method | tol | ratio | " + " | ".join(heads) + " |",
             "| --- | ---: | ---: | " + " | ".join("---:" for _ in heads) + " |"]
    for method, rows in result["entries"].items():
        for r in rows:
            lines.append(f"| {method} | {r['tol']:g} | {r['compression_ratio']:.2f} | "
                         + " | ".join(f"{x:.1e}" for x in r["deviation"]) + " |")
    return lines
