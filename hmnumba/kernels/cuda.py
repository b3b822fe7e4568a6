"""Numba CUDA kernels: geometric cluster tree, batched ACA of kernel blocks and
the two-phase H-matrix products, with the thin host wrappers that do the grid
arithmetic and the transfers.

This file mirrors :mod:`hmnumba.kernels.cpu` job by job (DESIGN section 5):

* :func:`build_geometric_tree` returns the same flat arrays as
  ``cpu.build_geometric_tree``: the tree is built level by level, one thread
  block per node of the level (bounding box by block reductions, stable
  partition by block prefix scans), with the nodes numbered breadth first;
* :class:`DeviceACA` is a drop-in replacement of ``cpu.compress_blocks`` for
  built-in kernels: adaptive cross approximation on the device, one thread
  block per candidate block, entries evaluated there by
  :func:`kernel_of_distance2`; recompression stays on the host
  (``cpu.recompress``);
* :func:`to_device` / :func:`apply` run ``y = A x`` (or ``A^T x``) over the
  packed layout: phase one ``t_b = V_b^T x_b`` with one thread block per
  low-rank H-block and a shared-memory reduction, phase two one thread block
  per row-schedule segment, each thread owning its outputs (no atomics, a
  fixed summation order).

Nothing here checks its inputs: :mod:`hmnumba.hmatrix` validates them. Thread
blocks have :data:`THREADS_PER_BLOCK` threads (a power of two, also the size of
the shared-memory scratch).
"""
import math

import numpy as np
from numba import cuda, float64, int64, njit, prange
from numba.core import config

from hmnumba.kernels import cpu
from hmnumba.kernels.functions import EXPONENTIAL, GAUSSIAN, LAPLACE

# Threads of the blocks that cooperate through shared memory (a power of two)
# and of the element-wise kernels (gather, scatter, phase two). Numba's
# simulator runs every CUDA thread as a Python thread, so it gets small blocks.
THREADS_PER_BLOCK = 8 if config.ENABLE_CUDASIM else 128
THREADS_ELEMENTWISE = 8 if config.ENABLE_CUDASIM else 64

_SQRT3 = math.sqrt(3.0)


def is_device_array(x):
    """True for a CUDA device array (the simulator's fake arrays included).

    Examples
    --------
    >>> import numpy as np
    >>> from numba import cuda
    >>> from hmnumba.kernels.cuda import is_device_array
    >>> is_device_array(np.ones(3)), is_device_array(cuda.to_device(np.ones(3)))
    (False, True)
    """
    check = getattr(cuda, "is_cuda_array", None)
    if check is not None:
        return bool(check(x))
    fake = getattr(getattr(cuda, "devicearray", None), "FakeCUDAArray", None)
    return fake is not None and isinstance(x, fake)


# ---------------------------------------------------------------------------
# Block-wide reductions and scans (every thread of the block must call them)
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
def _block_minmax(sh_lo, sh_hi, tid, lo, hi):  # pragma: no cover - CUDA device code
    """Block-wide ``(min lo, max hi)``; exact, so independent of the order."""
    sh_lo[tid] = lo
    sh_hi[tid] = hi
    cuda.syncthreads()
    step = THREADS_PER_BLOCK // 2
    while step > 0:
        if tid < step:
            if sh_lo[tid + step] < sh_lo[tid]:
                sh_lo[tid] = sh_lo[tid + step]
            if sh_hi[tid + step] > sh_hi[tid]:
                sh_hi[tid] = sh_hi[tid + step]
        cuda.syncthreads()
        step //= 2
    lo = sh_lo[0]
    hi = sh_hi[0]
    cuda.syncthreads()
    return lo, hi


