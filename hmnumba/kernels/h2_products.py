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

Stored blocks (:func:`blocks_vec`, :func:`blocks_mat`) read their entries
row-major at the block's offset (float64 or float32). On-the-fly blocks
(:func:`kernel_blocks_vec`, :func:`kernel_blocks_mat`) evaluate a built-in
kernel ``(code, length_scale, XR, XC, single)`` on the coordinates ``XR (d,
*)``, ``XC (d, *)`` over padded columns, in float32 where ``single``
allows.
"""
import numpy as np
from numba import njit, prange

from hmnumba.kernels.codes import FASTMATH, LAPLACE
from hmnumba.kernels.sources import kernel_of_distance2


# The parallel loops of the block products run over this many slabs, slab
# u taking the blocks slab_range(u, n_blocks): a contiguous range, so a
# thread streams through contiguous stored entries. Neighbouring blocks of
# the partition have similar sizes (they come from one cluster pair's
# subtree), so the builder lists the blocks in slab order
# (h2build.slab_order): slab u then holds the partition's blocks u, u +
# SLABS, u + 2 SLABS, ..., a balanced mix, and is stored contiguously.
# 40k cube, each product kernel timed alone against round-robin slabs over
# the partition's order (same bits): dense couplings 8.2 -> 6.3 ms, near
# field 6.1 -> 4.9 ms, factored couplings 17.1 -> 15.9 ms.
SLABS = 256


@njit(cache=True, inline="always")
def slab_range(u, n_blocks):
    """The blocks of slab ``u``: ``range(first, stop)``."""
    return range(u * n_blocks // SLABS, (u + 1) * n_blocks // SLABS)


@njit(cache=True, inline="always")
def _operand(t, m, children, leaf_lo, vec_ptr, leaf_vec, coef):
    """The slice a node's basis acts on: its rows of ``leaf_vec`` (a leaf) or
    its two children's coefficients in ``coef`` (consecutive nodes)."""
    if children[t, 0] < 0:
        return leaf_vec[leaf_lo[t]:leaf_lo[t] + m]
    c = children[t, 0]
    return coef[vec_ptr[c]:vec_ptr[c] + m]


@njit(cache=True, fastmath=FASTMATH)
def _up_node(t, children, leaf_lo, piv_ptr, piv, T_ptr, T, vec_ptr, x, xh, buf):
    k = vec_ptr[t + 1] - vec_ptr[t]
    if k == 0:
        return
    r = x.shape[1]
    m = piv_ptr[t + 1] - piv_ptr[t]
    p0, o, w = piv_ptr[t], T_ptr[t], m - k
    z = _operand(t, m, children, leaf_lo, vec_ptr, x, xh)
    zp = buf[:m]                  # the operand in pivot order: then T acts densely
    for i in range(m):
        zi = piv[p0 + i]
        for q in range(r):
            zp[i, q] = z[zi, q]
    out = xh[vec_ptr[t]:vec_ptr[t + 1]]
    for a in range(k):
        Ta = T[o + a * w:o + (a + 1) * w]
        for q in range(r):
            acc = zp[a, q]
            for b in range(w):
                acc += Ta[b] * zp[k + b, q]
            out[a, q] = acc


@njit(cache=True, fastmath=FASTMATH)
def _down_node(t, children, leaf_lo, piv_ptr, piv, T_ptr, T, vec_ptr, yh, y, buf):
    k = vec_ptr[t + 1] - vec_ptr[t]
    if k == 0:
        return
    r = y.shape[1]
    m = piv_ptr[t + 1] - piv_ptr[t]
    p0, o, w = piv_ptr[t], T_ptr[t], m - k
    z = _operand(t, m, children, leaf_lo, vec_ptr, y, yh)
    src = yh[vec_ptr[t]:vec_ptr[t + 1]]
    rest = buf[:w]                # T^T src, by rows of T
    rest[:, :] = 0.0
    for a in range(k):
        Ta = T[o + a * w:o + (a + 1) * w]
        for q in range(r):
            sa = src[a, q]
            for b in range(w):
                rest[b, q] += Ta[b] * sa
    for a in range(k):
        za = piv[p0 + a]
        for q in range(r):
            z[za, q] += src[a, q]
    for b in range(w):
        zb = piv[p0 + k + b]
        for q in range(r):
            z[zb, q] += rest[b, q]


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
    r = x.shape[1]
    mmax = _widest(piv_ptr[:-1], piv_ptr[1:])
    for u in prange(sub_ptr.shape[0] - 1):
        buf = np.empty((mmax, r))
        for e in range(sub_ptr[u], sub_ptr[u + 1]):
            _up_node(sub_nodes[e], children, leaf_lo, piv_ptr, piv, T_ptr, T, vec_ptr, x, xh, buf)
    buf = np.empty((mmax, r))
    for e in range(top.shape[0] - 1, -1, -1):
        _up_node(top[e], children, leaf_lo, piv_ptr, piv, T_ptr, T, vec_ptr, x, xh, buf)
    return xh


