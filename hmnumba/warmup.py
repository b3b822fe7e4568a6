"""Fill numba's cache ahead of time: ``hmnumba warmup``.

Every kernel of hmnumba is compiled by numba on its first call and then
cached on disk (``cache=True``; the cache lives next to the package's
sources, or in ``NUMBA_CACHE_DIR``). On a 2-core machine the first
compilation of everything a user touches takes minutes; afterwards loading
it takes seconds. :func:`warmup` runs one small call of each kernel group,
so the wait happens once, at a moment of the user's choosing, with one line
of progress per group, instead of inside the first real build. It is also
what ``hmnumba demo`` runs first, so that the timings it prints exclude
compilation.

Groups (each one small call per dtype that the library supports):

``build``
    :meth:`~hmnumba.HMatrix.from_dense` (ACA, SVD and randomized blocks;
    PCA and index clustering), float64 and float32.
``kernels``
    :meth:`~hmnumba.HMatrix.from_kernel` with a built-in kernel, symmetric
    and not.
``products``
    matvec, rmatvec, matmat (fused and BLAS paths), symmetric matvec,
    float64 and float32.
``pinn``
    a PINN loss and its exact gradient through a dense and an H-matrix layer.
``h2``
    :class:`~hmnumba.H2Matrix`: ``from_kernel`` stored and on the fly,
    ``from_dense`` in float64 and float32, general and symmetric, and their
    products.

Examples
--------
>>> from hmnumba.warmup import GROUPS, cache_is_warm
>>> GROUPS
('build', 'kernels', 'products', 'pinn', 'h2')
>>> isinstance(cache_is_warm(), bool)
True
"""
import os
import sys
import time
import warnings

import numpy as np

from hmnumba.exceptions import CompressionWarning

GROUPS = ("build", "kernels", "products", "pinn", "h2")

# The first compilation of each group on 2 cores with an empty cache, the
# groups run in this order (later groups reuse what earlier ones compiled),
# rounded up: `NUMBA_CACHE_DIR=<empty> hmnumba warmup` on 2026-12-06 printed
# 79.5, 0.8, 41.2, 4.3 and 34.6 s (h2: 40.9 s once it compiled the symmetric
# general products too). What the demo and the CLI announce before the wait.
COLD_SECONDS = {"build": 80, "kernels": 1, "products": 42, "pinn": 5, "h2": 41}


def _build():
    from hmnumba import HMatrix
    rng = np.random.default_rng(0)
    x = np.sort(rng.random(160))
    A = 1.0 / (1.0 + 10.0 * np.abs(x[:, None] - x[None, :])) + 1e-6 * rng.random((160, 160))
    for dtype in (np.float64, np.float32):
        for method in ("aca", "svd", "rsvd"):
            HMatrix.from_dense(A.astype(dtype), tol=1e-4, leaf_size=16, method=method,
                               random_state=0)
        HMatrix.from_dense(A.astype(dtype), tol=1e-4, leaf_size=16, cluster="index",
                           budget="perimeter")


def _kernels():
    from hmnumba import HMatrix
    from hmnumba.kernels import gaussian, laplace
    X = np.random.default_rng(1).random((400, 3))
    HMatrix.from_kernel(laplace, X, tol=1e-6, leaf_size=16)
    HMatrix.from_kernel(gaussian, X, X[:300] + 0.5, tol=1e-6, leaf_size=16)


def _products():
    from hmnumba import HMatrix
    from hmnumba.kernels import laplace
    rng = np.random.default_rng(2)
    x = np.sort(rng.random(200))
    A = 1.0 / (1.0 + 10.0 * np.abs(x[:, None] - x[None, :]))
    for dtype in (np.float64, np.float32):
        H = HMatrix.from_dense(A.astype(dtype), tol=1e-4, leaf_size=16,
                               structure="hierarchical")
        v = rng.standard_normal(200).astype(dtype)
        H @ v
        H.T @ v
        H @ np.ones((200, 3), dtype)
        H @ np.ones((200, 20), dtype)
        H.T @ np.ones((200, 20), dtype)
    S = HMatrix.from_kernel(laplace, rng.random((300, 3)), tol=1e-6, leaf_size=16)
    S @ np.ones(300)
    S @ np.ones((300, 20))