@cuda.jit(device=True)
def _block_scan(sh, tid, flag):  # pragma: no cover - CUDA device code
    """Exclusive prefix sum of ``flag`` over the block (Hillis-Steele) and the total."""
    sh[tid] = flag
    cuda.syncthreads()
    step = 1
    while step < THREADS_PER_BLOCK:
        v = 0
        if tid >= step:
            v = sh[tid - step]
        cuda.syncthreads()
        sh[tid] += v
        cuda.syncthreads()
        step *= 2
    inclusive = sh[tid]
    total = sh[THREADS_PER_BLOCK - 1]
    cuda.syncthreads()
    return inclusive - flag, total


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


# ---------------------------------------------------------------------------
# Cluster tree: level-by-level bisection, identical to cpu.build_geometric_tree
# ---------------------------------------------------------------------------


@cuda.jit
def _tree_level(points, perm_in, perm_out, level_start, level_stop, first, leaf_size,
                box_lo, box_hi, split):  # pragma: no cover - CUDA device code
    """One thread block per node ``first + blockIdx.x`` of the level: its
    bounding box, then (if it is split) a stable partition of its points at
    the midpoint of the longest side, from ``perm_in`` into ``perm_out``.
    ``split[node]`` is the first position of the right child, ``-1`` for a leaf."""
    sh_a = cuda.shared.array(THREADS_PER_BLOCK, float64)
    sh_b = cuda.shared.array(THREADS_PER_BLOCK, float64)
    sh_i = cuda.shared.array(THREADS_PER_BLOCK, int64)
    node = cuda.blockIdx.x
    t = first + node
    tid = cuda.threadIdx.x
    s = level_start[node]
    e = level_stop[node]
    axis = 0
    ax_lo = 0.0
    ax_hi = 0.0
    for k in range(points.shape[1]):
        lo = math.inf
        hi = -math.inf
        for p in range(s + tid, e, THREADS_PER_BLOCK):
            v = points[perm_in[p], k]
            if v < lo:
                lo = v
            if v > hi:
                hi = v
        lo, hi = _block_minmax(sh_a, sh_b, tid, lo, hi)
        if tid == 0:
            box_lo[t, k] = lo
            box_hi[t, k] = hi
        # The first longest side, as the CPU build chooses it.
        if k == 0 or hi - lo > ax_hi - ax_lo:
            axis = k
            ax_lo = lo
            ax_hi = hi
    size = e - s
    cut = (s + e) // 2
    n_left = 0
    if size > leaf_size and ax_hi > ax_lo:
        mid = 0.5 * (ax_lo + ax_hi)
        count = 0
        for p in range(s + tid, e, THREADS_PER_BLOCK):
            if points[perm_in[p], axis] < mid:
                count += 1
        n_left = _block_scan(sh_i, tid, count)[1]
        left_before = 0  # points of the node that went left in earlier chunks
        for base in range(s, e, THREADS_PER_BLOCK):
            p = base + tid
            flag = 0
            if p < e and points[perm_in[p], axis] < mid:
                flag = 1
            excl, total = _block_scan(sh_i, tid, flag)
            if p < e:
                if flag == 1:
                    perm_out[s + left_before + excl] = perm_in[p]
                else:
                    perm_out[s + n_left + (p - s) - (left_before + excl)] = perm_in[p]
            left_before += total
        if 0 < n_left < size:
            cut = s + n_left
    else:
        for p in range(s + tid, e, THREADS_PER_BLOCK):
            perm_out[p] = perm_in[p]
    if tid == 0:
        split[t] = cut if size > leaf_size else -1


