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
* ``(code, length_scale, X, Y)``: a built-in kernel on point arrays ``X, Y``
  (cached on disk like every other kernel here);
* ``(kernel, X, Y)``: a user ``@njit`` kernel ``kernel(x, y) -> float``
  (compiled once per process and kernel).
"""
import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from hmnumba.kernels.functions import FASTMATH, kernel_of_distance2, squared_distance

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
    return None


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
            code, ls, X, Y = src
            x = X[i]
            for j in range(c1 - c0):
                out[j] = kernel_of_distance2(code, ls, squared_distance(x, Y[c0 + j]))
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
    if kind == "dense":
        def impl(src, j, r0, r1, out):
            for i in range(r1 - r0):
                out[i] = src[r0 + i, j]
        return impl
    if kind == "builtin":
        def impl(src, j, r0, r1, out):
            code, ls, X, Y = src
            y = Y[j]
            for i in range(r1 - r0):
                out[i] = kernel_of_distance2(code, ls, squared_distance(X[r0 + i], y))
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
    if kind == "dense":
        def impl(src, r0, r1, c0, c1, out):
            for i in range(r1 - r0):
                for j in range(c1 - c0):
                    out[i, j] = src[r0 + i, c0 + j]
        return impl
    if kind == "builtin":
        def impl(src, r0, r1, c0, c1, out):
            code, ls, X, Y = src
            for i in range(r1 - r0):
                x = X[r0 + i]
                for j in range(c1 - c0):
                    out[i, j] = kernel_of_distance2(code, ls, squared_distance(x, Y[c0 + j]))
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
    return assemble_dense((code, length_scale, X, Y), X.shape[0], Y.shape[0], out)


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
    back to halving the index range, so the depth stays bounded by log2(n).
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
            i, j = s, e - 1
            while i <= j:  # two-pointer partition, points below mid first
                if points[perm[i], axis] < mid:
                    i += 1
                else:
                    tmp = perm[i]
                    perm[i] = perm[j]
                    perm[j] = tmp
                    j -= 1
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


@njit(cache=True, fastmath=FASTMATH)
def aca_partial(src, r0, r1, c0, c1, rel_tol, abs_tol, kmax, U, V):
    """Adaptive cross approximation with partial pivoting (Bebendorf 2000).

    Builds ``A[r0:r1, c0:c1] ~= sum_l outer(U[l], V[l])`` one cross at a time
    from single rows and columns of ``src``. Stops when the standard estimate
    ``||u_k|| ||v_k|| <= max(rel_tol * ||S_k||_F, abs_tol)`` holds (``S_k`` is
    the current approximation, its norm updated exactly), when every row has
    been tried, or after ``kmax`` crosses.

    A residual row that is exactly zero does not stop the iteration (the
    classic failure of partial pivoting on blocks with zero rows): up to 8
    further unused rows are tried first.

    Returns ``(k, norm2, last_update, converged)``.
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
    zero_rows = 0
    n_rows_used = 0
    while True:
        if n_rows_used == m:
            return k, norm2, last, True
        if k == kmax:
            return k, norm2, last, False
        fetch_row(src, r0 + i, c0, c1, row)
        for l in range(k):
            a = U[l, i]
            for j in range(n):
                row[j] -= a * V[l, j]
        row_used[i] = True
        n_rows_used += 1
        jp = -1
        best = 0.0
        for j in range(n):
            if not col_used[j] and abs(row[j]) > best:
                best = abs(row[j])
                jp = j
        if jp < 0:
            zero_rows += 1
            if zero_rows > 8:
                return k, norm2, last, True
            # next unused row, in order
            i_next = -1
            for q in range(m):
                cand = (i + 1 + q) % m
                if not row_used[cand]:
                    i_next = cand
                    break
            if i_next < 0:
                return k, norm2, last, True
            i = i_next
            continue
        zero_rows = 0
        pivot = row[jp]
        col_used[jp] = True
        fetch_col(src, c0 + jp, r0, r1, col)
        for l in range(k):
            b = V[l, jp]
            for q in range(m):
                col[q] -= b * U[l, q]
        for j in range(n):
            V[k, j] = row[j] / pivot
        for q in range(m):
            U[k, q] = col[q]
        unorm2 = 0.0
        for q in range(m):
            unorm2 += U[k, q] * U[k, q]
        vnorm2 = 0.0
        for j in range(n):
            vnorm2 += V[k, j] * V[k, j]
        cross = 0.0
        for l in range(k):
            cu = 0.0
            for q in range(m):
                cu += U[l, q] * U[k, q]
            cv = 0.0
            for j in range(n):
                cv += V[l, j] * V[k, j]
            cross += cu * cv
        norm2 = max(norm2 + 2.0 * cross + unorm2 * vnorm2, 0.0)
        last = np.sqrt(unorm2 * vnorm2)
        k += 1
        if last <= max(rel_tol * np.sqrt(norm2), abs_tol):
            return k, norm2, last, True
        # next pivot row: largest entry of the new column among unused rows
        i_next = -1
        best = -1.0
        for q in range(m):
            if not row_used[q] and abs(U[k - 1, q]) > best:
                best = abs(U[k - 1, q])
                i_next = q
        if i_next < 0:
            return k, norm2, last, True
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


