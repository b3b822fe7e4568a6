"""Numba kernels of the H^2 products: upward pass, block products (couplings
and near field, stored or recomputed from points), downward pass.

Every pass is race-free and its sums run in a fixed order, so the result has
the same bits for any number of threads:

* upward: from the leaves, each node writes its own coefficients
  ``xh[t] = x_t[skel] + T x_t[rest]`` (``x_t`` is the node's slice of the
  input for a leaf, its children's coefficients otherwise); disjoint
  subtrees run in parallel, so the whole pass is one parallel region (a
  region per level waited ~10 ms per level for its threads on the shared,
  loaded 2-core machine);
* blocks, phase 1: each block writes its products into its own temporary
  slots (a symmetric block, stored once, writes two: ``B x_s`` for ``t`` and
  ``B^T x_t`` for ``s``, so each stored number is read once and used twice);
* blocks, phase 2: each output node sums its slots in block order (CSR);
* downward: from the root, each node scatters its coefficients into its
  children's (or, at a leaf, into the output).

Blocks read their entries through :func:`block_entry`, resolved at compile
time from the type of ``src``: a 1-D array (stored entries, row-major at the
block's offset) or ``(code, length_scale, XR, XC)`` (a built-in kernel on the
coordinates ``XR (d, *)``, ``XC (d, *)``: the on-the-fly mode).
"""
import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from hmnumba.kernels.functions import FASTMATH, kernel_of_distance2


def block_entry(src, o, n, i, j, pi, pj):  # pragma: no cover - replaced by overload
    """Entry ``(i, j)`` of the block stored at offset ``o`` with ``n`` columns,
    or the kernel at the points ``pi``, ``pj``."""


@overload(block_entry, jit_options={"fastmath": FASTMATH})
def _block_entry(src, o, n, i, j, pi, pj):
    if isinstance(src, types.Array):
        def stored(src, o, n, i, j, pi, pj):
            return src[o + i * n + j]
        return stored

    def on_the_fly(src, o, n, i, j, pi, pj):
        code, length_scale, XR, XC = src
        r2 = 0.0
        for a in range(XR.shape[0]):
            t = XR[a, pi] - XC[a, pj]
            r2 += t * t
        return kernel_of_distance2(code, length_scale, r2)
    return on_the_fly


@njit(cache=True, inline="always")
def _operand(t, m, children, leaf_lo, vec_ptr, leaf_vec, coef):
    """The slice a node's basis acts on: its rows of ``leaf_vec`` (a leaf) or
    its two children's coefficients in ``coef`` (consecutive nodes)."""
    if children[t, 0] < 0:
        return leaf_vec[leaf_lo[t]:leaf_lo[t] + m]
    c = children[t, 0]
    return coef[vec_ptr[c]:vec_ptr[c] + m]


@njit(cache=True, fastmath=FASTMATH)
def _up_node(t, children, leaf_lo, piv_ptr, piv, T_ptr, T, vec_ptr, x, xh):
    k = vec_ptr[t + 1] - vec_ptr[t]
    if k == 0:
        return
    r = x.shape[1]
    m = piv_ptr[t + 1] - piv_ptr[t]
    p0, o, w = piv_ptr[t], T_ptr[t], m - k
    z = _operand(t, m, children, leaf_lo, vec_ptr, x, xh)
    out = xh[vec_ptr[t]:vec_ptr[t + 1]]
    for a in range(k):
        for q in range(r):
            out[a, q] = z[piv[p0 + a], q]
    for a in range(k):
        for b in range(w):
            v = T[o + a * w + b]
            zb = piv[p0 + k + b]
            for q in range(r):
                out[a, q] += v * z[zb, q]


@njit(cache=True, fastmath=FASTMATH)
def _down_node(t, children, leaf_lo, piv_ptr, piv, T_ptr, T, vec_ptr, yh, y):
    k = vec_ptr[t + 1] - vec_ptr[t]
    if k == 0:
        return
    r = y.shape[1]
    m = piv_ptr[t + 1] - piv_ptr[t]
    p0, o, w = piv_ptr[t], T_ptr[t], m - k
    z = _operand(t, m, children, leaf_lo, vec_ptr, y, yh)
    src = yh[vec_ptr[t]:vec_ptr[t + 1]]
    for a in range(k):
        za = piv[p0 + a]
        for q in range(r):
            z[za, q] += src[a, q]
    for b in range(w):
        zb = piv[p0 + k + b]
        for q in range(r):
            s = 0.0
            for a in range(k):
                s += T[o + a * w + b] * src[a, q]
            z[zb, q] += s


@njit(cache=True, parallel=True)
def upward(top, sub_ptr, sub_nodes, children, leaf_lo, piv_ptr, piv, T_ptr, T, vec_ptr, x, xh):
    """Coefficients ``xh`` of every node from the input ``x`` (both ``(*, r)``).

    Node ``t`` writes ``xh[vec_ptr[t]:vec_ptr[t + 1]] = z[skel] + T z[rest]``
    where ``z`` is its slice of ``x`` (a leaf, from row ``leaf_lo[t]``) or its
    children's coefficients (the two children of a node are consecutive).
    One parallel region: the subtrees ``sub_nodes[sub_ptr[u]:sub_ptr[u + 1]]``
    (children listed before parents) run in parallel, then the few ``top``
    nodes (breadth-first) serially from the last.
    """
    for u in prange(sub_ptr.shape[0] - 1):
        for e in range(sub_ptr[u], sub_ptr[u + 1]):
            _up_node(sub_nodes[e], children, leaf_lo, piv_ptr, piv, T_ptr, T, vec_ptr, x, xh)
    for e in range(top.shape[0] - 1, -1, -1):
        _up_node(top[e], children, leaf_lo, piv_ptr, piv, T_ptr, T, vec_ptr, x, xh)
    return xh


