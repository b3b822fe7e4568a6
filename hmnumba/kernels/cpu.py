"""Numba CPU kernels: entry sources, cluster trees, block partition, low-rank
approximation (ACA, SVD, randomized), batched block compression and the
two-phase H-matrix products.

Everything here is a plain function over arrays; the Python classes in
``cluster``, ``blocks``, ``lowrank``, ``construct`` and ``hmatrix`` own
validation and orchestration. Nothing in this module checks its inputs: the
callers guarantee shapes and index ranges.

Entry sources
-------------
The low-rank code reads matrix entries through :func:`fetch_row`,
:func:`fetch_col` and :func:`fetch_block`, which numba resolves at compile time
from the *type* of the ``src`` argument:

* a 2-D array: a dense matrix (already permuted to cluster order);
* ``(code, length_scale, XT, YT)``: a built-in kernel on points stored by
  coordinate, ``XT (dim, m)`` and ``YT (dim, n)`` (cached on disk like every
  other kernel here);
* ``(kernel, X, Y)``: a user ``@njit`` kernel ``kernel(x, y) -> float``
  (compiled once per process and kernel);
* ``(FX, FY)``: a Gram matrix ``A[i, j] = FX[i] . FY[j]`` of feature rows
  ``FX (m, p)``, ``FY (n, p)`` (the empirical NTK, ``hmnumba.ntk``; cached
  on disk like the built-in kernels, whereas a user kernel recompiles the
  whole build, ~140 s, in every process).
"""
import numpy as np
from numba import get_num_threads, njit, prange, types
from numba.extending import overload

from hmnumba.kernels.functions import FASTMATH, kernel_of_distance2

# ---------------------------------------------------------------------------
# Entry sources
# ---------------------------------------------------------------------------


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
        out[p] = buf @ G
    return out


# ---------------------------------------------------------------------------
# Cluster trees
# ---------------------------------------------------------------------------


@njit(cache=True)
def build_geometric_tree(points, leaf_size):
    """Bisection of bounding boxes: split the longest side at its midpoint.

    Returns ``perm, start, stop, children, level, box_lo, box_hi`` over the
    nodes in breadth-first order; node 0 is the root, ``children[t] = -1`` for
    a leaf, and node ``t`` holds ``perm[start[t]:stop[t]]``. A box of zero
    extent (duplicate points) or a midpoint that leaves one side empty falls
    back to halving the index range, so every split makes progress and the
    build terminates; strongly graded point sets (``2**-k``) can still give
    deep trees, as midpoint bisection does in every H-matrix library.
    """
    n, d = points.shape
    perm = np.arange(n)
    cap = 2 * n + 1
    start = np.empty(cap, np.int64)
    stop = np.empty(cap, np.int64)
    children = -np.ones((cap, 2), np.int64)
    level = np.zeros(cap, np.int64)
    box_lo = np.empty((cap, d))
    box_hi = np.empty((cap, d))
    tmp_right = np.empty(n, np.int64)
    start[0] = 0
    stop[0] = n
    n_nodes = 1
    head = 0
    while head < n_nodes:
        t = head
        head += 1
        s, e = start[t], stop[t]
        for k in range(d):
            box_lo[t, k] = np.inf
            box_hi[t, k] = -np.inf
        for p in range(s, e):
            for k in range(d):
                v = points[perm[p], k]
                if v < box_lo[t, k]:
                    box_lo[t, k] = v
                if v > box_hi[t, k]:
                    box_hi[t, k] = v
        if e - s <= leaf_size:
            continue
        axis = 0
        for k in range(1, d):
            if box_hi[t, k] - box_lo[t, k] > box_hi[t, axis] - box_lo[t, axis]:
                axis = k
        split = (s + e) // 2
        if box_hi[t, axis] > box_lo[t, axis]:
            mid = 0.5 * (box_lo[t, axis] + box_hi[t, axis])
            # Stable partition (points below mid first, each side in its
            # original order), so an index tree keeps the natural order.
            i = s
            n_right = 0
            for p in range(s, e):
                q = perm[p]
                if points[q, axis] < mid:
                    perm[i] = q
                    i += 1
                else:
                    tmp_right[n_right] = q
                    n_right += 1
            for p in range(n_right):
                perm[i + p] = tmp_right[p]
            if s < i < e:
                split = i
        for c in range(2):
            u = n_nodes + c
            start[u] = s if c == 0 else split
            stop[u] = split if c == 0 else e
            level[u] = level[t] + 1
            children[t, c] = u
        n_nodes += 2
    return (perm, start[:n_nodes].copy(), stop[:n_nodes].copy(), children[:n_nodes].copy(),
            level[:n_nodes].copy(), box_lo[:n_nodes].copy(), box_hi[:n_nodes].copy())


# ---------------------------------------------------------------------------
# Block partition
# ---------------------------------------------------------------------------


@njit(cache=True, inline="always")
def _box_diameter(lo, hi):
    d = 0.0
    for k in range(lo.shape[0]):
        t = hi[k] - lo[k]
        d += t * t
    return np.sqrt(d)


@njit(cache=True, inline="always")
def _box_distance(lo1, hi1, lo2, hi2):
    d = 0.0
    for k in range(lo1.shape[0]):
        t = max(0.0, lo2[k] - hi1[k], lo1[k] - hi2[k])
        d += t * t
    return np.sqrt(d)


