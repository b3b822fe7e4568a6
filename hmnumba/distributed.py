"""H-matrices spread over a Dask cluster (extra ``dask``).

:class:`DistributedHMatrix` splits an H-matrix into *row parts*: ranges of
(cluster-ordered) rows cut where no block straddles the cut, so every part
owns complete blocks and complete output rows. Each part is the storage
value of its rows (:class:`hmnumba.storage.Packed`, what an
:class:`~hmnumba.HMatrix` wraps), kept resident on a worker as a Dask
future. A product is one round of tasks (each part applies itself to the
input, which enters the task graph once per product) plus a reduction on the client:
``A @ x`` concatenates the parts' rows, ``A.T @ y`` sums the parts'
``A_p.T @ y_p`` in part order (deterministic).

Two ways in:

* :meth:`DistributedHMatrix.from_kernel` builds the parts **on the workers**.
  The client computes only the cluster trees and the first block partition;
  each part is a pure task that runs the same adaptive build
  (:func:`hmnumba.construct.build`) on its share of that partition. A block's
  outcome depends only on the block, so the parts hold exactly the blocks,
  and the numbers, of ``HMatrix.from_kernel`` with the same options and
  ``symmetric=False`` (row parts store every block: a mirrored block would
  lie in another part).
* :meth:`DistributedHMatrix.from_hmatrix` cuts a local H-matrix into parts
  and scatters them.

Failures: parts built by :meth:`~DistributedHMatrix.from_kernel` are futures
of pure tasks whose inputs (points, trees) live in the scheduler's task
graph, so when a worker dies Dask recomputes the lost parts from their
lineage and the result is unchanged. Scattered data has no lineage: parts of
:meth:`~DistributedHMatrix.from_hmatrix` lost with a worker are scattered
again from the local H-matrix this object keeps a reference to (no copy), and
the product is resubmitted.

Building with ``n_jobs`` instead (``HMatrix.from_kernel(..., n_jobs=-1)``
under ``joblib.parallel_config(backend="dask")``) distributes the block
compression of a local build but assembles the result on the client; the
parts here never pass through the client, which is what lets the matrix be
larger than the client's memory.

Running on several machines
---------------------------
Nothing in the code changes; only the ``Client`` does. Start a scheduler on
one machine (``dask-scheduler``, or ``dask scheduler`` in recent releases)
and one worker per machine pointing at it (``dask-worker tcp://host:8786
--nworkers 1 --nthreads 1``, hmnumba installed in the same environment
everywhere), then ``Client("tcp://host:8786")``. Each part task gives numba
``cores // (Dask threads on its host)`` threads, so one single-threaded
worker per machine lets a part use the whole machine, while several workers
per host share it. On a batch system, ``dask_jobqueue.SLURMCluster`` (or
``PBSCluster``, ...) submits the workers as jobs: ``cluster =
SLURMCluster(cores=32, processes=1, memory="200GB"); cluster.scale(jobs=8);
Client(cluster)``. Point ``NUMBA_CACHE_DIR`` at a shared directory so the
numba kernels are compiled once, not once per machine; choose ``n_parts``
(default: one per worker thread) so each part fits in a worker's memory.

Measured: ``python3 asv_benchmarks/run_distributed.py --n 200000 --tol 1e-4
--workers 2`` (Laplace, 200,000 points in the unit cube; a 2-core, 24 GB VM
shared with other jobs, load average 2-7 during the run, so the times are
upper bounds). Storage 8.87 GB, error bound 7.2e-5. Distributed build
99.9 s on a 2-worker LocalCluster (1 thread each), matvec 3.1 s, peak RSS
5.04 and 5.08 GB per worker (0.31 GB after start-up); the same matrix built
in one process 102.7 s, matvec 2.7 s, peak RSS 9.75 GB. The distributed and
local ``H @ x`` agree bit for bit. At tol 1e-3 (5.83 GB): distributed 52.7 s,
local 73.4 s, ``n_jobs=-1`` under the dask backend 129.5 s (every factor
travels back to the client). Tol 1e-6 would need about 17 GB per copy.
"""
import asyncio
import concurrent.futures

import numba
import numpy as np

