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
from hmnumba.kernels import trees

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
        return trees.weak_partition(row_tree.children, col_tree.children)
    if row_tree.box_lo is None or col_tree.box_lo is None:
        raise ValueError("admissibility='strong' needs geometric cluster trees (points); "
                         f"got {row_tree.method!r} clustering: use 'adaptive' or 'weak'")
    if row_tree.box_lo.shape[1] != col_tree.box_lo.shape[1]:
        raise ValueError("row and column points must have the same dimension")
    return trees.strong_partition(row_tree.children, row_tree.box_lo, row_tree.box_hi,
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
    the schedule of the BLAS-based products (:func:`hmnumba.kernels.products.hmatmat_blas`).

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


# Slabs of the symmetric product (hmnumba.kernels.symmetric).
# Default number of slabs. The slabs are the unit of parallel work, so this
# bounds the number of threads that can be kept busy; the price of a slab is
# zeroing and summing one float64 row of length N. Measured on 2 cores with
# ``python3 asv_benchmarks/run_symmetric_matvec.py --slabs 2 8 16 64``
# (2.2 GB of float64): 8 to 64 slabs within 3% of each other (0.94-0.97 of
# np.dot streaming), 2 slabs (one per thread) 0.62: a stall of one slab then
# idles a core.
SYMMETRIC_SLABS = 16

# Cost of a block beyond its stored numbers (loop set-up, the slices of x and
# y it touches), in units of one stored number.
BLOCK_OVERHEAD = 32


def symmetric_slabs(r0, r1, c0, c1, rank, n_slabs=SYMMETRIC_SLABS):
    """Cut the blocks, in storage order, into contiguous slabs of about equal cost.

    The cost of a block is the count of its stored numbers (``k (m + n)``
    for a low-rank block of rank ``k``, ``m n`` for a dense one, nothing for
    a zero block) plus :data:`BLOCK_OVERHEAD`. The cuts are computed in
    integer arithmetic from the block arrays and ``n_slabs`` only, never from
    the number of threads, so :func:`hmnumba.kernels.symmetric.symmetric_hmatvec` gives the same bits
    whatever the thread count. There are ``min(n_slabs, n_blocks)`` slabs,
    none empty.

    Parameters
    ----------
    r0, r1, c0, c1, rank : ndarray of int64, shape (n_blocks,)
        The block rows ``[r0, r1)``, columns ``[c0, c1)`` and ranks (``-1``
        dense, ``0`` zero, ``k > 0`` low rank).
    n_slabs : int, default=SYMMETRIC_SLABS
        Number of slabs wanted (at least 1).

    Returns
    -------
    slab_ptr : ndarray of int64, shape (n_slabs_eff + 1,)
        Slab ``s`` holds the blocks ``slab_ptr[s]:slab_ptr[s + 1]``;
        ``slab_ptr[0] == 0`` and ``slab_ptr[-1] == n_blocks``, strictly
        increasing (``[0]`` when there are no blocks).

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.blocks import symmetric_slabs
    >>> r0 = np.array([0, 0, 4]); r1 = np.array([4, 4, 8])
    >>> c0 = np.array([0, 4, 4]); c1 = np.array([4, 8, 8])
    >>> rank = np.array([-1, 1, -1])
    >>> symmetric_slabs(r0, r1, c0, c1, rank, 2)
    array([0, 2, 3])
    >>> symmetric_slabs(r0, r1, c0, c1, rank, 10)
    array([0, 1, 2, 3])
    """
    n_slabs = int(n_slabs)
    if n_slabs < 1:
        raise ValueError(f"n_slabs must be at least 1, got {n_slabs}")
    rank = np.asarray(rank, dtype=np.int64)
    n_blocks = rank.shape[0]
    if n_blocks == 0:
        return np.zeros(1, dtype=np.int64)
    cost = stored_numbers(r0, r1, c0, c1, rank) + BLOCK_OVERHEAD
    before = np.zeros(n_blocks + 1, dtype=np.int64)     # cost of the blocks before b
    np.cumsum(cost, out=before[1:])
    total = int(before[-1])
    n_eff = min(n_slabs, n_blocks)
    # Greedy, left to right: each slab ends at the block boundary nearest to
    # an equal share of the cost still to cut, and leaves at least one block
    # to each slab after it (so a block bigger than a share gets a slab of its
    # own and the rest is shared out again).
    ptr = np.empty(n_eff + 1, dtype=np.int64)
    ptr[0] = 0
    start = 0
    for s in range(n_eff - 1):
        left = n_eff - s
        target = int(before[start]) + (total - int(before[start])) // left
        hi = int(np.searchsorted(before, target, side="left"))   # before[hi] >= target
        end = hi - 1 if target - before[hi - 1] < before[hi] - target else hi
        end = min(max(end, start + 1), n_blocks - (left - 1))
        ptr[s + 1] = end
        start = end
    ptr[n_eff] = n_blocks
    return ptr


# ---------------------------------------------------------------------------
# Structure of the packed arrays (checked before any kernel reads them)
# ---------------------------------------------------------------------------

# Pairs (row segment, block) examined at once by the tiling check.
_TILING_CHUNK = 1 << 22
# Most entries a row or column schedule may have (the products materialise
# both; ~40 bytes per entry while they are built). Real matrices are far
# below: about 10**6 entries for 10**5 blocks.
MAX_SCHEDULE = 1 << 28
# The work a file may cause is bounded by its size and shape: a schedule may
# have at most this many entries per block plus row (resp. column). A real
# H-matrix has about log2(n_blocks) / 2 per block (every segment lies under
# one block per level and column cluster): under 10 for 10**6 blocks. A
# crafted file of k full-height blocks beside one column cut into k pieces
# would otherwise need k**2 entries (10 GB from a 2.4 MB file).
SCHEDULE_PER_ITEM = 64


def check_structure(m, n, a, where, symmetric=False):
    """Validate the packed arrays of an ``m x n`` H-matrix (dict ``a`` of
    little-endian/native 1-D arrays with the names of the file format;
    ``symmetric``: only the upper block triangle is stored).

    After this, every index and offset a product kernel computes lies inside
    its array. Raises ``ValueError`` prefixed by ``where``. :func:`hmnumba.load`
    and the ``HMatrix`` constructor run it on every array set from outside.

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.blocks import check_structure
    >>> one = dict(row_perm=np.arange(2), col_perm=np.arange(2), row_start=np.array([0]),
    ...            row_stop=np.array([2]), col_start=np.array([0]), col_stop=np.array([1]),
    ...            rank=np.array([-1]), offset=np.array([0]), data=np.ones(2),
    ...            block_err2=np.zeros(1), block_norm2=np.zeros(1))
    >>> check_structure(2, 2, one, "example")
    Traceback (most recent call last):
    ...
    ValueError: example: rows [0, 2) are covered by blocks 1 columns wide in total, expected 2 (blocks overlap or leave gaps)
    """
    def bad(msg):
        raise ValueError(f"{where}: {msg}")

    for name, size in (("row_perm", m), ("col_perm", n)):
        p = a[name]
        if p.size != size:
            bad(f"{name} has length {p.size}, expected {size}")
        if p.size and (p.min() < 0 or p.max() >= size):
            bad(f"{name} has entries outside [0, {size})")
        if not np.all(np.bincount(p, minlength=size) == 1):
            bad(f"{name} is not a permutation of range({size}) (repeated entries)")
    r0, r1, c0, c1, rank, off = (a[k] for k in ("row_start", "row_stop", "col_start",
                                                  "col_stop", "rank", "offset"))
    nb = rank.size
    if nb == 0 or any(a[k].size != nb for k in ("row_start", "row_stop", "col_start",
                                                 "col_stop", "offset", "block_err2",
                                                 "block_norm2")):
        bad("per-block arrays must be non-empty and of equal length")
    for lo, hi, size, what in ((r0, r1, m, "row"), (c0, c1, n, "column")):
        wrong = np.flatnonzero((lo < 0) | (hi > size) | (lo >= hi))
        if wrong.size:
            b = int(wrong[0])
            bad(f"block {b} has {what} range [{lo[b]}, {hi[b]}), expected "
                f"0 <= start < stop <= {size} ({wrong.size} such blocks)")
    mb = r1 - r0
    nb_cols = c1 - c0
    wrong = np.flatnonzero((rank < -1) | (rank > np.minimum(mb, nb_cols)))
    if wrong.size:
        b = int(wrong[0])
        bad(f"block {b} ({mb[b]} x {nb_cols[b]}) has rank {rank[b]}, expected -1 (dense) "
            f"or 0..{min(mb[b], nb_cols[b])} ({wrong.size} such blocks)")
    stored = stored_numbers(r0, r1, c0, c1, rank)
    length = a["data"].size
    wrong = np.flatnonzero((off < 0) | (off > length))
    if wrong.size == 0:
        wrong = np.flatnonzero(stored > length - off)
    if wrong.size:
        b = int(wrong[0])
        bad(f"block {b} stores {stored[b]} numbers at offset {off[b]}, outside data of "
            f"length {length} ({wrong.size} such blocks)")
    nonempty = np.flatnonzero(stored > 0)
    order = nonempty[np.argsort(off[nonempty], kind="stable")]
    clash = np.flatnonzero(off[order[:-1]] + stored[order[:-1]] > off[order[1:]])
    if clash.size:
        b1, b2 = int(order[clash[0]]), int(order[clash[0] + 1])
        bad(f"blocks {b1} and {b2} overlap in data (offsets {off[b1]} and {off[b2]})")
    if symmetric:
        if m != n or not np.array_equal(a["row_perm"], a["col_perm"]):
            bad("a symmetric matrix must be square with one permutation for rows and columns")
        diagonal = (r0 == c0) & (r1 == c1)
        wrong = np.flatnonzero(~diagonal & (r1 > c0))
        if wrong.size:
            b = int(wrong[0])
            bad(f"block {b} (rows [{r0[b]}, {r1[b]}), columns [{c0[b]}, {c1[b]})) of a "
                f"symmetric matrix is neither diagonal nor strictly upper ({wrong.size} such "
                f"blocks)")
        wrong = np.flatnonzero(diagonal & (rank > 0))
        if wrong.size:
            b = int(wrong[0])
            bad(f"diagonal block {b} of a symmetric matrix has rank {rank[b]}: diagonal blocks "
                f"are stored dense, so that the matrix equals its transpose ({wrong.size} such "
                f"blocks)")
        s = ~diagonal   # tile with the mirror images
        r0, r1, c0, c1 = (np.concatenate([r0, c0[s]]), np.concatenate([r1, c1[s]]),
                          np.concatenate([c0, r0[s]]), np.concatenate([c1, r1[s]]))
    _check_tiling(r0, r1, c0, c1, m, n, bad)
    if not np.all(np.isfinite(a["data"])):
        bad("data contains NaN or infinity")
    for name in ("block_err2", "block_norm2"):
        v = a[name]
        if not np.all(np.isfinite(v) & (v >= 0)):
            bad(f"{name} must be finite and non-negative")


def _check_tiling(r0, r1, c0, c1, m, n, bad):
    """Check that the blocks cover every entry of ``[0, m) x [0, n)`` exactly once.

    Rows are cut into segments at every block boundary, so a segment lies
    inside or outside each block's row range. The blocks are a tiling iff,
    for every segment, the column ranges of the blocks over it, sorted,
    follow each other from 0 without gap or overlap and their widths sum to
    ``n``. Cost: the size of the products' row schedule, worked through in
    chunks of bounded memory; schedules of more than ``SCHEDULE_PER_ITEM``
    entries per block and row (resp. column), or beyond ``MAX_SCHEDULE``,
    are refused before anything is allocated for them, so the work stays
    proportional to the size of the file.
    """
    bounds = np.unique(np.concatenate([r0, r1]))
    if bounds[0] != 0 or bounds[-1] != m:
        bad(f"the blocks cover rows [{bounds[0]}, {bounds[-1]}), not [0, {m})")
    lo = np.searchsorted(bounds, r0)
    hi = np.searchsorted(bounds, r1)
    n_seg = bounds.size - 1
    col_bounds = np.unique(np.concatenate([c0, c1]))
    for what, size, extent in (("row", int(np.sum(hi - lo)), m),
                               ("column", int(np.sum(np.searchsorted(col_bounds, c1)
                                                     - np.searchsorted(col_bounds, c0))), n)):
        limit = min(MAX_SCHEDULE, SCHEDULE_PER_ITEM * (r0.size + extent))
        if size > limit:
            bad(f"the blocks make a {what} schedule of {size} entries, more than "
                f"{limit} (at most {SCHEDULE_PER_ITEM} per block and {what}, and "
                f"{MAX_SCHEDULE} in all): refused, no H-matrix needs so many")
    width = np.zeros(n_seg + 1, np.int64)
    np.add.at(width, lo, c1 - c0)
    np.add.at(width, hi, -(c1 - c0))
    width = np.cumsum(width[:-1])
    wrong = np.flatnonzero(width != n)
    if wrong.size:
        s = int(wrong[0])
        bad(f"rows [{bounds[s]}, {bounds[s + 1]}) are covered by blocks {width[s]} columns "
            f"wide in total, expected {n} (blocks overlap or leave gaps)")
    count = np.cumsum(np.bincount(lo, minlength=n_seg + 1) - np.bincount(hi, minlength=n_seg + 1))
    csum = np.cumsum(count[:-1])
    s = 0
    while s < n_seg:
        base = int(csum[s - 1]) if s else 0
        e = min(max(int(np.searchsorted(csum, base + _TILING_CHUNK, side="right")), s + 1),
                n_seg)
        sel = np.flatnonzero((lo < e) & (hi > s))
        first = np.maximum(lo[sel], s)
        k = np.minimum(hi[sel], e) - first
        blk = np.repeat(sel, k)
        seg = np.repeat(first - (np.cumsum(k) - k), k) + np.arange(blk.size)
        order = np.lexsort((c0[blk], seg))
        seg = seg[order]
        blk = blk[order]
        prev_stop = np.empty(blk.size, np.int64)
        prev_stop[0] = 0
        prev_stop[1:] = c1[blk[:-1]]
        prev_stop[np.flatnonzero(seg[1:] != seg[:-1]) + 1] = 0
        wrong = np.flatnonzero(c0[blk] != prev_stop)
        if wrong.size:
            i = int(wrong[0])
            g = int(seg[i])
            b = int(blk[i])
            bad(f"in rows [{bounds[g]}, {bounds[g + 1]}) block {b} starts at column {c0[b]} "
                f"where the previous block ends at {prev_stop[i]} (blocks overlap or leave "
                f"gaps)")
        s = e
