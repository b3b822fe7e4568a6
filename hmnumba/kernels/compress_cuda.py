"""Batched ACA of built-in kernel blocks on the device: the CUDA twin of
:func:`hmnumba.kernels.compress.compress_blocks` for kernel sources.

Adaptive cross approximation runs on the device, one thread block per
candidate block, with the entries evaluated there by
:func:`kernel_of_distance2`; recompression and classification stay on the
host (:func:`hmnumba.kernels.compress.finish_aca_blocks`, the same tail as
the CPU path). :class:`DeviceACA` holds the points on the device.
"""
import math

import numpy as np
from numba import cuda, float64, int64

from hmnumba.kernels.codes import EXPONENTIAL, GAUSSIAN, LAPLACE, SQRT3
from hmnumba.kernels.common_cuda import THREADS_PER_BLOCK
from hmnumba.kernels.compress import finish_aca_blocks


# ---------------------------------------------------------------------------
# Block-wide reductions (every thread of the block must call them; see
# common_cuda for why they live in this file)
# ---------------------------------------------------------------------------


@cuda.jit(device=True)
def _block_sum(sh, tid, value):  # pragma: no cover - CUDA device code
    """Sum of ``value`` over the block; every thread gets the result."""
    sh[tid] = value
    cuda.syncthreads()
    step = THREADS_PER_BLOCK // 2
    while step > 0:
        if tid < step:
            sh[tid] += sh[tid + step]
        cuda.syncthreads()
        step //= 2
    total = sh[0]
    cuda.syncthreads()
    return total


@cuda.jit(device=True)
def _block_argmax(sh_val, sh_idx, tid, best, arg):  # pragma: no cover - CUDA device code
    """Block-wide largest ``best`` (ties: smallest index); ``-1`` if all are 0."""
    sh_val[tid] = best
    sh_idx[tid] = arg
    cuda.syncthreads()
    step = THREADS_PER_BLOCK // 2
    while step > 0:
        if tid < step:
            v = sh_val[tid + step]
            a = sh_idx[tid + step]
            if a >= 0 and (v > sh_val[tid] or (v == sh_val[tid] and
                                                (sh_idx[tid] < 0 or a < sh_idx[tid]))):
                sh_val[tid] = v
                sh_idx[tid] = a
        cuda.syncthreads()
        step //= 2
    arg = sh_idx[0]
    cuda.syncthreads()
    return arg


@cuda.jit(device=True)
def kernel_of_distance2(code, length_scale, r2):  # pragma: no cover - CUDA device code
    """Device twin of :func:`hmnumba.kernels.sources.kernel_of_distance2`."""
    if code == LAPLACE:
        if r2 == 0.0:
            return 0.0
        return 1.0 / math.sqrt(r2)
    if code == GAUSSIAN:
        return math.exp(-0.5 * r2 / (length_scale * length_scale))
    if code == EXPONENTIAL:
        return math.exp(-math.sqrt(r2) / length_scale)
    s = SQRT3 * math.sqrt(r2) / length_scale
    return (1.0 + s) * math.exp(-s)


@cuda.jit(device=True)
def kernel_entry(code, ls, XT, YT, i, j):  # pragma: no cover - CUDA device code
    """Entry ``(i, j)`` of built-in kernel ``code`` between the points stored
    by coordinate, ``XT[:, i]`` and ``YT[:, j]`` (also read by
    :mod:`hmnumba.kernels.h2_products_cuda`)."""
    r2 = 0.0
    for k in range(XT.shape[0]):
        t = XT[k, i] - YT[k, j]
        r2 += t * t
    return kernel_of_distance2(code, ls, r2)


@cuda.jit(device=True)
def _residual(code, ls, XT, YT, r0, c0, m, n, idx, along_row, k, U, uo, V, vo, out, oo,
              tid):  # pragma: no cover - CUDA device code
    """Row ``idx`` of the residual ``A[r0:, c0:] - sum_l outer(U[l], V[l])``
    (``along_row``), or its column ``idx``, into ``out[oo:]``."""
    length = n if along_row else m
    for q in range(tid, length, THREADS_PER_BLOCK):
        i = idx if along_row else q
        j = q if along_row else idx
        a = kernel_entry(code, ls, XT, YT, r0 + i, c0 + j)
        for l in range(k):
            a -= U[uo + l * m + i] * V[vo + l * n + j]
        out[oo + q] = a
    cuda.syncthreads()


