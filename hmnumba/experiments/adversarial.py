"""Experiment 9: adversarial input perturbations (Theorem 1 (e)).

The abstract claims resilience to perturbations. At ``config.adversarial_points``
test points, each network (the trained dense PINN and its H-matrix
compressions at ``config.adversarial_tols``) is attacked separately: a
projected gradient-sign attack (``config.adversarial_steps`` steps of size
``2.5 r / steps``, projected onto the box ``|d_j| <= r``) maximises
``|u(x + d) - u(x)|`` using the PINN's exact input gradients
(:meth:`hmnumba.pinn.PINN.derivatives`), once upwards and once downwards,
at radii ``r = config.adversarial_radii`` times the domain's width. The
worst change per point is compared between the compressed and the dense
network, and with Theorem 1 (e)'s bound
(:func:`hmnumba.bounds.adversarial_bound`, for ``||d||_2 <= r sqrt(dim)``).
"""
import numpy as np

from hmnumba.bounds import adversarial_bound
from hmnumba.experiments._verdict import CONTRADICTS, PARTLY, SUPPORTS, combine
from hmnumba.experiments._verdict import verdict as verdict_of

NAME = "adversarial"
TITLE = "Adversarial input perturbations (Theorem 1 (e))"
FIGURE = "thm1e_adversarial.png"
CLAIM = ("The compressed network is as resilient to worst-case input perturbations as the "
         "dense one, within Theorem 1 (e)'s bound.")
#: "As resilient": the worst-case output change of the compressed network at
#: most this factor times the dense network's.
MAX_AMPLIFICATION = 1.1


def attack(model, x, radius, steps):
    """Worst output change ``max(|u(x + d) - u(x)|)`` per point found by a
    projected gradient-sign attack in the box ``|d_j| <= radius`` (both signs
    of the change are tried); returns ``(change (N,), d (N, dim))``."""
    u0 = model.predict(x)
    best, best_d = np.zeros(x.shape[0]), np.zeros_like(x)
    step = 2.5 * radius / steps
    for sign in (1.0, -1.0):
        d = np.zeros_like(x)
        for _ in range(steps):
            _, g = model.derivatives(x + d, order=1)
            d = np.clip(d + step * sign * np.sign(g), -radius, radius)
        change = np.abs(model.predict(x + d) - u0)
        better = change > best
        best[better], best_d[better] = change[better], d[better]
    return best, best_d


def spectral_norms(model):
    """``||W_l||_2`` of every layer (the compressed weight where compressed)."""
    return [float(np.linalg.norm(layer.to_dense(), 2)) for layer in model.layers]


def run(ctx):
    """Attack the dense and the compressed networks at each radius.

    Returns
    -------
    dict
        ``radii`` (absolute, per coordinate), ``tols``, ``n_points``,
        ``steps``, ``dense`` (per radius ``max`` and ``mean`` worst change),
        and per tol a row with ``weight_error``, per radius ``max``,
        ``mean``, ``amplification`` (max over points of the compressed
        network's change over the dense network's maximum), ``bound``
        (Theorem 1 (e) with the compressed layers' norms) and ``holds``.
    """
    c = ctx.config
    dense = ctx.train()
    lo, hi = np.asarray(ctx.problem.lo, float), np.asarray(ctx.problem.hi, float)
    x = ctx.problem.test_grid()
    rng = np.random.default_rng(c.seed + 9)
    if x.shape[0] > c.adversarial_points:
        x = x[rng.choice(x.shape[0], c.adversarial_points, replace=False)]
    width = float(np.max(hi - lo))
    radii = [float(r) * width for r in c.adversarial_radii]
    dim = x.shape[1]
    dense_rows = []
    for r in radii:
        ch, _ = attack(dense, x, r, c.adversarial_steps)
        dense_rows.append(dict(radius=r, max=float(ch.max()), mean=float(ch.mean())))
    rows = []
    for tol in c.adversarial_tols:
        model = ctx.compress("hmatrix", tol=tol)
        norms = spectral_norms(model)
        werr = max(float(np.linalg.norm(model.layers[i].to_dense() - dense.layers[i].to_dense())
                         / np.linalg.norm(dense.layers[i].to_dense()))
                   for i in dense.hidden_layers)
        per = []
        for r, d in zip(radii, dense_rows):
            ch, _ = attack(model, x, r, c.adversarial_steps)
            bound = adversarial_bound(norms, r * np.sqrt(dim))
            per.append(dict(radius=r, max=float(ch.max()), mean=float(ch.mean()),
                            amplification=float(ch.max() / d["max"]) if d["max"] > 0 else 1.0,
                            bound=bound, holds=bool(ch.max() <= bound)))
        rows.append(dict(tol=tol, weight_error=werr, radii=per))
    return dict(radii=radii, tols=list(c.adversarial_tols), n_points=int(x.shape[0]),
                steps=c.adversarial_steps, dense=dense_rows, entries=rows)


