"""Entry sources: how the numba kernels read matrix entries.

The low-rank code (:mod:`hmnumba.kernels.factors`) and the batched
compression (:mod:`hmnumba.kernels.compress`) read entries through
:func:`fetch_row`, :func:`fetch_col` and :func:`fetch_block`. A source is
one of two numba types, told apart by the type of its first element:

* a *tagged source* ``(kind, length_scale, A, B)`` (``int64``, ``float64``,
  two C-contiguous 2-D arrays), whose integer ``kind`` the reads branch on
  at run time, once per row or column (outside the loops over entries, which
  stay vectorisable):

  - ``(codes.DENSE, 0.0, A, empty)``: a dense matrix ``A`` (already permuted
    to cluster order; ``B`` is an empty ``(0, 0)`` array), made by
    :func:`dense_source`;
  - ``(code, length_scale, XT, YT)``: a built-in kernel (``code`` of
    :mod:`hmnumba.kernels.codes`, ``LAPLACE`` ...) on points stored by
    coordinate, ``XT (dim, m)`` and ``YT (dim, n)``, made by
    :func:`builtin_source`;
  - ``(codes.GRAM, 0.0, FX, FY)``: a Gram matrix ``A[i, j] = FX[i] . FY[j]``
    of feature rows ``FX (m, p)``, ``FY (n, p)`` (the empirical NTK,
    ``hmnumba.ntk``), made by :func:`gram_source`.

  With float64 arrays these are one numba type, so a process that builds
  from a kernel, from a dense array and from an NTK compiles the whole
  compression chain once (each specialisation of that chain costs about
  15 CPU s of compilation), and all of it is cached on disk. A float32
  dense matrix keeps its float32 entries (its own specialisation, as
  before, where only the dense reads are compiled: the other kinds are
  float64 by construction).
* ``(kernel, X, Y)``, ``kernel`` a numba dispatcher: a user ``@njit`` kernel
  ``kernel(x, y) -> float`` on the point rows ``X (m, dim)``, ``Y (n, dim)``
  (compiled once per process and kernel: a specialisation per kernel).

Also here: the whole-source reads (dense assembly, row sampling for norm
estimates, dense leaf blocks, the search for a non-finite entry).

Layout (DESIGN section 1): ``codes`` <- ``sources`` <- ``factors`` <-
``compress``; ``trees`` and ``products`` stand alone. Everything here is a
plain function over arrays; nothing checks its inputs.
"""
import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from hmnumba.kernels.codes import DENSE, EXPONENTIAL, FASTMATH, GAUSSIAN, GRAM, LAPLACE, SQRT3


def dense_source(A):
    """The entry source of a dense matrix ``A`` (2-D, float32 or float64).

    ``A`` is used as it is when C-contiguous (else copied); ``source[2]`` is
    the matrix.

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.kernels.sources import assemble_dense, dense_source, source_kind
    >>> A = np.arange(6.0).reshape(2, 3)
    >>> src = dense_source(A)
    >>> src[2] is A, source_kind(src)
    (True, 'dense')
    >>> assemble_dense(src, 2, 3, np.empty((2, 3)))
    array([[0., 1., 2.],
           [3., 4., 5.]])
    """
    A = np.ascontiguousarray(A)
    return (np.int64(DENSE), np.float64(0.0), A, np.empty((0, 0), A.dtype))


def builtin_source(code, length_scale, X, Y):
    """The entry source of built-in kernel ``code`` on the point rows ``X
    (m, dim)`` and ``Y (n, dim)`` (stored by coordinate, ``X.T`` and ``Y.T``).

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.kernels.codes import LAPLACE
    >>> from hmnumba.kernels.sources import assemble_dense, builtin_source
    >>> X = np.array([[0.0, 0.0], [0.0, 2.0]])
    >>> assemble_dense(builtin_source(LAPLACE, 1.0, X, X), 2, 2, np.empty((2, 2)))
    array([[0. , 0.5],
           [0.5, 0. ]])
    """
    XT = np.ascontiguousarray(X.T, dtype=np.float64)
    YT = XT if Y is X else np.ascontiguousarray(Y.T, dtype=np.float64)
    return (np.int64(code), np.float64(length_scale), XT, YT)


def gram_source(FX, FY):
    """The entry source of the Gram matrix ``FX @ FY.T`` of the feature rows
    ``FX (m, p)`` and ``FY (n, p)`` (used as they are when C-contiguous
    float64, else copied).

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.kernels.sources import assemble_dense, gram_source
    >>> F = np.array([[1.0, 2.0], [3.0, 4.0]])
    >>> assemble_dense(gram_source(F, F), 2, 2, np.empty((2, 2)))
    array([[ 5., 11.],
           [11., 25.]])
    """
    FX = np.ascontiguousarray(FX, dtype=np.float64)
    FY = FX if FY is FX else np.ascontiguousarray(FY, dtype=np.float64)
    return (np.int64(GRAM), np.float64(0.0), FX, FY)