def build_geometric_tree(points, leaf_size):
    """Geometric cluster tree built on the device.

    The same bisection as :func:`hmnumba.kernels.cpu.build_geometric_tree`
    (longest side of the bounding box at its midpoint, stable partition,
    index halving when a side would be empty), computed level by level: one
    kernel launch per tree level with one thread block per node of the level.
    The result is identical to the CPU tree, array for array.

    Parameters
    ----------
    points : ndarray of float64, shape (n, d)
    leaf_size : int

    Returns
    -------
    perm, start, stop, children, level, box_lo, box_hi : ndarray
        Host arrays, as from the CPU build.

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.kernels import cpu, cuda
    >>> X = np.random.default_rng(0).random((40, 2))
    >>> all(np.array_equal(a, b) for a, b in zip(cuda.build_geometric_tree(X, 8),
    ...                                          cpu.build_geometric_tree(X, 8)))
    True
    """
    n, d = points.shape
    cap = 2 * n + 1
    points_d = cuda.to_device(np.ascontiguousarray(points, dtype=np.float64))
    perm_a = cuda.to_device(np.arange(n, dtype=np.int64))
    perm_b = cuda.device_array(n, np.int64)
    box_lo = cuda.device_array((cap, d), np.float64)
    box_hi = cuda.device_array((cap, d), np.float64)
    split_d = cuda.device_array(cap, np.int64)
    start = np.empty(cap, np.int64)
    stop = np.empty(cap, np.int64)
    children = -np.ones((cap, 2), np.int64)
    level = np.zeros(cap, np.int64)
    start[0], stop[0] = 0, n
    first, n_nodes = 0, 1
    while first < n_nodes:
        count = n_nodes - first
        _tree_level[count, THREADS_PER_BLOCK](
            points_d, perm_a, perm_b, cuda.to_device(start[first:n_nodes]),
            cuda.to_device(stop[first:n_nodes]), first, leaf_size, box_lo, box_hi, split_d)
        perm_a, perm_b = perm_b, perm_a
        split = split_d[first:n_nodes].copy_to_host()
        parents = first + np.flatnonzero(split >= 0)
        cuts = split[split >= 0]
        kids = n_nodes + 2 * np.arange(parents.size)
        children[parents, 0] = kids
        children[parents, 1] = kids + 1
        start[kids], stop[kids] = start[parents], cuts
        start[kids + 1], stop[kids + 1] = cuts, stop[parents]
        level[kids] = level[kids + 1] = level[parents] + 1
        first, n_nodes = n_nodes, n_nodes + 2 * parents.size
    return (perm_a.copy_to_host(), start[:n_nodes].copy(), stop[:n_nodes].copy(),
            children[:n_nodes].copy(), level[:n_nodes].copy(),
            box_lo.copy_to_host()[:n_nodes].copy(), box_hi.copy_to_host()[:n_nodes].copy())


# ---------------------------------------------------------------------------
# Kernel entries and batched ACA
# ---------------------------------------------------------------------------


@cuda.jit(device=True)
def kernel_of_distance2(code, length_scale, r2):  # pragma: no cover - CUDA device code
    """Device twin of :func:`hmnumba.kernels.functions.kernel_of_distance2`."""
    if code == LAPLACE:
        if r2 == 0.0:
            return 0.0
        return 1.0 / math.sqrt(r2)
    if code == GAUSSIAN:
        return math.exp(-0.5 * r2 / (length_scale * length_scale))
    if code == EXPONENTIAL:
        return math.exp(-math.sqrt(r2) / length_scale)
    s = _SQRT3 * math.sqrt(r2) / length_scale
    return (1.0 + s) * math.exp(-s)


@cuda.jit(device=True)
def _entry(code, ls, XT, YT, i, j):  # pragma: no cover - CUDA device code
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
        a = _entry(code, ls, XT, YT, r0 + i, c0 + j)
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
    block ``b``: the algorithm and stopping rule of ``cpu.aca_partial``
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