@njit(cache=True, parallel=True)
def downward(top, sub_ptr, sub_nodes, children, leaf_lo, piv_ptr, piv, T_ptr, T, vec_ptr, yh, y):
    """Scatter the coefficients ``yh`` down the tree and into ``y`` (adds).

    The transpose of :func:`upward` (``z[skel] += yh[t]``, ``z[rest] += T^T
    yh[t]``) in the reverse order, so a parent's coefficients are complete
    before its children read them.
    """
    r = y.shape[1]
    mmax = _widest(piv_ptr[:-1], piv_ptr[1:])
    buf = np.empty((mmax, r))
    for e in range(top.shape[0]):
        _down_node(top[e], children, leaf_lo, piv_ptr, piv, T_ptr, T, vec_ptr, yh, y, buf)
    for u in prange(sub_ptr.shape[0] - 1):
        buf = np.empty((mmax, r))
        for e in range(sub_ptr[u + 1] - 1, sub_ptr[u] - 1, -1):
            _down_node(sub_nodes[e], children, leaf_lo, piv_ptr, piv, T_ptr, T, vec_ptr, yh, y,
                       buf)
    return y


@njit(cache=True)
def _widest(lo, hi):
    w = 0
    for v in range(lo.shape[0]):
        w = max(w, hi[v] - lo[v])
    return w


@njit(cache=True, inline="always")
def _block_views(b, bt, bs, rlo, rhi, clo, chi, x, tmp, tmp0, tmp1):
    """Sizes, operand slices and temporary slots of block ``b``."""
    t, s = bt[b], bs[b]
    m, n = rhi[t] - rlo[t], chi[s] - clo[s]
    return (m, n, x[clo[s]:chi[s]], x[rlo[t]:rhi[t]], tmp[tmp0[b]:tmp0[b] + m],
            tmp[tmp1[b]:tmp1[b] + n])


@njit(cache=True, inline="always", fastmath=FASTMATH)
def _dot(row, x):
    acc = 0.0
    for j in range(row.shape[0]):
        acc += row[j] * x[j]
    return acc


@njit(cache=True, inline="always", fastmath=FASTMATH)
def _axpy(row, y, alpha):
    for j in range(row.shape[0]):
        y[j] += alpha * row[j]


@njit(cache=True, inline="always", fastmath=FASTMATH)
def _dot_axpy(row, x, y, alpha):
    """``row . x``, and ``y += alpha row`` in the same sweep."""
    acc = 0.0
    for j in range(row.shape[0]):
        v = row[j]
        acc += v * x[j]
        y[j] += v * alpha
    return acc


@njit(cache=True, parallel=True, fastmath=FASTMATH)
def blocks_vec(src, off, bt, bs, do0, do1, rlo, rhi, clo, chi, rpt, cpt, x, tmp, tmp0, tmp1):
    """Phase 1 of a matvec over blocks: ``tmp[tmp0[b]:] = B_b x[cols]`` where
    ``do0[b]``, ``tmp[tmp1[b]:] = B_b^T x[rows]`` where ``do1[b]``.

    Block ``b`` couples node ``bt[b]`` (rows ``rlo:rhi`` of the vector space)
    with ``bs[b]`` (``clo:chi``); its entries are stored row-major at
    ``src[off[b]:]``. ``rpt``/``cpt`` are unused (the signature of
    :func:`kernel_blocks_vec`). Rows are read once and, for a symmetric pair,
    applied twice.
    """
    n_blocks = bt.shape[0]
    for u in prange(SLABS):
        for b in slab_range(u, n_blocks):
            m, n, xs, xt, t0, t1 = _block_views(b, bt, bs, rlo, rhi, clo, chi, x, tmp, tmp0, tmp1)
            o = off[b]
            if do1[b]:
                t1[:] = 0.0
                for i in range(m):
                    row = src[o + i * n:o + (i + 1) * n]
                    if do0[b]:
                        t0[i] = _dot_axpy(row, xs, t1, xt[i])
                    else:
                        _dot_axpy(row, xs, t1, xt[i])
            else:
                for i in range(m):
                    t0[i] = _dot(src[o + i * n:o + (i + 1) * n], xs)
    return tmp