def source_kind(src):
    """``"dense"``, ``"builtin"``, ``"gram"`` or ``"user"``: what an entry
    source (one of the constructors' values, or a user kernel's ``(kernel,
    X, Y)``) reads."""
    head = src[0]
    if isinstance(head, (int, np.integer)):
        return {DENSE: "dense", GRAM: "gram"}.get(int(head), "builtin")
    return "user"


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
    """The numba type's kind: ``"tagged"`` (float64 tagged source, branched
    on at run time), ``"dense"`` (a tagged source of other arrays: a float32
    dense matrix), ``"user"`` (first element a dispatcher), else None."""
    if not isinstance(src, types.BaseTuple) or len(src) == 0:
        return None
    head = src[0]
    if isinstance(head, types.Integer):
        if all(isinstance(a, types.Array) and a.dtype == types.float64 for a in src[2:]):
            return "tagged"
        return "dense"
    if isinstance(head, (types.Dispatcher, types.FunctionType)):
        return "user"
    return None


@njit(cache=True, inline="always", fastmath=FASTMATH)
def _row_dot(X, i, Y, j):
    s = 0.0
    for k in range(X.shape[1]):
        s += X[i, k] * Y[j, k]
    return s


# The per-kind loops (one row or column of entries). Plain functions that
# numba compiles into each caller (not inline="always": LLVM inlines them,
# without numba's costlier inlining at the IR level).
@njit(cache=True, fastmath=FASTMATH)
def _dense_row(A, i, c0, c1, out):
    for j in range(c1 - c0):
        out[j] = A[i, c0 + j]


@njit(cache=True, fastmath=FASTMATH)
def _dense_col(A, j, r0, r1, out):
    for i in range(r1 - r0):
        out[i] = A[r0 + i, j]


@njit(cache=True, fastmath=FASTMATH)
def _dense_block(A, r0, r1, c0, c1, out):
    for i in range(r1 - r0):
        for j in range(c1 - c0):
            out[i, j] = A[r0 + i, c0 + j]


@njit(cache=True, fastmath=FASTMATH)
def _kernel_row(code, ls, XT, YT, i, c0, c1, out):
    n = c1 - c0
    for j in range(n):
        out[j] = 0.0
    # Points are stored by coordinate (dim, n): each pass is a contiguous,
    # vectorisable loop over the columns.
    for k in range(XT.shape[0]):
        xk = XT[k, i]
        for j in range(n):
            t = xk - YT[k, c0 + j]
            out[j] += t * t
    for j in range(n):
        out[j] = kernel_of_distance2(code, ls, out[j])


@njit(cache=True, fastmath=FASTMATH)
def _gram_row(FX, i, FY, c0, c1, out):
    for j in range(c1 - c0):
        out[j] = _row_dot(FX, i, FY, c0 + j)


@overload(fetch_row, jit_options={"fastmath": FASTMATH})
def _fetch_row(src, i, c0, c1, out):
    kind = _source_kind(src)
    if kind == "tagged":
        def impl(src, i, c0, c1, out):
            code, ls, A, B = src
            if code == DENSE:
                _dense_row(A, i, c0, c1, out)
            elif code == GRAM:
                _gram_row(A, i, B, c0, c1, out)
            else:
                _kernel_row(code, ls, A, B, i, c0, c1, out)
        return impl
    if kind == "dense":
        def impl(src, i, c0, c1, out):
            _dense_row(src[2], i, c0, c1, out)
        return impl
    if kind == "user":
        def impl(src, i, c0, c1, out):
            kern, X, Y = src
            x = X[i]
            for j in range(c1 - c0):
                out[j] = kern(x, Y[c0 + j])
        return impl


@overload(fetch_col, jit_options={"fastmath": FASTMATH})
def _fetch_col(src, j, r0, r1, out):
    kind = _source_kind(src)
    if kind == "tagged":
        def impl(src, j, r0, r1, out):
            code, ls, A, B = src
            if code == DENSE:
                _dense_col(A, j, r0, r1, out)
            elif code == GRAM:
                # column j of F_X F_Y^T is row j of F_Y F_X^T: each term is
                # the same product, summed in the same order (same bits)
                _gram_row(B, j, A, r0, r1, out)
            else:
                # column j of K(X, Y) is row j of K(Y, X): the same squared
                # differences, so the same bits
                _kernel_row(code, ls, B, A, j, r0, r1, out)
        return impl
    if kind == "dense":
        def impl(src, j, r0, r1, out):
            _dense_col(src[2], j, r0, r1, out)
        return impl
    if kind == "user":
        def impl(src, j, r0, r1, out):
            kern, X, Y = src
            y = Y[j]
            for i in range(r1 - r0):
                out[i] = kern(X[r0 + i], y)
        return impl


@overload(fetch_block, jit_options={"fastmath": FASTMATH})
def _fetch_block(src, r0, r1, c0, c1, out):
    kind = _source_kind(src)
    if kind == "tagged":
        def impl(src, r0, r1, c0, c1, out):
            if src[0] == DENSE:
                _dense_block(src[2], r0, r1, c0, c1, out)
            else:
                for i in range(r1 - r0):
                    fetch_row(src, r0 + i, c0, c1, out[i])
        return impl
    if kind == "dense":
        def impl(src, r0, r1, c0, c1, out):
            _dense_block(src[2], r0, r1, c0, c1, out)
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