@njit(cache=True)
def strong_partition(row_children, row_lo, row_hi, col_children, col_lo, col_hi, eta):
    """Dual-tree traversal with ``min(diam t, diam s) <= eta * dist(t, s)``.

    Returns ``(row_node, col_node, admissible)``: the leaves of the block tree,
    admissible pairs as low-rank candidates, the rest dense leaves. A pair is
    split into the children of both clusters, or of the one that has children.
    """
    bt = []
    bs = []
    adm = []
    stack = [(0, 0)]
    while len(stack) > 0:
        t, s = stack.pop()
        dist = _box_distance(row_lo[t], row_hi[t], col_lo[s], col_hi[s])
        diam = min(_box_diameter(row_lo[t], row_hi[t]), _box_diameter(col_lo[s], col_hi[s]))
        if dist > 0.0 and diam <= eta * dist:
            bt.append(t)
            bs.append(s)
            adm.append(True)
            continue
        tc = row_children[t, 0] >= 0
        sc = col_children[s, 0] >= 0
        if not tc and not sc:
            bt.append(t)
            bs.append(s)
            adm.append(False)
        elif tc and sc:
            for a in range(1, -1, -1):
                for b in range(1, -1, -1):
                    stack.append((row_children[t, a], col_children[s, b]))
        elif tc:
            stack.append((row_children[t, 1], s))
            stack.append((row_children[t, 0], s))
        else:
            stack.append((t, col_children[s, 1]))
            stack.append((t, col_children[s, 0]))
    return np.array(bt, np.int64), np.array(bs, np.int64), np.array(adm, np.bool_)


@njit(cache=True)
def weak_partition(row_children, col_children):
    """HODLR partition: off-diagonal children of diagonal pairs are candidates."""
    bt = []
    bs = []
    adm = []
    stack = [(0, 0)]
    while len(stack) > 0:
        t, s = stack.pop()
        tc = row_children[t, 0] >= 0
        sc = col_children[s, 0] >= 0
        if tc and sc:
            t0, t1 = row_children[t, 0], row_children[t, 1]
            s0, s1 = col_children[s, 0], col_children[s, 1]
            stack.append((t1, s1))
            bt.append(t0)
            bs.append(s1)
            adm.append(True)
            bt.append(t1)
            bs.append(s0)
            adm.append(True)
            stack.append((t0, s0))
        elif tc or sc:
            # One side is a leaf: the matrix is far from square here; let the
            # local error decide for the two halves.
            for c in range(2):
                bt.append(row_children[t, c] if tc else t)
                bs.append(s if tc else col_children[s, c])
                adm.append(True)
        else:
            bt.append(t)
            bs.append(s)
            adm.append(False)
    return np.array(bt, np.int64), np.array(bs, np.int64), np.array(adm, np.bool_)


# ---------------------------------------------------------------------------
# Low-rank approximation of one block
# ---------------------------------------------------------------------------


@njit(cache=True, inline="always")
def _next_random(state):
    """xorshift64: a tiny deterministic generator for pivot sampling."""
    state ^= (state << np.uint64(13))
    state ^= (state >> np.uint64(7))
    state ^= (state << np.uint64(17))
    return state


@njit(cache=True)
def _random_unused(used, state):
    """A pseudo-random index with ``used[i]`` False (-1 if none), new state."""
    n = used.shape[0]
    state = _next_random(state)
    start = np.int64(state % np.uint64(n))
    for q in range(n):
        i = (start + q) % n
        if not used[i]:
            return i, state
    return -1, state


@njit(cache=True, fastmath=FASTMATH)
def _residual_row(src, r0, c0, c1, i, k, U, V, row):
    fetch_row(src, r0 + i, c0, c1, row)
    n = c1 - c0
    for l in range(k):
        a = U[l, i]
        for j in range(n):
            row[j] -= a * V[l, j]


@njit(cache=True, fastmath=FASTMATH)
def _residual_col(src, r0, r1, c0, j, k, U, V, col):
    fetch_col(src, c0 + j, r0, r1, col)
    m = r1 - r0
    for l in range(k):
        b = V[l, j]
        for q in range(m):
            col[q] -= b * U[l, q]


@njit(cache=True)
def _finite(x):
    """No NaN or infinity in ``x``."""
    for q in range(x.shape[0]):
        if not np.isfinite(x[q]):
            return False
    return True


@njit(cache=True, fastmath=FASTMATH)
def _argmax_unused(x, used):
    best = 0.0
    arg = -1
    for q in range(x.shape[0]):
        if not used[q] and abs(x[q]) > best:
            best = abs(x[q])
            arg = q
    return arg


# A residual entry below this times the largest pivot is rounding noise (see
# aca_partial): ~100 eps, the cancellation error of a residual after a few
# dozen crosses.
ACA_NOISE_RTOL = 1e-13