# On-the-fly rows are evaluated over a multiple of this many columns: a
# vector loop of ~40 columns spends most of its time in the scalar remainder
# (a square root and a division per entry), so the columns of a block are
# padded with copies of its last point against a zero operand. 40k cube:
# couplings timed alone 185 -> 48 ms; `run.sh 40000` variant hmnumba_h2_otf
# 204 -> 64 ms (docs/benchmarks.md).
PAD_COLUMNS = 8


@njit(cache=True, inline="always")
def _padded(n):
    return (n + PAD_COLUMNS - 1) // PAD_COLUMNS * PAD_COLUMNS


@njit(cache=True, inline="always")
def _pad_columns(XC, first, n, cols):
    """Copy the points ``XC[:, first:first + n]`` into ``cols`` and pad them to
    ``w = _padded(n)`` columns with copies of the last one (finite entries,
    applied to a zero operand); returns ``w``."""
    w = _padded(n)
    for a in range(XC.shape[0]):
        for j in range(n):
            cols[a, j] = XC[a, first + j]
        for j in range(n, w):
            cols[a, j] = XC[a, first + n - 1]
    return w


@njit(cache=True, inline="always", fastmath=FASTMATH)
def _kernel_row_dot_axpy(code, length_scale, single, XR, pi, cols, w, xs, ys, alpha, both):
    """``K(pi, cols[:, :w]) . xs`` and, if ``both``, ``ys += alpha K(pi, cols)``
    in one sweep (the entry is never stored).

    The branches sit outside the column loops and each one writes its
    formula out (as :func:`_kernel_row` does): one loop calling a shared
    per-entry function with the branches inside did not vectorize (40k cube
    on-the-fly matvec 61 -> 288 ms, measured 2026-12-06)."""
    d = cols.shape[0]
    acc = 0.0
    if d == 3:
        x0, x1, x2 = XR[0, pi], XR[1, pi], XR[2, pi]
        if code == LAPLACE and single:
            # 1/r in float32 (twice the SIMD lanes) from r^2 in float64: a
            # relative error of 2^-24 per entry, as the float32 storage of
            # the stored mode at the same tolerance
            for j in range(w):
                t0 = x0 - cols[0, j]
                t1 = x1 - cols[1, j]
                t2 = x2 - cols[2, j]
                r2 = np.float32(t0 * t0 + t1 * t1 + t2 * t2)
                v = np.float32(1.0) / np.sqrt(r2)
                v = v if r2 > 0.0 else np.float32(0.0)
                acc += v * xs[j]
                if both:
                    ys[j] += v * alpha
        elif code == LAPLACE:
            for j in range(w):
                t0 = x0 - cols[0, j]
                t1 = x1 - cols[1, j]
                t2 = x2 - cols[2, j]
                r2 = t0 * t0 + t1 * t1 + t2 * t2
                v = 1.0 / np.sqrt(r2)
                v = v if r2 > 0.0 else 0.0
                acc += v * xs[j]
                if both:
                    ys[j] += v * alpha
        else:
            for j in range(w):
                t0 = x0 - cols[0, j]
                t1 = x1 - cols[1, j]
                t2 = x2 - cols[2, j]
                v = kernel_of_distance2(code, length_scale, t0 * t0 + t1 * t1 + t2 * t2)
                acc += v * xs[j]
                if both:
                    ys[j] += v * alpha
        return acc
    for j in range(w):
        r2 = 0.0
        for a in range(d):
            t = XR[a, pi] - cols[a, j]
            r2 += t * t
        v = kernel_of_distance2(code, length_scale, r2)
        acc += v * xs[j]
        if both:
            ys[j] += v * alpha
    return acc


