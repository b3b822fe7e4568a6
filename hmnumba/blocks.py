"""Block partitions: which pairs of clusters become low-rank candidates.

* ``"strong"``: the classical geometric rule ``min(diam t, diam s) <= eta *
  dist(t, s)`` on bounding boxes (H2Lib's ``admissible_2_min_cluster``); needs
  geometric (or index) trees. For kernel matrices.
* ``"weak"``: HODLR; every off-diagonal child pair of a diagonal pair is a
  candidate.
* ``"adaptive"``: every pair is a candidate, starting with the whole matrix;
  the local error decides (the default for weight arrays, which have no
  geometry).

In every case a candidate whose rank would not save storage (or would exceed
``max_rank``) is split into its children by the construction
(:mod:`hmnumba.construct`) and tried again; leaf pairs become dense blocks.
"""
import numpy as np

from hmnumba._validation import check_choice
from hmnumba.kernels import cpu

ADMISSIBILITY = ("adaptive", "strong", "weak")


def stored_numbers(row_start, row_stop, col_start, col_stop, rank):
    """How many numbers each block keeps in ``data``: ``m n`` for a dense
    block (``rank < 0``), ``k (m + n)`` for a low-rank one (nothing for rank 0).

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.blocks import stored_numbers
    >>> stored_numbers(np.array([0, 0]), np.array([4, 4]), np.array([0, 4]),
    ...                np.array([4, 10]), np.array([-1, 2]))
    array([16, 20])
    """
    m = np.asarray(row_stop, np.int64) - np.asarray(row_start, np.int64)
    n = np.asarray(col_stop, np.int64) - np.asarray(col_start, np.int64)
    rank = np.asarray(rank, np.int64)
    return np.where(rank < 0, m * n, np.maximum(rank, 0) * (m + n))


def initial_partition(row_tree, col_tree, admissibility="adaptive", eta=2.0):
    """The first block partition, before any adaptive refinement.

    Parameters
    ----------
    row_tree, col_tree : ClusterTree
    admissibility : {"adaptive", "strong", "weak"}
    eta : float
        Admissibility parameter of ``"strong"``.

    Returns
    -------
    row_node, col_node : ndarray of int64
        Cluster pairs that tile the matrix.
    candidate : ndarray of bool
        True for low-rank candidates, False for dense leaf blocks.

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.cluster import ClusterTree
    >>> from hmnumba.blocks import initial_partition
    >>> tree = ClusterTree.from_points(np.linspace(0, 1, 64)[:, None], leaf_size=8)
    >>> t, s, cand = initial_partition(tree, tree, "strong", eta=1.0)
    >>> int(((tree.stop[t] - tree.start[t]) * (tree.stop[s] - tree.start[s])).sum())
    4096
    """
    admissibility = check_choice(admissibility, "admissibility", ADMISSIBILITY)
    if admissibility == "adaptive":
        return np.zeros(1, np.int64), np.zeros(1, np.int64), np.ones(1, bool)
    if admissibility == "weak":
        return cpu.weak_partition(row_tree.children, col_tree.children)
    if row_tree.box_lo is None or col_tree.box_lo is None:
        raise ValueError("admissibility='strong' needs geometric cluster trees (points); "
                         f"got {row_tree.method!r} clustering: use 'adaptive' or 'weak'")
    if row_tree.box_lo.shape[1] != col_tree.box_lo.shape[1]:
        raise ValueError("row and column points must have the same dimension")
    return cpu.strong_partition(row_tree.children, row_tree.box_lo, row_tree.box_hi,
                                col_tree.children, col_tree.box_lo, col_tree.box_hi, float(eta))