@njit(cache=True, fastmath=FASTMATH)
def aca_partial(src, r0, r1, c0, c1, rel_tol, abs_tol, kmax, U, V):
    """Adaptive cross approximation with partial pivoting (Bebendorf 2000).

    Builds ``A[r0:r1, c0:c1] ~= sum_l outer(U[l], V[l])`` one cross at a time
    from single rows and columns of ``src``. The standard stopping estimate is
    ``||u_k|| ||v_k|| <= tau = max(rel_tol * ||S_k||_F, abs_tol)`` (``S_k`` is
    the current approximation, its norm updated exactly).

    Partial pivoting is known to stop too early on blocks whose residual
    hides from the rows it visits (zero rows, compactly supported kernels).
    Two guards: a zero residual row sends the search to a pseudo-random unused
    row, and before accepting convergence the first and last rows and columns
    (in cluster order, the geometric extremes of the block) and one random row
    are checked; if one predicts a residual above ``4 tau`` (``sqrt(m)
    ||r_i||`` resp. ``sqrt(n) ||c_j||``), the iteration goes on from there.
    This is a heuristic, like every sampling stopping rule: dense input is
    verified exactly afterwards, kernel matrices by ``estimate_error``.

    A residual row (or column) whose largest entry is below
    ``ACA_NOISE_RTOL`` times the largest pivot so far is rounding noise, and
    counts as a zero row: taking its noise as a pivot gives a cross of
    negligible norm that looks like convergence. (This happened on duplicated
    points, where the next pivot row is the duplicate of the last one: a
    far-field block was accepted with an estimated error of 3e-17 and a true
    error of 8e-2.)

    Returns ``(k, norm2, last_update, converged)``; ``converged`` is False if
    ``kmax`` crosses were not enough. A fetched row or column holding NaN or
    infinity (a bad kernel) stops the iteration with ``norm2`` and
    ``last_update`` NaN, so that the block's error is NaN and the build
    reports the kernel (a NaN pivot would otherwise make the row look zero).
    """
    m = r1 - r0
    n = c1 - c0
    row_used = np.zeros(m, np.bool_)
    col_used = np.zeros(n, np.bool_)
    row = np.empty(n)
    col = np.empty(m)
    norm2 = 0.0
    last = 0.0
    k = 0
    i = 0
    state = np.uint64(0x9E3779B97F4A7C15) ^ np.uint64(r0 * 1000003 + c0 * 7919 + m * 31 + n)
    n_rows_used = 0
    zero_rows = 0
    noise = 0.0   # ACA_NOISE_RTOL * the largest pivot so far
    while True:
        if k == kmax:
            return k, norm2, last, False
        if n_rows_used == m:   # every row is a pivot row or was zero: so is the residual
            return k, norm2, min(last, noise * np.sqrt(m * n)), True
        _residual_row(src, r0, c0, c1, i, k, U, V, row)
        if not _finite(row):
            return k, np.nan, np.nan, True
        row_used[i] = True
        n_rows_used += 1
        jp = _argmax_unused(row, col_used)
        if jp >= 0 and abs(row[jp]) <= noise:
            jp = -1
        if jp < 0:
            zero_rows += 1
            if zero_rows > 3 and k > 0:
                # Rows keep vanishing after some crosses (duplicated points
                # give a zero row per pivot): sweep the unused rows for one
                # that is not. A row that is zero (or noise) stays so under
                # later crosses, as does a pivot row, so if none is found
                # the whole residual is noise. (One random column, as below,
                # is not enough here: most columns are duplicates, too.)
                found = -1
                for q in range(m):
                    if not row_used[q]:
                        _residual_row(src, r0, c0, c1, q, k, U, V, row)
                        if not _finite(row):
                            return k, np.nan, np.nan, True
                        jq = _argmax_unused(row, col_used)
                        if jq >= 0 and abs(row[jq]) > noise:
                            found = q
                            break
                        row_used[q] = True
                        n_rows_used += 1
                if found < 0:
                    return k, norm2, min(last, noise * np.sqrt(m * n)), True
                i = found
                zero_rows = 0
                continue
            if zero_rows > 3:
                # Rows keep vanishing: look at a random column before giving up.
                jc, state = _random_unused(col_used, state)
                if jc < 0:   # every column a pivot column: the residual is zero
                    return k, norm2, min(last, noise * np.sqrt(m * n)), True
                _residual_col(src, r0, r1, c0, jc, k, U, V, col)
                if not _finite(col):
                    return k, np.nan, np.nan, True
                iq = _argmax_unused(col, row_used)
                if iq < 0 or abs(col[iq]) <= noise:
                    return k, norm2, last, True
                i = iq
                zero_rows = 0
                continue
            i, state = _random_unused(row_used, state)
            if i < 0:   # every row a pivot row or zero: so is the residual
                return k, norm2, min(last, noise * np.sqrt(m * n)), True
            continue
        zero_rows = 0
        pivot = row[jp]
        noise = max(noise, ACA_NOISE_RTOL * abs(pivot))
        col_used[jp] = True
        _residual_col(src, r0, r1, c0, jp, k, U, V, col)
        if not _finite(col):
            return k, np.nan, np.nan, True
        for j in range(n):
            V[k, j] = row[j] / pivot
        for q in range(m):
            U[k, q] = col[q]
        unorm2 = np.dot(U[k], U[k])
        vnorm2 = np.dot(V[k], V[k])
        cross = 0.0
        for l in range(k):
            cross += np.dot(U[l], U[k]) * np.dot(V[l], V[k])
        norm2 = max(norm2 + 2.0 * cross + unorm2 * vnorm2, 0.0)
        last = np.sqrt(unorm2 * vnorm2)
        k += 1
        tau = max(rel_tol * np.sqrt(norm2), abs_tol)
        i_next = _argmax_unused(U[k - 1], row_used)
        if last <= tau:
            if k == kmax:
                return k, norm2, last, True
            # Check the first and last rows and columns (in cluster order the
            # geometric extremes of the block) and one random row.
            restart = -1
            for t in range(3):
                i_chk = 0 if t == 0 else m - 1
                if t == 2:
                    i_chk, state = _random_unused(row_used, state)
                if i_chk >= 0 and not row_used[i_chk]:
                    _residual_row(src, r0, c0, c1, i_chk, k, U, V, row)
                    if np.sqrt(m * np.dot(row, row)) > 4.0 * tau:
                        restart = i_chk
                        break
            if restart < 0:
                for t in range(2):
                    j_chk = 0 if t == 0 else n - 1
                    if not col_used[j_chk]:
                        _residual_col(src, r0, r1, c0, j_chk, k, U, V, col)
                        if np.sqrt(n * np.dot(col, col)) > 4.0 * tau:
                            restart = _argmax_unused(col, row_used)
                            if restart >= 0:
                                break
            if restart >= 0:
                i = restart
                continue
            return k, norm2, last, True
        if i_next < 0:
            # The last column vanishes on the unused rows: no pivot row to
            # follow, so look at a random one (a zero row leads to the
            # sweep above).
            i_next, state = _random_unused(row_used, state)
            if i_next < 0:
                return k, norm2, min(last, noise * np.sqrt(m * n)), True
        i = i_next


@njit(cache=True)
def truncation_rank(s, abs_tol):
    """Smallest ``r`` with ``sqrt(sum(s[r:]**2)) <= abs_tol``; returns ``(r, tail2)``."""
    tail2 = 0.0
    r = s.shape[0]
    while r > 0:
        t = tail2 + s[r - 1] * s[r - 1]
        if t > abs_tol * abs_tol:
            break
        tail2 = t
        r -= 1
    return r, tail2


