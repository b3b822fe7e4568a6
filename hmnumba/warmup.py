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

Examples
--------
>>> from hmnumba.warmup import GROUPS, cache_is_warm
>>> GROUPS
('build', 'kernels', 'products', 'pinn')
>>> isinstance(cache_is_warm(), bool)
True
"""
import os
import sys
import time
import warnings

import numpy as np

from hmnumba.exceptions import CompressionWarning

GROUPS = ("build", "kernels", "products", "pinn")

# The first compilation of every group on 2 cores with an empty cache,
# rounded up (123 s measured by `python asv_benchmarks/run_coldstart.py
# --only warmup` on 2026-12-06): what the demo and the CLI announce before
# the wait.
COLD_SECONDS = 130


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


_RUN = {"build": _build, "kernels": _kernels, "products": _products, "pinn": _pinn}


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


def announce(out=None):
    """Print, before a wait, that numba compiles on first use (only when the
    cache looks cold); returns whether it printed.

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
    print(f"compiling numba kernels (first run only, about {COLD_SECONDS} s on 2 cores; "
          "cached afterwards, or run `hmnumba warmup` ahead of time)",
          file=sys.stderr if out is None else out, flush=True)
    return True
