"""Cluster trees and block partitions (numba).

* :func:`build_geometric_tree`: bisection of the bounding box, level by
  level, into a permutation and flat node arrays (``hmnumba.cluster`` owns
  the other clusterings and the Python side);
* :func:`strong_partition`, :func:`weak_partition`: the classical block
  partitions on two such trees (``hmnumba.blocks`` owns the choice).

This file calls no compiled code of another file, so numba's per-file cache
check is enough here. The CUDA twin of the tree build is
:mod:`hmnumba.kernels.trees_cuda`.
"""
import numpy as np
from numba import njit




@njit(cache=True)
def build_geometric_tree(points, leaf_size):
    """Bisection of bounding boxes: split the longest side at its midpoint.

    Returns ``perm, start, stop, children, level, box_lo, box_hi`` over the
    nodes in breadth-first order; node 0 is the root, ``children[t] = -1`` for
    a leaf, and node ``t`` holds ``perm[start[t]:stop[t]]``. A box of zero
    extent (duplicate points) or a midpoint that leaves one side empty falls
    back to halving the index range, so every split makes progress and the
    build terminates; strongly graded point sets (``2**-k``) can still give
    deep trees, as midpoint bisection does in every H-matrix library.
    """
    n, d = points.shape
    perm = np.arange(n)
    cap = 2 * n + 1
    start = np.empty(cap, np.int64)
    stop = np.empty(cap, np.int64)
    children = -np.ones((cap, 2), np.int64)
    level = np.zeros(cap, np.int64)
    box_lo = np.empty((cap, d))
    box_hi = np.empty((cap, d))
    tmp_right = np.empty(n, np.int64)
    start[0] = 0
    stop[0] = n
    n_nodes = 1
    head = 0
    while head < n_nodes:
        t = head
        head += 1
        s, e = start[t], stop[t]
        for k in range(d):
            box_lo[t, k] = np.inf
            box_hi[t, k] = -np.inf
        for p in range(s, e):
            for k in range(d):
                v = points[perm[p], k]
                if v < box_lo[t, k]:
                    box_lo[t, k] = v
                if v > box_hi[t, k]:
                    box_hi[t, k] = v
        if e - s <= leaf_size:
            continue
        axis = 0
        for k in range(1, d):
            if box_hi[t, k] - box_lo[t, k] > box_hi[t, axis] - box_lo[t, axis]:
                axis = k
        split = (s + e) // 2
        if box_hi[t, axis] > box_lo[t, axis]:
            mid = 0.5 * (box_lo[t, axis] + box_hi[t, axis])
            # Stable partition (points below mid first, each side in its
            # original order), so an index tree keeps the natural order.
            i = s
            n_right = 0
            for p in range(s, e):
                q = perm[p]
                if points[q, axis] < mid:
                    perm[i] = q
                    i += 1
                else:
                    tmp_right[n_right] = q
                    n_right += 1
            for p in range(n_right):
                perm[i + p] = tmp_right[p]
            if s < i < e:
                split = i
        for c in range(2):
            u = n_nodes + c
            start[u] = s if c == 0 else split
            stop[u] = split if c == 0 else e
            level[u] = level[t] + 1
            children[t, c] = u
        n_nodes += 2
    return (perm, start[:n_nodes].copy(), stop[:n_nodes].copy(), children[:n_nodes].copy(),
            level[:n_nodes].copy(), box_lo[:n_nodes].copy(), box_hi[:n_nodes].copy())


# ---------------------------------------------------------------------------
# Block partition
# ---------------------------------------------------------------------------


@njit(cache=True, inline="always")
def _box_diameter(lo, hi):
    d = 0.0
    for k in range(lo.shape[0]):
        t = hi[k] - lo[k]
        d += t * t
    return np.sqrt(d)


@njit(cache=True, inline="always")
def _box_distance(lo1, hi1, lo2, hi2):
    d = 0.0
    for k in range(lo1.shape[0]):
        t = max(0.0, lo2[k] - hi1[k], lo1[k] - hi2[k])
        d += t * t
    return np.sqrt(d)


@njit(cache=True)
def strong_partition(row_children, row_lo, row_hi, col_children, col_lo, col_hi, eta):
    """Dual-tree traversal with ``min(diam t, diam s) <= eta * dist(t, s)``.

    Returns ``(row_node, col_node, admissible)``: the leaves of the block tree,
    admissible pairs as low-rank candidates, the rest dense leaves. A pair is
    split into the children of both clusters, or of the one that has children.
    """
    bt = []
    bs = []
    adm = []
    stack = [(0, 0)]
    while len(stack) > 0:
        t, s = stack.pop()
        dist = _box_distance(row_lo[t], row_hi[t], col_lo[s], col_hi[s])
        diam = min(_box_diameter(row_lo[t], row_hi[t]), _box_diameter(col_lo[s], col_hi[s]))
        if dist > 0.0 and diam <= eta * dist:
            bt.append(t)
            bs.append(s)
            adm.append(True)
            continue
        tc = row_children[t, 0] >= 0
        sc = col_children[s, 0] >= 0
        if not tc and not sc:
            bt.append(t)
            bs.append(s)
            adm.append(False)
        elif tc and sc:
            for a in range(1, -1, -1):
                for b in range(1, -1, -1):
                    stack.append((row_children[t, a], col_children[s, b]))
        elif tc:
            stack.append((row_children[t, 1], s))
            stack.append((row_children[t, 0], s))
        else:
            stack.append((t, col_children[s, 1]))
            stack.append((t, col_children[s, 0]))
    return np.array(bt, np.int64), np.array(bs, np.int64), np.array(adm, np.bool_)


@njit(cache=True)
def weak_partition(row_children, col_children):
    """HODLR partition: off-diagonal children of diagonal pairs are candidates."""
    bt = []
    bs = []
    adm = []
    stack = [(0, 0)]
    while len(stack) > 0:
        t, s = stack.pop()
        tc = row_children[t, 0] >= 0
        sc = col_children[s, 0] >= 0
        if tc and sc:
            t0, t1 = row_children[t, 0], row_children[t, 1]
            s0, s1 = col_children[s, 0], col_children[s, 1]
            stack.append((t1, s1))
            bt.append(t0)
            bs.append(s1)
            adm.append(True)
            bt.append(t1)
            bs.append(s0)
            adm.append(True)
            stack.append((t0, s0))
        elif tc or sc:
            # One side is a leaf: the matrix is far from square here; let the
            # local error decide for the two halves.
            for c in range(2):
                bt.append(row_children[t, c] if tc else t)
                bs.append(s if tc else col_children[s, c])
                adm.append(True)
        else:
            bt.append(t)
            bs.append(s)
            adm.append(False)
    return np.array(bt, np.int64), np.array(bs, np.int64), np.array(adm, np.bool_)