@njit(cache=True, fastmath=FASTMATH)
def orthonormalize_rows(W, k):
    """Classical Gram-Schmidt with one re-orthogonalisation (CGS2) on the
    rows of ``W[:k]``: returns ``Q (k, len)`` with orthonormal (or zero) rows
    and upper-triangular ``R (k, k)`` such that ``W[:k].T = Q.T @ R``.

    CGS2 is as accurate as Householder QR in practice (Giraud, Langou &
    Rozloznik 2005), works on the contiguous factor rows that ACA produces and
    costs about half as much as LAPACK's QR plus forming Q -- provided the
    rows are not nearly dependent. Returns ``(Q, R, ok)``; ``ok`` is False
    when a kept row lost more than a factor ``CGS_MIN_RATIO`` of its norm to
    the projections (then ``Q`` may be far from orthonormal, and the caller
    uses Householder QR, :func:`_householder_rows`).
    """
    length = W.shape[1]
    Q = np.zeros((k, length))
    R = np.zeros((k, k))
    w = np.empty(length)
    ok = True
    for l in range(k):
        for i in range(length):
            w[i] = W[l, i]
        norm0 = np.sqrt(np.dot(w, w))
        for _ in range(2):
            for p in range(l):
                c = 0.0
                for i in range(length):
                    c += Q[p, i] * w[i]
                R[p, l] += c
                for i in range(length):
                    w[i] -= c * Q[p, i]
        nrm = np.sqrt(np.dot(w, w))
        # A row in the span of the previous ones (relative to its own size) is
        # dropped: its part of the product is carried by R[:l, l].
        if nrm > 1e-14 * norm0 and nrm > 0.0:
            if nrm < CGS_MIN_RATIO * norm0:
                ok = False
            R[l, l] = nrm
            for i in range(length):
                Q[l, i] = w[i] / nrm
    return Q, R, ok


# CGS2 keeps orthogonality to about eps * cond; below this ratio of a row's
# norm after and before its projections, Householder QR is used instead.
CGS_MIN_RATIO = 1e-6
# Cholesky-QR loses orthogonality like eps * cond(W)^2: with the rows scaled
# to unit norm, a diagonal entry of the Cholesky factor below this (the sine
# of the angle between a row and the span of the previous ones) sends the
# recompression to the Householder path.
GRAM_MIN_DIAG = 1e-4


@njit(cache=True)
def _householder_rows(W):
    """Householder QR of ``W.T``: ``(Q (p, len), R (p, k))`` with orthonormal
    rows of ``Q`` and ``W.T = Q.T @ R`` (``p = min(len, k)``); backward
    stable whatever the conditioning of ``W``."""
    Q, R = np.linalg.qr(np.ascontiguousarray(W.T))
    return np.ascontiguousarray(Q.T), np.ascontiguousarray(R)


@njit(cache=True)
def _cholesky_r(W):
    """Upper-triangular ``R`` with ``W.T = Q @ R``, ``Q`` orthonormal, from a
    Cholesky factorisation of the Gram matrix of the row-scaled ``W``
    (Cholesky-QR; one BLAS-3 product and a k x k factorisation).

    Scaling each row to unit norm first keeps the Gram matrix well
    conditioned for ACA factors, whose rows decay geometrically. Returns
    ``(R, ok)``; ``ok`` is False when the Gram matrix is numerically singular.
    """
    k = W.shape[0]
    d = np.empty(k)
    for l in range(k):
        d[l] = np.sqrt(np.dot(W[l], W[l]))
        if d[l] == 0.0:
            return np.zeros((k, k)), False
    Ws = W / d.reshape((k, 1))
    G = Ws @ Ws.T
    try:
        L = np.linalg.cholesky(G)
    except Exception:  # not positive definite in floating point
        return np.zeros((k, k)), False
    for l in range(k):
        if not L[l, l] >= GRAM_MIN_DIAG:   # ill-conditioned (or NaN): not accurate
            return np.zeros((k, k)), False
    R = np.ascontiguousarray(L.T) * d.reshape((1, k))
    return R, True


@njit(cache=True)
def _solve_upper(R, B):
    """``R^{-1} B`` for upper-triangular ``R (k, k)`` and ``B (k, r)``."""
    k, r = B.shape
    X = B.copy()
    for c in range(r):
        for i in range(k - 1, -1, -1):
            acc = X[i, c]
            for j in range(i + 1, k):
                acc -= R[i, j] * X[j, c]
            X[i, c] = acc / R[i, i]
    return X


@njit(cache=True)
def recompress(U, V, k, abs_tol, rel_tol_floor, aca_norm):
    """Recompress ``sum_{l<k} outer(U[l], V[l])`` to the smallest rank whose
    truncation error is at most ``abs_tol``, via the SVD of a small core.

    When ``abs_tol >= rel_tol_floor * aca_norm`` (``aca_norm``: the norm of the
    approximation) the triangular factors come from Cholesky-QR and the core's
    SVD from the eigendecomposition of ``C @ C.T``: two cheap factorisations
    and one small LAPACK call instead of three, with singular values accurate
    to about ``1e-8 * sigma_max``, ample for such tolerances. Tighter
    tolerances, or a Gram matrix that is ill-conditioned (see
    ``GRAM_MIN_DIAG``), orthonormalise the factor rows with CGS2 and use a
    full SVD; rows too close to dependent for CGS2 (see ``CGS_MIN_RATIO``)
    are orthonormalised by Householder QR.

    Returns ``(Ut (r, m), Vt (r, n), tail2)``: ``Ut.T @ Vt`` is the truncated
    approximation and ``tail2`` the squared Frobenius norm of what was cut.
    """
    m = U.shape[1]
    n = V.shape[1]
    if k == 0:
        return np.zeros((0, m)), np.zeros((0, n)), 0.0
    Uk = np.ascontiguousarray(U[:k])
    Vk = np.ascontiguousarray(V[:k])
    if abs_tol >= rel_tol_floor * aca_norm:
        Ru, ok_u = _cholesky_r(Uk)
        Rv, ok_v = _cholesky_r(Vk)
        if ok_u and ok_v:
            C = Ru @ Rv.T
            lam, E = np.linalg.eigh(C @ C.T)   # ascending
            s = np.sqrt(np.maximum(lam[::-1], 0.0))
            r, tail2 = truncation_rank(s, abs_tol)
            W = np.ascontiguousarray(E[:, ::-1][:, :r])
            # U_new = U^T Ru^{-1} W S,  V_new = V^T Rv^{-1} C^T W S^{-1}
            Mu = _solve_upper(Ru, W * s[:r].reshape((1, r)))
            Mv = _solve_upper(Rv, (C.T @ W) / s[:r].reshape((1, r)))
            Ut = np.ascontiguousarray(Mu.T) @ Uk
            Vt = np.ascontiguousarray(Mv.T) @ Vk
            return Ut, Vt, tail2
    Qu, Ru, ok_u = orthonormalize_rows(U, k)
    Qv, Rv, ok_v = orthonormalize_rows(V, k)
    if not (ok_u and ok_v):
        Qu, Ru = _householder_rows(Uk)
        Qv, Rv = _householder_rows(Vk)
    w, s, zt = np.linalg.svd(Ru @ Rv.T)
    r, tail2 = truncation_rank(s, abs_tol)
    Ut = np.ascontiguousarray((w[:, :r] * s[:r]).T) @ Qu
    Vt = np.ascontiguousarray(zt[:r]) @ Qv
    return Ut, Vt, tail2


