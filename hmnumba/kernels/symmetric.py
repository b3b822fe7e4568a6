"""Numba CPU kernel for the matrix-vector product of an H-matrix stored in
*symmetric form*: only the upper block triangle of ``A = A^T`` is stored.

Storage
-------
The flat block arrays of :mod:`hmnumba.kernels.products` (``r0, r1, c0, c1``,
``rank``, ``offset`` and one contiguous ``data`` array, float64 or float32).
Every stored block is either

* *diagonal* (``r0 == c0`` and ``r1 == c1``): the whole diagonal block, dense
  or low-rank, which stands for itself only; or
* *strictly upper* (``r1 <= c0``): it stands for itself and for its mirror
  image, the block ``[c0, c1) x [r0, r1)`` equal to its transpose.

Why a separate kernel
---------------------
A matrix-vector product is bound by memory bandwidth: every stored number is
used once or twice, so the time is the time it takes to stream ``data``.
Storing half the matrix halves that, provided each stored number is read from
memory once per product, not once for ``A_ub x_b`` and again for
``A_ub^T x_u``. :func:`symmetric_hmatvec` fuses both uses of a block into one
sweep (a low-rank block reads ``U^T`` a second time, but from cache).

Streaming alone does not reach the memory bandwidth: the hardware
prefetchers lose the stream at every jump from one block to the next. The
kernel also prefetches in software, :data:`PREFETCH_BYTES` ahead along the
order in which a slab reads its blocks (which need not be their order in
``data``). ``python3 asv_benchmarks/run_symmetric_matvec.py`` (2 cores, 2.2
GB of float64) measured 0.96 of the time of ``np.dot(data, data)`` with the
layout of :func:`hmnumba.construct.build`, 0.97 with blocks in storage order
and 0.81 in a random order (``--layout``).

The mirror of a block writes to other rows than the block itself, so a row
schedule like that of :func:`hmnumba.kernels.products.hmatvec` does not apply.
Instead the blocks are cut into a fixed number of *slabs* (contiguous ranges
in storage order, :func:`hmnumba.blocks.symmetric_slabs`); each slab adds its blocks into its
own length-``N`` row of a buffer, and a second parallel pass sums the rows in
slab order. No atomics, no races, and since the slabs do not depend on the
number of threads, the same bits for any thread count.

This file calls no compiled code of another file (numba's per-file cache
check is enough); the slabs are cut in Python by
:func:`hmnumba.blocks.symmetric_slabs`.
"""
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from hmnumba.kernels.codes import FASTMATH

# Output entries per task in the final reduction over the slab rows.
REDUCE_CHUNK = 4096


# ---------------------------------------------------------------------------
# Software prefetch
# ---------------------------------------------------------------------------

# How far ahead of the sweep the data is prefetched, in bytes (a page or
# two: far enough to cover the memory latency at streaming speed, near
# enough to stay in the cache until read).
PREFETCH_BYTES = 8192

_CACHE_LINE = 64
# llvm.prefetch(address, read = 0, locality, data cache = 1). Locality 2
# brings a line into L2 but not L1, where the factor swept a second time
# from cache must stay.
_LOCALITY = 2
_I8P = ir.IntType(8).as_pointer()


@intrinsic
def _prefetch(typingctx, arr, idx):
    """Hint that the cache line of ``arr[idx]`` will be read soon.

    A hint only: no bounds check, never faults, changes no result.
    """
    sig = types.void(arr, types.intp)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = builder.bitcast(builder.gep(ary.data, [args[1]]), _I8P)
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [_I8P, i32, i32, i32])
        # Overloaded on the pointer type: llvmlite mangles the name ("p0i8"
        # with typed pointers, "p0" with opaque ones).
        fn = builder.module.declare_intrinsic("llvm.prefetch", [_I8P], fnty)
        builder.call(fn, [ptr, i32(0), i32(_LOCALITY), i32(1)])
        return context.get_dummy_value()
    return sig, codegen


@njit(cache=True, inline="always")
def _stored_size(r0, r1, c0, c1, rank, b):
    """Count of stored numbers of block ``b`` (0 for a zero block)."""
    k = rank[b]
    if k < 0:
        return (r1[b] - r0[b]) * (c1[b] - c0[b])
    return k * ((r1[b] - r0[b]) + (c1[b] - c0[b]))


