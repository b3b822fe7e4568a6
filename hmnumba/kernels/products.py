"""H-matrix products over the packed block arrays (numba).

Two phases and a row schedule, no races and no atomics (DESIGN section 5):
``t_b = V_b^T x_b`` for every low-rank block in parallel, then each leaf row
range sums its blocks' ``U_b t_b`` and dense products in a fixed order, so
the same input gives the same bits for any thread count. Also the dense
expansion, the transposed storage and the BLAS-grouped matmat.
The symmetric storage's product is :mod:`hmnumba.kernels.symmetric`, the
CUDA twin :mod:`hmnumba.kernels.products_cuda`; the schedules themselves are
built in Python by ``hmnumba.blocks``.
"""
import numpy as np
from numba import njit, prange

from hmnumba.kernels.codes import FASTMATH




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
            P = Ut.T @ Vt
            for i in range(m):   # a loop: slice assignment compiles slowly (factors.py)
                for j in range(n):
                    out[r0[b] + i, c0[b] + j] = P[i, j]
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