@njit(cache=True, parallel=True)
def _finish_blocks(U, V, uoff, voff, m, n, k, est2, last, conv, rel_tol, abs_tol, kcap,
                   kmax_final, store, pos, out_off, status, rank, err2, norm2):
    """Host half of the kernel-block compression (as ``cpu.compress_one_block``
    does it after ACA): recompress each converged ACA to its remaining budget,
    store the factors at ``store[pos[b]:]``, classify the block."""
    for b in prange(m.shape[0]):
        mb = m[b]
        nb = n[b]
        out_off[b] = pos[b]
        if kmax_final[b] == 0:  # no rank saves storage here
            status[b], rank[b], err2[b], norm2[b] = cpu.STATUS_REFINE, 1, 0.0, 0.0
            continue
        norm2[b] = est2[b]
        again = cpu.STATUS_REFINE if kcap[b] >= kmax_final[b] else cpu.STATUS_RETRY
        if not conv[b]:
            status[b], rank[b], err2[b] = again, kcap[b] + 1, 0.0
            continue
        tau = max(rel_tol * np.sqrt(est2[b]), abs_tol[b])
        Ub = U[uoff[b]:uoff[b + 1]].reshape((kcap[b] + 1, mb))
        Vb = V[voff[b]:voff[b + 1]].reshape((kcap[b] + 1, nb))
        Ur, Vr, tail2 = cpu.recompress(Ub, Vb, k[b], max(tau - last[b], 0.0),
                                       cpu.GRAM_REL_TOL_FLOOR, np.sqrt(est2[b]))
        r = Ur.shape[0]
        if r > kcap[b]:
            status[b], rank[b], err2[b] = again, r, 0.0
            continue
        cpu._store_factors(store, pos[b], Ur, Vr)
        err = last[b] + np.sqrt(tail2)
        status[b], rank[b], err2[b] = cpu.STATUS_ACCEPTED, r, err * err


class DeviceACA:
    """Batched ACA of built-in kernel blocks on the device, as a drop-in
    ``compress_blocks`` for :func:`hmnumba.construct.build`.

    The points are copied to the device once (at construction); each call
    runs :func:`_aca_blocks` over its candidate blocks (one thread block
    each), copies the factors back and recompresses them on the host.

    Parameters
    ----------
    src : tuple
        A built-in kernel source ``(code, length_scale, XT, YT)``.

    Examples
    --------
    One far-field block of the Laplace kernel, compressed to ``1e-5``:

    >>> import numpy as np
    >>> from hmnumba.kernels import cpu, laplace
    >>> from hmnumba.kernels.cuda import DeviceACA
    >>> rng = np.random.default_rng(0)
    >>> X, Y = rng.random((24, 3)), rng.random((20, 3)) + [3.0, 0.0, 0.0]
    >>> src = laplace.source(X, Y)
    >>> one = np.ones(1, np.int64)
    >>> status, rank, off = (np.zeros(1, np.int64) for _ in range(3))
    >>> err2, norm2, store = np.zeros(1), np.zeros(1), np.zeros(16 * 44)
    >>> DeviceACA(src)(src, False, 0 * one, 24 * one, 0 * one, 20 * one, 1e-5, np.zeros(1),
    ...                0, 16 * one, 16 * one, 0, store, None, off, status, rank, err2, norm2)
    >>> k = int(rank[0])
    >>> Ut, Vt = store[:24 * k].reshape(k, 24), store[24 * k:44 * k].reshape(k, 20)
    >>> K = laplace(X, Y)
    >>> err = np.linalg.norm(K - Ut.T @ Vt) / np.linalg.norm(K)
    >>> bool(status[0] == cpu.STATUS_ACCEPTED), bool(err <= 1e-5), k < 20
    (True, True, True)
    """

    def __init__(self, src):
        code, ls, XT, YT = src
        self.code = int(code)
        self.length_scale = float(ls)
        self.XT = cuda.to_device(XT)
        self.YT = self.XT if YT is XT else cuda.to_device(YT)

    def __call__(self, src, exact, r0, r1, c0, c1, rel_tol, abs_tol, method, kcap, kmax_final,
                 seed, store, slab_start, out_off, status, rank, err2, norm2):
        n_blocks = r0.shape[0]
        if n_blocks == 0:
            return
        m = r1 - r0
        n = c1 - c0
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
        pos = _exclusive_cumsum(kcap * (m + n))[:-1]
        _finish_blocks(U.copy_to_host(), V.copy_to_host(), uoff, voff, m, n,
                       out_k.copy_to_host(), out_norm2.copy_to_host(), out_last.copy_to_host(),
                       out_conv.copy_to_host().astype(np.bool_), rel_tol, abs_tol, kcap,
                       kmax_final, store, pos, out_off, status, rank, err2, norm2)


