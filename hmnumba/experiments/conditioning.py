"""Experiment 8: conditioning of the compressed weights (Theorem 1 (c), (d), Theorem 3).

For every hidden-to-hidden weight ``W`` of the trained PINN and every
tolerance of ``config.propagation_tols``, with ``H`` its H-matrix and ``eps =
||W - H||_2``:

- Theorem 1 (c): ``kappa(H) <= (s_max + eps) / (s_min - eps)``, where it
  applies (``eps < s_min(W)``; trained weights are often numerically
  low-rank, and then it does not);
- Theorem 3: the same with the effective smallest singular value ``s_eff``,
  the smallest singular value of ``W`` kept by truncation regularisation at
  ``config.reg_rcond * s_max``, and its first-order form;
- Theorem 1 (d): the layer's factors are moved by a step along the PINN
  loss gradient (what training does to them) of relative size
  ``config.perturbation_sizes``; ``delta`` from
  :func:`hmnumba.bounds.factor_perturbation_bound`, and the effective
  condition number (same rank as Theorem 3) of the perturbed layer against
  :func:`hmnumba.bounds.perturbed_condition_number_bound`.

Each bound is checked against the measured value wherever it applies.
"""
import numpy as np

from hmnumba.bounds import (condition_number_bound, effective_condition_number_bound,
                            factor_perturbation_bound, perturbed_condition_number_bound)
from hmnumba.experiments._verdict import CONTRADICTS, PARTLY, SUPPORTS, UNTESTED
from hmnumba.experiments._verdict import verdict as verdict_of

NAME = "conditioning"
TITLE = "Conditioning bounds (Theorem 1 (c), (d), Theorem 3)"
FIGURE = "thm1cd_thm3_conditioning.png"
CLAIM = ("The condition number of the H-matrix, of an H-matrix perturbed inside the PINN, "
         "and the effective condition number after regularisation stay within the bounds of "
         "Theorem 1 (c), (d) and Theorem 3, close to the original's for small eps.")


def _sv(M):
    return np.linalg.svd(M, compute_uv=False)


def _try(fn, *args, **kwargs):
    try:
        return float(fn(*args, **kwargs))
    except ValueError:
        return None


def _holds(measured, bound):
    return None if bound is None else bool(measured <= bound * (1 + 1e-10))


def _layer_gradients(model, problem, x_r, x_b, g_b):
    """Loss gradient split per layer (``params`` order of :meth:`PINN.get_params`)."""
    _, g = model.loss(problem, x_r, x_b, g_b)
    out, o = [], 0
    for layer in model.layers:
        out.append(g[o:o + layer.n_params])
        o += layer.n_params
    return out


