"""The kernel-matrix build of the CUDA backend (``HMatrix.from_kernel(...,
backend="cuda")``).

The same refine-or-accept rounds as :func:`hmnumba.construct.build` for
kernel sources (same rank limits, error budgets and rank room), with the
low-rank candidates of each round compressed by batched ACA on the device
(:class:`hmnumba.kernels.compress_cuda.DeviceACA`: one thread block per candidate,
recompression on the host). Pairs of leaf clusters are evaluated densely on
the host, as the near field is a small part of the work. Refined blocks are
not coarsened back (the CPU build's ``_coarsen``): under strong
admissibility refinement is rare.

Block errors are ACA estimates followed by exact recompression tails, as on
the CPU; ``HMatrix.estimate_error`` checks them by probing.
"""
import time

import numpy as np

from hmnumba._threads import one_blas_thread
from hmnumba.blocks import initial_partition, split_pairs
from hmnumba.construct import (ACCEPT_FRACTION, BIG_BLOCK, INITIAL_RANK_ROOM, SCRATCH_ITEMS,
                               _chunks, child_shares, initial_shares)
from hmnumba.kernels import codes, compress, sources


def build_kernel(src, row_tree, col_tree, tol, admissibility="strong", eta=2.0, max_rank=None,
                 budget="block", norm_estimate=None):
    """Packed float64 arrays of the H-matrix of a built-in kernel, compressed
    on the device; the dict that :func:`hmnumba.construct.build` returns.

    Parameters
    ----------
    src : tuple
        Built-in kernel source ``(code, length_scale, XT, YT)`` in cluster order.
    row_tree, col_tree : ClusterTree
    tol : float
    admissibility, eta, max_rank, budget, norm_estimate
        As for :func:`hmnumba.construct.build`.
    """
    from hmnumba.kernels.compress_cuda import DeviceACA

    t_start = time.perf_counter()
    aca = DeviceACA(src)
    full = initial_partition(row_tree, col_tree, admissibility, eta)
    t_node, s_node, cand = full
    cur_row, cur_col = t_node[cand], s_node[cand]
    cur_share = None
    if budget != "block":
        cur_share = initial_shares(budget, tol, norm_estimate, row_tree, col_tree, full,
                                   cur_row, cur_col)
    cur_room = np.full(cur_row.size, INITIAL_RANK_ROOM, np.int64)
    dense_row, dense_col = [t_node[~cand]], [s_node[~cand]]
    lr = {"row": [], "col": [], "rank": [], "err2": [], "norm2": [], "factors": []}
    n_rounds = 0
    with one_blas_thread():
        while cur_row.size:
            n_rounds += 1
            r0, r1 = row_tree.start[cur_row], row_tree.stop[cur_row]
            c0, c1 = col_tree.start[cur_col], col_tree.stop[cur_col]
            mb, nb = r1 - r0, c1 - c0
            kmax_final = (mb * nb - 1) // (mb + nb)
            big = (mb * nb > BIG_BLOCK) & (admissibility != "strong")
            kmax_final[big] = np.maximum(kmax_final[big] * ACCEPT_FRACTION, 1).astype(np.int64)
            if max_rank is not None:
                kmax_final = np.minimum(kmax_final, max_rank)
            room = np.minimum(kmax_final, cur_room)
            if budget != "block":
                rel_tol, abs_tol = 0.0, np.sqrt(cur_share)
            else:
                rel_tol, abs_tol = tol, np.zeros(cur_row.size)
            abs_tol = np.ascontiguousarray(abs_tol, dtype=np.float64)
            status = np.empty(cur_row.size, np.int64)
            rank = np.empty(cur_row.size, np.int64)
            err2 = np.empty(cur_row.size)
            norm2 = np.empty(cur_row.size)
            out_off = np.empty(cur_row.size, np.int64)
            need = room * (mb + nb)
            # One chunk's ACA factors are on the device at a time.
            for lo, hi in _chunks(need, SCRATCH_ITEMS):
                sl = slice(lo, hi)
                store = np.empty(max(int(need[sl].sum()), 1))
                aca(src, False, r0[sl], r1[sl], c0[sl], c1[sl], rel_tol, abs_tol[sl], 0,
                    room[sl], kmax_final[sl], 0, store, None, out_off[sl], status[sl],
                    rank[sl], err2[sl], norm2[sl])
                ok = np.flatnonzero(status[sl] == codes.STATUS_ACCEPTED) + lo
                sizes = rank[ok] * (mb[ok] + nb[ok])
                packed = np.empty(int(sizes.sum()))
                compress.gather_factors(store, out_off[ok], sizes, packed,
                                   np.cumsum(sizes) - sizes)
                for key, value in (("row", cur_row[ok]), ("col", cur_col[ok]),
                                   ("rank", rank[ok]), ("err2", err2[ok]),
                                   ("norm2", norm2[ok]), ("factors", packed)):
                    lr[key].append(value)
            retry = status == codes.STATUS_RETRY
            refine = status == codes.STATUS_REFINE
            ch_r, ch_c, ch_p, lf_r, lf_c, _ = split_pairs(row_tree, col_tree, cur_row[refine],
                                                       cur_col[refine])
            dense_row.append(lf_r)
            dense_col.append(lf_c)
            cur_room = np.concatenate([np.maximum(2 * room[retry], rank[retry]),
                                       np.full(ch_r.size, INITIAL_RANK_ROOM, np.int64)])
            if cur_share is not None:
                cur_share = np.concatenate([
                    cur_share[retry],
                    child_shares(budget, cur_share[refine], ch_p,
                                 row_tree.stop[ch_r] - row_tree.start[ch_r],
                                 col_tree.stop[ch_c] - col_tree.start[ch_c])])
            cur_row = np.concatenate([cur_row[retry], ch_r])
            cur_col = np.concatenate([cur_col[retry], ch_c])
        arrays = _pack(src, row_tree, col_tree, lr, np.concatenate(dense_row),
                       np.concatenate(dense_col))
    arrays["n_rounds"] = n_rounds
    arrays["build_seconds"] = time.perf_counter() - t_start
    return arrays


