"""Cluster trees and block partitions (numba).

* :func:`build_geometric_tree`: bisection of the bounding box, level by
  level, into a permutation and flat node arrays (``hmnumba.cluster`` owns
  the other clusterings and the Python side);
* :func:`strong_partition`, :func:`weak_partition`: the classical block
  partitions on two such trees (``hmnumba.blocks`` owns the choice);
* :func:`cheaper_representation`, :func:`dense_subtrees`,
  :func:`below_marked`: the passes over the attempt tree of the adaptive
  build (look-ahead's cheaper choice and coarsening; ``hmnumba.construct``
  owns the bookkeeping).

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



# ---------------------------------------------------------------------------
# Attempt tree of the adaptive build
# ---------------------------------------------------------------------------
# Every candidate pair the build tries is an attempt, numbered in the order
# tried, so an attempt's children come after it (``parent[a] < a``, -1 for
# the first partition); pairs of leaf clusters split off an attempt are
# dense leaves below it. One pass from the back visits every child before
# its parent, one from the front every parent before its children.


@njit(cache=True)
def cheaper_representation(parent, own, expanded, dense_parent, dense_cost):
    """Whether each attempt keeps its own representation, bottom-up.

    ``own[a]`` is the storage of attempt ``a``'s own factors (``inf`` when
    it was not accepted); an ``expanded`` attempt also has children (dense
    leaves of cost ``dense_cost`` below ``dense_parent``, and attempts),
    whose subtree stores the sum of their best representations. Returns
    ``use_own``: True where ``a`` was not expanded, or where its own factors
    store no more than its children's subtree (ties: fewer blocks).
    """
    n = parent.size
    sub = np.zeros(n)
    for i in range(dense_parent.size):
        if dense_parent[i] >= 0:
            sub[dense_parent[i]] += dense_cost[i]
    use_own = np.empty(n, np.bool_)
    for a in range(n - 1, -1, -1):
        best = own[a]
        use_own[a] = True
        if expanded[a]:
            use_own[a] = own[a] <= sub[a]
            best = min(own[a], sub[a])
        if parent[a] >= 0:
            sub[parent[a]] += best
    return use_own


@njit(cache=True)
def dense_subtrees(parent, refined, dense_parent):
    """Refined attempts all of whose children end up dense, bottom-up.

    A refined attempt with children, each a dense leaf or (recursively)
    such an attempt, can be stored as one dense block. Returns the mask.
    """
    n = parent.size
    n_children = np.zeros(n, np.int64)
    n_dense = np.zeros(n, np.int64)
    for a in range(n):
        if parent[a] >= 0:
            n_children[parent[a]] += 1
    for i in range(dense_parent.size):
        if dense_parent[i] >= 0:
            n_children[dense_parent[i]] += 1
            n_dense[dense_parent[i]] += 1
    is_dense = np.zeros(n, np.bool_)
    for a in range(n - 1, -1, -1):
        if refined[a] and n_children[a] > 0 and n_dense[a] == n_children[a]:
            is_dense[a] = True
            if parent[a] >= 0:
                n_dense[parent[a]] += 1
    return is_dense


@njit(cache=True)
def below_marked(parent, mark):
    """Mask of the attempts that have a ``mark``-ed proper ancestor, top-down."""
    n = parent.size
    below = np.zeros(n, np.bool_)
    for a in range(n):
        p = parent[a]
        if p >= 0 and (below[p] or mark[p]):
            below[a] = True
    return below
