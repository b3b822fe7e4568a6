"""Products of general (non-symmetric, rectangular) H^2 matrices.

The layout (built by :mod:`hmnumba.h2dense`): nodes of each cluster tree in
breadth-first order (``level_ptr``); node ``t`` of rank ``k_t`` owns the rows
``vp[t]:vp[t + 1]`` of the coefficient vectors and a row-major matrix at
``boff[t]`` of ``basis``: ``U_t`` (``m_t x k_t``) for a leaf, the stacked
transfer ``[E_c0; E_c1]`` (``(k_c0 + k_c1) x k_t``) for an inner node.
Couplings and near-field blocks are row-major matrices in CSR lists keyed by
their output node; a transposed product reads the same data through a
second CSR. A *symmetric* matrix (one tree, one set of bases) stores each
mirrored pair of blocks once, under the node that comes first, and lists it
under both nodes: the second entry has ``flip = 1`` and reads the stored
block transposed. Its CPU products do not read these lists: they apply each
stored block both ways through the two-phase kernels of
:mod:`hmnumba.kernels.h2_products`; the flips serve the device twin and the
conversions.

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
# The block products run over this many slabs, slab w taking the output
# nodes w, w + SLABS, ...: nodes are breadth-first, so a plain prange over
# them gave one thread the inner nodes (no near field) and the other the
# leaves (all of it).
SLABS = 64


@njit(cache=True, inline="always", fastmath=FASTMATH)
def _pass_node(t, up, children, start, stop, vp, boff, basis, vec, coef):
    """Node ``t``'s step of the upward pass (``up``: ``coef[t] = M^T z``) or
    of the downward pass (``z += M coef[t]``), where ``M`` is the node's
    stored matrix (``U_t``, ``m_t x k_t``, at a leaf; the stacked transfers
    ``[E_c0; E_c1]`` otherwise) and ``z`` its rows of ``vec`` (a leaf) or
    its children's coefficients in ``coef``."""
    r = coef.shape[1]
    k = vp[t + 1] - vp[t]
    o = vp[t]
    b = boff[t]
    if up:
        for j in range(k):
            for c in range(r):
                coef[o + j, c] = 0.0
    leaf = children[t, 0] < 0
    if k == 0:
        return
    z = vec if leaf else coef
    for h in range(1 if leaf else 2):
        if leaf:
            z0, i0, rows = start[t], 0, stop[t] - start[t]
        else:
            ch = children[t, h]
            z0, rows = vp[ch], vp[ch + 1] - vp[ch]
            i0 = 0 if h == 0 else vp[children[t, 0] + 1] - vp[children[t, 0]]
        for i in range(rows):
            for j in range(k):
                w = np.float64(basis[b + (i0 + i) * k + j])
                for c in range(r):
                    if up:
                        coef[o + j, c] += w * z[z0 + i, c]
                    else:
                        z[z0 + i, c] += w * coef[o + j, c]


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def upward(top, sub_ptr, sub_nodes, children, start, stop, vp, boff, basis, X, Xh):
    """``Xh[t] = U_t^T X[t]`` for every node, from the leaves up, in one
    parallel region: the subtrees ``sub_nodes[sub_ptr[u]:sub_ptr[u + 1]]``
    (children before parents) in parallel, then the ``top`` nodes
    (breadth-first) serially from the last (the split of
    :func:`hmnumba.h2schedule.subtrees`)."""
    for u in prange(sub_ptr.shape[0] - 1):
        for e in range(sub_ptr[u], sub_ptr[u + 1]):
            _pass_node(sub_nodes[e], True, children, start, stop, vp, boff, basis, X, Xh)
    for e in range(top.shape[0] - 1, -1, -1):
        _pass_node(top[e], True, children, start, stop, vp, boff, basis, X, Xh)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def downward(top, sub_ptr, sub_nodes, children, start, stop, vp, boff, basis, Yh, Y):
    """``Yh[c] += E_c Yh[t]`` from the root down, then ``Y[t] += U_t Yh[t]``
    at the leaves (``Yh`` is overwritten): the reverse of :func:`upward`'s
    order, so a parent is complete before its children read it."""
    for e in range(top.shape[0]):
        _pass_node(top[e], False, children, start, stop, vp, boff, basis, Y, Yh)
    for u in prange(sub_ptr.shape[0] - 1):
        for e in range(sub_ptr[u + 1] - 1, sub_ptr[u] - 1, -1):
            _pass_node(sub_nodes[e], False, children, start, stop, vp, boff, basis, Y, Yh)