@cuda.jit(device=True)
def _argmax_unused(x, xo, used, uo, length, sh_val, sh_idx,
                   tid):  # pragma: no cover - CUDA device code
    """Index of the largest ``|x|`` among unused positions, ``-1`` if all are 0."""
    best = 0.0
    arg = -1
    for q in range(tid, length, THREADS_PER_BLOCK):
        if used[uo + q] == 0 and abs(x[xo + q]) > best:
            best = abs(x[xo + q])
            arg = q
    return _block_argmax(sh_val, sh_idx, tid, best, arg)


@cuda.jit(device=True)
def _dot(a, ao, b, bo, length, sh, tid):  # pragma: no cover - CUDA device code
    acc = 0.0
    for q in range(tid, length, THREADS_PER_BLOCK):
        acc += a[ao + q] * b[bo + q]
    return _block_sum(sh, tid, acc)


@cuda.jit(device=True)
def _random_unused(used, uo, length, state):  # pragma: no cover - CUDA device code
    """A pseudo-random unused index (``-1`` if none) and the new LCG state.

    Every thread runs it with the same state and sees the same flags, so all
    threads get the same index without a broadcast."""
    state = (state * 1103515245 + 12345) % 2147483648
    begin = state % length
    for q in range(length):
        i = (begin + q) % length
        if used[uo + i] == 0:
            return i, state
    return -1, state


