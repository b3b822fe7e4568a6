"""Lazy matplotlib (the ``plot`` extra), always on the non-interactive Agg backend."""

METHOD_STYLE = {
    "dense": dict(color="black", marker="*"),
    "hmatrix": dict(color="tab:red", marker="o", label="H-matrix"),
    "svd": dict(color="tab:blue", marker="s", label="SVD"),
    "pruning": dict(color="tab:green", marker="^", label="pruning"),
    "quantization": dict(color="tab:purple", marker="D", label="quantization"),
}


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend.

    Raises
    ------
    ImportError
        If matplotlib is missing, naming the extra that installs it.
    """
    try:
        import matplotlib
    except ImportError:
        raise ImportError("hmnumba reproduce draws its figures with matplotlib, which is "
                          "not installed: pip install 'hmnumba[plot]' (or pip install "
                          "matplotlib)") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def save(fig, path):
    """Write ``fig`` as a PNG and close it."""
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    import matplotlib.pyplot as plt
    plt.close(fig)