# Below this relative truncation tolerance recompression uses CGS2 + SVD
# instead of Cholesky-QR + eigh (whose accuracy is ~1e-8 sigma_max).
GRAM_REL_TOL_FLOOR = 1e-7


@njit(cache=True)
def svd_factors(block, abs_tol):
    """Truncated SVD of a dense block: ``(Ut (r, m), Vt (r, n), tail2)``."""
    w, s, zt = np.linalg.svd(block, full_matrices=False)
    r, tail2 = truncation_rank(s, abs_tol)
    return np.ascontiguousarray((w[:, :r] * s[:r]).T), np.ascontiguousarray(zt[:r]), tail2


@njit(cache=True)
def randomized_factors(block, abs_tol, kmax, seed):
    """Adaptive randomized range finder (Halko, Martinsson & Tropp 2011, alg.
    4.2 in blocks of 8 columns, with one re-orthogonalisation), then SVD of
    the projected block. Stops once the projection residual is below
    ``abs_tol / 2`` or the basis has ``kmax`` columns; the final truncation
    uses the remaining budget. Returns ``(Ut, Vt, resid2, converged)``.
    """
    m, n = block.shape
    np.random.seed(seed)
    total2 = np.sum(block * block)
    Q = np.zeros((m, 0))
    resid2 = total2
    step = 8
    limit = min(kmax, m, n)
    while resid2 > 0.25 * abs_tol * abs_tol and Q.shape[1] < limit:
        b = min(step, limit - Q.shape[1])
        Y = block @ np.random.standard_normal((n, b))
        y_norm = np.sqrt(np.sum(Y * Y))
        for _ in range(2):  # project out the current basis twice (stability)
            Y = Y - Q @ (Q.T @ Y)
        if np.sqrt(np.sum(Y * Y)) <= 1e-12 * y_norm:
            break  # the sample lies in span(Q): the range is captured
        q = np.ascontiguousarray(np.linalg.qr(Y)[0])
        q = q - Q @ (Q.T @ q)  # QR of a nearly-dependent Y leaks back into Q
        q = np.ascontiguousarray(np.linalg.qr(q)[0])
        grown = np.empty((m, Q.shape[1] + q.shape[1]))
        grown[:, :Q.shape[1]] = Q
        grown[:, Q.shape[1]:] = q
        Q = grown
        # the residual itself, not total2 - ||Q^T A||^2, which cancels
        R = block - Q @ (Q.T @ block)
        resid2 = np.sum(R * R)
    R = block - Q @ (Q.T @ block)
    resid2 = np.sum(R * R)
    converged = resid2 <= 0.25 * abs_tol * abs_tol or Q.shape[1] >= min(m, n)
    B = Q.T @ block
    w, s, zt = np.linalg.svd(B, full_matrices=False)
    budget = abs_tol - np.sqrt(resid2)
    r, tail2 = truncation_rank(s, max(budget, 0.0))
    Ut = np.ascontiguousarray((Q @ (w[:, :r] * s[:r])).T)
    return Ut, np.ascontiguousarray(zt[:r]), resid2, converged


@njit(cache=True, fastmath=FASTMATH)
def block_residual2(block, Ut, Vt):
    """Exact ``||block - Ut.T @ Vt||_F**2`` (float64 accumulation)."""
    R = block - Ut.T @ Vt
    return np.sum(R * R)


# ---------------------------------------------------------------------------
# Batched compression of candidate blocks
# ---------------------------------------------------------------------------

STATUS_ACCEPTED = 0
STATUS_REFINE = 1
STATUS_RETRY = 2

METHOD_ACA = 0
METHOD_SVD = 1
METHOD_RSVD = 2


@njit(cache=True)
def _store_factors(store, off, Ut, Vt):
    """Write ``Ut (r, m)`` then ``Vt (r, n)``, i.e. U and V column-major."""
    r, m = Ut.shape
    n = Vt.shape[1]
    for l in range(r):
        for i in range(m):
            store[off + l * m + i] = Ut[l, i]
    base = off + r * m
    for l in range(r):
        for j in range(n):
            store[base + l * n + j] = Vt[l, j]


@njit(cache=True)
def _stored_factors(store, off, m, n, r):
    """The factors as stored (storage precision), back in float64."""
    Ut = np.empty((r, m))
    Vt = np.empty((r, n))
    for l in range(r):
        for i in range(m):
            Ut[l, i] = store[off + l * m + i]
    base = off + r * m
    for l in range(r):
        for j in range(n):
            Vt[l, j] = store[base + l * n + j]
    return Ut, Vt


# A block with more entries than this whose ACA misses its exact error check
# is refined instead of decomposed by the exact SVD.
EXACT_SVD_MAX_ITEMS = 512 * 512


