"""Entry sources: how the numba kernels read matrix entries.

The low-rank code (:mod:`hmnumba.kernels.factors`) and the batched
compression (:mod:`hmnumba.kernels.compress`) read entries through
:func:`fetch_row`, :func:`fetch_col` and :func:`fetch_block`, which numba
resolves at compile time from the *type* of the ``src`` argument:

* a 2-D array: a dense matrix (already permuted to cluster order);
* ``(code, length_scale, XT, YT)``: a built-in kernel (integer ``code`` of
  :mod:`hmnumba.kernels.codes`) on points stored by coordinate, ``XT (dim, m)``
  and ``YT (dim, n)`` (cached on disk like every other kernel here);
* ``(kernel, X, Y)``: a user ``@njit`` kernel ``kernel(x, y) -> float``
  (compiled once per process and kernel);
* ``(FX, FY)``: a Gram matrix ``A[i, j] = FX[i] . FY[j]`` of feature rows
  ``FX (m, p)``, ``FY (n, p)`` (the empirical NTK, ``hmnumba.ntk``; cached
  on disk like the built-in kernels, whereas a user kernel recompiles the
  whole build in every process).

Also here: the whole-source reads (dense assembly, row sampling for norm
estimates, dense leaf blocks, the search for a non-finite entry).

Layout (DESIGN section 1): ``codes`` <- ``sources`` <- ``factors`` <-
``compress``; ``trees`` and ``products`` stand alone. Everything here is a
plain function over arrays; nothing checks its inputs.
"""
import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from hmnumba.kernels.codes import EXPONENTIAL, FASTMATH, GAUSSIAN, LAPLACE, SQRT3


@njit(cache=True, inline="always", fastmath=FASTMATH)
def kernel_of_distance2(code, length_scale, r2):
    """Value of built-in kernel ``code`` at squared distance ``r2``."""
    if code == LAPLACE:
        # 1/r with the singular diagonal set to zero (the standard convention
        # of the cube benchmark and of H2Lib/H2Pack).
        return 0.0 if r2 == 0.0 else 1.0 / np.sqrt(r2)
    if code == GAUSSIAN:
        return np.exp(-0.5 * r2 / (length_scale * length_scale))
    if code == EXPONENTIAL:
        return np.exp(-np.sqrt(r2) / length_scale)
    # MATERN32
    s = SQRT3 * np.sqrt(r2) / length_scale
    return (1.0 + s) * np.exp(-s)




def fetch_row(src, i, c0, c1, out):  # pragma: no cover - replaced by overload
    """out[:c1 - c0] = A[i, c0:c1]"""


def fetch_col(src, j, r0, r1, out):  # pragma: no cover - replaced by overload
    """out[:r1 - r0] = A[r0:r1, j]"""


def fetch_block(src, r0, r1, c0, c1, out):  # pragma: no cover - replaced by overload
    """out[:, :] = A[r0:r1, c0:c1]"""


def _source_kind(src):
    if isinstance(src, types.Array):
        return "dense"
    if isinstance(src, types.BaseTuple) and len(src) == 4 and isinstance(src[0], types.Integer):
        return "builtin"
    if isinstance(src, types.BaseTuple) and len(src) == 3:
        return "user"
    if (isinstance(src, types.BaseTuple) and len(src) == 2
            and all(isinstance(a, types.Array) and a.ndim == 2 for a in src)):
        return "gram"
    return None


@njit(cache=True, inline="always", fastmath=FASTMATH)
def _row_dot(X, i, Y, j):
    s = 0.0
    for k in range(X.shape[1]):
        s += X[i, k] * Y[j, k]
    return s


@overload(fetch_row, jit_options={"fastmath": FASTMATH})
def _fetch_row(src, i, c0, c1, out):
    kind = _source_kind(src)
    if kind == "dense":
        def impl(src, i, c0, c1, out):
            for j in range(c1 - c0):
                out[j] = src[i, c0 + j]
        return impl
    if kind == "builtin":
        def impl(src, i, c0, c1, out):
            code, ls, XT, YT = src
            n = c1 - c0
            for j in range(n):
                out[j] = 0.0
            # Points are stored by coordinate (dim, n): each pass is a
            # contiguous, vectorisable loop over the columns.
            for k in range(XT.shape[0]):
                xk = XT[k, i]
                for j in range(n):
                    t = xk - YT[k, c0 + j]
                    out[j] += t * t
            for j in range(n):
                out[j] = kernel_of_distance2(code, ls, out[j])
        return impl
    if kind == "user":
        def impl(src, i, c0, c1, out):
            kern, X, Y = src
            x = X[i]
            for j in range(c1 - c0):
                out[j] = kern(x, Y[c0 + j])
        return impl
    if kind == "gram":
        def impl(src, i, c0, c1, out):
            FX, FY = src
            for j in range(c1 - c0):
                out[j] = _row_dot(FX, i, FY, c0 + j)
        return impl