@njit(cache=True)
def recompress(U, V, k, abs_tol):
    """Recompress ``sum_{l<k} outer(U[l], V[l])`` to the smallest rank whose
    truncation error is at most ``abs_tol`` (QR of both factors, SVD of the
    small core).

    Returns ``(Ur (m, r), Vr (n, r), tail2)`` with ``Ur @ Vr.T`` the truncated
    approximation and ``tail2`` the squared Frobenius norm of what was cut.
    """
    m = U.shape[1]
    n = V.shape[1]
    if k == 0:
        return np.zeros((m, 0)), np.zeros((n, 0)), 0.0
    qu, ru = np.linalg.qr(np.ascontiguousarray(U[:k].T))
    qv, rv = np.linalg.qr(np.ascontiguousarray(V[:k].T))
    core = ru @ rv.T
    w, s, zt = np.linalg.svd(core)
    r, tail2 = truncation_rank(s, abs_tol)
    Ur = qu @ (w[:, :r] * s[:r])
    Vr = qv @ np.ascontiguousarray(zt[:r].T)
    return Ur, Vr, tail2


@njit(cache=True)
def svd_factors(block, abs_tol):
    """Truncated SVD of a dense block: ``(U (m, r), V (n, r), tail2)``."""
    w, s, zt = np.linalg.svd(block, full_matrices=False)
    r, tail2 = truncation_rank(s, abs_tol)
    return np.ascontiguousarray(w[:, :r] * s[:r]), np.ascontiguousarray(zt[:r].T), tail2


@njit(cache=True)
def randomized_factors(block, abs_tol, kmax, seed):
    """Adaptive randomized range finder (Halko, Martinsson & Tropp 2011, alg.
    4.2 in blocks of 8 columns, with one re-orthogonalisation), then SVD of
    the projected block. Stops once the projection residual is below
    ``abs_tol / 2`` or the basis has ``kmax`` columns; the final truncation
    uses the remaining budget. Returns ``(U, V, err2_upper, converged)``.
    """
    m, n = block.shape
    np.random.seed(seed)
    total2 = np.sum(block * block)
    Q = np.zeros((m, 0))
    resid2 = total2
    step = 8
    while resid2 > 0.25 * abs_tol * abs_tol and Q.shape[1] < min(kmax, m, n):
        b = min(step, min(kmax, m, n) - Q.shape[1])
        Y = block @ np.random.standard_normal((n, b))
        for _ in range(2):  # project out the current basis twice (stability)
            Y = Y - Q @ (Q.T @ Y)
        q, _ = np.linalg.qr(Y)
        Q = np.ascontiguousarray(np.hstack((Q, q)))
        B = Q.T @ block
        resid2 = max(total2 - np.sum(B * B), 0.0)
    converged = resid2 <= 0.25 * abs_tol * abs_tol or Q.shape[1] >= min(m, n)
    B = Q.T @ block
    w, s, zt = np.linalg.svd(B, full_matrices=False)
    budget = abs_tol - np.sqrt(resid2)
    r, tail2 = truncation_rank(s, max(budget, 0.0))
    U = Q @ (w[:, :r] * s[:r])
    return np.ascontiguousarray(U), np.ascontiguousarray(zt[:r].T), resid2, converged


