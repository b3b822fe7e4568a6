"""Experiment 5 (paper Fig. 5): inference speed.

For each width ``w`` a network ``[d, w, w, w, 1]`` is given hidden-to-hidden
weights of the kind a compressible PINN has (a rank-``speed_rank`` Glorot
start, :class:`hmnumba.pinn.PINN` ``init_rank``, plus Gaussian noise of
relative size 1e-3 so no array is exactly low rank); the same network is
evaluated (``predict``, one batch of ``speed_batch`` points) dense, with
H-matrix layers (``tol = speed_tol``), SVD layers at the same tolerance (two
thin products), pruned layers (90 % sparsity, CSR) and 8-bit quantized
layers (integer codes). Times are the median and quartiles over
``speed_repeats`` runs after one warm-up, with ``config.threads`` numba and
BLAS threads.
"""
import time

import numpy as np

NAME = "speed"
TITLE = "Inference speed"
FIGURE = "fig5_speed.png"
CLAIM = "H-matrix layers make inference faster than dense layers once the layers are wide."
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


def _times(fn, repeats):
    """Seconds of ``repeats`` calls of ``fn`` after one warm-up call."""
    fn()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return np.asarray(out)


def run(ctx):
    """Time one batch through each network at each width.

    Returns
    -------
    dict
        ``widths``, ``batch``, ``repeats``, ``threads`` and, per method, a
        list (one per width) of ``median``, ``q25``, ``q75``, ``min``,
        ``max`` seconds, ``compression_ratio`` and ``weight_error`` (largest
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
        for m in methods:
            if m == "dense":
                net = dense
            elif m == "hmatrix":
                net = dense.compress("hmatrix", tol=c.speed_tol, leaf_size=c.leaf_size,
                                     random_state=c.seed)
            elif m == "svd":
                net = dense.compress("svd", tol=c.speed_tol)
            else:
                net = dense.compress(m, **SETTINGS[m])
            t = _times(lambda: net.predict(x), c.speed_repeats)
            errs = [np.linalg.norm(net.layers[i].to_dense() - dense.layers[i].W)
                    / np.linalg.norm(dense.layers[i].W) for i in dense.hidden_layers]
            row = dict(width=width, median=float(np.median(t)),
                       q25=float(np.percentile(t, 25)), q75=float(np.percentile(t, 75)),
                       min=float(t.min()), max=float(t.max()),
                       compression_ratio=dense.hidden_nbytes / net.hidden_nbytes,
                       weight_error=float(max(errs)))
            if m == "hmatrix":
                row["error_bound"] = max(float(net.layers[i].H.error_bound)
                                         for i in net.hidden_layers)
                row["tol"] = c.speed_tol
            out[m].append(row)
    return dict(widths=list(c.speed_widths), batch=c.speed_batch, repeats=c.speed_repeats,
                threads=c.threads, tol=c.speed_tol, settings=SETTINGS, entries=out)


def verdict(result):
    """Supports if the H-matrix network is faster than the dense one at the
    largest width."""
    e = result["entries"]
    speedups = [d["median"] / h["median"] for d, h in zip(e["dense"], e["hmatrix"])]
    svd = [d["median"] / s["median"] for d, s in zip(e["dense"], e["svd"])]
    listing = ", ".join(f"{w}: {s:.2f}x" for w, s in zip(result["widths"], speedups))
    faster = [w for w, s in zip(result["widths"], speedups) if s > 1.0]
    head = (f"H-matrix speed-up over dense per width ({listing}; SVD at the same tol: "
            f"{', '.join(f'{s:.2f}x' for s in svd)})")
    if speedups[-1] > 1.0:
        return dict(supports=True, sentence=head + f": H-matrix layers are faster from width "
                    f"{faster[0]} on (the crossover), supports the claim"
                    + (" (but SVD is faster still on these near-low-rank weights)."
                       if svd[-1] > speedups[-1] else "."))
    return dict(supports=False, sentence=head + ": no crossover up to width "
                f"{result['widths'][-1]}, contradicts the claim at these sizes.")


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