@njit(cache=True, inline="always")
def _entry(u, q, other, off, lo_out, hi_out, lo_in, hi_in):
    """Entry ``q`` of output node ``u``'s list: its output rows ``o:o + m``,
    input rows ``i0:i0 + n`` and offset ``b``."""
    s = other[q]
    return lo_out[u], hi_out[u] - lo_out[u], lo_in[s], hi_in[s] - lo_in[s], off[q]


@njit(cache=True, inline="always", fastmath=FASTMATH)
def _row_dot(data, b, n, x, i0):
    """``sum_j data[b + j] x[i0 + j]`` in eight interleaved partial sums
    (independent chains the CPU overlaps; the order is fixed in the code,
    so no reassociation flag is needed and the bits never change)."""
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
    j = 0
    while j + 8 <= n:
        a0 += np.float64(data[b + j]) * x[i0 + j]
        a1 += np.float64(data[b + j + 1]) * x[i0 + j + 1]
        a2 += np.float64(data[b + j + 2]) * x[i0 + j + 2]
        a3 += np.float64(data[b + j + 3]) * x[i0 + j + 3]
        a4 += np.float64(data[b + j + 4]) * x[i0 + j + 4]
        a5 += np.float64(data[b + j + 5]) * x[i0 + j + 5]
        a6 += np.float64(data[b + j + 6]) * x[i0 + j + 6]
        a7 += np.float64(data[b + j + 7]) * x[i0 + j + 7]
        j += 8
    while j < n:
        a0 += np.float64(data[b + j]) * x[i0 + j]
        j += 1
    return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))


@njit(cache=True, inline="always", fastmath=FASTMATH)
def _block_vec(data, b, m, n, transposed, x, i0, y, o):
    """``y[o:o + m] += A x[i0:i0 + n]`` (1-D): a block read as stored takes
    a dot product per row (:func:`_row_dot`), one read transposed adds its
    contiguous rows scaled by ``x`` (a loop that vectorizes as written)."""
    if transposed:
        for j in range(n):
            xj = x[i0 + j]
            c = b + j * m
            for i in range(m):
                y[o + i] += np.float64(data[c + i]) * xj
    else:
        for i in range(m):
            y[o + i] += _row_dot(data, b + i * n, n, x, i0)


@njit(cache=True, inline="always", fastmath=FASTMATH)
def _block_mat(data, b, m, n, transposed, X, i0, Y, o):
    """``Y[o:o + m] += A X[i0:i0 + n]`` for ``r`` columns."""
    r = X.shape[1]
    for i in range(m):
        for j in range(n):
            if transposed:
                w = np.float64(data[b + j * m + i])
            else:
                w = np.float64(data[b + i * n + j])
            for c in range(r):
                Y[o + i, c] += w * X[i0 + j, c]


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def blocks(ptr, other, off, data, trans, lo_out, hi_out, lo_in, hi_in, X, Y):
    """``Y[u] += sum_b A_b X[other_b]`` over the CSR list of each output
    node ``u`` (``A_b`` row-major ``(hi_out - lo_out) x (hi_in - lo_in)``,
    or its transpose stored when ``trans``: the list of ``H^T``), in list order. ``X``, ``Y``: C-contiguous
    ``(*, r)``; one column runs on their flat views (unit stride)."""
    x, y = X.reshape(-1), Y.reshape(-1)
    n_out = ptr.shape[0] - 1
    for slab in prange(SLABS):
        for u in range(slab, n_out, SLABS):        # interleaved: see SLABS
            for q in range(ptr[u], ptr[u + 1]):
                o, m, i0, n, b = _entry(u, q, other, off, lo_out, hi_out, lo_in, hi_in)
                if X.shape[1] == 1:
                    _block_vec(data, b, m, n, trans, x, i0, y, o)
                else:
                    _block_mat(data, b, m, n, trans, X, i0, Y, o)
