"""The adaptive, error-bounded construction.

Given an entry source (a dense matrix or a kernel on points) and two cluster
trees, :func:`build` returns the flat arrays of an H-matrix (DESIGN section 4).
It works round by round: every candidate block of the round is approximated in
one parallel numba call (:func:`hmnumba.kernels.cpu.compress_blocks`);
a candidate is accepted if its rank ``k`` meets the block's error budget with
``k * (m + n) < m * n`` (it saves storage) and ``k <= max_rank``; otherwise it is
split into its children, which are tried in the next round. Pairs of leaf
clusters that fail are stored dense. At the end, a refined block whose
children all ended up dense is stored as one dense block again (less
metadata, faster products), so an incompressible matrix costs no more than
dense.

Error budget
------------
``budget="block"`` gives each block ``err_b <= tol * ||A_b||_F``; then
``sum_b err_b^2 <= tol^2 sum_b ||A_b||_F^2 = tol^2 ||A||_F^2``.
``budget="size"`` gives ``err_b <= tol * ||A||_F * sqrt(m_b n_b / (M N))``;
again ``sum_b err_b^2 <= tol^2 ||A||_F^2`` because the blocks tile the matrix.
The size split lets large far-field blocks of small norm use more of the
absolute budget, and stores less for the same global bound. For dense input
the block norms and errors are exact, so ``||A - H||_F <= tol ||A||_F`` holds
always; for kernels they are ACA estimates (and ``||A||_F`` for the size split
is estimated from sampled rows).
"""
import time

import numpy as np
from threadpoolctl import threadpool_limits

from hmnumba.blocks import initial_partition, split_pairs
from hmnumba.kernels import cpu

BUDGETS = ("block", "size")
METHODS = {"aca": cpu.METHOD_ACA, "svd": cpu.METHOD_SVD, "rsvd": cpu.METHOD_RSVD}

# Room (in stored numbers) of the scratch that one parallel call writes into;
# blocks needing more rank than their share are retried with more room.
SCRATCH_ITEMS = 1 << 25
INITIAL_RANK_ROOM = 32


