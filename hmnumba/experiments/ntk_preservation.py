"""Experiment 7: NTK preservation (the paper's Theorem 2).

The empirical neural tangent kernel of the PINN,
``K = [[K_uu, K_ur], [K_ur^T, K_rr]]`` with ``K_uu = J_u J_u^T``,
``K_ur = J_u J_r^T``, ``K_rr = J_r J_r^T`` (``J_u``: Jacobian of ``u`` at the
boundary points, ``J_r``: of the PDE residual at collocation points, with
respect to all weights and biases; :func:`hmnumba.ntk.empirical_ntk`), is
computed for the trained dense network and for the networks whose hidden
weights are replaced by their H-matrix (and SVD) reconstructions at each
tolerance, in the dense parametrisation (``parametrization="dense"``), so
the kernels are comparable entry by entry (:func:`hmnumba.ntk.compare_ntk`).
Theorem 2's constant ``C`` in
``||K_H - K||_F / ||K||_F <= C eps`` (``eps``: the relative weight error of
the compressed layers) is fitted by :func:`hmnumba.bounds.fit_ntk_constant`.
"""
import numpy as np

from hmnumba.bounds import fit_ntk_constant
from hmnumba.ntk import compare_ntk, empirical_ntk, ntk_spectrum

NAME = "ntk"
TITLE = "NTK preservation"
FIGURE = "fig7_ntk.png"
CLAIM = ("The NTK of the H-matrix-compressed PINN stays close to the dense one: "
         "||K_H - K||_F / ||K||_F shrinks in proportion to tol.")


