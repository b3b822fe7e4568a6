"""Experiment 5 (paper Fig. 5): inference speed.

For each width ``w`` a network ``[d, w, w, w, 1]`` is given hidden-to-hidden
weights of the kind a compressible PINN has (a rank-``speed_rank`` Glorot
start, :class:`hmnumba.pinn.PINN` ``init_rank``, plus Gaussian noise of
relative size 1e-3 so no array is exactly low rank); the same network is
evaluated (``predict``, one batch of ``speed_batch`` points) dense, with
H-matrix layers (``tol = speed_tol``), SVD layers at the same tolerance (two
thin products), pruned layers (90 % sparsity, CSR) and 8-bit quantized
layers (integer codes). After one warm-up call each, the methods are timed
in ``speed_repeats`` interleaved rounds (every round times every method
once, in an order rotated from round to round), so a slow spell of a shared
machine hits all methods alike; times are reported as the median and
quartiles, with ``config.threads`` numba and BLAS threads. The verdict
compares methods through the paired ratios of each round, never through
single numbers.
"""
import time

import numpy as np

from hmnumba.experiments._verdict import CONTRADICTS, PARTLY, SUPPORTS, UNTESTED
from hmnumba.experiments._verdict import verdict as verdict_of

NAME = "speed"
TITLE = "Inference speed"
FIGURE = "fig5_speed.png"
CLAIM = ("H-matrix inference is faster than dense, SVD, pruned and quantized layers, with "
         "little variance (Fig. 5).")
#: "Little variance": interquartile range of the H-matrix's times at most
#: this fraction of their median.
MAX_SPREAD = 0.1
SETTINGS = dict(pruning=dict(sparsity=0.9), quantization=dict(bits=8))


def _network(ctx, width, rng):
    """A dense ``[d, w, w, w, 1]`` PINN with near-low-rank hidden weights."""
    from hmnumba.pinn import PINN, DenseLayer
    c = ctx.config
    net = PINN([ctx.problem.dim, width, width, width, 1], init_rank=c.speed_rank,
               random_state=int(rng.integers(2 ** 31)))
    layers = []
    for i, layer in enumerate(net.layers):
        W = layer.to_dense()
        if i in net.hidden_layers:
            noise = rng.standard_normal(W.shape)
            W = W + 1e-3 * np.linalg.norm(W) / np.linalg.norm(noise) * noise
        layers.append(DenseLayer(W, layer.b))
    return PINN.from_layers(layers, net.activation)


def _times(fns, repeats):
    """Seconds of ``repeats`` interleaved rounds: each function is called once
    to warm up, then every round calls every function once, the order
    rotated by one each round. Returns an array ``(len(fns), repeats)``."""
    for fn in fns:
        fn()
    out = np.empty((len(fns), repeats))
    for k in range(repeats):
        for j in range(len(fns)):
            i = (j + k) % len(fns)
            t = time.perf_counter()
            fns[i]()
            out[i, k] = time.perf_counter() - t
    return out


def run(ctx):
    """Time one batch through each network at each width.

    Returns
    -------
    dict
        ``widths``, ``batch``, ``repeats``, ``threads`` and, per method, a
        list (one per width) of ``median``, ``q25``, ``q75``, ``min``,
        ``max`` seconds, ``times`` (one per round; rounds are paired across
        methods), ``compression_ratio`` and ``weight_error`` (largest
        relative Frobenius error over the hidden layers; H-matrices also
        ``error_bound``).
    """
    c = ctx.config
    rng = np.random.default_rng(c.seed + 5)
    lo, hi = np.asarray(ctx.problem.lo), np.asarray(ctx.problem.hi)
    x = lo + (hi - lo) * rng.random((c.speed_batch, ctx.problem.dim))
    methods = ("dense", "hmatrix", "svd", "pruning", "quantization")
    out = {m: [] for m in methods}
    for width in c.speed_widths:
        ctx.progress(f"  speed: width {width}")
        dense = _network(ctx, width, rng)
        nets = {}
        for m in methods:
            if m == "dense":
                nets[m] = dense
            elif m == "hmatrix":
                nets[m] = dense.compress("hmatrix", tol=c.speed_tol, leaf_size=c.leaf_size,
                                         random_state=c.seed)
            elif m == "svd":
                nets[m] = dense.compress("svd", tol=c.speed_tol)
            else:
                nets[m] = dense.compress(m, **SETTINGS[m])
        times = _times([(lambda net=nets[m]: net.predict(x)) for m in methods],
                       c.speed_repeats)
        for m, t in zip(methods, times):
            net = nets[m]
            errs = [np.linalg.norm(net.layers[i].to_dense() - dense.layers[i].W)
                    / np.linalg.norm(dense.layers[i].W) for i in dense.hidden_layers]
            row = dict(width=width, median=float(np.median(t)),
                       q25=float(np.percentile(t, 25)), q75=float(np.percentile(t, 75)),
                       min=float(t.min()), max=float(t.max()), times=t.tolist(),
                       compression_ratio=dense.hidden_nbytes / net.hidden_nbytes,
                       weight_error=float(max(errs)))
            if m == "hmatrix":
                row["error_bound"] = max(float(net.layers[i].H.error_bound)
                                         for i in net.hidden_layers)
                row["tol"] = c.speed_tol
            out[m].append(row)
    return dict(widths=list(c.speed_widths), batch=c.speed_batch, repeats=c.speed_repeats,
                threads=c.threads, tol=c.speed_tol, settings=SETTINGS, entries=out)


