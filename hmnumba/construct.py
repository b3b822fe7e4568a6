"""The adaptive, error-bounded construction.

Given an entry source (a dense matrix or a kernel on points) and two cluster
trees, :func:`build` returns the flat arrays of an H-matrix (DESIGN section 4)
as one storage value (:class:`hmnumba.storage.Packed`, or
:class:`~hmnumba.storage.SymmetricPacked` for a symmetric build), so this
module never imports :mod:`hmnumba.hmatrix`.
It works round by round: every candidate block of the round is approximated in
one parallel numba call (:func:`hmnumba.kernels.compress.compress_blocks`);
a candidate is accepted if its rank ``k`` meets the block's error budget with
``k * (m + n) < m * n`` (it saves storage) and ``k <= max_rank``; otherwise it is
split into its children, which are tried in the next round. Pairs of leaf
clusters that fail are stored dense. Under weak and adaptive admissibility, a
block accepted with little compression (ratio below ``LOOKAHEAD_RATIO``) has
its children tried too, and the cheaper representation is kept: storage is
then the minimum over the explored tree. At the end, a refined block whose
children all ended up dense is stored as one dense block again (less
metadata, faster products), so an incompressible matrix costs no more than
dense.

One loop, three chunk strategies
--------------------------------
Every backend runs this same loop (rounds, rank room and retries, error
budgets, look-ahead, coarsening, symmetric storage). Only the compression of
a round's candidates differs, and it is a *chunk strategy* with one method,
``map(blocks, need, rel_tol, code, seed)``, that yields each chunk's result
in order: ``_LocalChunks`` (numba threads here), ``_JoblibChunks``
(``n_jobs``: joblib or Dask workers) and ``_DeviceChunks`` (``backend="cuda"``:
batched ACA on the GPU, :class:`hmnumba.kernels.compress_cuda.DeviceACA`).
Every pair the loop tries is a node of one attempt tree
(:class:`_AttemptTree`, finished as the flat arrays of :class:`_Attempts`);
look-ahead's choice (:func:`_choose_cheaper`) and the coarsening
(:func:`_coarsen`) are passes over it whose per-attempt loops run in numba
(:mod:`hmnumba.kernels.trees`). The final packing of the result is
:func:`_pack`.

Error budget
------------
``budget="block"`` gives each block ``err_b <= tol * ||A_b||_F``; then
``sum_b err_b^2 <= tol^2 sum_b ||A_b||_F^2 = tol^2 ||A||_F^2``.
The weighted splits give a candidate of weight ``w_b`` the allowance
``err_b^2 <= (tol ||A||_F)^2 w_b / W``, ``W`` the total weight of the first
round's candidates (blocks stored dense from the start have no error and take
no share); a refined block's allowance is split over its children in
proportion to their weights, so ``sum_b err_b^2 <= tol^2 ||A||_F^2`` holds
after any refinement. ``budget="size"`` weighs a block by its area ``m_b n_b``
(large far-field blocks of small norm get more of the absolute budget);
``budget="perimeter"`` by ``m_b + n_b``, the split that minimises storage when
every block's singular values decay at one geometric rate (Lagrange: a rank
costs ``m_b + n_b`` numbers and buys the same factor of error everywhere).
For dense input the block norms and errors are exact, so
``||A - H||_F <= tol ||A||_F`` holds always; for kernels they are ACA
estimates (and ``||A||_F`` for the weighted splits is estimated from sampled
rows).

Symmetric builds
----------------
With ``symmetric=True`` (a symmetric source on one cluster tree) only the
upper block triangle is built: the diagonal pairs and the pairs whose row
cluster comes first. A strictly upper block stands for its mirror image too,
so it counts twice in the weighted budgets; the block split needs no change
(``err_b <= tol ||A_b||_F`` holds for the mirror as well). Diagonal blocks
are refined down to dense leaves (or stored dense whole, by coarsening), so
the result equals its transpose exactly.
"""
import contextlib
import logging
import mmap
import sys
import time
from typing import NamedTuple

import numba
import numpy as np

from hmnumba._pages import with_small_pages
from hmnumba._threads import one_blas_thread
from hmnumba.blocks import initial_partition, split_pairs, stored_numbers
from hmnumba.kernels import codes, compress, factors, sources, trees
from hmnumba.storage import Packed, SymmetricPacked

# One INFO line per round of the build: the progress of a long build
# (``logging.getLogger("hmnumba").setLevel(logging.INFO)`` with a handler).
logger = logging.getLogger(__name__)

BUDGETS = ("block", "size", "perimeter")
METHODS = {"aca": codes.METHOD_ACA, "svd": codes.METHOD_SVD, "rsvd": codes.METHOD_RSVD}

# Rank room given to a candidate in its first round; a block needing more
# (but still saving storage) is retried with more room.
INITIAL_RANK_ROOM = 64
# Under weak and adaptive admissibility a large block is accepted as low rank
# only if it stores at most this fraction of its dense size; otherwise it is
# refined. Measured on a permuted 4096 x 4096 Laplace matrix (tol 1e-4):
# fraction 1 (plain break-even) gives ratio 3.0 in 33 s, 0.5 gives 4.1 in
# 13 s, 0.125 gives 4.9 in 7.5 s: the four children of a block near the
# break-even store less than it, and finding out that a large block needs
# such a rank dominates the build (partial ACA to rank k costs O(k^2 (m+n))).
# Strong admissibility pre-selects far-field blocks of small rank; there the
# plain break-even stores less (2.10 vs 2.18 GB for the N=40,000 cube).
ACCEPT_FRACTION = 0.125
BIG_BLOCK = 256 * 256
# Look-ahead (weak and adaptive admissibility): a block accepted with a
# compression ratio m n / (k (m + n)) below this is accepted *tentatively*:
# its children are compressed as well, and at the end the cheaper of the two
# representations is kept (see _choose_cheaper). Without it, a 4096 x 4096
# weight-like operator whose global rank (201 at tol 1e-3) fits under the
# break-even is stored as one low-rank block. Measured with
# HMatrix.from_dense(W, tol=1e-3, random_state=0), W = 1 / (1 + 10 |s_i - t_j|)
# plus 1e-4 relative Gaussian noise, s, t = default_rng(0).random(4096) in that
# order: ratio 10.1 without look-ahead, 77 with LOOKAHEAD_RATIO 8, 80 with 32
# (build time +15% for 32 over 8).
LOOKAHEAD_RATIO = 32.0
# Slabs per thread in compress_blocks (load balance against slab overhead).
SLABS_PER_THREAD = 16
# Items of the reused scratch one parallel call writes into (256 MB of float64).
SCRATCH_ITEMS = 1 << 25
# With n_jobs, a round is cut into about this many tasks per worker (load
# balance), each of at least MIN_TASK_ITEMS items of rank room (one task then
# holds milliseconds of work, so scheduling, ~1 ms per task, stays amortised).
TASKS_PER_WORKER = 4
MIN_TASK_ITEMS = 1 << 18