def run(ctx):
    """Relative NTK differences and spectra for H-matrix and SVD at each tolerance.

    Returns
    -------
    dict
        ``tols``, ``n_u``, ``n_r``, ``dense_spectrum`` (eigenvalues of the
        full kernel, descending), per method one row per tolerance with
        ``tol``, ``weight_error`` (relative Frobenius error of all compressed
        weights together), ``relative_difference`` (full kernel),
        ``alignment`` and ``spectrum_distance`` (:func:`hmnumba.ntk.compare_ntk`),
        the relative difference per block (``uu``, ``ur``, ``rr``),
        ``spectrum`` and ``compression_ratio``; and
        per method the fit of Theorem 2 (``C``, ``C_lsq``, ``exponent``).
    """
    c = ctx.config
    dense = ctx.train()
    x_r = ctx.problem.sample_collocation(c.ntk_points, random_state=c.seed + 7)
    x_u, _ = ctx.problem.sample_boundary(max(2, c.ntk_points // 4), random_state=c.seed + 8)
    K0 = empirical_ntk(dense, ctx.problem, x_u, x_r, parametrization="dense")
    W = [dense.layers[i].to_dense() for i in dense.hidden_layers]
    w_norm = np.sqrt(sum(float(np.sum(w * w)) for w in W))
    out, fits = {}, {}
    for method in ("hmatrix", "svd"):
        rows = []
        for tol in c.propagation_tols:
            model = ctx.compress(method, tol=tol)
            err = np.sqrt(sum(float(np.sum((model.layers[i].to_dense() - w) ** 2))
                              for i, w in zip(dense.hidden_layers, W))) / w_norm
            K = empirical_ntk(model, ctx.problem, x_u, x_r, parametrization="dense")
            cmp = compare_ntk(K0, K)
            rel = {name: compare_ntk(b0, b)["relative_frobenius"]
                   for name, b, b0 in zip(("uu", "ur", "rr"), K, K0)}
            rows.append(dict(tol=tol, weight_error=float(err),
                             relative_difference=cmp["relative_frobenius"],
                             alignment=cmp["alignment"],
                             spectrum_distance=cmp["spectrum_distance"],
                             blocks=rel, spectrum=ntk_spectrum(K).tolist(),
                             compression_ratio=dense.hidden_nbytes / model.hidden_nbytes))
        out[method] = rows
        # a layer stored exactly (all blocks dense, or full SVD rank) has no
        # weight error and no constant to fit
        pts = [(r["weight_error"], r["relative_difference"]) for r in rows
               if r["weight_error"] > 0]
        if len(pts) >= 2:
            fit = fit_ntk_constant(*zip(*pts))
            fits[method] = {k: float(fit[k]) for k in ("C", "C_lsq", "exponent")}
        else:
            fits[method] = dict(C=None, C_lsq=None, exponent=None)
    return dict(tols=list(c.propagation_tols), n_u=int(x_u.shape[0]), n_r=int(x_r.shape[0]),
                dense_spectrum=ntk_spectrum(K0).tolist(), entries=out, fit=fits)


def verdict(result):
    """Supports if the NTK difference falls monotonically with tol and its
    log-log slope against the weight error is at least 0.8."""
    rows = result["entries"]["hmatrix"]
    fit = result["fit"]["hmatrix"]
    d = [r["relative_difference"] for r in rows]
    if fit["exponent"] is None or not np.isfinite(fit["exponent"]):
        return dict(supports=None, sentence="Fewer than two tolerances gave an inexact "
                    "H-matrix, so no NTK sensitivity can be fitted.")
    s = fit["exponent"]
    monotone = all(a >= b for a, b in zip(d, d[1:]))
    listing = ", ".join(f"tol {r['tol']:g}: {r['relative_difference']:.1e}" for r in rows)
    head = (f"||K_H - K||_F / ||K||_F ({listing}) scales like eps^{s:.2f} in the weight "
            f"error eps, with Theorem 2's constant C = {fit['C']:.1f} over the sweep"
            f"{'' if monotone else ' (not monotone)'}")
    if monotone and s >= 0.8:
        return dict(supports=True, sentence=head + ": the NTK moves at most in proportion "
                    "to the weight error, supports the claim.")
    return dict(supports=False, sentence=head + ": it does not shrink in proportion to the "
                "weight error, contradicts the claim here.")


def plot(result, path):
    """NTK difference against tol, and the spectra (PNG at ``path``)."""
    from hmnumba.experiments._plot import METHOD_STYLE, pyplot, save
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for method, rows in result["entries"].items():
        ax1.plot([r["tol"] for r in rows], [r["relative_difference"] for r in rows],
                 **METHOD_STYLE[method])
    t = np.array(result["tols"])
    ax1.plot(t, t, color="gray", ls=":", label="tol")
    ax1.set_xscale("log")
    ax1.set_yscale("log")
    ax1.set_xlabel("tol")
    ax1.set_ylabel("||K_c - K||_F / ||K||_F")
    ax1.grid(True, which="both", alpha=0.3)
    ax1.legend(fontsize=8)
    ax2.plot(np.maximum(result["dense_spectrum"], 1e-16), color="black", lw=2, label="dense")
    cmap = plt.get_cmap("autumn")
    rows = result["entries"]["hmatrix"]
    for k, r in enumerate(rows):
        ax2.plot(np.maximum(r["spectrum"], 1e-16), color=cmap(k / max(1, len(rows) - 1)),
                 ls="--", label=f"H-matrix tol {r['tol']:g}")
    ax2.set_yscale("log")
    ax2.set_xlabel("index")
    ax2.set_ylabel("eigenvalue of the NTK")
    ax2.grid(True, which="both", alpha=0.3)
    ax2.legend(fontsize=8)
    fig.suptitle(f"Fig. 7: empirical NTK ({result['n_u']} boundary + {result['n_r']} "
                 f"collocation points)")
    save(fig, path)


def table(result):
    """Markdown rows: method, tol, ratio, relative NTK difference (full and blocks)."""
    lines = ["| method | tol | ratio | weight error | full K | K_uu | K_ur | K_rr | alignment "
             "| spectrum distance |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for method, rows in result["entries"].items():
        for r in rows:
            b = r["blocks"]
            lines.append(f"| {method} | {r['tol']:g} | {r['compression_ratio']:.2f} | "
                         f"{r['weight_error']:.2e} | {r['relative_difference']:.2e} | "
                         f"{b['uu']:.2e} | {b['ur']:.2e} | {b['rr']:.2e} | "
                         f"{r['alignment']:.6f} | {r['spectrum_distance']:.2e} |")
    lines.append("")
    for method, fit in result["fit"].items():
        if fit["C"] is None:
            continue
        lines.append(f"- {method}: Theorem 2 fit ||K_c - K||_F / ||K||_F <= C eps with "
                     f"C = {fit['C']:.2f} (least squares {fit['C_lsq']:.2f}), log-log slope "
                     f"{fit['exponent']:.2f}")
    return lines