@njit(cache=True)
def compress_one_block(src, exact, r0, r1, c0, c1, rel_tol, abs_tol, method, kcap, kmax_final,
                       seed, scratch, off, ws_u, ws_v, ws_block):
    """Approximate one candidate block; see :func:`compress_blocks`.

    ``ws_*`` are flat work arrays with room for ``(kcap + 1) * m``,
    ``(kcap + 1) * n`` and (dense sources) ``m * n`` numbers.

    Returns ``(status, rank, err2, norm2)``.
    """
    m = r1 - r0
    n = c1 - c0
    block = ws_block[:0].reshape((0, 0))
    norm2 = 0.0
    tau = abs_tol
    if exact:
        block = ws_block[:m * n].reshape((m, n))
        fetch_block(src, r0, r1, c0, c1, block)
        norm2 = np.sum(block * block)
        tau = max(rel_tol * np.sqrt(norm2), abs_tol)
        if norm2 <= tau * tau:  # the zero matrix meets any budget
            return STATUS_ACCEPTED, 0, norm2, norm2
    if kmax_final == 0:  # no rank saves storage here (and the block is not zero)
        return STATUS_REFINE, 1, 0.0, norm2
    if method == METHOD_ACA or not exact:
        U = ws_u[:(kcap + 1) * m].reshape((kcap + 1, m))
        V = ws_v[:(kcap + 1) * n].reshape((kcap + 1, n))
        # ACA runs to half the block budget; recompression may use the rest.
        if exact:
            k, est2, last, conv = aca_partial(src, r0, r1, c0, c1, 0.0, 0.5 * tau, kcap + 1, U, V)
        else:
            k, est2, last, conv = aca_partial(src, r0, r1, c0, c1, 0.5 * rel_tol, 0.5 * abs_tol,
                                              kcap + 1, U, V)
            norm2 = est2
            tau = max(rel_tol * np.sqrt(norm2), abs_tol)
        if not conv:
            return (STATUS_REFINE if kcap >= kmax_final else STATUS_RETRY), kcap + 1, 0.0, norm2
        Ur, Vr, tail2 = recompress(U, V, k, max(tau - last, 0.0), GRAM_REL_TOL_FLOOR,
                                   np.sqrt(est2))
        r = Ur.shape[0]
        if r > kcap:
            return (STATUS_REFINE if kcap >= kmax_final else STATUS_RETRY), r, 0.0, norm2
        _store_factors(scratch, off, Ur, Vr)
        if not exact:
            err = last + np.sqrt(tail2)
            return STATUS_ACCEPTED, r, err * err, norm2
        Us, Vs = _stored_factors(scratch, off, m, n, r)
        err2 = block_residual2(block, Us, Vs)
        if err2 <= tau * tau:
            return STATUS_ACCEPTED, r, err2, norm2
        if m * n > EXACT_SVD_MAX_ITEMS:
            # An exact SVD of a big block costs O(m n min(m, n)), minutes at
            # 4096 x 4096; its children are cheaper to compress and check.
            return STATUS_REFINE, r, err2, norm2
        # ACA's estimate was too optimistic: the exact SVD below decides.
    if method == METHOD_RSVD:
        Ur, Vr, resid2, conv = randomized_factors(block, tau, kcap + 1, seed)
        if conv and Ur.shape[0] <= kcap:
            _store_factors(scratch, off, Ur, Vr)
            Us, Vs = _stored_factors(scratch, off, m, n, Ur.shape[0])
            err2 = block_residual2(block, Us, Vs)
            if err2 <= tau * tau:
                return STATUS_ACCEPTED, Ur.shape[0], err2, norm2
    # Exact truncated SVD: the reference, and the fallback that always meets tau
    # in exact arithmetic (rounding of the stored factors is checked below).
    Ur, Vr, tail2 = svd_factors(block, tau)
    r = Ur.shape[0]
    if r > kcap:
        return (STATUS_REFINE if kcap >= kmax_final else STATUS_RETRY), r, 0.0, norm2
    _store_factors(scratch, off, Ur, Vr)
    Us, Vs = _stored_factors(scratch, off, m, n, r)
    err2 = block_residual2(block, Us, Vs)
    if err2 <= tau * tau:
        return STATUS_ACCEPTED, r, err2, norm2
    return STATUS_REFINE, r, err2, norm2


@njit(cache=True, parallel=True)
def compress_blocks(src, exact, r0, r1, c0, c1, rel_tol, abs_tol, method, kcap, kmax_final,
                    seed, store, slab_start, out_off, status, rank, err2, norm2):
    """Compress candidate blocks in parallel.

    Block ``b`` covers ``[r0[b], r1[b]) x [c0[b], c1[b])`` of ``src`` (cluster
    order) and must meet ``err <= max(rel_tol * ||A_b||_F, abs_tol[b])``.
    ``exact`` (dense sources) computes ``||A_b||_F`` and the final error
    exactly; otherwise both are ACA estimates. ``status[b]`` is accepted,
    refine (the rank would exceed ``kmax_final[b]``: split the block) or retry
    (the rank exceeds the room ``kcap[b] < kmax_final[b]``: try again with
    more room).

    Blocks are dealt round-robin to ``n_slabs = slab_start.size - 1`` slabs
    (many more than threads, for load balance). Slab ``c`` appends the factors
    of its accepted blocks, ``U (m, r)`` then ``V (n, r)`` column-major (the
    rows of ``U.T`` then of ``V.T``), to ``store`` from ``slab_start[c]`` on
    (room for ``kcap[b] * (m + n)`` per block is reserved) and records where in
    ``out_off[b]``. So the memory written is dense: on a VM, first touch of
    fresh pages is the dominant cost of a build, and dense writes let the
    kernel use huge pages. Each slab also allocates its work arrays once.
    """
    n_blocks = r0.shape[0]
    n_slabs = slab_start.shape[0] - 1
    for c in prange(n_slabs):
        size_u = 1
        size_v = 1
        size_b = 1
        for b in range(c, n_blocks, n_slabs):
            m = r1[b] - r0[b]
            n = c1[b] - c0[b]
            size_u = max(size_u, (kcap[b] + 1) * m)
            size_v = max(size_v, (kcap[b] + 1) * n)
            if exact:
                size_b = max(size_b, m * n)
        ws_u = np.empty(size_u)
        ws_v = np.empty(size_v)
        ws_block = np.empty(size_b)
        pos = slab_start[c]
        for b in range(c, n_blocks, n_slabs):
            s, k, e2, n2 = compress_one_block(src, exact, r0[b], r1[b], c0[b], c1[b], rel_tol,
                                              abs_tol[b], method, kcap[b], kmax_final[b],
                                              seed + b, store, pos, ws_u, ws_v, ws_block)
            status[b] = s
            rank[b] = k
            err2[b] = e2
            norm2[b] = n2
            out_off[b] = pos
            if s == STATUS_ACCEPTED:
                pos += k * ((r1[b] - r0[b]) + (c1[b] - c0[b]))


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
def gather_factors(scratch, scratch_off, sizes, out, out_off):
    """Copy each accepted block's factors from the scratch into ``out``."""
    for b in prange(sizes.shape[0]):
        so = scratch_off[b]
        oo = out_off[b]
        for q in range(sizes[b]):
            out[oo + q] = scratch[so + q]