@njit(cache=True, parallel=True, fastmath=FASTMATH)
def kernel_blocks_vec(src, off, bt, bs, do0, do1, rlo, rhi, clo, chi, rpt, cpt, x, tmp, tmp0,
                      tmp1):
    """:func:`blocks_vec` for an on-the-fly ``src`` (``(code, length_scale,
    XR, XC, single)``), the rows evaluated over padded columns.

    Each block copies its column points into a buffer padded to a multiple of
    ``PAD_COLUMNS`` with its last point (finite entries) and its operand with
    zeros, so every row loop runs without a scalar remainder; the padded
    entries add exact zeros to ``B x_s`` and their ``B^T x_t`` is dropped.
    ``off`` is unused (the signature of :func:`blocks_vec`).
    """
    code, length_scale, XR, XC, single = src
    d = XC.shape[0]
    n_blocks = bt.shape[0]
    width = _padded(_widest(clo, chi))
    for u in prange(SLABS):
        cols = np.empty((d, width))
        xs = np.empty(width)
        ys = np.empty(width)
        for b in slab_range(u, n_blocks):
            t, s = bt[b], bs[b]
            m, n = rhi[t] - rlo[t], chi[s] - clo[s]
            t0 = tmp[tmp0[b]:tmp0[b] + m]
            if n == 0:
                if do0[b]:
                    t0[:] = 0.0
                continue
            w = _pad_columns(XC, cpt[s], n, cols)
            xs[:n] = x[clo[s]:chi[s]]
            xs[n:w] = 0.0
            ys[:w] = 0.0
            xt = x[rlo[t]:rhi[t]]
            for i in range(m):
                acc = _kernel_row_dot_axpy(code, length_scale, single, XR, rpt[t] + i, cols, w,
                                           xs, ys, xt[i], do1[b])
                if do0[b]:
                    t0[i] = acc
            if do1[b]:
                tmp[tmp1[b]:tmp1[b] + n] = ys[:n]
    return tmp


@njit(cache=True, inline="always", fastmath=FASTMATH)
def _kernel_row(code, length_scale, single, XR, pi, cols, w, buf):
    """``buf[:w] = K(pi, cols[:, :w])``, the branches outside the column
    loops (each one vectorizes; the zero distance is a select, not a branch).

    The matvec does not use it: :func:`_kernel_row_dot_axpy` applies each
    entry as it is evaluated, 25 % faster than this row plus a
    :func:`_dot_axpy` sweep (40k cube, the couplings' product timed alone with
    `H2Matrix._a` arrays, 2026-12-06: 48 against 64 ms)."""
    d = cols.shape[0]
    if d == 3:
        x0, x1, x2 = XR[0, pi], XR[1, pi], XR[2, pi]
        if code == LAPLACE and single:
            for j in range(w):
                t0 = x0 - cols[0, j]
                t1 = x1 - cols[1, j]
                t2 = x2 - cols[2, j]
                r2 = np.float32(t0 * t0 + t1 * t1 + t2 * t2)
                v = np.float32(1.0) / np.sqrt(r2)
                buf[j] = v if r2 > 0.0 else np.float32(0.0)
        elif code == LAPLACE:
            for j in range(w):
                t0 = x0 - cols[0, j]
                t1 = x1 - cols[1, j]
                t2 = x2 - cols[2, j]
                r2 = t0 * t0 + t1 * t1 + t2 * t2
                v = 1.0 / np.sqrt(r2)
                buf[j] = v if r2 > 0.0 else 0.0
        else:
            for j in range(w):
                t0 = x0 - cols[0, j]
                t1 = x1 - cols[1, j]
                t2 = x2 - cols[2, j]
                buf[j] = kernel_of_distance2(code, length_scale, t0 * t0 + t1 * t1 + t2 * t2)
        return buf[:w]
    for j in range(w):
        r2 = 0.0
        for a in range(d):
            t = XR[a, pi] - cols[a, j]
            r2 += t * t
        buf[j] = kernel_of_distance2(code, length_scale, r2)
    return buf[:w]