@njit(cache=True, fastmath=FASTMATH)
def block_residual2(block, U, V):
    """Exact ``||block - U @ V.T||_F**2`` (float64 accumulation)."""
    R = block - U @ V.T
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
def _store_factors(scratch, off, Ur, Vr):
    m, r = Ur.shape
    n = Vr.shape[0]
    for i in range(m):
        for l in range(r):
            scratch[off + i * r + l] = Ur[i, l]
    base = off + m * r
    for j in range(n):
        for l in range(r):
            scratch[base + j * r + l] = Vr[j, l]


@njit(cache=True)
def _stored_factors(scratch, off, m, n, r):
    """The factors as stored (storage precision), back in float64."""
    Ur = np.empty((m, r))
    Vr = np.empty((n, r))
    for i in range(m):
        for l in range(r):
            Ur[i, l] = scratch[off + i * r + l]
    base = off + m * r
    for j in range(n):
        for l in range(r):
            Vr[j, l] = scratch[base + j * r + l]
    return Ur, Vr


@njit(cache=True)
def compress_one_block(src, exact, r0, r1, c0, c1, rel_tol, abs_tol, method, kcap, kmax_final,
                       seed, scratch, off):
    """Approximate one candidate block; see :func:`compress_blocks`.

    Returns ``(status, rank, err2, norm2)``.
    """
    m = r1 - r0
    n = c1 - c0
    block = np.empty((0, 0))
    norm2 = 0.0
    tau = abs_tol
    if exact:
        block = np.empty((m, n))
        fetch_block(src, r0, r1, c0, c1, block)
        norm2 = np.sum(block * block)
        tau = max(rel_tol * np.sqrt(norm2), abs_tol)
        if norm2 <= tau * tau:  # the zero matrix meets any budget
            return STATUS_ACCEPTED, 0, norm2, norm2
    if kmax_final == 0:  # no rank saves storage here (and the block is not zero)
        return STATUS_REFINE, 1, 0.0, norm2
    if method == METHOD_ACA or not exact:
        U = np.empty((kcap + 1, m))
        V = np.empty((kcap + 1, n))
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
        Ur, Vr, tail2 = recompress(U, V, k, max(tau - last, 0.0))
        r = Ur.shape[1]
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
        # ACA's estimate was too optimistic: the exact SVD below decides.
    if method == METHOD_RSVD:
        Ur, Vr, resid2, conv = randomized_factors(block, tau, kcap + 1, seed)
        if conv and Ur.shape[1] <= kcap:
            _store_factors(scratch, off, Ur, Vr)
            Us, Vs = _stored_factors(scratch, off, m, n, Ur.shape[1])
            err2 = block_residual2(block, Us, Vs)
            if err2 <= tau * tau:
                return STATUS_ACCEPTED, Ur.shape[1], err2, norm2
    # Exact truncated SVD: the reference, and the fallback that always meets tau
    # in exact arithmetic (rounding of the stored factors is checked below).
    Ur, Vr, tail2 = svd_factors(block, tau)
    r = Ur.shape[1]
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
                    seed, scratch, scratch_off, status, rank, err2, norm2):
    """Compress candidate blocks in parallel.

    Block ``b`` covers ``[r0[b], r1[b]) x [c0[b], c1[b])`` of ``src`` (cluster
    order) and must meet ``err <= max(rel_tol * ||A_b||_F, abs_tol[b])``.
    ``exact`` (dense sources) computes ``||A_b||_F`` and the final error
    exactly; otherwise both are ACA estimates. The factors ``U (m, r)`` then
    ``V (n, r)`` (row-major) go to ``scratch[scratch_off[b]:]``, which has room
    for rank ``kcap[b]``. ``status[b]`` is accepted, refine (the rank would
    exceed ``kmax_final[b]``: split the block) or retry (the rank exceeds the
    scratch room ``kcap[b] < kmax_final[b]``: try again with more room).
    """
    for b in prange(r0.shape[0]):
        s, k, e2, n2 = compress_one_block(src, exact, r0[b], r1[b], c0[b], c1[b], rel_tol,
                                          abs_tol[b], method, kcap[b], kmax_final[b],
                                          seed + b, scratch, scratch_off[b])
        status[b] = s
        rank[b] = k
        err2[b] = e2
        norm2[b] = n2


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
def hmatvec(data, r0, r1, c0, c1, rank, offset, t_off, seg_bounds, sched_ptr, sched_block,
            x, trans):
    """``y = A x`` (or ``A^T x`` when ``trans``) in cluster order.

    Phase one computes ``t_b = V_b^T x_b`` (``U_b^T x_b``) for every low-rank
    block in parallel; phase two gives every output segment to one thread,
    which adds the contributions of its blocks in a fixed order, so the result
    has the same bits on every run. ``seg_bounds``/``sched_*`` must be the
    schedule of the output side (rows, or columns when ``trans``).
    """
    n_blocks = rank.shape[0]
    t = np.empty(t_off[n_blocks])
    for b in prange(n_blocks):
        k = rank[b]
        if k <= 0:
            continue
        m = r1[b] - r0[b]
        if trans:
            base = offset[b]
            lo = r0[b]
            length = m
        else:
            base = offset[b] + m * k
            lo = c0[b]
            length = c1[b] - c0[b]
        to = t_off[b]
        for l in range(k):
            t[to + l] = 0.0
        for j in range(length):
            xj = x[lo + j]
            row = base + j * k
            for l in range(k):
                t[to + l] += data[row + l] * xj
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
                to = t_off[b]
                if trans:  # rows of V
                    base = offset[b] + m * k + (lo - c0[b]) * k
                else:
                    base = offset[b] + (lo - r0[b]) * k
                for i in range(hi - lo):
                    row = base + i * k
                    acc = 0.0
                    for l in range(k):
                        acc += data[row + l] * t[to + l]
                    y[lo + i] += acc
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
        if trans:
            base = offset[b]
            lo = r0[b]
            length = m
        else:
            base = offset[b] + m * k
            lo = c0[b]
            length = c1[b] - c0[b]
        to = t_off[b]
        for j in range(length):
            row = base + j * k
            for l in range(k):
                a = data[row + l]
                for q in range(p_rhs):
                    T[to + l, q] += a * X[lo + j, q]
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
                to = t_off[b]
                if trans:
                    base = offset[b] + m * k + (lo - c0[b]) * k
                else:
                    base = offset[b] + (lo - r0[b]) * k
                for i in range(hi - lo):
                    row = base + i * k
                    for l in range(k):
                        a = data[row + l]
                        for q in range(p_rhs):
                            Y[lo + i, q] += a * T[to + l, q]
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
            U = np.empty((m, k))
            V = np.empty((n, k))
            for i in range(m):
                for l in range(k):
                    U[i, l] = data[o + i * k + l]
            for j in range(n):
                for l in range(k):
                    V[j, l] = data[o + m * k + j * k + l]
            out[r0[b]:r1[b], c0[b]:c1[b]] = U @ V.T
    return out