@njit(cache=True, parallel=True)
def fill_dense_blocks(src, r0, r1, c0, c1, offset, data):
    """Write dense blocks (row-major) into ``data``; returns their ``||A_b||^2``."""
    norm2 = np.empty(r0.shape[0])
    for b in prange(r0.shape[0]):
        m = r1[b] - r0[b]
        n = c1[b] - c0[b]
        buf = np.empty(n)
        acc = 0.0
        for i in range(m):
            fetch_row(src, r0[b] + i, c0[b], c1[b], buf)
            o = offset[b] + i * n
            for j in range(n):
                data[o + j] = buf[j]
                acc += buf[j] * buf[j]
        norm2[b] = acc
    return norm2


# ---------------------------------------------------------------------------
# H-matrix products (two phases, row schedule: no races, no atomics)
# ---------------------------------------------------------------------------


@njit(cache=True, parallel=True, fastmath=FASTMATH)
def hmatvec(data, r0, r1, c0, c1, rank, offset, z_off, seg_bounds, sched_ptr, sched_block,
            x, trans):
    """``y = A x`` (or ``A^T x`` when ``trans``) in cluster order.

    Phase one runs over the low-rank blocks in parallel and computes
    ``z_b = U_b (V_b^T x_b)`` (``V_b (U_b^T x_b)``) into its own slice of a
    buffer, streaming both factors contiguously. Phase two gives every output
    segment to one thread, which adds the dense-block products and the
    ``z_b`` slices of its blocks in a fixed order: no races, no atomics, the
    same bits on every run. ``seg_bounds``/``sched_*`` must be the schedule
    of the output side (rows, or columns when ``trans``) and ``z_off`` the
    matching offsets (cumulated ``m_b``, resp. ``n_b``, of low-rank blocks).
    """
    n_blocks = rank.shape[0]
    z = np.empty(z_off[n_blocks])
    for b in prange(n_blocks):
        k = rank[b]
        if k <= 0:
            continue
        m = r1[b] - r0[b]
        n = c1[b] - c0[b]
        if trans:  # inner factor U^T (k x m) against x[r0:r1], outer V^T (k x n)
            inner, lo, n_in, outer, n_out = offset[b], r0[b], m, offset[b] + k * m, n
        else:      # inner V^T (k x n) against x[c0:c1], outer U^T (k x m)
            inner, lo, n_in, outer, n_out = offset[b] + k * m, c0[b], n, offset[b], m
        zo = z_off[b]
        for i in range(n_out):
            z[zo + i] = 0.0
        for l in range(k):
            row = inner + l * n_in
            acc = 0.0
            for j in range(n_in):
                acc += data[row + j] * x[lo + j]
            row = outer + l * n_out
            for i in range(n_out):
                z[zo + i] += data[row + i] * acc
    n_seg = seg_bounds.shape[0] - 1
    y = np.zeros(seg_bounds[n_seg])
    for s in prange(n_seg):
        lo = seg_bounds[s]
        hi = seg_bounds[s + 1]
        for p in range(sched_ptr[s], sched_ptr[s + 1]):
            b = sched_block[p]
            k = rank[b]
            m = r1[b] - r0[b]
            n = c1[b] - c0[b]
            if k < 0:
                if trans:  # columns lo..hi of the dense block, times x[r0:r1]
                    for i in range(m):
                        xi = x[r0[b] + i]
                        row = offset[b] + i * n - c0[b]
                        for j in range(lo, hi):
                            y[j] += data[row + j] * xi
                else:
                    for i in range(lo, hi):
                        row = offset[b] + (i - r0[b]) * n
                        acc = 0.0
                        for j in range(n):
                            acc += data[row + j] * x[c0[b] + j]
                        y[i] += acc
            elif k > 0:
                first = c0[b] if trans else r0[b]
                zo = z_off[b] - first
                for i in range(lo, hi):
                    y[i] += z[zo + i]
    return y