def verdict(result):
    """Contradicts if Theorem 1 (e)'s bound fails anywhere; otherwise, per
    (tol, radius), resilient if the compressed network's worst change is at
    most :data:`MAX_AMPLIFICATION` times the dense one's: supports if
    resilient everywhere, partly if somewhere, contradicts if nowhere."""
    cells = [(row["tol"], p) for row in result["entries"] for p in row["radii"]]
    held = all(p["holds"] for _, p in cells)
    ok = [p["amplification"] <= MAX_AMPLIFICATION for _, p in cells]
    worst = max(cells, key=lambda tp: tp[1]["amplification"])
    listing = "; ".join(
        f"tol {row['tol']:g}: " + ", ".join(f"{p['amplification']:.3f}" for p in row["radii"])
        for row in result["entries"])
    head = (f"Worst-case output change of the compressed network over the dense one's "
            f"(radii {', '.join(f'{r:.0e}' for r in result['radii'])}; {listing}); largest "
            f"{worst[1]['amplification']:.3f} at tol {worst[0]:g}; Theorem 1 (e)'s bound "
            f"{'holds everywhere' if held else 'FAILS'}")
    if not held:
        return verdict_of(CONTRADICTS, head + ": contradicts the theorem.")
    outcome = combine(ok)
    resilient = [tp for tp, good in zip(cells, ok) if good]
    tail = {SUPPORTS: f": at most {MAX_AMPLIFICATION:g}x the dense network's change "
                      "everywhere, supports the claim.",
            PARTLY: f": within {MAX_AMPLIFICATION:g}x in {len(resilient)} of {len(cells)} "
                    "cases only, partly supports the claim.",
            CONTRADICTS: f": more than {MAX_AMPLIFICATION:g}x the dense network's change "
                         "everywhere, contradicts the claim here."}[outcome]
    return verdict_of(outcome, head + tail)


def plot(result, path):
    """Worst-case change against radius, dense and compressed (PNG at ``path``)."""
    from hmnumba.experiments._plot import pyplot, save
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    r = result["radii"]
    ax.plot(r, [d["max"] for d in result["dense"]], "k*-", lw=2, label="dense (max)")
    cmap = plt.get_cmap("autumn")
    rows = result["entries"]
    for k, row in enumerate(rows):
        col = cmap(k / max(1, len(rows) - 1))
        ax.plot(r, [p["max"] for p in row["radii"]], "o--", color=col,
                label=f"H-matrix tol {row['tol']:g} (max)")
        ax.plot(r, [p["bound"] for p in row["radii"]], ":", color=col,
                label=f"Theorem 1 (e) bound, tol {row['tol']:g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("attack radius per coordinate")
    ax.set_ylabel("worst |u(x + d) - u(x)| over the points")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"Theorem 1 (e): gradient-sign attacks ({result['steps']} steps, "
                 f"{result['n_points']} points)")
    save(fig, path)


def table(result):
    """Markdown rows: radius, dense, and per tol the compressed network."""
    lines = ["| radius | network | worst change | mean change | vs dense | Thm 1 (e) bound |",
             "| ---: | --- | ---: | ---: | ---: | ---: |"]
    for k, d in enumerate(result["dense"]):
        lines.append(f"| {d['radius']:.1e} | dense | {d['max']:.3e} | {d['mean']:.3e} | 1 | - |")
        for row in result["entries"]:
            p = row["radii"][k]
            lines.append(f"| {d['radius']:.1e} | H-matrix tol {row['tol']:g} | {p['max']:.3e} "
                         f"| {p['mean']:.3e} | {p['amplification']:.3f} | {p['bound']:.2e} |")
    return lines
