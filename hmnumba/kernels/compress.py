"""Batched compression of candidate blocks (numba): one parallel call per
build round.

:func:`compress_blocks` approximates every candidate of a round
(:func:`compress_one_block`: ACA or SVD or randomized SVD, recompression, the
exact error check of dense sources) and classifies it with the status codes
of :mod:`hmnumba.kernels.codes`; :func:`finish_aca_blocks` is the host half
of the device build (the ACA ran on the GPU, :mod:`hmnumba.kernels.compress_cuda`),
and shares the tail :func:`_finish_aca` with the CPU path. ``hmnumba.construct``
owns the loop over rounds.
"""
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from numba import njit, prange

from hmnumba.kernels.codes import (METHOD_ACA, METHOD_RSVD, STATUS_ACCEPTED, STATUS_REFINE,
                                   STATUS_RETRY)
from hmnumba.kernels.factors import (GRAM_REL_TOL_FLOOR, aca_partial, block_residual2,
                                     randomized_factors, recompress, svd_factors)
from hmnumba.kernels.sources import fetch_block

__all__ = ["compress_blocks", "compress_one_block", "finish_aca_blocks", "gather_factors",
           "store_factors", "EXACT_SVD_MAX_ITEMS"]


@njit(cache=True)
def store_factors(store, off, Ut, Vt):
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


# Not inline="always" (though inlining compress_one_block and _finish_aca
# into _compress_slabs saves ~8 CPU s of a first build's compilation per
# entry source): the inlined chain built kernel matrices 10-45 % slower warm
# (A/B against the separate functions, alternating processes, 2 threads).
@njit(cache=True)
def compress_one_block(src, exact, r0, r1, c0, c1, rel_tol, abs_tol, method, kcap, kmax_final,
                       rsvd_seed, b, scratch, off, ws_u, ws_v, ws_block):
    """Approximate one candidate block; see :func:`compress_blocks`.

    ``ws_*`` are flat work arrays with room for ``(kcap + 1) * m``,
    ``(kcap + 1) * n`` and (dense sources) ``m * n`` numbers.

    ``rsvd_seed`` is None unless ``method`` is the randomized SVD (block
    ``b`` then seeds its sketch with ``rsvd_seed + b``): numba prunes the
    randomized branch when ``rsvd_seed`` is typed None.

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
        s, r, err = _finish_aca(U, V, k, est2, last, conv, tau, kcap, kmax_final, scratch, off)
        if s != STATUS_ACCEPTED or not exact:
            return s, r, err * err, norm2
        Us, Vs = _stored_factors(scratch, off, m, n, r)
        err2 = block_residual2(block, Us, Vs)
        if err2 <= tau * tau:
            return STATUS_ACCEPTED, r, err2, norm2
        if m * n > EXACT_SVD_MAX_ITEMS:
            # An exact SVD of a big block costs O(m n min(m, n)), minutes at
            # 4096 x 4096; its children are cheaper to compress and check.
            return STATUS_REFINE, r, err2, norm2
        # ACA's estimate was too optimistic: the exact SVD below decides.
    if rsvd_seed is not None:
        if method == METHOD_RSVD:
            Ur, Vr, resid2, conv = randomized_factors(block, tau, kcap + 1, rsvd_seed + b)
            if conv and Ur.shape[0] <= kcap:
                store_factors(scratch, off, Ur, Vr)
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
    store_factors(scratch, off, Ur, Vr)
    Us, Vs = _stored_factors(scratch, off, m, n, r)
    err2 = block_residual2(block, Us, Vs)
    if err2 <= tau * tau:
        return STATUS_ACCEPTED, r, err2, norm2
    return STATUS_REFINE, r, err2, norm2


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

    A plain Python function: it passes ``seed`` to the numba kernel only for
    ``method == METHOD_RSVD`` and None otherwise, so numba prunes the
    randomized SVD branch (and never compiles it) for ACA and SVD builds.
    Block ``b`` of a randomized build gets the seed ``seed + b``.

    Threads, not ``prange``: ``numba.get_num_threads()`` Python threads take
    the slabs one at a time, each running the ``nogil`` kernel
    :func:`_compress_slabs` on it. A slab's result does not depend on which thread
    computes it, so the bits are the same for any thread count. (A
    ``prange`` over the slabs cost most of a first build's compilation: the
    parallel lowering compiles, links and optimises the whole chain of
    low-rank kernels once more, ~35 CPU s per entry source on this 2-core
    machine, ``python asv_benchmarks/run_coldstart.py --profile``.)
    """
    rsvd_seed = seed if method == METHOD_RSVD else None
    n_slabs = slab_start.shape[0] - 1
    n_threads = max(min(numba.get_num_threads(), n_slabs), 1)
    args = (src, bool(exact), r0, r1, c0, c1, float(rel_tol), abs_tol, int(method), kcap,
            kmax_final, rsvd_seed, store, slab_start, out_off, status, rank, err2, norm2)
    if n_threads == 1:
        _compress_slabs(0, 1, *args)
        return
    # one task per slab, taken by whichever thread is free: a thread that the
    # OS deschedules does not hold back a fixed share of the slabs
    with ThreadPoolExecutor(n_threads) as pool:
        for done in [pool.submit(_compress_slabs, c, n_slabs, *args)
                     for c in range(n_slabs)]:
            done.result()   # re-raises a worker's exception


