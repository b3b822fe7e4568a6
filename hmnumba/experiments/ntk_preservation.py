"""Experiment 7: NTK preservation (the paper's Theorem 2).

The empirical neural tangent kernel of the PINN,
``K = [[K_uu, K_ur], [K_ur^T, K_rr]]`` with ``K_uu = J_u J_u^T``,
``K_ur = J_u J_r^T``, ``K_rr = J_r J_r^T`` (``J_u``: Jacobian of ``u`` at the
boundary points, ``J_r``: of the PDE residual at collocation points;
:func:`hmnumba.ntk.empirical_ntk`), is computed for the trained dense
network and, at each tolerance, for its compressed versions in two
parametrisations:

- ``"dense"``: with respect to dense weights held at the compressed values
  (H-matrix and SVD), so the kernel is comparable entry by entry with the
  original (:func:`hmnumba.ntk.compare_ntk`), and Theorem 2's a-posteriori
  bound :func:`hmnumba.bounds.ntk_perturbation_bound` is checked;
- ``"factors"``: with respect to the H-matrix's own parameters (the block
  factors and dense blocks of every :class:`~hmnumba.pinn.HMatrixLayer`, and
  the biases), the kernel of Theorem 2 and the one whose gradient flow
  compression-aware training follows. It lives in another parameter space,
  so it is compared through scale-free properties: kernel alignment and the
  trace-normalised spectrum.

Both are judged for what Theorem 2 claims: the kernel stays close, it stays
positive definite when the original is, and its spectrum is kept. Theorem
2's constant ``C`` in ``||K_H - K||_F / ||K||_F <= C eps`` (``eps``: the
relative weight error) is fitted on the two largest inexact tolerances
(:func:`hmnumba.bounds.fit_ntk_constant`) and must predict the others.
"""
import numpy as np

from hmnumba.bounds import fit_ntk_constant, ntk_perturbation_bound
from hmnumba.experiments._verdict import CONTRADICTS, PARTLY, SUPPORTS, UNTESTED, combine
from hmnumba.experiments._verdict import verdict as verdict_of
from hmnumba.ntk import compare_ntk, empirical_ntk, ntk_jacobians, ntk_spectrum

NAME = "ntk"
TITLE = "NTK preservation"
FIGURE = "thm2_ntk.png"
CLAIM = ("Theorem 2: the NTK of the H-matrix PINN, also taken with respect to the H-matrix's "
         "own parameters, stays close to the dense one (||K_H - K||_F <= C eps), positive "
         "definite, with its spectrum preserved.")
#: "Close": relative Frobenius change of the NTK at most this.
CLOSE = 0.1
#: Eigenvalues at least this fraction of the largest are the "leading" ones
#: whose preservation is judged (they govern training over four decades).
LEADING = 1e-4
#: A leading eigenvalue is preserved if within this relative error.
SPECTRUM_RTOL = 0.1
#: Numerical positive definiteness: smallest eigenvalue above this fraction
#: of the largest. When the dense NTK itself is not positive definite (more
#: samples than directions the network resolves), what can be kept is its
#: numerical rank: the number of eigenvalues above this fraction.
PD_RTOL = 1e-12


def _eigs(K):
    return ntk_spectrum(K)


def spectrum_error(lam0, lam, normalise):
    """Largest relative error of the leading eigenvalues (``>= LEADING`` of the
    largest), after dividing each spectrum by its trace if ``normalise``."""
    lam0, lam = np.asarray(lam0, float), np.asarray(lam, float)
    if normalise:
        lam0, lam = lam0 / lam0.sum(), lam / lam.sum()
    lead = lam0 >= LEADING * lam0[0]
    return float(np.max(np.abs(lam[lead] - lam0[lead]) / lam0[lead]))


def positive_definite(lam):
    """Smallest over largest eigenvalue above :data:`PD_RTOL`."""
    return bool(lam[-1] > PD_RTOL * lam[0])


def numerical_rank(lam):
    """Eigenvalues above :data:`PD_RTOL` times the largest."""
    lam = np.asarray(lam, float)
    return int(np.sum(lam > PD_RTOL * lam[0]))