class Built(NamedTuple):
    """What :func:`build` returns: the storage value and two statistics."""

    storage: Packed
    n_rounds: int
    build_seconds: float


@with_small_pages     # the stored numbers go to fresh memory (hmnumba._pages)
def build(src, exact, row_tree, col_tree, dtype, tol, admissibility="adaptive", eta=2.0,
          method="aca", max_rank=None, budget="block", norm_estimate=None, seed=0,
          n_jobs=None, initial=None, symmetric=False, backend="cpu"):
    """Build the packed arrays of an H-matrix; see the module docstring.

    Parameters
    ----------
    src : ndarray or tuple
        Entry source in cluster order (see :mod:`hmnumba.kernels.sources`);
        an ndarray is read as :func:`~hmnumba.kernels.sources.dense_source`.
    exact : bool
        True for dense sources: block norms and errors are computed exactly.
    row_tree, col_tree : ClusterTree
    dtype : numpy dtype
        Storage dtype (float32 or float64).
    tol : float
        Relative Frobenius tolerance.
    norm_estimate : float or None
        ``||A||_F`` (required for ``budget="size"``).
    n_jobs : int or None
        None: each round runs in this process (numba threads). Otherwise the
        round's candidates are cut into chunks compressed by ``joblib.Parallel``
        workers (any joblib backend, e.g. ``"dask"``); the result is the same
        bits, because a block's outcome depends only on the block and on its
        seed ``seed + position in the round``.
    initial : tuple or None
        ``(row_node, col_node, candidate)`` to start from instead of
        :func:`~hmnumba.blocks.initial_partition`: a subset of it whose rows
        form a range builds those rows of the matrix, the same blocks as the
        whole build has there (see :mod:`hmnumba.distributed`).
    symmetric : bool
        The source is symmetric (``row_tree is col_tree``): only the upper
        block triangle is built (see :func:`upper_pairs`), and each strictly
        upper block counts twice in the error budget, for its mirror image.
    backend : {"cpu", "cuda"}
        ``"cuda"``: the candidates are compressed by batched ACA on the
        device (built-in kernel sources only, ``n_jobs`` unused); the rounds,
        look-ahead, coarsening and symmetric storage are this same loop's.

    Returns
    -------
    Built
        ``(storage, n_rounds, build_seconds)``: the packed arrays as one
        :class:`hmnumba.storage.Packed` (a
        :class:`~hmnumba.storage.SymmetricPacked` for ``symmetric``), over
        the trees' permutations, with the number of refinement rounds and
        the seconds the build took.
    """
    t_start = time.perf_counter()
    if isinstance(src, np.ndarray):
        src = sources.dense_source(src)
    code = METHODS[method]
    if symmetric and row_tree is not col_tree:
        raise ValueError("a symmetric build needs one cluster tree for rows and columns")
    (t_node, s_node, cand), full = _first_partition(row_tree, col_tree, admissibility, eta,
                                                    budget, initial, symmetric)
    tree = _AttemptTree(row_tree, col_tree, symmetric, t_node[~cand], s_node[~cand])
    rows, cols = t_node[cand], s_node[cand]
    share = None   # squared absolute allowance of each candidate (weighted splits)
    if budget != "block":
        share = initial_shares(budget, tol, norm_estimate, row_tree, col_tree, full, rows, cols,
                               symmetric)
    cur = _Candidates(tree.add(rows, cols, np.full(rows.size, -1, np.int64)), rows, cols,
                      np.full(rows.size, INITIAL_RANK_ROOM, np.int64), share)
    # Memory: on a VM the first touch of a fresh page, not the arithmetic,
    # dominates the cost of writing gigabytes (0.4-2.5 GB/s measured here).
    # So candidates are compressed chunk by chunk into one reused scratch,
    # and each chunk's accepted factors are appended densely to ``out``,
    # which becomes ``data``: the stored numbers are written to fresh memory
    # exactly once.
    dense_known = tree.dense_items()
    out = None
    n_rounds = 0
    pool = _chunk_strategy(backend, n_jobs)(src, exact, dtype, n_jobs)
    with one_blas_thread(), pool:
        while cur.id.size:
            n_rounds += 1
            r0, r1 = row_tree.start[cur.row], row_tree.stop[cur.row]
            c0, c1 = col_tree.start[cur.col], col_tree.stop[cur.col]
            mb, nb = r1 - r0, c1 - c0
            kmax_final = _rank_limit(mb, nb, admissibility, max_rank,
                                     (cur.row == cur.col) if symmetric else None)
            # Dense input is at most m*n numbers: room for the largest useful
            # rank costs only address space and avoids retries.
            room = kmax_final if exact else np.minimum(kmax_final, cur.room)
            if budget == "block":
                rel_tol, abs_tol = tol, np.zeros(cur.id.size)
            else:
                rel_tol, abs_tol = 0.0, np.sqrt(cur.share)
            need = room * (mb + nb)
            if out is None:
                out = _Output(dtype, int(need.sum()) + dense_known)
            blocks = (r0, r1, c0, c1, np.ascontiguousarray(abs_tol, dtype=np.float64), room,
                      kmax_final)
            status, rank = _compress_round(pool, tree, out, cur.id, blocks, need, rel_tol, code,
                                           seed)
            retry = status == codes.STATUS_RETRY
            refine = status == codes.STATUS_REFINE
            # Look-ahead (see LOOKAHEAD_RATIO): a poorly compressed block's
            # children are tried too.
            tentative = ((status == codes.STATUS_ACCEPTED) & (admissibility != "strong")
                         & ((row_tree.children[cur.row, 0] >= 0)
                            | (col_tree.children[cur.col, 0] >= 0))
                         & (LOOKAHEAD_RATIO * rank * (mb + nb) > mb * nb))
            if logger.isEnabledFor(logging.INFO):
                logger.info("build round %d: %d candidates, %d accepted, %d refined, %d retried "
                            "with more rank room (%.2f s so far)", n_rounds, cur.id.size,
                            int(np.count_nonzero(status == codes.STATUS_ACCEPTED)),
                            int(refine.sum()), int(retry.sum()), time.perf_counter() - t_start)
            expand = refine | tentative
            ch_id, ch_r, ch_c, ch_p = tree.expand(cur.id[expand], cur.row[expand],
                                                  cur.col[expand], cur.id[refine],
                                                  cur.id[tentative])
            if share is not None:
                share = np.concatenate([
                    cur.share[retry],
                    child_shares(budget, cur.share[expand], ch_p, _sizes(row_tree, ch_r),
                                 _sizes(col_tree, ch_c),
                                 _multiplicity(ch_r, ch_c) if symmetric else None)])
            cur = _Candidates(np.concatenate([cur.id[retry], ch_id]),
                              np.concatenate([cur.row[retry], ch_r]),
                              np.concatenate([cur.col[retry], ch_c]),
                              np.concatenate([np.maximum(2 * room[retry], rank[retry]),
                                              np.full(ch_r.size, INITIAL_RANK_ROOM)]),
                              share)
        if out is None:   # no candidates at all (e.g. a weak partition of one leaf)
            out = _Output(dtype, dense_known)
        att = tree.finish()
        if att.tentative.size:
            att, out = _choose_cheaper(att, row_tree, col_tree, out)
        arrays = _pack(src, row_tree, col_tree, out, _coarsen(att))
    kind = SymmetricPacked if symmetric else Packed
    storage = kind._trusted(shape=(row_tree.size, col_tree.size), row_perm=row_tree.perm,
                            col_perm=col_tree.perm, **arrays)
    return Built(storage, n_rounds, time.perf_counter() - t_start)