def run(ctx):
    """Singular values, condition numbers and the three bounds per layer and tol.

    Returns
    -------
    dict
        ``tols``, ``reg_rcond``, ``perturbation_sizes`` and ``rows``: one per
        (layer, tol) with ``layer``, ``tol``, ``eps``, ``s_max``, ``s_min``,
        ``rank_eff``, ``s_eff``, ``kappa`` / ``kappa_bound`` (1 (c); bound None
        where it does not apply), ``kappa_eff_A``, ``kappa_eff`` /
        ``kappa_eff_bound`` / ``kappa_eff_first_order`` (Theorem 3), and
        ``perturbed``: per size ``delta``, ``delta_exact``, ``kappa_eff``,
        ``bound`` (1 (d)).
    """
    c = ctx.config
    dense = ctx.train()
    x_r = ctx.problem.sample_collocation(c.n_collocation, random_state=c.seed)
    x_b, g_b = ctx.problem.sample_boundary(c.n_boundary, random_state=c.seed + 1)
    rows = []
    for tol in c.propagation_tols:
        model = ctx.compress("hmatrix", tol=tol)
        grads = _layer_gradients(model, ctx.problem, x_r, x_b, g_b)
        for i in dense.hidden_layers:
            W = dense.layers[i].to_dense()
            H = model.layers[i].H
            Hd = H.to_dense(np.float64)
            s, sh = _sv(W), _sv(Hd)
            eps = float(np.linalg.norm(W - Hd, 2))
            r = int(np.sum(s >= c.reg_rcond * s[0]))
            row = dict(layer=i, tol=tol, eps=eps, s_max=float(s[0]), s_min=float(s[-1]),
                       rank_eff=r, s_eff=float(s[r - 1]),
                       kappa=float(sh[0] / sh[-1]) if sh[-1] > 0 else float("inf"),
                       kappa_bound=_try(condition_number_bound, s[0], s[-1], eps),
                       kappa_eff_A=float(s[0] / s[r - 1]),
                       kappa_eff=float(sh[0] / sh[r - 1]) if sh[r - 1] > 0 else float("inf"),
                       kappa_eff_bound=_try(effective_condition_number_bound, s, eps, rank=r),
                       kappa_eff_first_order=_try(effective_condition_number_bound, s, eps,
                                                  rank=r, first_order=True))
            row["kappa_holds"] = _holds(row["kappa"], row["kappa_bound"])
            row["kappa_eff_holds"] = _holds(row["kappa_eff"], row["kappa_eff_bound"])
            g = grads[i][:H.data.size]
            pert = []
            for size in c.perturbation_sizes:
                d = -size * np.linalg.norm(H.data) / max(np.linalg.norm(g), 1e-300) * g
                delta = factor_perturbation_bound(H, d)
                H.data[:] += d
                try:
                    Hp = H.to_dense(np.float64)
                finally:
                    H.data[:] -= d
                sp = _sv(Hp)
                bound = _try(perturbed_condition_number_bound, sh, delta, rank=r)
                k_eff = float(sp[0] / sp[r - 1]) if sp[r - 1] > 0 else float("inf")
                pert.append(dict(size=size, delta=delta,
                                 delta_exact=float(np.linalg.norm(Hp - Hd)),
                                 kappa_eff=k_eff, bound=bound, holds=_holds(k_eff, bound)))
            row["perturbed"] = pert
            rows.append(row)
    return dict(tols=list(c.propagation_tols), reg_rcond=c.reg_rcond,
                perturbation_sizes=list(c.perturbation_sizes), rows=rows)


def verdict(result):
    """Contradicts if any bound fails where it applies (or a factor
    perturbation exceeds its ``delta``); supports if every part applied
    somewhere and held; partly if the bounds held but some part never
    applied (the sentence says which); untested if none applied. Layers
    stored exactly (``eps = 0``) are not counted for 1 (c) and Theorem 3."""
    rows = result["rows"]
    # a layer stored exactly (eps = 0) meets 1 (c) and Theorem 3 trivially:
    # only compressed layers count as tests
    lossy = [r for r in rows if r["eps"] > 0]
    checks = {"1 (c)": [r["kappa_holds"] for r in lossy],
              "Theorem 3": [r["kappa_eff_holds"] for r in lossy],
              "1 (d)": [p["holds"] for r in rows for p in r["perturbed"]]}
    delta_ok = all(p["delta_exact"] <= p["delta"] * (1 + 1e-10) + 1e-300
                   for r in rows for p in r["perturbed"])
    applied = {k: [h for h in v if h is not None] for k, v in checks.items()}
    parts = [f"{k}: held {sum(v)} of {len(v)} applicable (of {len(checks[k])} "
             f"{'steps' if k == '1 (d)' else 'compressed layers'})" for k, v in applied.items()]
    small = [r for r in lossy if r["kappa_eff_bound"] is not None]
    close = ""
    if small:
        r = min(small, key=lambda r: r["tol"])
        close = (f"; at tol {r['tol']:g} layer {r['layer']} keeps kappa_eff {r['kappa_eff']:.3g} "
                 f"against {r['kappa_eff_A']:.3g} for W (rank {r['rank_eff']}, bound "
                 f"{r['kappa_eff_bound']:.3g}, first order {r['kappa_eff_first_order']:.3g})")
    head = "Bounds against measured condition numbers (" + "; ".join(parts) + ")" + close
    if not delta_ok or any(not all(v) for v in applied.values()):
        return verdict_of(CONTRADICTS, head + ": a bound fails where it applies, contradicts "
                          "the theorem.")
    never = [k for k, v in applied.items() if not v]
    if len(never) == len(applied):
        return verdict_of(UNTESTED, head + ": no bound applies (eps >= the smallest singular "
                          "value everywhere), untested.")
    if never:
        return verdict_of(PARTLY, head + f": the bounds hold where they apply, but "
                          f"{', '.join(never)} never applies to these weights (eps >= the "
                          f"singular value it divides by), partly supports the claim.")
    return verdict_of(SUPPORTS, head + ": every bound applies somewhere and holds, supports "
                      "the claim.")


