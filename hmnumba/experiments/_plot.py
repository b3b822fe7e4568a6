"""Lazy matplotlib (the ``plot`` extra) through its object-oriented API.

Figures are :class:`matplotlib.figure.Figure` objects written straight to
PNG files: pyplot's global state and the backend are never touched, so
importing or running the experiments in a notebook leaves its backend as it
was.
"""

METHOD_STYLE = {
    "dense": dict(color="black", marker="*"),
    "hmatrix": dict(color="tab:red", marker="o", label="H-matrix"),
    "svd": dict(color="tab:blue", marker="s", label="SVD"),
    "pruning": dict(color="tab:green", marker="^", label="pruning"),
    "quantization": dict(color="tab:purple", marker="D", label="quantization"),
}


class _Figures:
    """The two pyplot calls the experiments make, without pyplot: ``subplots``
    makes a bare :class:`~matplotlib.figure.Figure` (no backend, no global
    figure list) and ``get_cmap`` reads matplotlib's colormap registry."""

    @staticmethod
    def subplots(*args, figsize=None, **kwargs):
        from matplotlib.figure import Figure
        fig = Figure(figsize=figsize)
        return fig, fig.subplots(*args, **kwargs)

    @staticmethod
    def get_cmap(name):
        import matplotlib
        return matplotlib.colormaps[name]


def pyplot():
    """A pyplot-like object for figures (``subplots``, ``get_cmap``) that
    leaves matplotlib's backend and pyplot's state alone.

    Raises
    ------
    ImportError
        If matplotlib is missing, naming the extra that installs it.
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ImportError("hmnumba reproduce draws its figures with matplotlib, which is "
                          "not installed: pip install 'hmnumba[plot]' (or pip install "
                          "matplotlib)") from None
    return _Figures()


def save(fig, path):
    """Write ``fig`` as a PNG (a bare Figure: nothing to close)."""
    fig.tight_layout()
    fig.savefig(path, dpi=100)
