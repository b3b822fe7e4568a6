"""Experiment 2 (paper Fig. 2b): weight heat maps.

The first hidden-to-hidden weight array of the trained PINN, its H-matrix
reconstruction, the block partition coloured by rank, and the error, all in
the clustered row/column order the H-matrix uses (so blocks are contiguous).
"""
import numpy as np

from hmnumba.experiments._verdict import CONTRADICTS, PARTLY, SUPPORTS
from hmnumba.experiments._verdict import verdict as verdict_of

NAME = "heatmaps"
TITLE = "Weight heat maps"
FIGURE = "fig2_heatmaps.png"
CLAIM = ("The H-matrix reproduces a trained weight array within the tolerance with an "
         "adaptive partition of low-rank and dense blocks.")


def run(ctx):
    """Compress the first hidden-to-hidden layer at ``config.dynamic_tol``.

    Returns
    -------
    dict
        ``tol``, ``layer``, ``error_bound``, ``relative_error`` (computed from
        the dense reconstruction), ``compression_ratio``, block counts and
        ranks, the block arrays, and (private, not written to JSON) the
        matrices for the figure.
    """
    tol = ctx.config.dynamic_tol
    layer = ctx.train().hidden_layers[0]
    model = ctx.compress("hmatrix", tol=tol)
    H = model.layers[layer].H
    W = ctx.model.layers[layer].to_dense()
    Wh = H.to_dense(np.float64)
    rank = np.asarray(H.rank)
    return dict(
        tol=tol, layer=layer, shape=list(W.shape), error_bound=float(H.error_bound),
        relative_error=float(np.linalg.norm(W - Wh) / np.linalg.norm(W)),
        compression_ratio=float(H.compression_ratio), n_blocks=int(rank.size),
        n_lowrank=int((rank >= 0).sum()), n_dense=int((rank < 0).sum()),
        max_rank=int(rank.max()) if rank.size else 0,
        blocks=dict(row_start=np.asarray(H.row_start).tolist(),
                    row_stop=np.asarray(H.row_stop).tolist(),
                    col_start=np.asarray(H.col_start).tolist(),
                    col_stop=np.asarray(H.col_stop).tolist(), rank=rank.tolist()),
        _W=W[np.ix_(H.row_perm, H.col_perm)], _Wh=Wh[np.ix_(H.row_perm, H.col_perm)], _H=H)


def verdict(result):
    """Supports if the bound and the measured error are within tol and the layer is
    compressed by a partition of more than one block."""
    ok = result["error_bound"] <= result["tol"] and \
        result["relative_error"] <= result["tol"] * (1 + 1e-8)
    head = (f"Layer {result['layer']} at tol {result['tol']:g}: error bound "
            f"{result['error_bound']:.2e}, measured error {result['relative_error']:.2e}, "
            f"{result['n_lowrank']} low-rank block(s) (rank <= {result['max_rank']}) and "
            f"{result['n_dense']} dense, ratio {result['compression_ratio']:.2f}")
    if ok and result["compression_ratio"] > 1 and result["n_blocks"] == 1:
        return verdict_of(PARTLY, head + ": the bound holds and the layer is compressed, "
                          "but the partition is one global low-rank block, so here the "
                          "H-matrix is a truncated low-rank factorisation, not a hierarchy.")
    if ok and result["compression_ratio"] > 1 and result["n_lowrank"] > 0:
        return verdict_of(SUPPORTS, head + ": supports the claim.")
    if ok:
        return verdict_of(CONTRADICTS, head + ": the bound holds but the layer is "
                          "not compressed (no saving), so the figure does not support the claim.")
    return verdict_of(CONTRADICTS, head + ": the error exceeds the tolerance, "
                      "contradicting the guarantee.")


def plot(result, path):
    """Original, reconstruction, block ranks and error side by side (PNG at ``path``)."""
    from hmnumba.experiments._plot import pyplot, save
    plt = pyplot()
    W, Wh = result["_W"], result["_Wh"]
    fig, axes = plt.subplots(1, 4, figsize=(15, 4))
    vmax = float(np.abs(W).max()) or 1.0
    for ax, M, title in ((axes[0], W, "original W"),
                         (axes[1], Wh, f"H-matrix (tol {result['tol']:g})")):
        im = ax.imshow(M, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        ax.set_title(title)
        fig.colorbar(im, ax=ax, fraction=0.046)
    result["_H"].plot(ax=axes[2])   # blocks coloured by rank, with a colour bar
    axes[2].set_title("blocks: rank (hatched grey = dense)")
    E = np.abs(W - Wh)
    im = axes[3].imshow(E, cmap="magma")
    axes[3].set_title(f"|W - H|, rel. error {result['relative_error']:.1e}")
    fig.colorbar(im, ax=axes[3], fraction=0.046)
    for ax in axes:
        ax.set_xlabel("input (cluster order)")
        ax.set_ylabel("output (cluster order)")
    fig.suptitle(f"Fig. 2: hidden layer {result['layer']} {result['shape'][0]}x"
                 f"{result['shape'][1]}, compression ratio {result['compression_ratio']:.2f}")
    save(fig, path)


def table(result):
    """Markdown rows of the layer's compression."""
    return ["| layer | shape | tol | error bound | measured error | blocks (low-rank / dense) "
            "| max rank | ratio |", "| ---: | --- | ---: | ---: | ---: | --- | ---: | ---: |",
            f"| {result['layer']} | {result['shape'][0]}x{result['shape'][1]} | "
            f"{result['tol']:g} | {result['error_bound']:.2e} | {result['relative_error']:.2e} "
            f"| {result['n_lowrank']} / {result['n_dense']} | {result['max_rank']} | "
            f"{result['compression_ratio']:.2f} |"]