@njit(cache=True, parallel=True, fastmath=FASTMATH)
def hmatmat(data, r0, r1, c0, c1, rank, offset, t_off, seg_bounds, sched_ptr, sched_block,
            X, trans):
    """``Y = A X`` (or ``A^T X``) for ``X (n, p)`` in cluster order; the
    same two phases and schedule as :func:`hmatvec`, with the ``p``
    right-hand sides innermost so the loops vectorise over them."""
    n_blocks = rank.shape[0]
    p_rhs = X.shape[1]
    T = np.zeros((t_off[n_blocks], p_rhs))
    for b in prange(n_blocks):
        k = rank[b]
        if k <= 0:
            continue
        m = r1[b] - r0[b]
        n = c1[b] - c0[b]
        if trans:
            base, lo, length = offset[b], r0[b], m
        else:
            base, lo, length = offset[b] + k * m, c0[b], n
        for l in range(k):
            row = base + l * length
            tl = t_off[b] + l
            for j in range(length):
                a = data[row + j]
                for q in range(p_rhs):
                    T[tl, q] += a * X[lo + j, q]
    n_seg = seg_bounds.shape[0] - 1
    Y = np.zeros((seg_bounds[n_seg], p_rhs))
    for s in prange(n_seg):
        lo = seg_bounds[s]
        hi = seg_bounds[s + 1]
        for p in range(sched_ptr[s], sched_ptr[s + 1]):
            b = sched_block[p]
            k = rank[b]
            m = r1[b] - r0[b]
            n = c1[b] - c0[b]
            if k < 0:
                if trans:
                    for i in range(m):
                        row = offset[b] + i * n - c0[b]
                        for j in range(lo, hi):
                            a = data[row + j]
                            for q in range(p_rhs):
                                Y[j, q] += a * X[r0[b] + i, q]
                else:
                    for i in range(lo, hi):
                        row = offset[b] + (i - r0[b]) * n
                        for j in range(n):
                            a = data[row + j]
                            for q in range(p_rhs):
                                Y[i, q] += a * X[c0[b] + j, q]
            elif k > 0:
                if trans:
                    base, length, first = offset[b] + k * m, n, c0[b]
                else:
                    base, length, first = offset[b], m, r0[b]
                for l in range(k):
                    row = base + l * length - first
                    tl = t_off[b] + l
                    for i in range(lo, hi):
                        a = data[row + i]
                        for q in range(p_rhs):
                            Y[i, q] += a * T[tl, q]
    return Y


@njit(cache=True, parallel=True)
def hm_to_dense(data, r0, r1, c0, c1, rank, offset, m_total, n_total):
    """Expand the blocks into a dense float64 matrix in cluster order."""
    out = np.zeros((m_total, n_total))
    for b in prange(rank.shape[0]):
        m = r1[b] - r0[b]
        n = c1[b] - c0[b]
        k = rank[b]
        o = offset[b]
        if k < 0:
            for i in range(m):
                for j in range(n):
                    out[r0[b] + i, c0[b] + j] = data[o + i * n + j]
        elif k > 0:
            Ut = np.empty((k, m))
            Vt = np.empty((k, n))
            for l in range(k):
                for i in range(m):
                    Ut[l, i] = data[o + l * m + i]
                for j in range(n):
                    Vt[l, j] = data[o + k * m + l * n + j]
            out[r0[b]:r1[b], c0[b]:c1[b]] = Ut.T @ Vt
    return out


@njit(cache=True, parallel=True)
def transpose_data(data, r0, r1, c0, c1, rank, offset):
    """Data buffer of the transpose: dense blocks transposed, factors swapped."""
    out = np.empty_like(data)
    for b in prange(rank.shape[0]):
        m = r1[b] - r0[b]
        n = c1[b] - c0[b]
        k = rank[b]
        o = offset[b]
        if k < 0:
            for i in range(m):
                for j in range(n):
                    out[o + j * m + i] = data[o + i * n + j]
        elif k > 0:
            for q in range(k * n):
                out[o + q] = data[o + k * m + q]
            for q in range(k * m):
                out[o + k * n + q] = data[o + q]
    return out


@njit(cache=True, parallel=True)
def hmatmat_blas(data, r0, r1, c0, c1, rank, offset, t_off, level_ptr, group_start,
                 group_stop, group_ptr, group_block, X, trans):
    """``Y = A X`` (or ``A^T X``) for many right-hand sides, with BLAS products.

    The same result as :func:`hmatmat`, organised for ``X (n, p)`` with a
    large ``p``: every block product is a matrix-matrix product (``np.dot``
    calls the BLAS of SciPy, single-threaded inside the parallel loop).
    Phase one forms ``T_b = V_b^T X_b`` for all low-rank blocks in parallel;
    phase two walks the output ranges depth by depth (ranges of one depth are
    disjoint, see :func:`hmnumba.blocks.level_schedule`) and adds
    ``U_b T_b`` and the dense products. ``X`` must have the dtype of ``data``.
    """
    n_blocks = rank.shape[0]
    p_rhs = X.shape[1]
    T = np.empty((t_off[n_blocks], p_rhs), dtype=data.dtype)
    for b in prange(n_blocks):
        k = rank[b]
        if k <= 0:
            continue
        m = r1[b] - r0[b]
        n = c1[b] - c0[b]
        o = offset[b]
        if trans:   # T = U^T X[rows]
            T[t_off[b]:t_off[b] + k] = np.dot(data[o:o + k * m].reshape((k, m)),
                                              X[r0[b]:r1[b]])
        else:       # T = V^T X[cols]
            T[t_off[b]:t_off[b] + k] = np.dot(data[o + k * m:o + k * (m + n)].reshape((k, n)),
                                              X[c0[b]:c1[b]])
    Y = np.zeros((c1.max() if trans else r1.max(), p_rhs), dtype=data.dtype)
    for level in range(level_ptr.shape[0] - 1):
        for g in prange(level_ptr[level], level_ptr[level + 1]):
            out = Y[group_start[g]:group_stop[g]]
            for q in range(group_ptr[g], group_ptr[g + 1]):
                b = group_block[q]
                k = rank[b]
                m = r1[b] - r0[b]
                n = c1[b] - c0[b]
                o = offset[b]
                if k < 0:
                    D = data[o:o + m * n].reshape((m, n))
                    if trans:
                        out += np.dot(D.T, X[r0[b]:r1[b]])
                    else:
                        out += np.dot(D, X[c0[b]:c1[b]])
                elif k > 0:
                    Tb = T[t_off[b]:t_off[b] + k]
                    if trans:   # V T
                        out += np.dot(data[o + k * m:o + k * (m + n)].reshape((k, n)).T, Tb)
                    else:       # U T
                        out += np.dot(data[o:o + k * m].reshape((k, m)).T, Tb)
    return Y