def plot(result, path):
    """Measured condition numbers and their bounds against tol (PNG at ``path``)."""
    from hmnumba.experiments._plot import pyplot, save
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    layers = sorted({r["layer"] for r in result["rows"]})
    cmap = plt.get_cmap("tab10")
    for k, layer in enumerate(layers):
        rows = [r for r in result["rows"] if r["layer"] == layer]
        t = [r["tol"] for r in rows]
        col = cmap(k)
        ax1.plot(t, [r["kappa_eff"] for r in rows], "o-", color=col,
                 label=f"layer {layer}: kappa_eff(H)")
        ax1.plot(t, [r["kappa_eff_bound"] if r["kappa_eff_bound"] else np.nan for r in rows],
                 "s--", color=col, mfc="none", label=f"layer {layer}: Theorem 3 bound")
        ax1.axhline(rows[0]["kappa_eff_A"], color=col, ls=":", lw=0.8)
        for r in rows:
            sizes = [p["size"] for p in r["perturbed"]]
            ax2.plot(sizes, [p["kappa_eff"] for p in r["perturbed"]], "o-", color=col,
                     alpha=0.4 + 0.6 * (r["tol"] == min(t)))
            ax2.plot(sizes, [p["bound"] if p["bound"] else np.nan for p in r["perturbed"]],
                     "s--", color=col, mfc="none", alpha=0.4 + 0.6 * (r["tol"] == min(t)))
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    ax1.set_xlabel("tol")
    ax1.set_ylabel(f"effective condition number (s >= {result['reg_rcond']:g} s_max)")
    ax1.legend(fontsize=7)
    ax2.set_xlabel("relative size of the factor step along the loss gradient")
    ax2.set_ylabel("kappa_eff of the perturbed layer (o) and Theorem 1 (d) bound (s)")
    fig.suptitle("Theorem 1 (c), (d), Theorem 3: conditioning of the compressed hidden "
                 "weights (dotted: kappa_eff(W))")
    save(fig, path)


def table(result):
    """Markdown rows per layer and tol."""
    def f(v):
        return "n/a" if v is None else f"{v:.3g}"
    lines = ["| layer | tol | eps | s_min(W) | kappa(H) | 1 (c) bound | rank | s_eff | "
             "kappa_eff(W) | kappa_eff(H) | Thm 3 bound | first order | 1 (d): delta, "
             "kappa_eff, bound per step size |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
             "| ---: | --- |"]
    for r in result["rows"]:
        pert = "; ".join(f"{p['delta']:.1e}, {p['kappa_eff']:.3g}, {f(p['bound'])}"
                         for p in r["perturbed"])
        lines.append(f"| {r['layer']} | {r['tol']:g} | {r['eps']:.2e} | {r['s_min']:.2e} | "
                     f"{r['kappa']:.3g} | {f(r['kappa_bound'])} | {r['rank_eff']} | "
                     f"{r['s_eff']:.2e} | {r['kappa_eff_A']:.3g} | {r['kappa_eff']:.3g} | "
                     f"{f(r['kappa_eff_bound'])} | {f(r['kappa_eff_first_order'])} | {pert} |")
    return lines