@njit(cache=True, parallel=True)
def downward(top, sub_ptr, sub_nodes, children, leaf_lo, piv_ptr, piv, T_ptr, T, vec_ptr, yh, y):
    """Scatter the coefficients ``yh`` down the tree and into ``y`` (adds).

    The transpose of :func:`upward` (``z[skel] += yh[t]``, ``z[rest] += T^T
    yh[t]``) in the reverse order, so a parent's coefficients are complete
    before its children read them.
    """
    for e in range(top.shape[0]):
        _down_node(top[e], children, leaf_lo, piv_ptr, piv, T_ptr, T, vec_ptr, yh, y)
    for u in prange(sub_ptr.shape[0] - 1):
        for e in range(sub_ptr[u + 1] - 1, sub_ptr[u] - 1, -1):
            _down_node(sub_nodes[e], children, leaf_lo, piv_ptr, piv, T_ptr, T, vec_ptr, yh, y)
    return y


@njit(cache=True, parallel=True, fastmath=FASTMATH)
def blocks_vec(src, off, bt, bs, do0, do1, rlo, rhi, clo, chi, rpt, cpt, x, tmp, tmp0, tmp1):
    """Phase 1 of a matvec over blocks: ``tmp[tmp0[b]:] = B_b x[cols]`` where
    ``do0[b]``, ``tmp[tmp1[b]:] = B_b^T x[rows]`` where ``do1[b]``.

    Block ``b`` couples node ``bt[b]`` (rows ``rlo:rhi`` of the vector space)
    with ``bs[b]`` (``clo:chi``); ``rpt``/``cpt`` give the first point of a
    node in the coordinates of an on-the-fly ``src``.
    """
    for b in prange(bt.shape[0]):
        t, s = bt[b], bs[b]
        r0, m = rlo[t], rhi[t] - rlo[t]
        c0, n = clo[s], chi[s] - clo[s]
        o = off[b]
        pt, ps = rpt[t], cpt[s]
        a0 = tmp0[b]
        a1 = tmp1[b]
        if do1[b]:
            for j in range(n):
                tmp[a1 + j] = 0.0
            if do0[b]:
                for i in range(m):
                    acc = 0.0
                    xi = x[r0 + i]
                    for j in range(n):
                        v = block_entry(src, o, n, i, j, pt + i, ps + j)
                        acc += v * x[c0 + j]
                        tmp[a1 + j] += v * xi
                    tmp[a0 + i] = acc
            else:
                for i in range(m):
                    xi = x[r0 + i]
                    for j in range(n):
                        tmp[a1 + j] += block_entry(src, o, n, i, j, pt + i, ps + j) * xi
        else:
            for i in range(m):
                acc = 0.0
                for j in range(n):
                    acc += block_entry(src, o, n, i, j, pt + i, ps + j) * x[c0 + j]
                tmp[a0 + i] = acc
    return tmp


@njit(cache=True, parallel=True, fastmath=FASTMATH)
def blocks_mat(src, off, bt, bs, do0, do1, rlo, rhi, clo, chi, rpt, cpt, x, tmp, tmp0, tmp1):
    """:func:`blocks_vec` for ``x`` and ``tmp`` of shape ``(*, r)``."""
    r = x.shape[1]
    for b in prange(bt.shape[0]):
        t, s = bt[b], bs[b]
        r0, m = rlo[t], rhi[t] - rlo[t]
        c0, n = clo[s], chi[s] - clo[s]
        o = off[b]
        pt, ps = rpt[t], cpt[s]
        a0 = tmp0[b]
        a1 = tmp1[b]
        if do0[b]:
            for i in range(m):
                for q in range(r):
                    tmp[a0 + i, q] = 0.0
        if do1[b]:
            for j in range(n):
                for q in range(r):
                    tmp[a1 + j, q] = 0.0
        for i in range(m):
            for j in range(n):
                v = block_entry(src, o, n, i, j, pt + i, ps + j)
                if do0[b]:
                    for q in range(r):
                        tmp[a0 + i, q] += v * x[c0 + j, q]
                if do1[b]:
                    for q in range(r):
                        tmp[a1 + j, q] += v * x[r0 + i, q]
    return tmp


@njit(cache=True, parallel=True)
def gather_slots(out_lo, out_hi, slot_ptr, slot, tmp, out):
    """Phase 2: ``out[out_lo[u]:out_hi[u]] = sum of its slots``, in CSR order.

    Slot ``e`` of node ``u`` (``slot_ptr[u] <= e < slot_ptr[u + 1]``) starts at
    row ``slot[e]`` of ``tmp``; ``tmp`` and ``out`` are ``(*, r)``.
    """
    r = tmp.shape[1]
    for u in prange(out_lo.shape[0]):
        lo, hi = out_lo[u], out_hi[u]
        for i in range(hi - lo):
            for q in range(r):
                out[lo + i, q] = 0.0
        for e in range(slot_ptr[u], slot_ptr[u + 1]):
            a = slot[e]
            for i in range(hi - lo):
                for q in range(r):
                    out[lo + i, q] += tmp[a + i, q]
    return out
