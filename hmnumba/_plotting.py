"""The picture of an H-matrix's blocks (:meth:`hmnumba.HMatrix.plot`).

matplotlib is optional (the ``plot`` extra) and imported only here, when a
picture is asked for.
"""
import numpy as np

MISSING = ("HMatrix.plot needs matplotlib, which is not installed: "
           "pip install 'hmnumba[plot]' (or pip install matplotlib)")


def _matplotlib():
    try:
        import matplotlib
        from matplotlib.collections import PolyCollection  # noqa: F401
    except ImportError:
        raise ImportError(MISSING) from None
    return matplotlib


def plot_blocks(H, ax=None, cmap="viridis", annotate=None):
    """Draw ``H``'s blocks in cluster order on ``ax`` (see :meth:`HMatrix.plot`)."""
    mpl = _matplotlib()
    from matplotlib.cm import ScalarMappable
    from matplotlib.collections import PolyCollection
    from matplotlib.colors import Normalize, to_rgba
    from matplotlib.ticker import MaxNLocator

    r0, r1, c0, c1, k = (np.asarray(a) for a in (H.row_start, H.row_stop, H.col_start,
                                                 H.col_stop, H.rank))
    if H.symmetric:   # a strictly upper block stands for its mirror too
        s = H._strictly_upper
        r0, r1, c0, c1 = (np.concatenate([r0, c0[s]]), np.concatenate([r1, c1[s]]),
                          np.concatenate([c0, r0[s]]), np.concatenate([c1, r1[s]]))
        k = np.concatenate([k, k[s]])
    if ax is None:
        import matplotlib.pyplot as plt
        ax = plt.figure().subplots()
    cm = mpl.colormaps[cmap] if isinstance(cmap, str) else cmap
    lowrank = k >= 0
    kmax = max(1, int(k[lowrank].max())) if lowrank.any() else 1
    norm = Normalize(vmin=0, vmax=kmax)
    verts = np.stack([np.stack([c0, r0], 1), np.stack([c1, r0], 1), np.stack([c1, r1], 1),
                      np.stack([c0, r1], 1)], axis=1).astype(float)
    lw = 0.6 if k.size <= 1000 else 0.15
    ax.add_collection(PolyCollection(verts[lowrank], facecolors=cm(norm(k[lowrank])),
                                     edgecolors="black", linewidths=lw))
    ax.add_collection(PolyCollection(verts[~lowrank], facecolors=to_rgba("lightgray"),
                                     edgecolors="black", linewidths=lw, hatch="///"))
    if annotate is None:
        annotate = k.size <= 64
    if annotate:
        for i in np.flatnonzero(lowrank):
            ax.text((c0[i] + c1[i]) / 2, (r0[i] + r1[i]) / 2, str(int(k[i])), ha="center",
                    va="center", fontsize=7,
                    color="white" if k[i] < 0.5 * kmax else "black")
    m, n = H.shape
    ax.set_xlim(0, n)
    ax.set_ylim(m, 0)
    ax.set_aspect("equal" if max(m, n) <= 8 * min(m, n) else "auto")
    ax.set_xlabel("columns (cluster order)")
    ax.set_ylabel("rows (cluster order)")
    sm = ScalarMappable(norm=norm, cmap=cm)
    sm.set_array(np.array([]))
    bar = ax.figure.colorbar(sm, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label("rank (hatched grey: dense block)")
    bar.locator = MaxNLocator(integer=True)
    bar.update_ticks()
    ranks = (f"ranks {int(k[lowrank].min())} to {int(k[lowrank].max())}" if lowrank.any()
             else "no low-rank block")
    ax.set_title(f"HMatrix {m} x {n}: {k.size} block{'s' if k.size != 1 else ''}, {ranks}, "
                 f"{int((~lowrank).sum())} dense")
    return ax