def paired_ratios(result, method, k=-1):
    """Per round, ``time(method) / time(hmatrix)`` at width index ``k``
    (> 1: the H-matrix was faster in that round)."""
    e = result["entries"]
    return np.asarray(e[method][k]["times"]) / np.asarray(e["hmatrix"][k]["times"])


def verdict(result):
    """At the largest width, for each other method the range of the paired
    per-round ratios ``t_method / t_hmatrix`` is the noise interval (with n
    interleaved rounds it covers the median ratio with probability
    ``1 - 2^(1-n)``): "faster" only when the whole interval is above 1,
    "slower" when below, a tie otherwise. Supports if the H-matrix is faster
    than every other method and its own spread (interquartile range / median)
    is at most :data:`MAX_SPREAD`; contradicts if it is faster than none;
    partly otherwise; untested with fewer than 2 rounds."""
    e = result["entries"]
    others = [m for m in e if m != "hmatrix"]
    width = result["widths"][-1]
    if result["repeats"] < 2:
        return verdict_of(UNTESTED, f"Only {result['repeats']} timing round(s): no noise "
                          "interval, so speed cannot be compared.")
    faster, slower, parts = [], [], []
    for m in others:
        r = paired_ratios(result, m)
        lo, hi = float(r.min()), float(r.max())
        if lo > 1.0:
            faster.append(m)
        elif hi < 1.0:
            slower.append(m)
        parts.append(f"{m} {np.median(r):.2f}x [{lo:.2f}, {hi:.2f}]")
    h = e["hmatrix"][-1]
    spread = (h["q75"] - h["q25"]) / h["median"]
    steady = spread <= MAX_SPREAD
    head = (f"At width {width}, time of each method over the H-matrix's (median of "
            f"{result['repeats']} interleaved rounds [range]): {', '.join(parts)}; faster than "
            f"{', '.join(faster) or 'none'}, slower than {', '.join(slower) or 'none'}; "
            f"H-matrix spread {spread:.0%} ({'little' if steady else 'not little'} variance)")
    if len(faster) == len(others) and steady:
        return verdict_of(SUPPORTS, head + ": supports the claim.")
    if not faster:
        return verdict_of(CONTRADICTS, head + ": faster than no other method, contradicts the "
                          "claim here.")
    why = [] if len(faster) == len(others) else ["not faster than every method"]
    why += [] if steady else ["not with little variance"]
    return verdict_of(PARTLY, head + f": partly supports the claim ({'; '.join(why)}).")


def plot(result, path):
    """Median time per batch with quartile bars against width (PNG at ``path``)."""
    from hmnumba.experiments._plot import METHOD_STYLE, pyplot, save
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    widths = np.asarray(result["widths"], dtype=float)
    for method, rows in result["entries"].items():
        med = np.array([r["median"] for r in rows]) * 1e3
        lo = med - np.array([r["q25"] for r in rows]) * 1e3
        hi = np.array([r["q75"] for r in rows]) * 1e3 - med
        style = dict(METHOD_STYLE[method])
        style.setdefault("label", method)
        ax.errorbar(widths, med, yerr=[lo, hi], capsize=3, **style)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(widths)
    ax.set_xticklabels([str(int(w)) for w in widths])
    ax.set_xlabel("hidden width")
    ax.set_ylabel(f"time per batch of {result['batch']} points [ms] (median, quartiles)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"Fig. 5: inference time, {result['threads']} thread(s), "
                 f"H and SVD at tol {result['tol']:g}")
    save(fig, path)


def table(result):
    """Markdown rows: width, method, median and quartiles, ratio, weight error."""
    lines = ["| width | method | median [ms] | quartiles [ms] | ratio | weight error |",
             "| ---: | --- | ---: | --- | ---: | ---: |"]
    for k, width in enumerate(result["widths"]):
        for method, rows in result["entries"].items():
            r = rows[k]
            lines.append(f"| {width} | {method} | {1e3 * r['median']:.2f} | "
                         f"{1e3 * r['q25']:.2f} - {1e3 * r['q75']:.2f} | "
                         f"{r['compression_ratio']:.2f} | {r['weight_error']:.1e} |")
    return lines