@njit(cache=True, nogil=True)
def _compress_slabs(first, step, src, exact, r0, r1, c0, c1, rel_tol, abs_tol, method, kcap,
                    kmax_final, rsvd_seed, store, slab_start, out_off, status, rank, err2,
                    norm2):
    """Slabs ``first, first + step, ...`` of :func:`compress_blocks` (one
    thread's share; the GIL is released). Slab ``c`` holds the blocks
    ``c, c + n_slabs, ...`` and allocates its work arrays once."""
    n_slabs = slab_start.shape[0] - 1
    n_blocks = r0.shape[0]
    for c in range(first, n_slabs, step):
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
                                              rsvd_seed, b, store, pos, ws_u, ws_v, ws_block)
            status[b] = s
            rank[b] = k
            err2[b] = e2
            norm2[b] = n2
            out_off[b] = pos
            if s == STATUS_ACCEPTED:
                pos += k * ((r1[b] - r0[b]) + (c1[b] - c0[b]))


@njit(cache=True, parallel=True)
def gather_factors(scratch, scratch_off, sizes, out, out_off):
    """Copy each accepted block's factors from the scratch into ``out``."""
    for b in prange(sizes.shape[0]):
        so = scratch_off[b]
        oo = out_off[b]
        for q in range(sizes[b]):
            out[oo + q] = scratch[so + q]


@njit(cache=True)
def _finish_aca(U, V, k, est2, last, conv, tau, kcap, kmax_final, store, off):
    """After an ACA of ``k`` steps: recompress to the budget left (``tau -
    last``) and store the factors at ``store[off:]``.

    Returns ``(status, rank, err)`` with ``err`` the estimated error
    (``last + tail``) of an accepted block; refine or retry when ACA did not
    converge within ``kcap + 1`` steps or the recompressed rank exceeds ``kcap``.
    """
    again = STATUS_REFINE if kcap >= kmax_final else STATUS_RETRY
    if not conv:
        return again, kcap + 1, 0.0
    Ur, Vr, tail2 = recompress(U, V, k, max(tau - last, 0.0), GRAM_REL_TOL_FLOOR, np.sqrt(est2))
    r = Ur.shape[0]
    if r > kcap:
        return again, r, 0.0
    store_factors(store, off, Ur, Vr)
    return STATUS_ACCEPTED, r, last + np.sqrt(tail2)


@njit(cache=True, parallel=True)
def finish_aca_blocks(U, V, uoff, voff, m, n, k, est2, last, conv, rel_tol, abs_tol, kcap,
                      kmax_final, store, pos, out_off, status, rank, err2, norm2):
    """Host half of the device compression of kernel blocks: what
    :func:`compress_one_block` does after ACA, for every block whose ACA
    (``k`` steps, estimate ``est2``, last step ``last``, converged ``conv``)
    ran on the device into ``U[uoff[b]:uoff[b + 1]]`` and ``V[voff[b]:...]``.
    Stores the factors at ``store[pos[b]:]`` and classifies each block."""
    for b in prange(m.shape[0]):
        out_off[b] = pos[b]
        if kmax_final[b] == 0:  # no rank saves storage here
            status[b], rank[b], err2[b], norm2[b] = STATUS_REFINE, 1, 0.0, 0.0
            continue
        norm2[b] = est2[b]
        tau = max(rel_tol * np.sqrt(est2[b]), abs_tol[b])
        Ub = U[uoff[b]:uoff[b + 1]].reshape((kcap[b] + 1, m[b]))
        Vb = V[voff[b]:voff[b + 1]].reshape((kcap[b] + 1, n[b]))
        s, r, err = _finish_aca(Ub, Vb, k[b], est2[b], last[b], conv[b], tau, kcap[b],
                                kmax_final[b], store, pos[b])
        status[b], rank[b], err2[b] = s, r, err * err