@overload(fetch_col, jit_options={"fastmath": FASTMATH})
def _fetch_col(src, j, r0, r1, out):
    kind = _source_kind(src)
    if kind == "dense":
        def impl(src, j, r0, r1, out):
            for i in range(r1 - r0):
                out[i] = src[r0 + i, j]
        return impl
    if kind == "builtin":
        def impl(src, j, r0, r1, out):
            code, ls, XT, YT = src
            m = r1 - r0
            for i in range(m):
                out[i] = 0.0
            for k in range(XT.shape[0]):
                yk = YT[k, j]
                for i in range(m):
                    t = XT[k, r0 + i] - yk
                    out[i] += t * t
            for i in range(m):
                out[i] = kernel_of_distance2(code, ls, out[i])
        return impl
    if kind == "user":
        def impl(src, j, r0, r1, out):
            kern, X, Y = src
            y = Y[j]
            for i in range(r1 - r0):
                out[i] = kern(X[r0 + i], y)
        return impl
    if kind == "gram":
        def impl(src, j, r0, r1, out):
            FX, FY = src
            for i in range(r1 - r0):
                out[i] = _row_dot(FX, r0 + i, FY, j)
        return impl


@overload(fetch_block, jit_options={"fastmath": FASTMATH})
def _fetch_block(src, r0, r1, c0, c1, out):
    kind = _source_kind(src)
    if kind == "dense":
        def impl(src, r0, r1, c0, c1, out):
            for i in range(r1 - r0):
                for j in range(c1 - c0):
                    out[i, j] = src[r0 + i, c0 + j]
        return impl
    if kind == "builtin" or kind == "gram":
        def impl(src, r0, r1, c0, c1, out):
            for i in range(r1 - r0):
                fetch_row(src, r0 + i, c0, c1, out[i])
        return impl
    if kind == "user":
        def impl(src, r0, r1, c0, c1, out):
            kern, X, Y = src
            for i in range(r1 - r0):
                x = X[r0 + i]
                for j in range(c1 - c0):
                    out[i, j] = kern(x, Y[c0 + j])
        return impl


@njit(cache=True, parallel=True)
def assemble_dense(src, m, n, out):
    """Fill ``out (m, n)`` with every entry of ``src``, rows in parallel."""
    for i in prange(m):
        fetch_row(src, i, 0, n, out[i])
    return out


@njit(cache=True)
def assemble_dense_builtin(code, length_scale, X, Y):
    """Dense kernel matrix of a built-in kernel (the numba reference assembly)."""
    out = np.empty((X.shape[0], Y.shape[0]))
    src = (code, length_scale, np.ascontiguousarray(X.T), np.ascontiguousarray(Y.T))
    return assemble_dense(src, X.shape[0], Y.shape[0], out)


@njit(cache=True, parallel=True)
def sample_row_norms2(src, rows, n):
    """Squared Euclidean norms of the given rows of ``src`` (n columns)."""
    out = np.empty(rows.shape[0])
    for p in prange(rows.shape[0]):
        buf = np.empty(n)
        fetch_row(src, rows[p], 0, n, buf)
        out[p] = np.dot(buf, buf)
    return out


@njit(cache=True, parallel=True)
def sample_rows_times(src, rows, n, G):
    """``A[rows, :] @ G`` computed from entries, one row at a time."""
    out = np.empty((rows.shape[0], G.shape[1]))
    for p in prange(rows.shape[0]):
        buf = np.empty(n)
        fetch_row(src, rows[p], 0, n, buf)
        row = buf @ G
        for q in range(G.shape[1]):   # a loop: slice assignment compiles slowly (factors.py)
            out[p, q] = row[q]
    return out




@njit(cache=True)
def first_nonfinite(src, r0, r1, c0, c1):
    """The first entry of ``src[r0:r1, c0:c1]`` (row by row) that is NaN or
    infinite: ``(i, j, value)`` in cluster order, or ``(-1, -1, 0.0)``."""
    buf = np.empty(c1 - c0)
    for i in range(r0, r1):
        fetch_row(src, i, c0, c1, buf)
        for j in range(c1 - c0):
            if not np.isfinite(buf[j]):
                return i, c0 + j, buf[j]
    return -1, -1, 0.0


@njit(cache=True, parallel=True)
def fill_dense_blocks(src, r0, r1, c0, c1, offset, data):
    """Write dense blocks (row-major) into ``data``; returns their ``||A_b||^2``."""
    norm2 = np.empty(r0.shape[0])
    for b in prange(r0.shape[0]):
        # One call per block: a small parallel body keeps numba's parallel
        # lowering (most of this kernel's first compilation) cheap.
        norm2[b] = _fill_dense_block(src, r0[b], r1[b], c0[b], c1[b], offset[b], data)
    return norm2


@njit(cache=True)
def _fill_dense_block(src, r0, r1, c0, c1, off, data):
    """One block of :func:`fill_dense_blocks`; returns its ``||A_b||^2``."""
    n = c1 - c0
    buf = np.empty(n)
    acc = 0.0
    for i in range(r1 - r0):
        fetch_row(src, r0 + i, c0, c1, buf)
        o = off + i * n
        for j in range(n):
            data[o + j] = buf[j]
            acc += buf[j] * buf[j]
    return acc