def _first_partition(row_tree, col_tree, admissibility, eta, budget, initial, symmetric):
    """The first round's pairs ``(row_node, col_node, candidate)``: ``initial``,
    or the whole initial partition (its upper triangle when ``symmetric``);
    and that whole partition where the weighted budgets need it to share out
    the error (None otherwise)."""
    full = None
    if initial is None or budget != "block":
        full = initial_partition(row_tree, col_tree, admissibility, eta)
        if symmetric:
            full = _upper_partition(row_tree, full)
    if initial is None:
        return full, full
    return (_upper_partition(row_tree, initial) if symmetric else initial), full


def _rank_limit(mb, nb, admissibility, max_rank, diagonal=None):
    """The largest rank at which each candidate ``mb x nb`` is accepted."""
    # k (m + n) < m n saves storage; ACCEPT_FRACTION asks for more of big
    # blocks (see its comment).
    kmax = (mb * nb - 1) // (mb + nb)
    big = (mb * nb > BIG_BLOCK) & (admissibility != "strong")
    kmax[big] = np.maximum(kmax[big] * ACCEPT_FRACTION, 1).astype(np.int64)
    if max_rank is not None:
        kmax = np.minimum(kmax, max_rank)
    if diagonal is not None:
        # A diagonal block is refined, never low rank: U V^T of a symmetric
        # block is not symmetric, and a symmetric H-matrix must equal its
        # transpose exactly (products use A^T = A).
        kmax[diagonal] = 0
    return kmax


def _compress_round(pool, tree, out, ids, blocks, need, rel_tol, code, seed):
    """Compress one round's candidates (attempts ``ids``) chunk by chunk with
    ``pool``: each chunk's accepted factors are appended to ``out`` and
    recorded in ``tree``. Returns the candidates' status and rank."""
    r0, r1, c0, c1 = blocks[:4]
    status = np.empty(ids.size, np.int64)
    rank = np.empty(ids.size, np.int64)
    # Chunks come back in order, so ``data`` is laid out the same way with or
    # without n_jobs.
    for lo, hi, (st, rk, err2, norm2, off, buf) in pool.map(blocks, need, rel_tol, code, seed):
        status[lo:hi], rank[lo:hi] = st, rk
        ok = np.flatnonzero(st == codes.STATUS_ACCEPTED)
        a = ok + lo
        dest = out.append(buf, off[ok], rank[a] * ((r1[a] - r0[a]) + (c1[a] - c0[a])))
        tree.accept(ids[a], rank[a], err2[ok], norm2[ok], dest)
    return status, rank


class _Candidates(NamedTuple):
    """The candidate blocks of one round: their attempt ids, cluster pairs,
    rank room, and (weighted budgets) squared error allowances."""

    id: np.ndarray
    row: np.ndarray
    col: np.ndarray
    room: np.ndarray
    share: np.ndarray | None


class _Attempts(NamedTuple):
    """The attempt tree of a finished build as flat arrays (:class:`_AttemptTree`)."""

    row: np.ndarray            # cluster pair of each attempt
    col: np.ndarray
    parent: np.ndarray         # the attempt it was split off, -1 in the first round
    dense_row: np.ndarray      # dense leaves: pairs of leaf clusters
    dense_col: np.ndarray
    dense_parent: np.ndarray
    refined: np.ndarray        # attempts split into their children
    tentative: np.ndarray      # attempts accepted and split as well (look-ahead)
    accepted: np.ndarray       # accepted attempts, in the order of their factors in data
    rank: np.ndarray           # per accepted attempt: its rank, err^2, ||A_b||^2 and
    err2: np.ndarray           # the offset of its factors in data
    norm2: np.ndarray
    offset: np.ndarray