def run(ctx):
    """NTKs of the compressed networks at each tolerance, in both parametrisations.

    Returns
    -------
    dict
        ``tols``, ``n_u``, ``n_r``, ``dense_spectrum`` (eigenvalues of the
        full kernel, descending), ``dense_pd``, ``dense_rank`` (numerical
        rank), ``n_leading``; per method one
        row per tolerance with ``tol``, ``weight_error`` (relative Frobenius
        error of all compressed weights together), ``relative_difference``
        (full kernel), ``alignment``, ``spectrum_distance``, the relative
        difference per block (``uu``, ``ur``, ``rr``), ``spectrum``,
        ``spectrum_error`` (leading eigenvalues), ``pd``, ``rank``, ``bound`` and
        ``bound_holds`` (Theorem 2's a-posteriori bound on ``||K_H - K||_F``)
        and ``compression_ratio``; for the H-matrix also ``factors`` (the
        kernel in the factor parametrisation: ``n_params``, ``alignment``,
        ``spectrum``, ``spectrum_error`` after trace normalisation, ``pd``,
        ``rank``);
        per method the fit of Theorem 2 (``C``, ``C_lsq``, ``exponent``,
        fitted on the two largest inexact tolerances, and ``predicted``: whether
        ``C eps`` bounds every other tolerance).
    """
    c = ctx.config
    dense = ctx.train()
    x_r = ctx.problem.sample_collocation(c.ntk_points, random_state=c.seed + 7)
    x_u, _ = ctx.problem.sample_boundary(max(2, c.ntk_points // 4), random_state=c.seed + 8)
    J0 = np.vstack(ntk_jacobians(dense, ctx.problem, x_u, x_r, parametrization="dense"))
    K0 = empirical_ntk(dense, ctx.problem, x_u, x_r, parametrization="dense")
    lam0 = _eigs(K0)
    W = [dense.layers[i].to_dense() for i in dense.hidden_layers]
    w_norm = np.sqrt(sum(float(np.sum(w * w)) for w in W))
    out, fits = {}, {}
    for method in ("hmatrix", "svd"):
        rows = []
        for tol in c.propagation_tols:
            model = ctx.compress(method, tol=tol)
            err = np.sqrt(sum(float(np.sum((model.layers[i].to_dense() - w) ** 2))
                              for i, w in zip(dense.hidden_layers, W))) / w_norm
            J = np.vstack(ntk_jacobians(model, ctx.problem, x_u, x_r, parametrization="dense"))
            K = empirical_ntk(model, ctx.problem, x_u, x_r, parametrization="dense")
            cmp = compare_ntk(K0, K)
            rel = {name: compare_ntk(b0, b)["relative_frobenius"]
                   for name, b, b0 in zip(("uu", "ur", "rr"), K, K0)}
            lam = _eigs(K)
            bound = ntk_perturbation_bound(J0, J, eigenvalues=lam0)
            row = dict(tol=tol, weight_error=float(err),
                       relative_difference=cmp["relative_frobenius"],
                       alignment=cmp["alignment"], spectrum_distance=cmp["spectrum_distance"],
                       blocks=rel, spectrum=lam.tolist(),
                       spectrum_error=spectrum_error(lam0, lam, normalise=False),
                       pd=positive_definite(lam), rank=numerical_rank(lam),
                       bound=bound["delta"] / np.linalg.norm(K0.full()),
                       bound_holds=bool(np.linalg.norm(K.full() - K0.full())
                                        <= bound["delta"] * (1 + 1e-12)),
                       compression_ratio=dense.hidden_nbytes / model.hidden_nbytes)
            if method == "hmatrix":
                Kf = empirical_ntk(model, ctx.problem, x_u, x_r, parametrization="factors")
                lamf = _eigs(Kf)
                row["factors"] = dict(n_params=int(model.n_params),
                                      alignment=compare_ntk(K0, Kf)["alignment"],
                                      spectrum=lamf.tolist(),
                                      spectrum_error=spectrum_error(lam0, lamf, normalise=True),
                                      pd=positive_definite(lamf),
                                      rank=numerical_rank(lamf))
            rows.append(row)
        out[method] = rows
        fits[method] = predictive_fit(rows)
    return dict(tols=list(c.propagation_tols), n_u=int(x_u.shape[0]), n_r=int(x_r.shape[0]),
                dense_spectrum=lam0.tolist(), dense_pd=positive_definite(lam0),
                dense_rank=numerical_rank(lam0),
                n_leading=int(np.sum(lam0 >= LEADING * lam0[0])), n_params=int(dense.n_params),
                entries=out, fit=fits)


def predictive_fit(rows):
    """Theorem 2's ``C`` fitted on the two largest inexact tolerances, and
    whether ``C eps`` bounds the NTK change at every smaller one (a fit that
    only had to hold where it was fitted would prove nothing)."""
    # a layer stored exactly (all blocks dense, or full SVD rank) has no
    # weight error and no constant to fit
    pts = sorted(((r["weight_error"], r["relative_difference"]) for r in rows
                  if r["weight_error"] > 0), reverse=True)
    if len(pts) < 3:
        return dict(C=None, C_lsq=None, exponent=None, predicted=None, n_checked=0)
    fit = fit_ntk_constant(*zip(*pts[:2]))
    rest = pts[2:]
    predicted = all(d <= fit["C"] * e for e, d in rest)
    slope = fit_ntk_constant(*zip(*pts))["exponent"]
    return dict(C=float(fit["C"]), C_lsq=float(fit["C_lsq"]), exponent=float(slope),
                predicted=bool(predicted), n_checked=len(rest))


def verdict(result):
    """Theorem 2, judged per tolerance for the H-matrix: the dense-parametrised
    NTK is close (relative change <= :data:`CLOSE`); both kernels (dense and
    factor parametrisation) are positive definite when the original is (when
    it is singular, they keep its numerical rank, strict definiteness is
    untested, and the outcome is at most partly); both
    keep the leading spectrum (relative error <= :data:`SPECTRUM_RTOL`, the
    factor kernel after trace normalisation); and ``C`` fitted on the two
    largest tolerances predicts the others. Supports if everything holds,
    contradicts if nothing does, partly otherwise (the sentence lists where);
    untested with fewer than three inexact tolerances."""
    rows = result["entries"]["hmatrix"]
    fit = result["fit"]["hmatrix"]
    if fit["predicted"] is None:
        return verdict_of(UNTESTED, "Fewer than three tolerances gave an inexact H-matrix, so "
                          "C cannot be fitted on some and checked on others.")
    pd0, rank0 = result["dense_pd"], result["dense_rank"]
    close = [r["tol"] for r in rows if r["relative_difference"] <= CLOSE]
    spec = [r["tol"] for r in rows if r["spectrum_error"] <= SPECTRUM_RTOL]
    spec_f = [r["tol"] for r in rows if r["factors"]["spectrum_error"] <= SPECTRUM_RTOL]
    # positive definite where the dense NTK is; where it is singular, its
    # numerical rank kept (strict definiteness cannot be tested then)
    pd = [r["tol"] for r in rows if (r["pd"] if pd0 else r["rank"] >= rank0)]
    pd_f = [r["tol"] for r in rows
            if (r["factors"]["pd"] if pd0 else r["factors"]["rank"] >= rank0)]
    what = ("positive definite: kept" if pd0 else
            f"singular (numerical rank {rank0} of {len(result['dense_spectrum'])}, so positive "
            f"definiteness is untested; its rank kept")
    n = len(rows)

    def at(tols):
        return "all tol" if len(tols) == n else (
            "tol " + ", ".join(f"{t:g}" for t in tols) if tols else "no tol")
    listing = ", ".join(f"tol {r['tol']:g}: {r['relative_difference']:.1e}" for r in rows)
    head = (f"||K_H - K||_F / ||K||_F ({listing}); close (<= {CLOSE:g}) at {at(close)}; "
            f"C = {fit['C']:.1f} fitted on the two largest tolerances "
            f"{'predicts' if fit['predicted'] else 'does NOT predict'} the other "
            f"{fit['n_checked']}; dense NTK {what} at {at(pd)} (dense parametrisation) and "
            f"{at(pd_f)} (H-matrix factors){'' if pd0 else ')'}; leading "
            f"{result['n_leading']} eigenvalues within {SPECTRUM_RTOL:.0%} at {at(spec)} "
            f"(dense parametrisation) and {at(spec_f)} (factors, trace-normalised)")
    parts = [fit["predicted"]] + [r["tol"] in close for r in rows] \
        + [r["tol"] in pd for r in rows] + [r["tol"] in pd_f for r in rows] \
        + [r["tol"] in spec for r in rows] + [r["tol"] in spec_f for r in rows]
    outcome = combine(parts)
    if outcome == SUPPORTS and not pd0:
        return verdict_of(PARTLY, head + ": everything tested holds, but positive "
                          "definiteness itself could not be tested, partly supports the claim.")
    tail = {SUPPORTS: ": supports the claim.",
            PARTLY: ": partly supports the claim (it holds where listed).",
            CONTRADICTS: ": contradicts the claim here."}[outcome]
    return verdict_of(outcome, head + tail)


def plot(result, path):
    """NTK difference against tol, the spectra in the dense parametrisation and
    the trace-normalised spectra in the factor parametrisation (PNG at ``path``)."""
    from hmnumba.experiments._plot import METHOD_STYLE, pyplot, save
    plt = pyplot()
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4.2))
    for method, rows in result["entries"].items():
        ax1.plot([r["tol"] for r in rows], [r["relative_difference"] for r in rows],
                 **METHOD_STYLE[method])
    t = np.array(result["tols"])
    ax1.plot(t, t, color="gray", ls=":", label="tol")
    ax1.axhline(CLOSE, color="gray", ls="--", lw=0.8, label=f"close ({CLOSE:g})")
    ax1.set_xscale("log")
    ax1.set_yscale("log")
    ax1.set_xlabel("tol")
    ax1.set_ylabel("||K_c - K||_F / ||K||_F (dense parametrisation)")
    ax1.grid(True, which="both", alpha=0.3)
    ax1.legend(fontsize=8)
    lam0 = np.asarray(result["dense_spectrum"])
    cmap = plt.get_cmap("autumn")
    rows = result["entries"]["hmatrix"]
    for ax, key, scale in ((ax2, None, 1.0), (ax3, "factors", lam0.sum())):
        ax.plot(np.maximum(lam0 / scale, 1e-18), color="black", lw=2, label="dense")
        for k, r in enumerate(rows):
            lam = np.asarray(r["spectrum"] if key is None else r[key]["spectrum"])
            if key is not None:
                lam = lam / lam.sum()
            ax.plot(np.maximum(lam, 1e-18), color=cmap(k / max(1, len(rows) - 1)), ls="--",
                    label=f"H-matrix tol {r['tol']:g}")
        ax.set_yscale("log")
        ax.set_xlabel("index")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    ax2.set_ylabel("eigenvalue (dense-weight parametrisation)")
    ax3.set_ylabel("eigenvalue / trace (H-matrix factor parametrisation)")
    fig.suptitle(f"NTK check, Theorem 2 (not a figure of the paper): empirical NTK "
                 f"({result['n_u']} boundary + {result['n_r']} collocation points)")
    save(fig, path)