def _pinn():
    from hmnumba import HMatrix
    from hmnumba.pinn import PINN, HMatrixLayer, Poisson2D
    net = PINN([2, 32, 32, 1], random_state=0)
    problem = Poisson2D()
    x_r = problem.sample_collocation(16, random_state=0)
    x_b, g_b = problem.sample_boundary(8, random_state=0)
    net.loss(problem, x_r, x_b, g_b)
    hidden = net.layers[1]
    net.layers[1] = HMatrixLayer(HMatrix.from_dense(hidden.W, tol=1e-3, leaf_size=8,
                                                    structure="hierarchical"), hidden.b)
    net.loss(problem, x_r, x_b, g_b)


def _h2():
    from hmnumba import H2Matrix
    from hmnumba.kernels import laplace
    rng = np.random.default_rng(3)
    X = rng.random((600, 3))
    for mode in ("stored", "on-the-fly"):
        H = H2Matrix.from_kernel(laplace, X, tol=1e-6, leaf_size=16, mode=mode)
        H @ np.ones(600)
        H @ np.ones((600, 3))
    x = np.sort(rng.random(200))
    A = 1.0 / (1.0 + 10.0 * np.abs(x[:, None] - x[None, :]))
    for storage in ("float64", "float32"):
        for symmetric in (False, True):       # A is symmetric
            G = H2Matrix.from_dense(A, tol=1e-4, leaf_size=16, storage=storage,
                                    symmetric=symmetric)
            G @ np.ones(200)
            G @ np.ones((200, 3))
            G.rmatvec(np.ones(200))


_RUN = {"build": _build, "kernels": _kernels, "products": _products, "pinn": _pinn, "h2": _h2}


def cache_is_warm():
    """Whether numba's cache already holds the main build kernel.

    A heuristic for the messages of the demo and the CLI (the cache index
    of :func:`hmnumba.kernels.compress.compress_blocks` exists); False when it
    cannot tell.

    Examples
    --------
    >>> from hmnumba.warmup import cache_is_warm
    >>> cache_is_warm() in (True, False)
    True
    """
    try:
        from hmnumba.kernels import compress
        return bool(os.path.exists(compress._compress_slabs._cache._cache_file._index_path))
    except Exception:   # numba internals moved: say nothing is cached
        return False


def warmup(groups=None, out=None):
    """Compile (or load from numba's cache) every kernel group; see the
    module docstring.

    Parameters
    ----------
    groups : sequence of str or None
        A subset of :data:`GROUPS`; None runs all.
    out : file-like or None
        Where the one line per group goes (default ``sys.stdout``); pass
        ``False`` for silence.

    Returns
    -------
    dict
        Seconds per group.

    Examples
    --------
    >>> from hmnumba.warmup import warmup
    >>> sorted(warmup(["pinn"], out=False))
    ['pinn']
    """
    from hmnumba import _validation as val
    groups = GROUPS if groups is None else tuple(groups)
    for group in groups:
        val.check_choice(group, "groups", GROUPS)
    out = sys.stdout if out is None else out
    seconds = {}
    for group in groups:
        t = time.perf_counter()
        with warnings.catch_warnings():   # its tiny matrices compress poorly on purpose
            warnings.simplefilter("ignore", CompressionWarning)
            _RUN[group]()
        seconds[group] = time.perf_counter() - t
        if out:
            print(f"  {group:<10} {seconds[group]:7.1f} s", file=out, flush=True)
    return seconds


def announce(out=None, groups=None):
    """Print, before a wait, that numba compiles on first use (only when the
    cache looks cold); returns whether it printed. The time announced is
    that of ``groups`` (None: all of :data:`GROUPS`).

    Examples
    --------
    >>> import io
    >>> from hmnumba.warmup import announce, cache_is_warm
    >>> out = io.StringIO()
    >>> announce(out) == (not cache_is_warm()) == bool(out.getvalue())
    True
    """
    if cache_is_warm():
        return False
    seconds = sum(COLD_SECONDS[g] for g in (GROUPS if groups is None else groups))
    print(f"compiling numba kernels (first run only, about {seconds} s on 2 cores; "
          "cached afterwards, or run `hmnumba warmup` ahead of time)",
          file=sys.stderr if out is None else out, flush=True)
    return True