@njit(cache=True, parallel=True, fastmath=FASTMATH)
def kernel_blocks_mat(src, off, bt, bs, do0, do1, rlo, rhi, clo, chi, rpt, cpt, x, tmp, tmp0,
                      tmp1):
    """:func:`kernel_blocks_vec` for ``x`` and ``tmp`` of shape ``(*, r)``:
    each row is evaluated once over the padded columns, then applied to the
    ``r`` columns from transposed, padded copies of the operand and of the
    ``B^T x_t`` sums (loops over ``w`` contiguous numbers)."""
    code, length_scale, XR, XC, single = src
    d = XC.shape[0]
    r = x.shape[1]
    n_blocks = bt.shape[0]
    width = _padded(_widest(clo, chi))
    for u in prange(SLABS):
        cols = np.empty((d, width))
        xsT = np.empty((r, width))
        ysT = np.empty((r, width))
        buf = np.empty(width)
        for b in slab_range(u, n_blocks):
            t, s = bt[b], bs[b]
            m, n = rhi[t] - rlo[t], chi[s] - clo[s]
            t0 = tmp[tmp0[b]:tmp0[b] + m]
            if n == 0:
                if do0[b]:
                    t0[:, :] = 0.0
                continue
            w = _pad_columns(XC, cpt[s], n, cols)
            xs = x[clo[s]:chi[s]]
            for q in range(r):
                for j in range(n):
                    xsT[q, j] = xs[j, q]
                xsT[q, n:w] = 0.0
                ysT[q, :w] = 0.0
            xt = x[rlo[t]:rhi[t]]
            for i in range(m):
                row = _kernel_row(code, length_scale, single, XR, rpt[t] + i, cols, w, buf)
                for q in range(r):
                    if do1[b]:
                        acc = _dot_axpy(row, xsT[q, :w], ysT[q, :w], xt[i, q])
                    else:
                        acc = _dot(row, xsT[q, :w])
                    if do0[b]:
                        t0[i, q] = acc
            if do1[b]:
                t1 = tmp[tmp1[b]:tmp1[b] + n]
                for j in range(n):
                    for q in range(r):
                        t1[j, q] = ysT[q, j]
    return tmp


@njit(cache=True, parallel=True, fastmath=FASTMATH)
def blocks_mat(src, off, bt, bs, do0, do1, rlo, rhi, clo, chi, rpt, cpt, x, tmp, tmp0, tmp1):
    """:func:`blocks_vec` for ``x`` and ``tmp`` of shape ``(*, r)``."""
    r = x.shape[1]
    n_blocks = bt.shape[0]
    for u in prange(SLABS):
        for b in slab_range(u, n_blocks):
            m, n, xs, xt, t0, t1 = _block_views(b, bt, bs, rlo, rhi, clo, chi, x, tmp, tmp0, tmp1)
            o = off[b]
            if do0[b]:
                t0[:, :] = 0.0
            if do1[b]:
                t1[:, :] = 0.0
            for i in range(m):
                row = src[o + i * n:o + (i + 1) * n]
                for j in range(n):
                    v = row[j]
                    if do0[b]:
                        for q in range(r):
                            t0[i, q] += v * xs[j, q]
                    if do1[b]:
                        for q in range(r):
                            t1[j, q] += v * xt[i, q]
    return tmp


@njit(cache=True, parallel=True, fastmath=FASTMATH)
def lowrank_vec(data, off, rank, bt, bs, do0, do1, rlo, rhi, clo, chi, x, tmp, tmp0, tmp1):
    """:func:`blocks_vec` for blocks stored as factors ``B = U V^T``: ``U (m, k)``
    then ``V (n, k)``, column-major at ``data[off[b]:]`` (``k = rank[b]``)."""
    n_blocks = bt.shape[0]
    for u in prange(SLABS):
        for b in slab_range(u, n_blocks):
            m, n, xs, xt, t0, t1 = _block_views(b, bt, bs, rlo, rhi, clo, chi, x, tmp, tmp0, tmp1)
            k = rank[b]
            Ub = data[off[b]:off[b] + k * m]
            Vb = data[off[b] + k * m:off[b] + k * (m + n)]
            if do0[b]:
                t0[:] = 0.0
            if do1[b]:
                t1[:] = 0.0
            for q in range(k):
                # both sides per factor column, while it is in L1
                uq = Ub[q * m:(q + 1) * m]
                vq = Vb[q * n:(q + 1) * n]
                if do0[b] and do1[b]:
                    # three sweeps, not four: u_q . x_t rides on t0's update
                    _axpy(vq, t1, _dot_axpy(uq, xt, t0, _dot(vq, xs)))
                elif do0[b]:
                    _axpy(uq, t0, _dot(vq, xs))
                elif do1[b]:
                    _axpy(vq, t1, _dot(uq, xt))
    return tmp