from hmnumba import _validation as val
from hmnumba._threads import limit_threads
from hmnumba.blocks import initial_partition, stored_numbers
from hmnumba.cluster import ClusterTree
from hmnumba.construct import build
from hmnumba.hmatrix import HMatrix, _check_build_options, _check_kernel_inputs, _kernel_source
from hmnumba.kernels import compress
from hmnumba.storage import Packed, outliers_from_coo, reencode, run_lengths

_BLOCK_ARRAYS = ("row_start", "row_stop", "col_start", "col_stop", "rank", "offset",
                 "block_err2", "block_norm2")
# A product whose parts keep getting lost is given up after this many tries.
MAX_RESUBMIT = 3
# What a lost worker looks like to the client: a closed connection
# (``CommClosedError`` is an ``OSError``) or a cancelled future (lost data).
_LOST = (OSError, concurrent.futures.CancelledError, asyncio.CancelledError)


def _register_sizeof():
    """Tell Dask what a part weighs. Without it a part counts as a small
    Python object, and the scheduler happily runs a product task on another
    worker than its part's, moving gigabytes (measured: 9.3 s instead of
    well under a second per matvec at N=200,000)."""
    try:
        from dask.sizeof import sizeof
    except ImportError:  # pragma: no cover - dask is in the test extra
        return
    sizeof.register(Packed)(lambda P: P.nbytes + P.block_err2.nbytes + P.block_norm2.nbytes)


def _require_distributed():
    try:
        import distributed
    except ImportError as exc:
        raise ImportError("hmnumba.distributed needs dask.distributed; install the `dask` "
                          "extra: pip install 'hmnumba[dask]' (or 'dask[distributed]')") from exc
    return distributed


_register_sizeof()   # here, so workers that unpickle a task of this module register it too