class _AttemptTree:
    """The attempt tree of a build, recorded as it grows round by round.

    Every candidate pair tried is an *attempt*, numbered in the order tried,
    so an attempt's children come after it (the passes of
    :mod:`hmnumba.kernels.trees` rely on it). A pair of leaf clusters split
    off is a *dense leaf* below its attempt; those of the first partition
    hang below -1. Each round records the attempts it refined, those it
    accepted tentatively (look-ahead), and chunk by chunk those it accepted,
    with their rank, errors and offsets in ``data``; :meth:`finish` returns
    it all as one :class:`_Attempts`, for :func:`_choose_cheaper`,
    :func:`_coarsen` and :func:`_pack`.
    """

    def __init__(self, row_tree, col_tree, symmetric, dense_rows, dense_cols):
        self.row_tree, self.col_tree, self.symmetric = row_tree, col_tree, symmetric
        self.n = 0
        self._attempts, self._dense, self._split, self._accepted = [], [], [], []
        self._dense.append((dense_rows, dense_cols, np.full(dense_rows.size, -1, np.int64)))

    def add(self, rows, cols, parent):
        """Record new attempts (pairs ``rows, cols`` split off the attempts
        ``parent``); returns their ids."""
        ids = np.arange(self.n, self.n + rows.size, dtype=np.int64)
        self.n += rows.size
        self._attempts.append((rows, cols, parent))
        return ids

    def accept(self, ids, rank, err2, norm2, offset):
        """Record accepted attempts, their factors at ``offset`` in ``data``."""
        self._accepted.append((ids, rank, err2, norm2, offset))

    def dense_items(self):
        """Numbers stored by the dense leaves recorded so far."""
        rows, cols, _ = (np.concatenate(a) for a in zip(*self._dense))
        return int(np.sum(_sizes(self.row_tree, rows) * _sizes(self.col_tree, cols)))

    def expand(self, ids, rows, cols, refined, tentative):
        """Split the attempts ``ids`` (pairs ``rows, cols``; among them the
        ``refined`` and ``tentative`` ones) into their children: pairs of
        leaf clusters become dense leaves, the others new attempts.

        Returns ``(new ids, child rows, child cols, index in ids of each
        child's parent)``.
        """
        self._split.append((refined, tentative))
        ch_r, ch_c, ch_p, lf_r, lf_c, lf_p = split_pairs(self.row_tree, self.col_tree, rows, cols)
        if self.symmetric:  # a diagonal block's children below the diagonal are mirrors
            keep = upper_pairs(self.row_tree, ch_r, ch_c)
            ch_r, ch_c, ch_p = ch_r[keep], ch_c[keep], ch_p[keep]
            keep = upper_pairs(self.row_tree, lf_r, lf_c)
            lf_r, lf_c, lf_p = lf_r[keep], lf_c[keep], lf_p[keep]
        self._dense.append((lf_r, lf_c, ids[lf_p]))
        return self.add(ch_r, ch_c, ids[ch_p]), ch_r, ch_c, ch_p

    def finish(self):
        """Everything recorded, concatenated: an :class:`_Attempts`."""
        i8, f8 = np.int64, np.float64
        return _Attempts(*_concat_fields(self._attempts, (i8, i8, i8)),
                         *_concat_fields(self._dense, (i8, i8, i8)),
                         *_concat_fields(self._split, (i8, i8)),
                         *_concat_fields(self._accepted, (i8, i8, f8, f8, i8)))


def _concat_fields(records, dtypes):
    """Field by field, the concatenation of a list of tuples of arrays."""
    return [np.concatenate([r[i] for r in records] + [np.zeros(0, t)])
            for i, t in enumerate(dtypes)]


def upper_pairs(tree, rows, cols):
    """Mask of the cluster pairs a symmetric build stores: the diagonal ones
    (``row == col``) and the strictly upper ones (the row cluster starts
    first; pairs of a partition are then disjoint, so it lies wholly
    before the column cluster)."""
    return (rows == cols) | (tree.start[rows] < tree.start[cols])


def _multiplicity(rows, cols):
    """How often a stored block of a symmetric build occurs in the matrix."""
    return np.where(rows == cols, 1.0, 2.0)


def _upper_partition(tree, partition):
    t_node, s_node, cand = partition
    keep = upper_pairs(tree, t_node, s_node)
    return t_node[keep], s_node[keep], cand[keep]


def _sizes(tree, nodes):
    return tree.stop[nodes] - tree.start[nodes]


def budget_weights(budget, m, n):
    """A block's weight in a weighted split of the error budget: its area
    ``m n`` (``"size"``) or its perimeter ``m + n`` (``"perimeter"``)."""
    m = np.asarray(m, np.float64)
    n = np.asarray(n, np.float64)
    return m * n if budget == "size" else m + n


def initial_shares(budget, tol, norm, row_tree, col_tree, full, rows, cols, symmetric=False):
    """Squared absolute error allowances of the candidate blocks ``(rows,
    cols)`` under a weighted split: ``(tol ||A||_F)^2 w_b / W``, where ``W``
    sums the weights of *all* candidates of the full initial partition
    ``full`` (so builds of disjoint parts of it share one budget; in a
    symmetric build a strictly upper block counts twice, for its mirror).
    Blocks stored dense from the start have no error and take no share."""
    t_node, s_node, cand = full
    w_all = budget_weights(budget, _sizes(row_tree, t_node[cand]), _sizes(col_tree, s_node[cand]))
    if symmetric:
        w_all = w_all * _multiplicity(t_node[cand], s_node[cand])
    total = w_all.sum()
    w = budget_weights(budget, _sizes(row_tree, rows), _sizes(col_tree, cols))
    scale = (tol * norm) ** 2 / total if total > 0 else 0.0
    return w * scale


def child_shares(budget, parent_share, ch_parent, ch_m, ch_n, ch_mult=None):
    """Split each expanded block's allowance over its children that are tried
    again (``ch_parent`` indexes ``parent_share``), in proportion to their
    weights. The shares of a block's children (times their multiplicity
    ``ch_mult``: 2 for a strictly upper block of a symmetric build) sum to
    its own, so the bound ``sum_b err_b^2 <= (tol ||A||_F)^2`` survives any
    refinement; children stored dense (zero error) take no share."""
    w = budget_weights(budget, ch_m, ch_n)
    counted = w if ch_mult is None else w * ch_mult
    sums = np.bincount(ch_parent, weights=counted, minlength=parent_share.size)
    return parent_share[ch_parent] * w / sums[ch_parent]


def compress_candidates(src, exact, blocks, rel_tol, code, seed, scratch):
    """Compress one list of candidate blocks (a chunk of a round) in one
    parallel numba call.

    ``blocks`` is ``(r0, r1, c0, c1, abs_tol, room, kmax_final)``, one entry
    per candidate (see :func:`hmnumba.kernels.compress.compress_blocks`). Block ``b`` gets the seed ``seed + b``: callers pass the global seed plus
    the chunk's position in its round, so a block's result never depends on
    how the round was cut. ``scratch`` is reused if large enough.

    Returns ``(status, rank, err2, norm2, off, scratch)``: an accepted block's
    factors (``rank * (m + n)`` numbers) start at ``scratch[off[b]]``.
    """
    r0, r1, c0, c1, abs_tol, room, kmax_final = blocks
    n_cand = r0.size
    need = room * ((r1 - r0) + (c1 - c0))
    n_slabs = min(n_cand, SLABS_PER_THREAD * numba.get_num_threads())
    slab_need = np.bincount(np.arange(n_cand) % n_slabs, weights=need,
                            minlength=n_slabs).astype(np.int64)
    slab_start = np.zeros(n_slabs + 1, np.int64)
    np.cumsum(slab_need, out=slab_start[1:])
    if scratch.size < slab_start[-1]:
        scratch = np.empty(slab_start[-1], scratch.dtype)
    status = np.empty(n_cand, np.int64)
    rank = np.empty(n_cand, np.int64)
    err2 = np.empty(n_cand)
    norm2 = np.empty(n_cand)
    off = np.empty(n_cand, np.int64)
    compress.compress_blocks(src, exact, r0, r1, c0, c1, rel_tol, abs_tol, code, room, kmax_final,
                        seed, scratch, slab_start, off, status, rank, err2, norm2)
    return status, rank, err2, norm2, off, scratch