# ---------------------------------------------------------------------------
# H-matrix products (two phases, row schedule: no races, no atomics)
# ---------------------------------------------------------------------------

# The packed arrays a product reads, in the order the kernels take them.
_BLOCK_FIELDS = ("data", "row_start", "row_stop", "col_start", "col_stop", "rank", "offset",
                 "t_off")


def to_device(H):
    """Copy the packed arrays of ``H`` to the device once.

    Returns a dict of device arrays: the block arrays, the permutations, both
    schedules and the ids of the low-rank blocks (the phase-one grid).
    :meth:`hmnumba.HMatrix.to` calls it; :func:`apply` uses its result.

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba import HMatrix
    >>> from hmnumba.kernels.cuda import apply, to_device
    >>> A = np.add.outer(np.arange(48.0), np.arange(40.0))
    >>> H = HMatrix.from_dense(A, tol=1e-10)
    >>> y = apply(to_device(H), H.shape, np.ones(40), False, np.dtype(np.float64))
    >>> bool(np.allclose(y, A.sum(axis=1)))
    True
    """
    dev = {name: cuda.to_device(np.ascontiguousarray(getattr(H, name)))
           for name in _BLOCK_FIELDS + ("row_perm", "col_perm")}
    for side in ("row_sched", "col_sched"):
        dev[side] = tuple(cuda.to_device(a) for a in getattr(H, side))
    lowrank = np.flatnonzero(H.rank > 0).astype(np.int64)
    dev["n_lowrank"] = int(lowrank.size)
    dev["n_t"] = int(H.t_off[-1])
    dev["lowrank"] = cuda.to_device(lowrank if lowrank.size else np.zeros(1, np.int64))
    return dev


@cuda.jit
def _gather_rows(x, perm, out):  # pragma: no cover - CUDA device code
    """``out[p, :] = x[perm[p], :]`` (with a cast to ``out``'s dtype)."""
    e = cuda.grid(1)
    p_rhs = x.shape[1]
    if e < out.shape[0] * p_rhs:
        p = e // p_rhs
        q = e - p * p_rhs
        out[p, q] = x[perm[p], q]


@cuda.jit
def _scatter_rows(y, perm, out):  # pragma: no cover - CUDA device code
    """``out[perm[p], :] = y[p, :]`` (with a cast to ``out``'s dtype)."""
    e = cuda.grid(1)
    p_rhs = y.shape[1]
    if e < y.shape[0] * p_rhs:
        p = e // p_rhs
        q = e - p * p_rhs
        out[perm[p], q] = y[p, q]


@cuda.jit
def _phase_one(data, r0, r1, c0, c1, rank, offset, t_off, lowrank, X, T,
               trans):  # pragma: no cover - CUDA device code
    """``T[t_off[b] + l, :] = V_b[:, l]^T X[c0:c1, :]`` (``U_b`` against
    ``X[r0:r1]`` when ``trans``), one thread block per low-rank block, each
    sum by a shared-memory reduction in float64."""
    sh = cuda.shared.array(THREADS_PER_BLOCK, float64)
    b = lowrank[cuda.blockIdx.x]
    tid = cuda.threadIdx.x
    k = rank[b]
    m = r1[b] - r0[b]
    n = c1[b] - c0[b]
    if trans:
        base = offset[b]
        lo = r0[b]
        length = m
    else:
        base = offset[b] + k * m
        lo = c0[b]
        length = n
    for l in range(k):
        row = base + l * length
        for q in range(X.shape[1]):
            acc = 0.0
            for j in range(tid, length, THREADS_PER_BLOCK):
                acc += data[row + j] * X[lo + j, q]
            acc = _block_sum(sh, tid, acc)
            if tid == 0:
                T[t_off[b] + l, q] = acc