@njit(cache=True, inline="always")
def _prefetch_more(data, r0, r1, c0, c1, rank, offset, last, b, pos, left, count):
    """Prefetch the next ``count`` numbers of a slab's stream.

    The stream is the slab's blocks up to ``last`` in storage order, each
    block's numbers in memory order: the order the kernel sweeps them in,
    wherever ``offset`` puts the blocks in ``data``. The cursor is block
    ``b``, index ``pos`` into ``data``, with ``left`` numbers of block ``b``
    from there; the advanced cursor is returned. It runs once per row of a
    factor, so it is kept cheap: scalars, and in the common case (the count
    fits in the current block) one pass of the loop.
    """
    step = _CACHE_LINE // data.itemsize
    while count > 0:
        if left == 0:
            b += 1
            if b >= last:
                break
            pos = offset[b]
            left = _stored_size(r0, r1, c0, c1, rank, b)
            continue
        take = min(count, left)
        for q in range(pos, pos + take, step):
            _prefetch(data, q)
        pos += take
        left -= take
        count -= take
    return b, pos, left


# ---------------------------------------------------------------------------
# The product
# ---------------------------------------------------------------------------


@njit(cache=True, parallel=True, fastmath=FASTMATH)
def symmetric_hmatvec(data, r0, r1, c0, c1, rank, offset, slab_ptr, x):
    """``y = A x`` for an H-matrix ``A = A^T`` stored in symmetric form.

    Every stored number is read from memory once per product (the product
    is bound by memory bandwidth, and the symmetric form stores half the
    numbers). A dense strictly upper block ``D`` does ``y_r += D x_c`` and
    ``y_c += D^T x_r`` in one sweep. A strictly upper low-rank block
    ``U V^T`` is swept in memory order: ``t2 = U^T x_r`` (sweeping
    ``U^T``), then in one sweep of ``V^T`` both ``t1 = V^T x_c`` and
    ``y_c += V t2``, then ``y_r += U t1`` (``U^T`` again, from cache).
    Diagonal blocks do ``y_r += A_rr x_r`` only. The data is prefetched in
    software, :data:`PREFETCH_BYTES` ahead, along the order the slab reads
    its blocks in.

    The slabs (:func:`hmnumba.blocks.symmetric_slabs`) run in parallel, each adding into its
    own float64 row of an ``(n_slabs, N)`` buffer, with work vectors ``t1``,
    ``t2`` allocated once per slab; the rows are then summed in slab order,
    in parallel over chunks of the output. No atomics, no races: the result
    is the same bits for any number of threads and on every call (for a
    given ``slab_ptr``; another slab count may change the last bits).

    Parameters
    ----------
    data : ndarray of float64 or float32
        The stored blocks (see the module docstring).
    r0, r1, c0, c1, rank, offset : ndarray of int64, shape (n_blocks,)
        Block rows, columns, ranks and offsets into ``data``, upper block
        triangle only; the stored blocks and the mirrors of the strictly
        upper ones tile the ``N x N`` matrix.
    slab_ptr : ndarray of int64
        From :func:`hmnumba.blocks.symmetric_slabs`.
    x : ndarray of float64, shape (N,)
        In cluster order.

    Returns
    -------
    ndarray of float64, shape (N,)
        ``A x`` in cluster order (accumulated in float64 whatever the
        precision of ``data``).

    Examples
    --------
    A 4 x 4 matrix: two dense 2 x 2 diagonal blocks and one rank-1 upper
    block ``[1, 2]^T [1, 1]`` (the lower one is its mirror).

    >>> import numpy as np
    >>> from hmnumba.blocks import symmetric_slabs
    >>> from hmnumba.kernels.symmetric import symmetric_hmatvec
    >>> r0 = np.array([0, 0, 2]); r1 = np.array([2, 2, 4])
    >>> c0 = np.array([0, 2, 2]); c1 = np.array([2, 4, 4])
    >>> rank = np.array([-1, 1, -1]); offset = np.array([0, 4, 8])
    >>> data = np.array([2., 1., 1., 2.,  1., 2., 1., 1.,  3., 0., 0., 3.])
    >>> slabs = symmetric_slabs(r0, r1, c0, c1, rank)
    >>> symmetric_hmatvec(data, r0, r1, c0, c1, rank, offset, slabs, np.ones(4))
    array([5., 7., 6., 6.])
    """
    N = x.shape[0]
    n_slabs = slab_ptr.shape[0] - 1
    ahead = PREFETCH_BYTES // data.itemsize
    ybuf = np.empty((n_slabs, N))
    for s in prange(n_slabs):
        y = ybuf[s]
        for i in range(N):
            y[i] = 0.0
        first = slab_ptr[s]
        last = slab_ptr[s + 1]
        kmax = 0
        for b in range(first, last):
            kmax = max(kmax, rank[b])
        t1 = np.empty(kmax)
        t2 = np.empty(kmax)
        # Prefetch cursor: block pb, index pq into data, pn numbers of pb left.
        pb = first
        pq = offset[first] if first < last else 0
        pn = _stored_size(r0, r1, c0, c1, rank, first) if first < last else 0
        pb, pq, pn = _prefetch_more(data, r0, r1, c0, c1, rank, offset, last,
                                    pb, pq, pn, ahead)
        for b in range(first, last):
            k = rank[b]
            if k == 0:
                continue
            m = r1[b] - r0[b]
            n = c1[b] - c0[b]
            upper = r1[b] <= c0[b]
            off = offset[b]
            xr = x[r0[b]:r1[b]]
            yr = y[r0[b]:r1[b]]
            xc = x[c0[b]:c1[b]]
            yc = y[c0[b]:c1[b]]
            if k < 0:
                # Dense, row by row: y_r += D x_c and (upper) y_c += D^T x_r.
                D = data[off:off + m * n]
                for i in range(m):
                    pb, pq, pn = _prefetch_more(data, r0, r1, c0, c1, rank, offset, last,
                                                pb, pq, pn, n)
                    row = i * n
                    acc = 0.0
                    if upper:
                        xi = xr[i]
                        for j in range(n):
                            d = D[row + j]
                            acc += d * xc[j]
                            yc[j] += d * xi
                    else:
                        for j in range(n):
                            acc += D[row + j] * xc[j]
                    yr[i] += acc
                continue
            # Low rank, the factors swept in memory order: U^T (t2 = U^T x_r),
            # then V^T (t1 = V^T x_c and y_c += V t2), then U^T again, from
            # cache (y_r += U t1).
            Ut = data[off:off + k * m]
            Vt = data[off + k * m:off + k * (m + n)]
            if upper:
                for l in range(k):
                    pb, pq, pn = _prefetch_more(data, r0, r1, c0, c1, rank, offset, last,
                                                pb, pq, pn, m)
                    row = l * m
                    acc = 0.0
                    for i in range(m):
                        acc += Ut[row + i] * xr[i]
                    t2[l] = acc
                for l in range(k):
                    pb, pq, pn = _prefetch_more(data, r0, r1, c0, c1, rank, offset, last,
                                                pb, pq, pn, n)
                    row = l * n
                    a = t2[l]
                    acc = 0.0
                    for j in range(n):
                        v = Vt[row + j]
                        acc += v * xc[j]
                        yc[j] += v * a
                    t1[l] = acc
            else:
                pb, pq, pn = _prefetch_more(data, r0, r1, c0, c1, rank, offset, last,
                                            pb, pq, pn, k * m)
                for l in range(k):
                    pb, pq, pn = _prefetch_more(data, r0, r1, c0, c1, rank, offset, last,
                                                pb, pq, pn, n)
                    row = l * n
                    acc = 0.0
                    for j in range(n):
                        acc += Vt[row + j] * xc[j]
                    t1[l] = acc
            for l in range(k):
                row = l * m
                a = t1[l]
                for i in range(m):
                    yr[i] += Ut[row + i] * a
    out = np.empty(N)
    n_chunks = (N + REDUCE_CHUNK - 1) // REDUCE_CHUNK
    for c in prange(n_chunks):
        lo = c * REDUCE_CHUNK
        hi = min(N, lo + REDUCE_CHUNK)
        for i in range(lo, hi):
            out[i] = 0.0
        for s in range(n_slabs):
            for i in range(lo, hi):
                out[i] += ybuf[s, i]
    return out