def _chunk_strategy(backend, n_jobs):
    """The class that compresses a round's chunks: here (numba threads),
    by joblib workers (``n_jobs``), or on the device (``backend="cuda"``).
    Each has one method, ``map(blocks, need, rel_tol, code, seed)``, that
    yields ``(lo, hi, result of compress_candidates)`` chunk by chunk, in
    order, so the loop of :func:`build` is the same for all three."""
    if backend == "cuda":
        return _DeviceChunks
    return _LocalChunks if n_jobs is None else _JoblibChunks


class _LocalChunks(contextlib.nullcontext):
    """A round's chunks compressed here, one after the other, into one reused
    scratch (the caller merges each chunk before asking for the next)."""

    def __init__(self, src, exact, dtype, n_jobs=None):
        super().__init__()
        self.src, self.exact = src, exact
        self.scratch = np.empty(0, dtype)

    def map(self, blocks, need, rel_tol, code, seed):
        for lo, hi in _chunks(need, SCRATCH_ITEMS):
            res = compress_candidates(self.src, self.exact, tuple(a[lo:hi] for a in blocks),
                                      rel_tol, code, seed + lo, self.scratch)
            self.scratch = res[-1]
            yield lo, hi, res


class _JoblibChunks:
    """A round's chunks compressed by ``joblib.Parallel`` workers.

    One ``Parallel`` serves all rounds (its workers stay up). The arrays of
    the entry source are top-level task arguments, so joblib ships each once
    rather than per task: loky memory-maps them, and under the dask backend
    they are scattered to every worker when the build starts (``scatter=``
    of :class:`joblib.parallel_config`, broadcast, so a lost worker takes no
    copy that the others need).
    """

    def __init__(self, src, exact, dtype, n_jobs):
        self.parts = src   # every entry source is a tuple (kernels/sources.py)
        self.exact, self.dtype, self.n_jobs = exact, dtype, n_jobs
        self._stack = contextlib.ExitStack()

    def __enter__(self):
        import joblib

        backend, _ = joblib.parallel.get_active_backend()
        if type(backend).__name__ == "DaskDistributedBackend":
            arrays = list({id(p): p for p in self.parts if isinstance(p, np.ndarray)}.values())
            self._stack.enter_context(joblib.parallel_config(
                backend="dask", client=backend.client, scatter=arrays,
                wait_for_workers_timeout=backend.wait_for_workers_timeout))
        self.parallel = self._stack.enter_context(
            joblib.Parallel(n_jobs=self.n_jobs, return_as="generator"))
        self.n_workers = max(joblib.effective_n_jobs(self.n_jobs), 1)
        return self

    def __exit__(self, *exc):
        return self._stack.__exit__(*exc)

    def map(self, blocks, need, rel_tol, code, seed):
        import joblib

        limit = int(need.sum()) // (TASKS_PER_WORKER * self.n_workers) + 1
        chunks = _chunks(need, min(max(limit, MIN_TASK_ITEMS), SCRATCH_ITEMS))
        # The per-chunk arrays travel as one tuple (not weak-referenceable,
        # so joblib's dask backend sends it with the task instead of
        # scattering every small slice).
        tasks = (joblib.delayed(_compress_task)(
            self.exact, self.dtype, tuple(a[lo:hi] for a in blocks), rel_tol,
            code, seed + lo, *self.parts) for lo, hi in chunks)
        for (lo, hi), res in zip(chunks, self.parallel(tasks)):
            yield lo, hi, res


class _DeviceChunks(contextlib.nullcontext):
    """A round's chunks compressed by batched ACA on the device
    (:class:`hmnumba.kernels.compress_cuda.DeviceACA`; built-in kernel
    sources, whose points are copied to the device once per build)."""

    def __init__(self, src, exact, dtype, n_jobs=None):
        from hmnumba.kernels.compress_cuda import DeviceACA
        super().__init__()
        if exact or sources.source_kind(src) != "builtin":
            raise ValueError("the device build takes built-in kernel sources only")
        self.aca = DeviceACA(src)

    def map(self, blocks, need, rel_tol, code, seed):
        # One chunk's ACA factors are on the device at a time.
        for lo, hi in _chunks(need, SCRATCH_ITEMS):
            yield lo, hi, self.aca.compress(tuple(a[lo:hi] for a in blocks), rel_tol)


def _compress_task(exact, dtype, blocks, rel_tol, code, seed, *parts):
    """One joblib task: compress a chunk and return the accepted factors
    packed densely (the result of :func:`compress_candidates`)."""
    src = tuple(parts)
    r0, r1, c0, c1 = blocks[:4]
    with one_blas_thread():
        status, rank, err2, norm2, off, scratch = compress_candidates(
            src, exact, blocks, rel_tol, code, seed, np.empty(0, dtype))
        ok = np.flatnonzero(status == codes.STATUS_ACCEPTED)
        sizes = rank[ok] * ((r1 - r0)[ok] + (c1 - c0)[ok])
        packed_off = np.cumsum(sizes) - sizes
        packed = np.empty(int(sizes.sum()), dtype)
        compress.gather_factors(scratch, off[ok], sizes, packed, packed_off)
    off[ok] = packed_off
    return status, rank, err2, norm2, off, packed


def _choose_cheaper(att, row_tree, col_tree, out):
    """Keep, for every tentatively accepted block, the cheaper of its own
    factors and the best representation of its children's subtree.

    Storage counts stored numbers: ``k (m + n)`` for a low-rank block, ``m n``
    for a dense one. Both alternatives meet the same error budget (each
    block of either meets its own share of the parent's), so the guarantee
    is unchanged. Attempts below a discarded subtree are dropped, and the
    kept factors are copied into a fresh ``data`` buffer without the gaps.

    Returns ``(att, out)`` filtered, where ``att.refined`` now also lists the
    tentative blocks replaced by their children (so :func:`_coarsen` may
    merge them if all those became dense).
    """
    n_att = att.row.size
    m_size = _sizes(row_tree, att.row).astype(np.float64)
    n_size = _sizes(col_tree, att.col).astype(np.float64)
    own = np.full(n_att, np.inf)
    own[att.accepted] = att.rank * (m_size[att.accepted] + n_size[att.accepted])
    is_refined, is_tentative = _mask(n_att, att.refined), _mask(n_att, att.tentative)
    expanded = is_refined | is_tentative
    dense_cost = (_sizes(row_tree, att.dense_row).astype(np.float64)
                  * _sizes(col_tree, att.dense_col))
    use_own = trees.cheaper_representation(att.parent, own, expanded, att.dense_parent,
                                           dense_cost)
    dropped = trees.below_marked(att.parent, expanded & use_own)
    p = np.maximum(att.dense_parent, 0)
    keep_dense = (att.dense_parent < 0) | ~(dropped[p] | use_own[p])
    replaced = is_tentative & ~dropped & ~use_own
    refined = np.flatnonzero((is_refined & ~dropped) | replaced)
    keep = ~dropped[att.accepted] & use_own[att.accepted]
    att = att._replace(dense_row=att.dense_row[keep_dense], dense_col=att.dense_col[keep_dense],
                       dense_parent=att.dense_parent[keep_dense], refined=refined)
    if keep.all():
        return att, out
    ids, rank = att.accepted[keep], att.rank[keep]
    items = own[ids].astype(np.int64)   # rank (m + n), exact in float64
    fresh = _Output(out.buf.dtype, int(items.sum()) + int(dense_cost[keep_dense].sum()))
    att = att._replace(accepted=ids, rank=rank, err2=att.err2[keep], norm2=att.norm2[keep],
                       offset=fresh.append(out.buf, att.offset[keep], items))
    return att, fresh