class DistributedHMatrix:
    """An H-matrix whose block rows live on the workers of a Dask cluster.

    Build one with :meth:`from_kernel` (on the workers) or
    :meth:`from_hmatrix` (from a local matrix); apply it with ``D @ x``,
    :meth:`matvec`, :meth:`matmat`, :meth:`rmatvec`, or through
    :meth:`aslinearoperator` in SciPy's Krylov solvers; bring it back with
    :meth:`gather`.

    Attributes
    ----------
    shape : tuple of int
    dtype : numpy dtype
    bounds : ndarray of int64
        Row-part boundaries in cluster order (``n_parts + 1`` entries).
    parts : list of distributed.Future
        One future per part; each resolves to the storage value
        (:class:`hmnumba.storage.Packed`) of the part's rows (cluster order,
        identity permutations), which the products apply directly.

    Examples
    --------
    A local cluster is started, which takes seconds and spawns processes,
    hence the skip (the test suite runs the same steps,
    ``tests/test_distributed.py``):

    >>> import numpy as np
    >>> from dask.distributed import Client, LocalCluster
    >>> from hmnumba import HMatrix
    >>> from hmnumba.distributed import DistributedHMatrix
    >>> from hmnumba.kernels import laplace
    >>> client = Client(LocalCluster(n_workers=2, threads_per_worker=1))  # doctest: +SKIP
    >>> X = np.random.default_rng(0).random((5000, 3))
    >>> D = DistributedHMatrix.from_kernel(laplace, X, client, tol=1e-6)  # doctest: +SKIP
    >>> H = HMatrix.from_kernel(laplace, X, tol=1e-6, symmetric=False)
    >>> x = np.ones(5000)
    >>> bool(np.allclose(D @ x, H @ x, rtol=1e-12, atol=0))  # doctest: +SKIP
    True
    """

    def __init__(self, client, shape, dtype, row_perm, col_perm, bounds, parts, tol, norm,
                 params=None, source=None, local=None):
        self.client = client
        self.shape = (int(shape[0]), int(shape[1]))
        self.dtype = np.dtype(dtype)
        self.row_perm = row_perm
        self.col_perm = col_perm
        self.bounds = np.asarray(bounds, np.int64)
        self.parts = list(parts)
        self.tol = tol
        self.norm = norm
        self.params = dict(params or {})
        self._source = source      # (kernel, X, Y) for the gathered matrix's estimate_error
        self._local = local        # the HMatrix scattered parts come from (re-scatter on loss)
        self._host_threads = _host_threads(client)

    @property
    def n_parts(self):
        return len(self.parts)

    # ------------------------------------------------------------- building
    @classmethod
    def from_hmatrix(cls, H, client, n_parts=None):
        """Cut a local H-matrix into row parts and scatter them to the workers.

        Parameters
        ----------
        H : HMatrix
        client : distributed.Client
        n_parts : int or None
            Number of row parts; default one per worker thread. Parts are cut
            only where no block straddles, balanced by stored numbers; a
            matrix with fewer such cuts gets fewer parts (one, if a single
            low-rank block spans all rows).

        Returns
        -------
        DistributedHMatrix

        Examples
        --------
        Needs a running cluster (skipped: see the class example).

        >>> import numpy as np
        >>> from dask.distributed import Client
        >>> from hmnumba import HMatrix
        >>> from hmnumba.distributed import DistributedHMatrix
        >>> x = np.linspace(0, 1, 400)
        >>> H = HMatrix.from_dense(np.exp(-np.abs(x[:, None] - x)), tol=1e-8,
        ...                        cluster="index", admissibility="weak")
        >>> client = Client(n_workers=2, threads_per_worker=1)  # doctest: +SKIP
        >>> D = DistributedHMatrix.from_hmatrix(H, client)  # doctest: +SKIP
        >>> bool(np.array_equal(D.gather().to_dense(), H.to_dense()))  # doctest: +SKIP
        True
        """
        _require_distributed()
        val.check_client(client)
        if not isinstance(H, HMatrix):
            raise TypeError(f"H must be an HMatrix, got {type(H).__name__}")
        # Row parts need every block stored (a mirror lies in another part).
        H = H.full_storage()
        n_parts = _default_parts(client, n_parts)
        sizes = _block_sizes(H)
        cuts = _cut_points(H.row_start, H.row_stop, H.shape[0])
        stops = np.sort(H.row_stop)
        work = np.concatenate([[0], np.cumsum(sizes[np.argsort(H.row_stop, kind="stable")])])
        work_at_cut = work[np.searchsorted(stops, cuts, side="right")]
        bounds = _choose_bounds(cuts, work_at_cut, float(work[-1]), H.shape[0], n_parts)
        parts = client.scatter([_row_part(H, bounds[p], bounds[p + 1])
                                for p in range(bounds.size - 1)], hash=False)
        params = dict(H.params, n_parts=bounds.size - 1)
        return cls(client, H.shape, H.dtype, H.row_perm, H.col_perm, bounds, parts, H.tol,
                   H.norm, params=params, source=H._source, local=H)

    @classmethod
    def from_kernel(cls, kernel, points, client, col_points=None, tol=1e-6, leaf_size=32,
                    admissibility="strong", eta=2.0, max_rank=None, budget="block",
                    random_state=None, n_parts=None, wait=True):
        """Build ``K[i, j] = kernel(points[i], col_points[j])`` on the workers.

        The client builds the cluster trees and the first block partition;
        each row part is then built by a pure task on a worker, with the same
        blocks and numbers as :meth:`HMatrix.from_kernel` with the same
        options and ``symmetric=False``.

        Parameters
        ----------
        kernel, points, col_points, tol, leaf_size, admissibility, eta, max_rank, budget, random_state
            As in :meth:`HMatrix.from_kernel`.
        client : distributed.Client
        n_parts : int or None
            Number of row parts (default: one per worker thread). Parts are cut
            between clusters of the first partition that no block spans, so
            ``"strong"`` admissibility (the default) splits freely and
            ``"adaptive"`` (one root block) gives a single part.
        wait : bool, default=True
            Return once every part is built; False returns at once (the parts
            build in the background, and the first product waits for them).

        Returns
        -------
        DistributedHMatrix

        Examples
        --------
        See the class example (it needs a running cluster).
        """
        _require_distributed()
        val.check_client(client)
        kern, X, Y = _check_kernel_inputs(kernel, points, col_points)
        opts = _check_build_options(tol, leaf_size, admissibility, eta, max_rank, budget)
        seed = val.check_random_state(random_state)
        n_parts = _default_parts(client, n_parts)
        row_tree = ClusterTree.from_points(X, opts["leaf_size"])
        col_tree = row_tree if col_points is None else ClusterTree.from_points(Y, opts["leaf_size"])
        Xp, Yp, src, norm_est = _kernel_source(kern, X, Y, row_tree, col_tree, opts["budget"],
                                               seed)
        t_node, s_node, cand = initial_partition(row_tree, col_tree, opts["admissibility"],
                                                 opts["eta"])
        t0, t1 = row_tree.start[t_node], row_tree.stop[t_node]
        cuts = _cut_points(t0, t1, X.shape[0])
        bounds = _choose_bounds(cuts, cuts.astype(float), float(X.shape[0]), X.shape[0], n_parts)
        # The inputs enter the graph once, as the argument of one task: the
        # scheduler keeps them, so a part lost with its worker is recomputed.
        shared = client.submit(_keep, (kern, Xp, Yp, row_tree, col_tree), pure=False)
        build_opts = dict(tol=opts["tol"], admissibility=opts["admissibility"], eta=opts["eta"],
                          max_rank=opts["max_rank"], budget=opts["budget"],
                          norm_estimate=norm_est, seed=seed)
        host_threads = _host_threads(client)
        # Parts are dealt round-robin to the workers (all would otherwise go
        # where ``shared`` is); any worker may take one over if its own dies.
        workers = sorted(client.scheduler_info()["workers"])
        parts = []
        for p in range(bounds.size - 1):
            mine = (t0 >= bounds[p]) & (t1 <= bounds[p + 1])
            parts.append(client.submit(_build_part, shared, bounds[p], bounds[p + 1],
                                       (t_node[mine], s_node[mine], cand[mine]), build_opts,
                                       host_threads, pure=False,
                                       workers=[workers[p % len(workers)]],
                                       allow_other_workers=True))
        if wait:
            _require_distributed().wait(parts)
            for f in parts:   # raise a build error here, not at the first product
                if f.status == "error":
                    f.result()
        params = dict(opts, kernel=repr(kern), n_parts=bounds.size - 1)
        return cls(client, (X.shape[0], Y.shape[0]), np.float64, row_tree.perm, col_tree.perm,
                   bounds, parts, opts["tol"], None, params=params, source=(kern, X, Y))

    # ------------------------------------------------------------- products
    # The operand checks and the 1-D / 2-D dispatch are HMatrix's; only
    # ``_apply`` (one round of tasks) differs.
    matvec = HMatrix.matvec
    matmat = HMatrix.matmat
    rmatvec = HMatrix.rmatvec
    _vector_product = HMatrix._vector_product
    rmatmat = HMatrix.rmatmat
    __matmul__ = HMatrix.__matmul__

    def _apply(self, x, trans):
        in_perm, out_perm = (self.row_perm, self.col_perm) if trans else (self.col_perm,
                                                                          self.row_perm)
        out_dtype = np.result_type(self.dtype, x.dtype)
        if out_dtype.kind != "f":
            out_dtype = np.dtype(np.float64)
        xp = np.ascontiguousarray(x[in_perm], dtype=self.dtype)
        if trans:
            # Each part needs only its own rows of y; the partial products
            # A_p.T y_p are summed in part order.
            pieces = self._run(lambda: [xp[self.bounds[p]:self.bounds[p + 1]]
                                        for p in range(self.n_parts)], trans=True)
            yp = pieces[0].copy()
            for piece in pieces[1:]:
                yp += piece
        else:
            # x enters the graph once, as one task's argument that every part
            # depends on (Dask moves it to each worker once). Unlike scattered
            # data it survives the loss of the worker that holds it.
            pieces = self._run(lambda: [self.client.submit(_keep, xp, pure=False)]
                               * self.n_parts, trans=False)
            yp = np.concatenate(pieces, axis=0)
        out = np.empty(yp.shape, dtype=out_dtype)
        out[out_perm] = yp
        return out

    def _run(self, make_args, trans):
        """One task per part, results in part order.

        If a worker is lost during the round, built parts are recomputed by
        Dask from their lineage; scattered parts that were lost are scattered
        again from the local matrix; the inputs are sent again and the round
        resubmitted (at most ``MAX_RESUBMIT`` times).
        """
        for attempt in range(MAX_RESUBMIT + 1):
            try:
                futures = [self.client.submit(_apply_part, part, arg, trans, self._host_threads,
                                              pure=False)
                           for part, arg in zip(self.parts, make_args())]
                return self.client.gather(futures)
            except _LOST:
                if attempt == MAX_RESUBMIT:
                    raise
                self._restore_parts()

    def _restore_parts(self):
        if self._local is None:
            return   # built parts: Dask recomputes them
        for p, f in enumerate(self.parts):
            if f.status not in ("finished", "pending"):
                self.parts[p] = self.client.scatter(
                    _row_part(self._local, self.bounds[p], self.bounds[p + 1]), hash=False)

    def aslinearoperator(self):
        """This matrix as a ``scipy.sparse.linalg.LinearOperator`` (each
        product is one round of tasks on the cluster).

        Examples
        --------
        Needs a running cluster (skipped: see the class example).

        >>> from scipy.sparse.linalg import gmres
        >>> op = D.aslinearoperator()  # doctest: +SKIP
        >>> sol, info = gmres(op, np.ones(op.shape[0]))  # doctest: +SKIP
        """
        from scipy.sparse.linalg import LinearOperator
        return LinearOperator(self.shape, matvec=self.matvec, rmatvec=self.rmatvec,
                              matmat=self.matmat, rmatmat=self.rmatmat, dtype=self.dtype)

    # -------------------------------------------------------------- gather
    def gather(self):
        """Bring every part to the client as one local :class:`~hmnumba.HMatrix`.

        It has the same blocks (same order, ranks and numbers) as the matrix
        the parts came from; ``data`` is packed part after part, so
        ``offset`` may differ from a matrix built locally.

        Returns
        -------
        HMatrix
        """
        parts = self.client.gather(self.parts)
        arrays = {name: np.concatenate([getattr(h, name) for h in parts]) for name in _BLOCK_ARRAYS}
        shift = np.repeat(self.bounds[:-1], [h.rank.size for h in parts])
        arrays["row_start"] += shift
        arrays["row_stop"] += shift
        base = np.repeat(np.cumsum([0] + [h.data.size for h in parts[:-1]]),
                         [h.rank.size for h in parts])
        arrays["offset"] += base
        data = np.concatenate([h.data for h in parts])
        storage = Packed._trusted(shape=self.shape, row_perm=self.row_perm,
                                  col_perm=self.col_perm, data=data, **arrays)
        kinds = {h.encoding.kind if h.encoding is not None else None for h in parts}
        if len(kinds) == 1:   # low precision comes back as it went out
            storage = storage._replace(encoding=reencode(kinds.pop(), data,
                                                         storage.run_lengths()))
        if any(h.outliers is not None for h in parts):   # to the original order
            coo = [(h.outliers.to_csr().tocoo(), p0) for h, p0 in zip(parts, self.bounds)
                   if h.outliers is not None]
            storage = storage._replace(outliers=outliers_from_coo(
                self.shape, np.concatenate([self.row_perm[c.row + p0] for c, p0 in coo]),
                np.concatenate([self.col_perm[c.col] for c, _ in coo]),
                np.concatenate([c.data for c, _ in coo])))
        return HMatrix(storage, self.tol, norm=self.norm, params=self.params,
                       source=self._source)

    @property
    def nbytes(self):
        """Bytes held by the parts on the workers (each part counted as
        :attr:`HMatrix.nbytes` counts its storage value)."""
        return int(sum(self.client.gather(self.client.map(_part_nbytes, self.parts,
                                                          pure=False))))

    def __repr__(self):
        return (f"<DistributedHMatrix {self.shape[0]}x{self.shape[1]} {self.dtype}, "
                f"{self.n_parts} parts>")


