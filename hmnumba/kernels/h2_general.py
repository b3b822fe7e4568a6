"""Products of general (non-symmetric, rectangular) H^2 matrices.

The layout (built by :mod:`hmnumba.h2dense`): nodes of each cluster tree in
breadth-first order (``level_ptr``); node ``t`` of rank ``k_t`` owns the rows
``vp[t]:vp[t + 1]`` of the coefficient vectors and a row-major matrix at
``boff[t]`` of ``basis``: ``U_t`` (``m_t x k_t``) for a leaf, the stacked
transfer ``[E_c0; E_c1]`` (``(k_c0 + k_c1) x k_t``) for an inner node.
Couplings and near-field blocks are row-major matrices in CSR lists keyed by
their output node; a transposed product reads the same data through a
second CSR.

Every kernel writes each output slice from one iteration only (a level's
nodes, or one output node's list of blocks, summed in list order), so the
results are race-free and the same bits for any thread count.
"""
import numpy as np
from numba import njit, prange

# No "reassoc" / "contract" here: with them, numba's cold compile of the
# float64 matvec (one right-hand side) gave other bits than the same kernel
# loaded from its cache (tests/test_h2_cold_warm.py, an H-matrix converted by
# H2Matrix.from_hmatrix), as the PINN kernels did; the sums run in the written order.
FASTMATH = {"nsz", "arcp", "afn"}


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def upward(children, start, stop, level_ptr, vp, boff, basis, X, Xh):
    """``Xh[t] = U_t^T X[t]`` for every node, from the leaves up."""
    r = X.shape[1]
    for lev in range(level_ptr.shape[0] - 2, -1, -1):
        for t in prange(level_ptr[lev], level_ptr[lev + 1]):
            k = vp[t + 1] - vp[t]
            o = vp[t]
            for j in range(k):
                for c in range(r):
                    Xh[o + j, c] = 0.0
            b = boff[t]
            if children[t, 0] < 0:
                s0 = start[t]
                for i in range(stop[t] - s0):
                    for j in range(k):
                        w = np.float64(basis[b + i * k + j])
                        for c in range(r):
                            Xh[o + j, c] += w * X[s0 + i, c]
            elif k > 0:
                i0 = 0
                for h in range(2):
                    ch = children[t, h]
                    oc = vp[ch]
                    kc = vp[ch + 1] - oc
                    for i in range(kc):
                        for j in range(k):
                            w = np.float64(basis[b + (i0 + i) * k + j])
                            for c in range(r):
                                Xh[o + j, c] += w * Xh[oc + i, c]
                    i0 += kc


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def downward(children, start, stop, level_ptr, vp, boff, basis, Yh, Y):
    """``Yh[c] += E_c Yh[t]`` from the root down, then ``Y[t] += U_t Yh[t]``
    at the leaves (``Yh`` is overwritten)."""
    r = Y.shape[1]
    for lev in range(level_ptr.shape[0] - 1):
        for t in prange(level_ptr[lev], level_ptr[lev + 1]):
            k = vp[t + 1] - vp[t]
            o = vp[t]
            b = boff[t]
            if children[t, 0] < 0:
                s0 = start[t]
                for i in range(stop[t] - s0):
                    for j in range(k):
                        w = np.float64(basis[b + i * k + j])
                        for c in range(r):
                            Y[s0 + i, c] += w * Yh[o + j, c]
            elif k > 0:
                i0 = 0
                for h in range(2):
                    ch = children[t, h]
                    oc = vp[ch]
                    kc = vp[ch + 1] - oc
                    for i in range(kc):
                        for j in range(k):
                            w = np.float64(basis[b + (i0 + i) * k + j])
                            for c in range(r):
                                Yh[oc + i, c] += w * Yh[o + j, c]
                    i0 += kc


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def blocks(ptr, other, off, data, trans, lo_out, hi_out, lo_in, hi_in, X, Y):
    """``Y[u] += sum_b A_b X[other_b]`` over the CSR list of each output
    node ``u`` (``A_b`` row-major ``(hi_out - lo_out) x (hi_in - lo_in)``,
    or its transpose stored when ``trans``), in list order."""
    r = X.shape[1]
    for u in prange(ptr.shape[0] - 1):
        o = lo_out[u]
        m = hi_out[u] - o
        for q in range(ptr[u], ptr[u + 1]):
            s = other[q]
            i0 = lo_in[s]
            n = hi_in[s] - i0
            b = off[q]
            for i in range(m):
                for j in range(n):
                    if trans:
                        w = np.float64(data[b + j * m + i])
                    else:
                        w = np.float64(data[b + i * n + j])
                    for c in range(r):
                        Y[o + i, c] += w * X[i0 + j, c]