def _pack(src, row_tree, col_tree, lr, dense_row, dense_col):
    """``data`` = the low-rank factors, then the dense blocks (filled on the
    host); block arrays sorted by (row start, column start)."""
    cat = {key: (np.concatenate(val) if val else np.zeros(0, np.int64 if key in
                                                           ("row", "col", "rank") else float))
           for key, val in lr.items()}
    rows = np.concatenate([cat["row"], dense_row])
    cols = np.concatenate([cat["col"], dense_col])
    r0, r1 = row_tree.start[rows], row_tree.stop[rows]
    c0, c1 = col_tree.start[cols], col_tree.stop[cols]
    n_lr = cat["rank"].size
    sizes = np.concatenate([cat["rank"] * ((r1 - r0)[:n_lr] + (c1 - c0)[:n_lr]),
                            (r1 - r0)[n_lr:] * (c1 - c0)[n_lr:]])
    offset = np.cumsum(sizes) - sizes
    data = np.empty(int(sizes.sum()))
    data[:cat["factors"].size] = cat["factors"]
    dense_norm2 = sources.fill_dense_blocks(src, r0[n_lr:], r1[n_lr:], c0[n_lr:], c1[n_lr:],
                                        offset[n_lr:], data)
    rank = np.concatenate([cat["rank"], np.full(dense_row.size, -1, np.int64)])
    err2 = np.concatenate([cat["err2"], np.zeros(dense_row.size)])
    norm2 = np.concatenate([cat["norm2"], dense_norm2])
    order = np.lexsort((c0, r0))
    return dict(row_start=r0[order], row_stop=r1[order], col_start=c0[order],
                col_stop=c1[order], rank=rank[order], offset=offset[order], data=data,
                block_err2=err2[order], block_norm2=norm2[order])