# ---------------------------------------------------------------- helpers


def _default_parts(client, n_parts):
    if n_parts is None:
        return max(1, sum(client.nthreads().values()))
    return val.check_positive_int(n_parts, "n_parts")


def _host_threads(client):
    """Dask threads per host, so a task gives numba its host's share of cores."""
    out = {}
    for info in client.scheduler_info()["workers"].values():
        out[info["host"]] = out.get(info["host"], 0) + info["nthreads"]
    return out


def _numba_share(host_threads):
    """numba limited to ``cores // Dask threads on this host``, restored after."""
    from distributed import get_worker
    try:
        host = get_worker().address.split("://")[-1].rsplit(":", 1)[0]
    except ValueError:  # not on a worker
        host = None
    share = host_threads.get(host, 1) if host_threads else 1
    return limit_threads(numba_threads=max(1, numba.config.NUMBA_NUM_THREADS // max(share, 1)))


def _block_sizes(H):
    return stored_numbers(H.row_start, H.row_stop, H.col_start, H.col_stop, H.rank)


def _cut_points(start, stop, m):
    """Rows ``0 < b < m`` at which no block ``[start, stop)`` straddles."""
    inside = np.zeros(m + 1, np.int64)
    np.add.at(inside, start + 1, 1)
    np.add.at(inside, stop, -1)
    cover = np.cumsum(inside)          # blocks with start < b < stop
    cuts = np.flatnonzero(cover[1:m] == 0) + 1
    return cuts


def _choose_bounds(cuts, work_at_cut, total, m, n_parts):
    """Part boundaries: the cut nearest each ``j / n_parts`` share of the work."""
    picks = []
    if cuts.size:
        for j in range(1, n_parts):
            i = int(np.argmin(np.abs(work_at_cut - total * j / n_parts)))
            picks.append(int(cuts[i]))
    return np.unique(np.array([0, *picks, m], np.int64))


def _row_part(H, p0, p1):
    """The blocks of ``H`` in rows ``[p0, p1)`` (no block straddles) as the
    storage value of those rows, cluster order, identity permutations."""
    i0, i1 = np.searchsorted(H.row_start, [p0, p1])
    sl = slice(i0, i1)
    sizes = _block_sizes(H)[sl]
    offset = np.cumsum(sizes) - sizes
    data = np.empty(int(sizes.sum()), H.dtype)
    compress.gather_factors(H.data, H.offset[sl], sizes, data, offset)
    r0, r1, c0, c1, rank = (H.row_start[sl] - p0, H.row_stop[sl] - p0, H.col_start[sl].copy(),
                            H.col_stop[sl].copy(), H.rank[sl].copy())
    # Low precision and the sparse part travel with the rows (cluster order).
    storage = Packed._trusted(
        shape=(p1 - p0, H.shape[1]), row_perm=np.arange(p1 - p0),
        col_perm=np.arange(H.shape[1]), row_start=r0, row_stop=r1, col_start=c0,
        col_stop=c1, rank=rank, offset=offset, data=data,
        block_err2=H.block_err2[sl].copy(), block_norm2=H.block_norm2[sl].copy(),
        encoding=reencode(H._factor_kind, data, run_lengths(r0, r1, c0, c1, rank)),
        outliers=(None if H.outliers is None
                  else H.outliers.rows(H.row_perm, p0, p1, H.col_perm)))
    return storage


def _keep(value):
    """A task whose result is its argument: data held in the graph, so Dask
    can recompute it when the worker holding it is lost."""
    return value


def _build_part(shared, p0, p1, initial, opts, host_threads):
    """Rows ``[p0, p1)`` of a kernel H-matrix, from their share of the first
    partition (the blocks and numbers of the whole build there)."""
    kern, Xp, Yp, row_tree, col_tree = shared
    src = kern.source(Xp, Yp)   # here, so the points travel once (Xp is Yp when square)
    with _numba_share(host_threads):
        storage = build(src, False, row_tree, col_tree, np.dtype(np.float64), opts["tol"],
                        opts["admissibility"], opts["eta"], "aca", opts["max_rank"],
                        opts["budget"], norm_estimate=opts["norm_estimate"], seed=opts["seed"],
                        initial=initial).storage
    n = col_tree.size
    return storage._replace(shape=(p1 - p0, n), row_perm=np.arange(p1 - p0),
                            col_perm=np.arange(n), row_start=storage.row_start - p0,
                            row_stop=storage.row_stop - p0)


def _apply_part(part, x, trans, host_threads):
    with _numba_share(host_threads):
        return part._apply(x, trans)


def _part_nbytes(part):
    return part.nbytes