def build(src, exact, row_tree, col_tree, dtype, tol, admissibility="adaptive", eta=2.0,
          method="aca", max_rank=None, budget="block", norm_estimate=None, seed=0):
    """Build the packed arrays of an H-matrix; see the module docstring.

    Parameters
    ----------
    src : ndarray or tuple
        Entry source in cluster order (see :mod:`hmnumba.kernels.cpu`).
    exact : bool
        True for dense sources: block norms and errors are computed exactly.
    row_tree, col_tree : ClusterTree
    dtype : numpy dtype
        Storage dtype (float32 or float64).
    tol : float
        Relative Frobenius tolerance.
    norm_estimate : float or None
        ``||A||_F`` (required for ``budget="size"``).

    Returns
    -------
    dict of flat arrays and build statistics.
    """
    t_start = time.perf_counter()
    m_total = row_tree.size
    n_total = col_tree.size
    code = METHODS[method]
    t_node, s_node, cand = initial_partition(row_tree, col_tree, admissibility, eta)

    # Every attempted pair is a node of the "attempt tree" (for coarsening).
    att_row = [t_node[cand]]
    att_col = [s_node[cand]]
    att_parent = [np.full(int(cand.sum()), -1, np.int64)]
    n_att = int(cand.sum())
    dense_row = [t_node[~cand]]
    dense_col = [s_node[~cand]]
    dense_parent = [np.full(int((~cand).sum()), -1, np.int64)]

    cur_id = np.arange(n_att, dtype=np.int64)
    cur_row = t_node[cand]
    cur_col = s_node[cand]
    cur_room = None
    accepted = []  # (attempt ids, ranks, err2, norm2, factor array, offsets in it)
    refined_ids = []
    n_rounds = 0
    total_rows = float(m_total) * float(n_total)
    with threadpool_limits(limits=1, user_api="blas"):
        while cur_id.size:
            n_rounds += 1
            r0 = row_tree.start[cur_row]
            r1 = row_tree.stop[cur_row]
            c0 = col_tree.start[cur_col]
            c1 = col_tree.stop[cur_col]
            mb = r1 - r0
            nb = c1 - c0
            kmax_final = (mb * nb - 1) // (mb + nb)  # k (m + n) < m n: saves storage
            if max_rank is not None:
                kmax_final = np.minimum(kmax_final, max_rank)
            room = np.minimum(kmax_final, INITIAL_RANK_ROOM if cur_room is None else cur_room)
            if budget == "size":
                rel_tol = 0.0
                abs_tol = tol * norm_estimate * np.sqrt(mb * nb / total_rows)
            else:
                rel_tol = tol
                abs_tol = np.zeros(cur_id.size)
            status = np.empty(cur_id.size, np.int64)
            rank = np.empty(cur_id.size, np.int64)
            err2 = np.empty(cur_id.size)
            norm2 = np.empty(cur_id.size)
            need = (room + 1) * (mb + nb)
            for lo, hi in _chunks(need, SCRATCH_ITEMS):
                off = np.zeros(hi - lo, np.int64)
                np.cumsum(need[lo:hi - 1], out=off[1:])
                scratch = np.empty(int(off[-1] + need[hi - 1]), dtype)
                sl = slice(lo, hi)
                cpu.compress_blocks(src, exact, r0[sl], r1[sl], c0[sl], c1[sl], rel_tol,
                                    np.ascontiguousarray(abs_tol[sl], dtype=np.float64), code,
                                    room[sl], kmax_final[sl], seed + lo, scratch, off,
                                    status[sl], rank[sl], err2[sl], norm2[sl])
                ok = np.flatnonzero(status[sl] == cpu.STATUS_ACCEPTED)
                sizes = rank[sl][ok] * (mb[sl][ok] + nb[sl][ok])
                out_off = np.zeros(ok.size, np.int64)
                np.cumsum(sizes[:-1], out=out_off[1:])
                out = np.empty(int(sizes.sum()), dtype)
                cpu.gather_factors(scratch, off[ok], sizes, out, out_off)
                accepted.append((cur_id[sl][ok], rank[sl][ok], err2[sl][ok], norm2[sl][ok],
                                 out, out_off))
                del scratch
            retry = status == cpu.STATUS_RETRY
            refine = status == cpu.STATUS_REFINE
            refined_ids.append(cur_id[refine])
            ch_r, ch_c, ch_p, lf_r, lf_c, lf_p = split_pairs(row_tree, col_tree, cur_row[refine],
                                                             cur_col[refine])
            parent_ids = cur_id[refine]
            dense_row.append(lf_r)
            dense_col.append(lf_c)
            dense_parent.append(parent_ids[lf_p])
            new_ids = np.arange(n_att, n_att + ch_r.size, dtype=np.int64)
            n_att += ch_r.size
            att_row.append(ch_r)
            att_col.append(ch_c)
            att_parent.append(parent_ids[ch_p])
            new_room = np.maximum(2 * room[retry], rank[retry])
            cur_id = np.concatenate([cur_id[retry], new_ids])
            cur_row = np.concatenate([cur_row[retry], ch_r])
            cur_col = np.concatenate([cur_col[retry], ch_c])
            cur_room = np.concatenate([new_room, np.full(ch_r.size, INITIAL_RANK_ROOM)])

        att_row = np.concatenate(att_row)
        att_col = np.concatenate(att_col)
        att_parent = np.concatenate(att_parent)
        dense_row = np.concatenate(dense_row)
        dense_col = np.concatenate(dense_col)
        dense_parent = np.concatenate(dense_parent)
        lr_ids = np.concatenate([a[0] for a in accepted]) if accepted else np.zeros(0, np.int64)
        dense_row, dense_col = _coarsen(att_row, att_col, att_parent, lr_ids,
                                        np.concatenate(refined_ids) if refined_ids else
                                        np.zeros(0, np.int64), dense_row, dense_col, dense_parent)
        arrays = _pack(src, row_tree, col_tree, dtype, accepted, att_row, att_col,
                       dense_row, dense_col)
    arrays["n_rounds"] = n_rounds
    arrays["build_seconds"] = time.perf_counter() - t_start
    return arrays


def _chunks(need, limit):
    """Consecutive index ranges whose summed ``need`` stays below ``limit``
    (a single block larger than ``limit`` gets a range of its own)."""
    n = need.size
    bounds = [0]
    acc = 0
    csum = np.cumsum(need)
    while bounds[-1] < n:
        lo = bounds[-1]
        base = csum[lo - 1] if lo else 0
        hi = int(np.searchsorted(csum, base + limit, side="right"))
        hi = max(hi, lo + 1)
        bounds.append(min(hi, n))
        acc += 1
    return list(zip(bounds[:-1], bounds[1:]))