def _coarsen(att):
    """Store a refined block as one dense block when all its descendants are
    dense: the attempt tree with those blocks as dense leaves instead."""
    if att.refined.size == 0:
        return att
    is_dense = trees.dense_subtrees(att.parent, _mask(att.row.size, att.refined),
                                    att.dense_parent)
    covered = trees.below_marked(att.parent, is_dense)   # under a coarsened block
    p = np.maximum(att.dense_parent, 0)
    keep = (att.dense_parent < 0) | ~(covered[p] | is_dense[p])
    top = np.flatnonzero(is_dense & ~covered)
    return att._replace(dense_row=np.concatenate([att.dense_row[keep], att.row[top]]),
                        dense_col=np.concatenate([att.dense_col[keep], att.col[top]]),
                        dense_parent=np.concatenate([att.dense_parent[keep], att.parent[top]]))


def _mask(n, ids):
    mask = np.zeros(n, bool)
    mask[ids] = True
    return mask


def _virtual_empty(n_items, dtype):
    """An uninitialised array whose pages cost nothing until first written.

    An anonymous ``MAP_NORESERVE`` mapping reserves address space only, so
    ``data`` can be given room for an upper bound of its size (every
    candidate at its rank room, plus the dense blocks) and only the numbers
    actually appended use memory. Falls back to ``np.empty`` where ``mmap``
    lacks these flags.
    """
    dtype = np.dtype(dtype)
    nbytes = max(int(n_items), 1) * dtype.itemsize
    flags = getattr(mmap, "MAP_PRIVATE", 0) | getattr(mmap, "MAP_ANONYMOUS", 0)
    # Python < 3.12 lacks the constant; Linux's value is 0x4000. Without it a
    # bound above RAM + swap (the first round of the N=200,000 cube asks for
    # 34 GB) is refused by the kernel's overcommit heuristic.
    noreserve = getattr(mmap, "MAP_NORESERVE", 0x4000 if sys.platform.startswith("linux") else 0)
    if not flags or not noreserve:  # pragma: no cover - not POSIX
        return np.empty(int(n_items), dtype)
    mem = mmap.mmap(-1, nbytes, flags=flags | noreserve)
    if hasattr(mmap, "MADV_HUGEPAGE"):  # written densely from the start
        mem.madvise(mmap.MADV_HUGEPAGE)
    return np.frombuffer(mem, dtype=dtype, count=int(n_items))


class _Output:
    """The ``data`` buffer: regions appended densely, in order.

    Address space for an upper bound is reserved up front (no page is touched
    until written); if it runs out, the buffer grows by one copy.
    """

    def __init__(self, dtype, capacity):
        self.buf = _virtual_empty(max(capacity, 1), dtype)
        self.used = 0

    def reserve(self, sizes):
        """Offsets of consecutive regions of the given sizes."""
        total = int(sizes.sum())
        if self.used + total > self.buf.size:
            bigger = _virtual_empty(2 * (self.used + total), self.buf.dtype)
            bigger[:self.used] = self.buf[:self.used]
            self.buf = bigger
        dest = self.used + np.cumsum(sizes) - sizes
        self.used += total
        return dest

    def append(self, scratch, src_off, sizes):
        """Copy regions of ``scratch`` to the end; returns their offsets."""
        dest = self.reserve(sizes)
        compress.gather_factors(scratch, src_off, sizes, self.buf, dest)
        return dest

    def data(self):
        _release_tail(self.buf, self.used)
        return self.buf[:self.used]


def _chunks(need, limit):
    """Consecutive ranges ``(lo, hi)`` whose summed ``need`` is at most
    ``limit`` (a range holds at least one item)."""
    csum = np.cumsum(need)
    bounds = [0]
    while bounds[-1] < need.size:
        lo = bounds[-1]
        base = csum[lo - 1] if lo else 0
        hi = int(np.searchsorted(csum, base + limit, side="right"))
        bounds.append(min(max(hi, lo + 1), need.size))
    return list(zip(bounds[:-1], bounds[1:]))


def _pack(src, row_tree, col_tree, out, att):
    """Append the dense blocks to ``data``, fill them, and sort the block
    arrays by (row start, column start)."""
    n_lr = att.accepted.size
    n_dense = att.dense_row.size
    rows = np.concatenate([att.row[att.accepted], att.dense_row])
    cols = np.concatenate([att.col[att.accepted], att.dense_col])
    rank = np.concatenate([att.rank, np.full(n_dense, -1, np.int64)])
    r0 = row_tree.start[rows]
    r1 = row_tree.stop[rows]
    c0 = col_tree.start[cols]
    c1 = col_tree.stop[cols]
    dense_off = out.reserve((r1[n_lr:] - r0[n_lr:]) * (c1[n_lr:] - c0[n_lr:]))
    offset = np.concatenate([att.offset, dense_off])
    dense_norm2 = sources.fill_dense_blocks(src, r0[n_lr:], r1[n_lr:], c0[n_lr:], c1[n_lr:],
                                            dense_off, out.buf)
    data = out.data()
    err2 = np.concatenate([att.err2, np.zeros(n_dense)])
    norm2 = np.concatenate([att.norm2, dense_norm2])
    order = np.lexsort((c0, r0))
    return dict(row_start=r0[order], row_stop=r1[order], col_start=c0[order],
                col_stop=c1[order], rank=rank[order], offset=offset[order], data=data,
                block_err2=err2[order], block_norm2=norm2[order])