def table(result):
    """Markdown rows: per method and tol the relative NTK difference (full and
    blocks), Theorem 2's bound, positive definiteness and spectrum errors in
    both parametrisations."""
    lines = ["| method | tol | ratio | weight error | full K | K_uu | K_ur | K_rr | Thm 2 bound "
             "| alignment | leading spectrum error | PD | factors: alignment | factors: "
             "spectrum error | factors: PD |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- "
             "| ---: | ---: | --- |"]
    for method, rows in result["entries"].items():
        for r in rows:
            b = r["blocks"]
            f = r.get("factors")
            fac = (f"{f['alignment']:.6f} | {f['spectrum_error']:.2e} | "
                   f"{'yes' if f['pd'] else 'no'} (rank {f['rank']})") if f else "- | - | -"
            lines.append(f"| {method} | {r['tol']:g} | {r['compression_ratio']:.2f} | "
                         f"{r['weight_error']:.2e} | {r['relative_difference']:.2e} | "
                         f"{b['uu']:.2e} | {b['ur']:.2e} | {b['rr']:.2e} | {r['bound']:.2e} | "
                         f"{r['alignment']:.6f} | {r['spectrum_error']:.2e} | "
                         f"{'yes' if r['pd'] else 'no'} (rank {r['rank']}) | {fac} |")
    lines.append("")
    lines.append(f"- dense NTK: {result['n_params']} parameters, "
                 f"{'positive definite' if result['dense_pd'] else 'singular'} (smallest / "
                 f"largest eigenvalue > {PD_RTOL:g}), numerical rank {result['dense_rank']}, "
                 f"{result['n_leading']} eigenvalues >= {LEADING:g} x the largest")
    for method, fit in result["fit"].items():
        if fit["C"] is None:
            continue
        lines.append(f"- {method}: Theorem 2's C = {fit['C']:.2f} fitted on the two largest "
                     f"tolerances (least squares {fit['C_lsq']:.2f}) "
                     f"{'bounds' if fit['predicted'] else 'does NOT bound'} the other "
                     f"{fit['n_checked']}; log-log slope over all {fit['exponent']:.2f}")
    return lines