@cuda.jit
def _phase_two(data, r0, r1, c0, c1, rank, offset, t_off, seg, ptr, blk, X, T, Y,
               trans):  # pragma: no cover - CUDA device code
    """One thread block per output segment; each thread owns outputs
    ``(i, q)`` of the segment and adds, in schedule order, its dense-block
    products and ``U_b t_b`` (``V_b t_b`` when ``trans``) terms."""
    s = cuda.blockIdx.x
    lo = seg[s]
    width = seg[s + 1] - lo
    p_rhs = X.shape[1]
    for e in range(cuda.threadIdx.x, width * p_rhs, cuda.blockDim.x):
        i = lo + e // p_rhs
        q = e - (e // p_rhs) * p_rhs
        acc = 0.0
        for p in range(ptr[s], ptr[s + 1]):
            b = blk[p]
            k = rank[b]
            m = r1[b] - r0[b]
            n = c1[b] - c0[b]
            if k < 0:
                if trans:  # column i - c0 of the dense block against X[r0:r1]
                    col = offset[b] + i - c0[b]
                    for r in range(m):
                        acc += data[col + r * n] * X[r0[b] + r, q]
                else:
                    row = offset[b] + (i - r0[b]) * n
                    for j in range(n):
                        acc += data[row + j] * X[c0[b] + j, q]
            elif k > 0:
                if trans:
                    entry = offset[b] + k * m + i - c0[b]
                    length = n
                else:
                    entry = offset[b] + i - r0[b]
                    length = m
                for l in range(k):
                    acc += data[entry + l * length] * T[t_off[b] + l, q]
        Y[i, q] = acc


def _grid(n_items, threads):
    return max((n_items + threads - 1) // threads, 1)


def apply(dev, shape, x, trans, out_dtype):
    """``A @ x`` (``A^T @ x`` when ``trans``) on the device.

    Parameters
    ----------
    dev : dict
        From :func:`to_device`.
    shape : tuple of int
        Shape of ``A``.
    x : ndarray or device array, shape (n,) or (n, p)
        Already validated by the caller.
    trans : bool
    out_dtype : numpy dtype

    Returns
    -------
    ndarray, or a device array when ``x`` is one.
    """
    on_device = is_device_array(x)
    n_in, n_out = (shape[0], shape[1]) if trans else (shape[1], shape[0])
    vector = x.ndim == 1
    p_rhs = 1 if vector else x.shape[1]
    if on_device:
        x2 = x.reshape((n_in, p_rhs))
    else:
        x2 = cuda.to_device(np.ascontiguousarray(x).reshape((n_in, p_rhs)))
    in_perm, out_perm = ((dev["row_perm"], dev["col_perm"]) if trans
                         else (dev["col_perm"], dev["row_perm"]))
    seg, ptr, blk = dev["col_sched"] if trans else dev["row_sched"]
    blocks = tuple(dev[name] for name in _BLOCK_FIELDS)
    data = dev["data"]
    xp = cuda.device_array((n_in, p_rhs), data.dtype)
    _gather_rows[_grid(n_in * p_rhs, THREADS_ELEMENTWISE), THREADS_ELEMENTWISE](
        x2, in_perm, xp)
    T = cuda.device_array((max(dev["n_t"], 1), p_rhs), np.float64)
    if dev["n_lowrank"]:
        _phase_one[dev["n_lowrank"], THREADS_PER_BLOCK](*blocks, dev["lowrank"], xp, T, trans)
    yp = cuda.device_array((n_out, p_rhs), np.float64)
    _phase_two[seg.shape[0] - 1, THREADS_ELEMENTWISE](*blocks, seg, ptr, blk, xp, T, yp, trans)
    out = cuda.device_array((n_out, p_rhs), out_dtype)
    _scatter_rows[_grid(n_out * p_rhs, THREADS_ELEMENTWISE), THREADS_ELEMENTWISE](
        yp, out_perm, out)
    if vector:
        out = out.reshape((n_out,))
    return out if on_device else out.copy_to_host()