def _release_tail(buf, used):
    """Give the pages of ``buf`` past ``used`` items back to the OS."""
    base = buf.base
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None) if not isinstance(base, memoryview) else base.obj
    if not isinstance(base, mmap.mmap) or not hasattr(mmap, "MADV_DONTNEED"):
        return
    start = -(-used * buf.itemsize // mmap.PAGESIZE) * mmap.PAGESIZE
    if start < len(base):
        base.madvise(mmap.MADV_DONTNEED, start, len(base) - start)


# Up to this many entries the global candidate (:func:`global_low_rank`) is
# the exact truncated SVD (singular values first: 0.2 s at 1024 x 1024, 1.2 s
# at 2048 x 2048 on 2 cores, timed with time.perf_counter around
# np.linalg.svd(A, compute_uv=False) of a Gaussian A; full factors only when
# it wins); above, a randomized range finder with POWER_ITERATIONS sweeps
# screens first.
EXACT_GLOBAL_SVD_ITEMS = 2048 * 2048
GLOBAL_OVERSAMPLING = 10
POWER_ITERATIONS = 2


def global_low_rank(A, tol, max_rank, dtype, max_numbers, seed=0, abs_tol=None,
                    exact_items=None):
    """The whole matrix as one low-rank block, if it stores fewer numbers.

    The adaptive build refines a large block whose rank exceeds a fraction
    of its break-even rank (``ACCEPT_FRACTION``) without keeping its own
    candidate, so on an ordinary low-rank weight array (rank 48 of 768 x 512,
    say) the tree can store several times what a truncated SVD stores. This
    is the root's own candidate: the optimal rank ``k`` meeting
    ``||A - U V^T||_F <= tol ||A||_F`` (Eckart-Young), kept only when
    ``k (m + n) < max_numbers`` (the numbers the tree stores).

    Up to ``EXACT_GLOBAL_SVD_ITEMS`` entries the singular values are exact,
    so the candidate never loses to a truncated SVD at the same ``tol``.
    Above, a randomized range finder (``k_max + GLOBAL_OVERSAMPLING``
    columns, ``POWER_ITERATIONS`` power sweeps, ``k_max`` the largest rank
    that could win) decides: its rank-``k`` error is never below the
    optimal one, so it may miss a win by a few ranks but never claims a
    false one. Either way the error of the stored (rounded) factors is
    computed exactly and the rank raised until it meets the bound.

    Parameters
    ----------
    A : ndarray of shape (m, n)
        The dense matrix (any row and column order).
    tol : float
        Relative Frobenius tolerance.
    max_rank : int or None
        The candidate's rank may not exceed it.
    dtype : numpy dtype
        Storage dtype of the factors.
    max_numbers : int
        The candidate is returned only if it stores fewer numbers.
    seed : int
        Seeds the randomized range finder.
    abs_tol : float or None
        An absolute bound ``||A - U V^T||_F <= abs_tol`` instead of
        ``tol ||A||_F`` (a block's share of the budget, see
        :func:`cheaper_subtrees`).
    exact_items : int or None
        Exact SVD up to this many entries (default
        ``EXACT_GLOBAL_SVD_ITEMS``).

    Returns
    -------
    tuple or None
        ``(U, V, err2, norm2)`` with ``A ~ U @ V.T`` (``U (m, k)``, ``V (n,
        k)`` in ``dtype``) and the exact squared error and norm, or None.
    """
    m, n = A.shape
    k_max = min(int((max_numbers - 1) // (m + n)), m, n)
    if max_rank is not None:
        k_max = min(k_max, int(max_rank))
    if k_max < 0:
        return None
    A64 = A.astype(np.float64, copy=False)
    norm = float(np.linalg.norm(A64))
    budget = tol * norm if abs_tol is None else float(abs_tol)
    if norm == 0.0:
        return np.zeros((m, 0), dtype), np.zeros((n, 0), dtype), 0.0, 0.0
    if m * n <= (EXACT_GLOBAL_SVD_ITEMS if exact_items is None else exact_items):
        s = np.linalg.svd(A64, compute_uv=False)
        k = int(factors.truncation_rank(s, budget)[0])
        if k > k_max:
            return None
        U, s, Vt = np.linalg.svd(A64, full_matrices=False)
        U = U * s
    else:
        U, Vt = _randomized_range(A64, k_max + GLOBAL_OVERSAMPLING, seed)
        # Truncating the projection Q Q^T A to rank k leaves the energy
        # outside the range plus the dropped singular values (orthogonal
        # parts). The outside part is computed from the residual, not as
        # ||A||^2 - ||Q^T A||^2, which cancels at small tol.
        outside2 = float(np.linalg.norm(A64 - U @ Vt) ** 2)
        if outside2 > budget * budget:
            return None
        k = int(factors.truncation_rank(np.linalg.norm(U, axis=0),
                                    np.sqrt(budget * budget - outside2))[0])
        if k > k_max:
            return None
    # The stored factors are rounded to dtype: check their exact error,
    # adding ranks while it misses the bound.
    while True:
        Uk = np.ascontiguousarray(U[:, :k], dtype=dtype)
        Vk = np.ascontiguousarray(Vt[:k].T, dtype=dtype)
        err2 = float(np.linalg.norm(A64 - Uk.astype(np.float64) @ Vk.T.astype(np.float64)) ** 2)
        if err2 <= budget * budget or k >= min(U.shape[1], k_max):
            break
        k += 1
    if err2 > budget * budget or k > k_max:
        return None
    return Uk, Vk, err2, norm * norm


def _randomized_range(A, width, seed):
    """``(U, Vt)`` with ``Q Q^T A = U Vt``: the projection of ``A`` onto a
    randomized range of ``width`` columns (Halko, Martinsson and Tropp 2011,
    Alg. 4.4), rotated to its singular vectors so that ``U``'s columns carry
    the singular values of ``Q^T A`` in descending order."""
    m, n = A.shape
    width = min(width, m, n)
    rng = np.random.default_rng(seed)
    Q = np.linalg.qr(A @ rng.standard_normal((n, width)))[0]
    for _ in range(POWER_ITERATIONS):
        Q = np.linalg.qr(A.T @ Q)[0]
        Q = np.linalg.qr(A @ Q)[0]
    Ub, s, Vt = np.linalg.svd(Q.T @ A, full_matrices=False)
    return (Q @ Ub) * s, Vt


# Bytes a block adds besides its numbers: six int64 block arrays, three
# phase-one offsets and about two entries in each product schedule.
BLOCK_METADATA_BYTES = 6 * 8 + 3 * 8 + 4 * 8
# Depth (below the root) to which cheaper_subtrees compares a pair of
# clusters with the tree below it.
SUBTREE_DEPTH = 3


def cheaper_subtrees(storage, Ap, row_tree, col_tree, tol, budget, max_rank, seed=0,
                     max_depth=SUBTREE_DEPTH):
    """Replace a cluster pair's subtree by one low-rank block where that is cheaper.

    The build refines a large block whose rank exceeds a fraction of its
    break-even rank without keeping that block's own candidate (see
    ``ACCEPT_FRACTION``); the look-ahead only compares blocks it accepted.
    This pass visits the cluster pairs below the root, breadth first to
    ``max_depth``, and for a pair whose rectangle the built blocks tile
    (with two or more blocks) computes the pair's optimal low-rank
    candidate (:func:`global_low_rank`) under the error those blocks were
    allowed: ``tol ||A_b||_F`` for ``budget="block"`` (the children's
    shares sum to it), otherwise the squared errors the blocks used plus
    the part of the global budget ``tol^2 ||A||_F^2`` that no block used,
    so ``sum_b err_b^2 <= tol^2 ||A||_F^2`` holds exactly either way. A
    candidate that stores fewer bytes replaces the blocks, and the pair's descendants are not visited
    (their improvement could not beat a parent that lost to their
    unimproved subtree, nor is it needed once the parent won).

    Big pairs are screened by the randomized range finder (an exact SVD
    only below ``4 (k_max + GLOBAL_OVERSAMPLING)`` columns or rows, where
    it costs no more), so a pass costs a few sketches of the matrix.

    Parameters
    ----------
    storage : Packed
        The storage value of :func:`build` (full storage, cluster order).
    Ap : ndarray
        The dense matrix in cluster order.
    row_tree, col_tree : ClusterTree
    tol, budget, max_rank, seed
        As for :func:`build`.
    max_depth : int

    Returns
    -------
    (Packed, int)
        The storage value with the replacements, and how many subtrees
        were replaced.
    """
    arrays = storage.arrays()
    r0, r1 = arrays["row_start"], arrays["row_stop"]
    c0, c1 = arrays["col_start"], arrays["col_stop"]
    rank, err2, norm2 = arrays["rank"], arrays["block_err2"], arrays["block_norm2"]
    itemsize = arrays["data"].dtype.itemsize
    stored = stored_numbers(r0, r1, c0, c1, rank)
    alive = np.ones(rank.size, bool)
    new = []   # (row range, col range, U, V, err2, norm2)
    # The global budget the blocks left unused (weighted splits).
    slack2 = max(tol * tol * float(norm2.sum()) - float(err2.sum()), 0.0)
    pairs = split_pairs(row_tree, col_tree, np.zeros(1, np.int64), np.zeros(1, np.int64))[:2]
    for _ in range(max_depth):
        if pairs[0].size == 0:
            break
        descend = np.zeros(pairs[0].size, bool)
        for i, (t, s) in enumerate(zip(*pairs)):
            R0, R1 = row_tree.start[t], row_tree.stop[t]
            C0, C1 = col_tree.start[s], col_tree.stop[s]
            inside = alive & (r0 >= R0) & (r1 <= R1) & (c0 >= C0) & (c1 <= C1)
            n_in = int(inside.sum())
            area = int(np.sum((r1[inside] - r0[inside]) * (c1[inside] - c0[inside])))
            if n_in <= 1 or area != (R1 - R0) * (C1 - C0):
                continue   # one block already, or blocks that straddle the pair
            cost = int(stored[inside].sum()) * itemsize + n_in * BLOCK_METADATA_BYTES
            if budget == "block":   # the pair meets tol relative to its own norm
                allowed2 = tol * tol * float(norm2[inside].sum())
            else:                   # what its blocks used, plus what nobody used
                allowed2 = float(err2[inside].sum()) + slack2
            k_room = cost // ((R1 - R0) + (C1 - C0)) // itemsize
            exact_items = (R1 - R0) * (C1 - C0) if 4 * (k_room + GLOBAL_OVERSAMPLING) >= min(
                R1 - R0, C1 - C0) else 0
            found = global_low_rank(Ap[R0:R1, C0:C1], tol, max_rank, arrays["data"].dtype,
                                    (cost - BLOCK_METADATA_BYTES) // itemsize, seed,
                                    abs_tol=np.sqrt(allowed2), exact_items=exact_items)
            if found is None:
                descend[i] = True
                continue
            alive &= ~inside
            new.append((R0, R1, C0, C1) + tuple(found))
            slack2 = max(slack2 + float(err2[inside].sum()) - found[2], 0.0)
        pairs = split_pairs(row_tree, col_tree, pairs[0][descend], pairs[1][descend])[:2]
    if not new:
        return storage, 0
    return storage._replace(**_replace_blocks(arrays, alive, new)), len(new)


def _replace_blocks(arrays, alive, new):
    """The packed arrays with the blocks ``~alive`` dropped and the low-rank
    blocks ``new`` added, ``data`` rebuilt densely, sorted as :func:`_pack`."""
    r0, r1 = arrays["row_start"], arrays["row_stop"]
    c0, c1 = arrays["col_start"], arrays["col_stop"]
    rank, offset, data = arrays["rank"], arrays["offset"], arrays["data"]
    keep = np.flatnonzero(alive)
    sizes = stored_numbers(r0[keep], r1[keep], c0[keep], c1[keep], rank[keep])
    new_sizes = np.array([U.shape[1] * (U.shape[0] + V.shape[0]) for _, _, _, _, U, V, _, _
                          in new], np.int64)
    total = int(sizes.sum() + new_sizes.sum())
    out = np.empty(total, data.dtype)
    kept_off = np.cumsum(sizes) - sizes
    compress.gather_factors(data, offset[keep], sizes, out, kept_off)
    pos = int(sizes.sum())
    new_off = []
    for (_, _, _, _, U, V, _, _), size in zip(new, new_sizes):
        out[pos:pos + size] = np.concatenate([U.T.ravel(), V.T.ravel()])
        new_off.append(pos)
        pos += size

    def column(name, values):
        return np.concatenate([arrays[name][keep], np.asarray(values, arrays[name].dtype)])

    nr0 = column("row_start", [b[0] for b in new])
    nc0 = column("col_start", [b[2] for b in new])
    fields = dict(row_start=nr0, row_stop=column("row_stop", [b[1] for b in new]),
                  col_start=nc0, col_stop=column("col_stop", [b[3] for b in new]),
                  rank=column("rank", [b[4].shape[1] for b in new]),
                  offset=np.concatenate([kept_off, np.asarray(new_off, np.int64)]),
                  block_err2=column("block_err2", [b[6] for b in new]),
                  block_norm2=column("block_norm2", [b[7] for b in new]))
    order = np.lexsort((nc0, nr0))
    arrays.update({name: a[order] for name, a in fields.items()})
    arrays["data"] = out
    return arrays
