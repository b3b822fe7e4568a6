"""Geometric cluster tree on the device: the CUDA twin of
:func:`hmnumba.kernels.trees.build_geometric_tree`, same flat arrays.

The tree is built level by level, one thread block per node of the level
(bounding box by block reductions, stable partition by block prefix scans),
with the nodes numbered breadth first (see :mod:`hmnumba.kernels.common_cuda`).
"""
import math

import numpy as np
from numba import cuda, float64, int64

from hmnumba.kernels.common_cuda import THREADS_PER_BLOCK


# ---------------------------------------------------------------------------
# Block-wide reductions (every thread of the block must call them; see
# common_cuda for why they live in this file)
# ---------------------------------------------------------------------------


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

    The same bisection as :func:`hmnumba.kernels.trees.build_geometric_tree`
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
    >>> from hmnumba.kernels import trees, trees_cuda
    >>> X = np.random.default_rng(0).random((40, 2))
    >>> all(np.array_equal(a, b) for a, b in zip(trees_cuda.build_geometric_tree(X, 8),
    ...                                          trees.build_geometric_tree(X, 8)))
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