@cuda.jit
def _aca_blocks(code, ls, XT, YT, r0, r1, c0, c1, rel_tol, abs_tol, kmax, uoff, voff, moff,
                noff, U, V, rowbuf, colbuf, row_used, col_used, out_k, out_norm2, out_last,
                out_conv):  # pragma: no cover - CUDA device code
    """Adaptive cross approximation with partial pivoting, one thread block per
    block ``b``: the algorithm and stopping rule of ``factors.aca_partial``
    (including its guards against early stops), with every row and column of
    the residual computed by the threads together and the pivot searches and
    norms done by block reductions. Control flow is uniform: every thread
    holds the same scalars (they come from the same reductions)."""
    sh_f = cuda.shared.array(THREADS_PER_BLOCK, float64)
    sh_i = cuda.shared.array(THREADS_PER_BLOCK, int64)
    sh_last = cuda.shared.array(1, float64)
    b = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    R0 = r0[b]
    C0 = c0[b]
    m = r1[b] - R0
    n = c1[b] - C0
    kmx = kmax[b]
    uo = uoff[b]
    vo = voff[b]
    mo = moff[b]
    no = noff[b]
    atol = abs_tol[b]
    for q in range(tid, m, THREADS_PER_BLOCK):
        row_used[mo + q] = 0
    for q in range(tid, n, THREADS_PER_BLOCK):
        col_used[no + q] = 0
    cuda.syncthreads()
    state = (R0 * 1000003 + C0 * 7919 + m * 31 + n) % 2147483648
    norm2 = 0.0
    last = 0.0
    k = 0
    i = 0
    n_rows_used = 0
    zero_rows = 0
    conv = 0
    while True:
        if k == kmx:
            break
        if n_rows_used == m:
            conv = 1
            break
        _residual(code, ls, XT, YT, R0, C0, m, n, i, True, k, U, uo, V, vo, rowbuf, no, tid)
        if tid == 0:
            row_used[mo + i] = 1
        n_rows_used += 1
        cuda.syncthreads()
        jp = _argmax_unused(rowbuf, no, col_used, no, n, sh_f, sh_i, tid)
        if jp < 0:
            zero_rows += 1
            if zero_rows > 3:
                # Rows keep vanishing: look at a random column before giving up.
                jc, state = _random_unused(col_used, no, n, state)
                if jc < 0:
                    conv = 1
                    break
                _residual(code, ls, XT, YT, R0, C0, m, n, jc, False, k, U, uo, V, vo, colbuf,
                              mo, tid)
                iq = _argmax_unused(colbuf, mo, row_used, mo, m, sh_f, sh_i, tid)
                if iq < 0:
                    conv = 1
                    break
                i = iq
                zero_rows = 0
                continue
            i, state = _random_unused(row_used, mo, m, state)
            if i < 0:
                conv = 1
                break
            continue
        zero_rows = 0
        pivot = rowbuf[no + jp]
        cuda.syncthreads()
        if tid == 0:
            col_used[no + jp] = 1
        _residual(code, ls, XT, YT, R0, C0, m, n, jp, False, k, U, uo, V, vo, colbuf, mo, tid)
        for j in range(tid, n, THREADS_PER_BLOCK):
            V[vo + k * n + j] = rowbuf[no + j] / pivot
        for q in range(tid, m, THREADS_PER_BLOCK):
            U[uo + k * m + q] = colbuf[mo + q]
        cuda.syncthreads()
        # ||S_k||^2 = ||S_{k-1}||^2 + 2 sum_l (u_l.u_k)(v_l.v_k) + |u_k|^2 |v_k|^2:
        # thread l forms the pair of dots of factor l (serially), so the
        # whole update costs one block reduction instead of 2k + 2.
        update = 0.0
        for l in range(tid, k + 1, THREADS_PER_BLOCK):
            du = 0.0
            for q in range(m):
                du += U[uo + l * m + q] * U[uo + k * m + q]
            dv = 0.0
            for j in range(n):
                dv += V[vo + l * n + j] * V[vo + k * n + j]
            if l == k:
                sh_last[0] = du * dv
                update += du * dv
            else:
                update += 2.0 * du * dv
        update = _block_sum(sh_f, tid, update)
        norm2 += update
        if norm2 < 0.0:
            norm2 = 0.0
        last = math.sqrt(sh_last[0])
        k += 1
        tau = rel_tol * math.sqrt(norm2)
        if atol > tau:
            tau = atol
        i_next = _argmax_unused(U, uo + (k - 1) * m, row_used, mo, m, sh_f, sh_i, tid)
        if last <= tau:
            if k == kmx:
                conv = 1
                break
            # Check the first and last rows and columns (the geometric
            # extremes of the block in cluster order) and one random row.
            restart = -1
            for t in range(3):
                i_chk = 0 if t == 0 else m - 1
                if t == 2:
                    i_chk, state = _random_unused(row_used, mo, m, state)
                if i_chk >= 0 and row_used[mo + i_chk] == 0:
                    _residual(code, ls, XT, YT, R0, C0, m, n, i_chk, True, k, U, uo, V, vo,
                                  rowbuf, no, tid)
                    if math.sqrt(m * _dot(rowbuf, no, rowbuf, no, n, sh_f, tid)) > 4.0 * tau:
                        restart = i_chk
                        break
            if restart < 0:
                for t in range(2):
                    j_chk = 0 if t == 0 else n - 1
                    if col_used[no + j_chk] == 0:
                        _residual(code, ls, XT, YT, R0, C0, m, n, j_chk, False, k, U, uo, V, vo,
                                      colbuf, mo, tid)
                        if math.sqrt(n * _dot(colbuf, mo, colbuf, mo, m, sh_f, tid)) > 4.0 * tau:
                            restart = _argmax_unused(colbuf, mo, row_used, mo, m, sh_f, sh_i,
                                                     tid)
                            if restart >= 0:
                                break
            if restart >= 0:
                i = restart
                continue
            conv = 1
            break
        if i_next < 0:
            conv = 1
            break
        i = i_next
    if tid == 0:
        out_k[b] = k
        out_norm2[b] = norm2
        out_last[b] = last
        out_conv[b] = conv


def _exclusive_cumsum(sizes):
    out = np.zeros(sizes.size + 1, np.int64)
    np.cumsum(sizes, out=out[1:])
    return out