def split_pairs(row_tree, col_tree, row_node, col_node):
    """Children of cluster pairs: the four pairs of children, or the two of
    the side that has children. Pairs of two leaves come back in ``leaf``.

    Returns ``(child_row, child_col, parent, leaf_row, leaf_col, leaf_parent)``
    where ``parent`` indexes the input pairs.

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.cluster import ClusterTree
    >>> from hmnumba.blocks import split_pairs
    >>> tree = ClusterTree.from_index(8, leaf_size=2)   # root 0 has children 1, 2
    >>> r, c, parent, leaf_r, leaf_c, leaf_p = split_pairs(tree, tree, np.array([0]), np.array([0]))
    >>> r.tolist(), c.tolist(), parent.tolist(), leaf_r.size
    ([1, 1, 2, 2], [1, 2, 1, 2], [0, 0, 0, 0], 0)
    """
    rc = row_tree.children[row_node]
    cc = col_tree.children[col_node]
    r_has = rc[:, 0] >= 0
    c_has = cc[:, 0] >= 0
    out_r, out_c, out_p = [], [], []
    idx = np.arange(row_node.shape[0])
    both = r_has & c_has
    for a in range(2):
        for b in range(2):
            out_r.append(rc[both, a])
            out_c.append(cc[both, b])
            out_p.append(idx[both])
    only_r = r_has & ~c_has
    only_c = ~r_has & c_has
    for a in range(2):
        out_r.append(rc[only_r, a])
        out_c.append(col_node[only_r])
        out_p.append(idx[only_r])
        out_r.append(row_node[only_c])
        out_c.append(cc[only_c, a])
        out_p.append(idx[only_c])
    leaf = ~r_has & ~c_has
    child_p = np.concatenate(out_p)
    order = np.argsort(child_p, kind="stable")  # keep children of one parent together
    return (np.concatenate(out_r)[order], np.concatenate(out_c)[order], child_p[order],
            row_node[leaf], col_node[leaf], idx[leaf])


def level_schedule(start, stop):
    """Group blocks by output range, and the ranges by nesting depth.

    Block ranges come from a cluster tree, so any two are nested or disjoint;
    ranges of equal depth are therefore disjoint, and the blocks of all groups
    of one depth can write their outputs in parallel without races. This is
    the schedule of the BLAS-based products (:func:`hmnumba.kernels.cpu.hmatmat_blas`).

    Parameters
    ----------
    start, stop : ndarray of int64
        Output range of each block (rows for ``A X``, columns for ``A^T X``).

    Returns
    -------
    level_ptr : ndarray of int64
        Groups of depth ``d`` are ``level_ptr[d]:level_ptr[d + 1]``.
    group_start, group_stop : ndarray of int64
        The output range of each group.
    group_ptr, group_block : ndarray of int64
        CSR: the blocks of group ``g`` are ``group_block[group_ptr[g]:group_ptr[g + 1]]``.

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.blocks import level_schedule
    >>> lp, gs, ge, gp, gb = level_schedule(np.array([0, 0, 2, 0]), np.array([4, 2, 4, 4]))
    >>> lp.tolist(), gs.tolist(), ge.tolist(), gb.tolist()
    ([0, 1, 3], [0, 0, 2], [4, 2, 4], [0, 3, 1, 2])
    """
    start = np.asarray(start, np.int64)
    stop = np.asarray(stop, np.int64)
    pairs, group_of_block = np.unique(np.stack([start, -stop], axis=1), axis=0,
                                      return_inverse=True)
    group_of_block = group_of_block.ravel()
    g_start, g_stop = pairs[:, 0], -pairs[:, 1]     # sorted by start, then longest first
    depth = np.empty(g_start.size, np.int64)
    open_stops = []
    for g in range(g_start.size):                   # interval nesting by a stack sweep
        while open_stops and open_stops[-1] <= g_start[g]:
            open_stops.pop()
        depth[g] = len(open_stops)
        open_stops.append(g_stop[g])
    order = np.lexsort((g_start, depth))
    rank_of_group = np.empty_like(order)
    rank_of_group[order] = np.arange(order.size)
    level_ptr = np.zeros(depth.max() + 2, np.int64)
    np.cumsum(np.bincount(depth, minlength=depth.max() + 1), out=level_ptr[1:])
    new_group = rank_of_group[group_of_block]
    group_block = np.argsort(new_group, kind="stable").astype(np.int64)
    group_ptr = np.zeros(order.size + 1, np.int64)
    np.cumsum(np.bincount(new_group, minlength=order.size), out=group_ptr[1:])
    return level_ptr, g_start[order], g_stop[order], group_ptr, group_block