@njit(cache=True, parallel=True, fastmath=FASTMATH)
def lowrank_mat(data, off, rank, bt, bs, do0, do1, rlo, rhi, clo, chi, x, tmp, tmp0, tmp1):
    """:func:`lowrank_vec` for ``x`` and ``tmp`` of shape ``(*, r)``."""
    r = x.shape[1]
    n_blocks = bt.shape[0]
    for u in prange(SLABS):
        for b in slab_range(u, n_blocks):
            m, n, xs, xt, t0, t1 = _block_views(b, bt, bs, rlo, rhi, clo, chi, x, tmp, tmp0, tmp1)
            k = rank[b]
            Ub = data[off[b]:off[b] + k * m]
            Vb = data[off[b] + k * m:off[b] + k * (m + n)]
            w = np.empty(r)
            for side in range(2):
                if (side == 0 and not do0[b]) or (side == 1 and not do1[b]):
                    continue
                A, Bf, xin, out, rows, cols = (Vb, Ub, xs, t0, m, n) if side == 0 else \
                    (Ub, Vb, xt, t1, n, m)
                out[:, :] = 0.0
                for q in range(k):
                    w[:] = 0.0
                    for j in range(cols):
                        v = A[q * cols + j]
                        for c in range(r):
                            w[c] += v * xin[j, c]
                    for i in range(rows):
                        v = Bf[q * rows + i]
                        for c in range(r):
                            out[i, c] += v * w[c]
    return tmp


@njit(cache=True, parallel=True)
def gather_slots(out_lo, out_hi, slot_ptr, slot, tmp, out):
    """Phase 2: ``out[out_lo[u]:out_hi[u]] = sum of its slots``, in CSR order.

    Slot ``e`` of node ``u`` (``slot_ptr[u] <= e < slot_ptr[u + 1]``) starts at
    row ``slot[e]`` of ``tmp``; ``tmp`` and ``out`` are ``(*, r)``.
    """
    r = tmp.shape[1]
    flat_tmp = tmp.reshape(-1)
    flat_out = out.reshape(-1)
    for u in prange(out_lo.shape[0]):
        lo, hi = out_lo[u] * r, out_hi[u] * r
        dst = flat_out[lo:hi]        # contiguous rows: sum as flat slices
        dst[:] = 0.0
        for e in range(slot_ptr[u], slot_ptr[u + 1]):
            a = slot[e] * r
            part = flat_tmp[a:a + hi - lo]
            for i in range(hi - lo):
                dst[i] += part[i]
    return out


def phase_one(src, off, bt, bs, do0, do1, lo, hi, x, tmp, tmp0, tmp1):
    """Phase 1 of the blocks ``(bt, bs)`` whose rows and columns are the
    ranges ``lo[t]:hi[t]`` of one index space (coefficients or points):
    :func:`blocks_vec` / :func:`blocks_mat` for stored entries ``src``,
    :func:`kernel_blocks_vec` / :func:`kernel_blocks_mat` for a kernel tuple;
    one column runs on the flat views of ``x`` and ``tmp``."""
    if x.shape[1] == 1:
        vec = kernel_blocks_vec if isinstance(src, tuple) else blocks_vec
        vec(src, off, bt, bs, do0, do1, lo, hi, lo, hi, lo, lo, x.reshape(-1), tmp.reshape(-1),
            tmp0, tmp1)
    else:
        mat = kernel_blocks_mat if isinstance(src, tuple) else blocks_mat
        mat(src, off, bt, bs, do0, do1, lo, hi, lo, hi, lo, lo, x, tmp, tmp0, tmp1)