def _coarsen(att_row, att_col, att_parent, lr_ids, refined_ids, dense_row, dense_col,
             dense_parent):
    """Store a refined block as one dense block when all its descendants are dense."""
    n_att = att_row.size
    if refined_ids.size == 0:
        return dense_row, dense_col
    is_dense_att = np.zeros(n_att, bool)      # attempts that ended up (coarsened) dense
    n_children = np.bincount(att_parent[att_parent >= 0], minlength=n_att)
    n_children += np.bincount(dense_parent[dense_parent >= 0], minlength=n_att)
    dense_children = np.bincount(dense_parent[dense_parent >= 0], minlength=n_att)
    has_lr = np.zeros(n_att, bool)
    has_lr[lr_ids] = True
    # Children have larger ids than their parents: one pass from the back.
    refined = np.zeros(n_att, bool)
    refined[refined_ids] = True
    for a in range(n_att - 1, -1, -1):
        if refined[a] and n_children[a] > 0 and dense_children[a] == n_children[a]:
            is_dense_att[a] = True
            p = att_parent[a]
            if p >= 0:
                dense_children[p] += 1
    # Keep a dense block unless an ancestor became dense.
    covered = np.zeros(n_att, bool)   # attempt lies under a coarsened dense attempt
    for a in range(n_att):
        p = att_parent[a]
        if p >= 0 and (covered[p] or is_dense_att[p]):
            covered[a] = True
    keep = np.array([p < 0 or not (covered[p] or is_dense_att[p]) for p in dense_parent], bool)
    top = np.flatnonzero(is_dense_att & ~covered)
    return (np.concatenate([dense_row[keep], att_row[top]]),
            np.concatenate([dense_col[keep], att_col[top]]))


def _pack(src, row_tree, col_tree, dtype, accepted, att_row, att_col, dense_row, dense_col):
    """Order all blocks by (row start, column start), lay out ``data``, fill it."""
    lr_ids = np.concatenate([a[0] for a in accepted]) if accepted else np.zeros(0, np.int64)
    lr_rank = np.concatenate([a[1] for a in accepted]) if accepted else np.zeros(0, np.int64)
    lr_err2 = np.concatenate([a[2] for a in accepted]) if accepted else np.zeros(0)
    lr_norm2 = np.concatenate([a[3] for a in accepted]) if accepted else np.zeros(0)
    rows = np.concatenate([att_row[lr_ids], dense_row])
    cols = np.concatenate([att_col[lr_ids], dense_col])
    rank = np.concatenate([lr_rank, np.full(dense_row.size, -1, np.int64)])
    r0 = row_tree.start[rows]
    r1 = row_tree.stop[rows]
    c0 = col_tree.start[cols]
    c1 = col_tree.stop[cols]
    order = np.lexsort((c0, r0))
    r0, r1, c0, c1, rank = r0[order], r1[order], c0[order], c1[order], rank[order]
    sizes = np.where(rank < 0, (r1 - r0) * (c1 - c0), np.maximum(rank, 0) * ((r1 - r0) + (c1 - c0)))
    offset = np.zeros(rank.size, np.int64)
    np.cumsum(sizes[:-1], out=offset[1:])
    data = np.empty(int(sizes.sum()), dtype)
    where = np.empty(rank.size, np.int64)
    where[order] = np.arange(rank.size)   # position of each unsorted block
    pos = 0
    for ids, rk, e2, n2, out, out_off in accepted:
        k = ids.size
        dest = offset[where[pos:pos + k]]
        cpu.gather_factors(out, out_off, rk * ((row_tree.stop[att_row[ids]] - row_tree.start[att_row[ids]])
                                                + (col_tree.stop[att_col[ids]] - col_tree.start[att_col[ids]])),
                           data, dest)
        pos += k
    dense_pos = where[lr_ids.size:]
    dense_norm2 = cpu.fill_dense_blocks(src, r0[dense_pos], r1[dense_pos], c0[dense_pos],
                                        c1[dense_pos], offset[dense_pos], data)
    err2 = np.zeros(rank.size)
    norm2 = np.zeros(rank.size)
    err2[where[:lr_ids.size]] = lr_err2
    norm2[where[:lr_ids.size]] = lr_norm2
    norm2[dense_pos] = dense_norm2
    return dict(row_start=r0, row_stop=r1, col_start=c0, col_stop=c1, rank=rank,
                offset=offset, data=data, block_err2=err2, block_norm2=norm2)


def row_schedule(start, stop):
    """CSR schedule: the output segments and, for each, the blocks covering it.

    Segments are the intervals between consecutive block boundaries, so each
    lies inside the row range of every block that touches it; each segment is
    owned by one thread in the products (no races, no atomics).

    Returns ``(seg_bounds, sched_ptr, sched_block)``.
    """
    bounds = np.unique(np.concatenate([start, stop]))
    lo = np.searchsorted(bounds, start)
    hi = np.searchsorted(bounds, stop)
    counts = hi - lo
    block = np.repeat(np.arange(start.size, dtype=np.int64), counts)
    first = np.repeat(lo - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    seg = first + np.arange(block.size)
    order = np.lexsort((block, seg))
    ptr = np.zeros(bounds.size, np.int64)
    np.cumsum(np.bincount(seg, minlength=bounds.size - 1), out=ptr[1:])
    return bounds.astype(np.int64), ptr, block[order]