class DeviceACA:
    """Batched ACA of built-in kernel blocks on the device: the device chunk
    strategy of :func:`hmnumba.construct.build` calls :meth:`compress` once
    per chunk of a round.

    The points are copied to the device once (at construction); each call
    runs :func:`_aca_blocks` over its candidate blocks (one thread block
    each), copies the factors back and recompresses them on the host
    (:func:`hmnumba.kernels.compress.finish_aca_blocks`).

    Parameters
    ----------
    src : tuple
        A built-in kernel source ``(code, length_scale, XT, YT)``.

    Examples
    --------
    One far-field block of the Laplace kernel, compressed to ``1e-5``:

    >>> import numpy as np
    >>> from hmnumba.kernels import laplace
    >>> from hmnumba.kernels.codes import STATUS_ACCEPTED
    >>> from hmnumba.kernels.compress_cuda import DeviceACA
    >>> rng = np.random.default_rng(0)
    >>> X, Y = rng.random((24, 3)), rng.random((20, 3)) + [3.0, 0.0, 0.0]
    >>> one = np.ones(1, np.int64)
    >>> blocks = (0 * one, 24 * one, 0 * one, 20 * one, np.zeros(1), 16 * one, 16 * one)
    >>> status, rank, err2, norm2, off, store = DeviceACA(laplace.source(X, Y)).compress(
    ...     blocks, 1e-5)
    >>> k = int(rank[0])
    >>> Ut, Vt = store[:24 * k].reshape(k, 24), store[24 * k:44 * k].reshape(k, 20)
    >>> K = laplace(X, Y)
    >>> err = np.linalg.norm(K - Ut.T @ Vt) / np.linalg.norm(K)
    >>> bool(status[0] == STATUS_ACCEPTED), bool(err <= 1e-5), k < 20
    (True, True, True)
    """

    def __init__(self, src):
        code, ls, XT, YT = src
        self.code = int(code)
        self.length_scale = float(ls)
        self.XT = cuda.to_device(XT)
        self.YT = self.XT if YT is XT else cuda.to_device(YT)

    def compress(self, blocks, rel_tol):
        """Compress the candidate blocks ``blocks = (r0, r1, c0, c1, abs_tol,
        kcap, kmax_final)`` (one entry per block, as for
        :func:`hmnumba.construct.compress_candidates`) to
        ``err <= max(rel_tol ||A_b||, abs_tol[b])``.

        Returns ``(status, rank, err2, norm2, off, store)``: an accepted
        block's factors (``rank * (m + n)`` numbers) start at ``store[off[b]]``.
        """
        r0, r1, c0, c1, abs_tol, kcap, kmax_final = blocks
        n_blocks = r0.shape[0]
        status, rank, off = (np.zeros(n_blocks, np.int64) for _ in range(3))
        err2, norm2 = np.zeros(n_blocks), np.zeros(n_blocks)
        m = r1 - r0
        n = c1 - c0
        pos = _exclusive_cumsum(kcap * (m + n))
        store = np.empty(max(int(pos[-1]), 1))
        if n_blocks == 0:
            return status, rank, err2, norm2, off, store
        kmax = np.ascontiguousarray(kcap + 1, dtype=np.int64)
        uoff = _exclusive_cumsum(kmax * m)
        voff = _exclusive_cumsum(kmax * n)
        moff = _exclusive_cumsum(m)
        noff = _exclusive_cumsum(n)
        U = cuda.device_array(max(int(uoff[-1]), 1), np.float64)
        V = cuda.device_array(max(int(voff[-1]), 1), np.float64)
        out_k = cuda.device_array(n_blocks, np.int64)
        out_norm2 = cuda.device_array(n_blocks, np.float64)
        out_last = cuda.device_array(n_blocks, np.float64)
        out_conv = cuda.device_array(n_blocks, np.int64)
        # ACA runs to half the block budget; recompression may use the rest.
        _aca_blocks[n_blocks, THREADS_PER_BLOCK](
            self.code, self.length_scale, self.XT, self.YT, cuda.to_device(r0),
            cuda.to_device(r1), cuda.to_device(c0), cuda.to_device(c1), 0.5 * rel_tol,
            cuda.to_device(0.5 * abs_tol), cuda.to_device(kmax), cuda.to_device(uoff),
            cuda.to_device(voff), cuda.to_device(moff), cuda.to_device(noff), U, V,
            cuda.device_array(max(int(noff[-1]), 1), np.float64),
            cuda.device_array(max(int(moff[-1]), 1), np.float64),
            cuda.device_array(max(int(moff[-1]), 1), np.int8),
            cuda.device_array(max(int(noff[-1]), 1), np.int8),
            out_k, out_norm2, out_last, out_conv)
        finish_aca_blocks(U.copy_to_host(), V.copy_to_host(), uoff, voff, m, n,
                          out_k.copy_to_host(), out_norm2.copy_to_host(),
                          out_last.copy_to_host(), out_conv.copy_to_host().astype(np.bool_),
                          rel_tol, abs_tol, kcap, kmax_final, store, pos[:-1], off, status,
                          rank, err2, norm2)
        return status, rank, err2, norm2, off, store
