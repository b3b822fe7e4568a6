"""HMatrix: packed hierarchical matrix with fast products.

An :class:`HMatrix` is a handful of flat arrays (DESIGN section 4): the row and
column permutations of its cluster trees, per-block int64 arrays
``row_start, row_stop, col_start, col_stop, rank, offset`` (cluster-order index
space, ``rank = -1`` for dense blocks), one contiguous ``data`` buffer in the
input's float dtype (each low-rank block as ``U (m_b, k)`` then ``V (n_b, k)``,
both column-major, i.e. the rows of ``U.T`` then those of ``V.T``; each dense
block as ``m_b x n_b`` row-major), and a row and a
column schedule for race-free parallel products.

These arrays travel as one frozen value, ``H.storage``
(:class:`hmnumba.storage.Packed`; :class:`~hmnumba.storage.SymmetricPacked`
for symmetric storage): :func:`hmnumba.construct.build` returns it,
:mod:`hmnumba.io` writes and reads it, :meth:`HMatrix.to` copies it to the
GPU and :mod:`hmnumba.distributed` ships its row parts. ``HMatrix(storage,
tol, norm=None, params=None, source=None)`` wraps one and adds what is not
an array: the tolerance, the norm, the build parameters, the kernel source
(for :meth:`HMatrix.estimate_error`) and the device copy. ``H.rank``,
``H.data``, ``H.row_perm`` ... are read-only views of the storage value.
Every host product goes through the value's ``_apply``, whose variant part
(full or symmetric) is its ``_product``: no product branches on a flag.

A *symmetric* HMatrix (``H.symmetric``; :meth:`HMatrix.from_kernel` builds
one for a symmetric kernel on one point set) stores only its upper block
triangle: every block is either diagonal (``row_start == col_start`` and
``row_stop == col_stop``; the builds store these dense, so ``H`` equals its
transpose exactly) or strictly upper (``row_stop <= col_start``), and a
strictly upper block also stands for its mirror image, its transpose below
the diagonal. That halves storage and build time; the matvec reads every
stored number once and applies it twice
(:func:`hmnumba.kernels.symmetric.symmetric_hmatvec`).
"""
from __future__ import annotations

import logging
import math
import numbers
import os
import time
import warnings
from typing import Any, Union

import numpy as np
from numpy.typing import ArrayLike, DTypeLike
from scipy.sparse.linalg import LinearOperator

from hmnumba import _validation as val
from hmnumba.bounds import block_error_bound
from hmnumba.cluster import CLUSTER_METHODS, ClusterTree, build_cluster_trees
from hmnumba.construct import BUDGETS, METHODS, build, cheaper_subtrees, global_low_rank
from hmnumba.exceptions import CompressionWarning
from hmnumba.backend import resolve_backend
from hmnumba.blocks import ADMISSIBILITY
from hmnumba.kernels import sources
from hmnumba.kernel_functions import KernelFunction, UserKernel, as_kernel
from hmnumba.kernels.lowprec import packed_block_errors2
# BLAS_MIN_RHS and FEW_BLOCKS: the product paths (see hmnumba.storage)
from hmnumba.storage import (BLAS_MIN_RHS, FACTOR_DTYPES, FEW_BLOCKS,  # noqa: F401
                             FILL_MAX_SIDE, PACKED_ARRAYS, SCALE_FREE_EXP, Packed,
                             SymmetricPacked, encode, outlier_counts, run_lengths,
                             split_outliers)

# from_dense's choices: the cheaper of tree and global low-rank block, or the tree.
STRUCTURES = ("auto", "hierarchical")

# What ``random_state`` arguments accept (see _validation.check_random_state).
RandomStateLike = Union[int, np.random.RandomState, np.random.Generator, None]

# Build messages (start, end with block counts and seconds) go to the
# "hmnumba" logger: ``logging.basicConfig(level=logging.INFO)`` shows them.
logger = logging.getLogger(__name__)


class HMatrix:
    """A hierarchical matrix: an adaptive tree of low-rank and dense blocks.

    Build one with :meth:`from_dense` or :meth:`from_kernel`; apply it with
    ``H @ x``. It behaves like a SciPy ``LinearOperator``
    (:meth:`aslinearoperator`).

    Attributes
    ----------
    storage : hmnumba.storage.Packed
        The packed arrays; ``shape``, ``rank``, ``data``, ``row_perm`` and
        the other array names are read-only views of its fields.
    shape : tuple of int
    dtype : numpy dtype
        Storage dtype (float32 input stays float32).
    tol : float
        The requested relative tolerance.
    norm : float
        ``||A||_F``: exact for dense input, an estimate for kernels.
    block_errors : ndarray
        Per-block absolute Frobenius errors (exact for dense input).
    symmetric : bool
        Only the upper block triangle is stored (see the module docstring);
        every product, :meth:`to_dense`, :attr:`error_bound` and
        :attr:`nbytes` account for the mirrored blocks.
    encoding : hmnumba.storage.LowPrecision or None
        The stored form of ``data`` when ``factor_dtype`` was set (float16
        or int8 codes, counted in :attr:`nbytes`); ``data`` is then its
        decoded working copy. None: ``data`` is stored as it is.
    outliers : hmnumba.storage.SparseOutliers or None
        The sparse part ``S`` of ``A = S + H`` (``outliers=`` of
        :meth:`from_dense`), added in every product and in :meth:`to_dense`.
    error_exp : int
        ``block_err2`` and ``block_norm2`` are in units of ``4**error_exp``
        (:attr:`block_errors` are absolute). 0, except for inputs of extreme
        magnitude (see :meth:`from_dense`), whose squared errors would
        underflow or overflow float64.

    Parameters
    ----------
    storage : hmnumba.storage.Packed
        The packed arrays (section 4 of the design) as one value.
    tol : float
        The requested relative tolerance, ``0 < tol < 1``.
    norm : float, optional
        ``||A||_F``; by default from the stored block norms.
    params : dict, optional
        Build parameters (reported by :meth:`summary`, saved with the file).
    source : tuple, optional
        ``(kernel, points, col_points)`` of a kernel matrix, for
        :meth:`estimate_error`.

    Notes
    -----
    A storage value made from outside (:meth:`from_arrays`,
    ``hmnumba.storage.Packed(...)``) is validated exactly as
    :func:`hmnumba.load` validates a file (permutations, block ranges,
    ranks, offsets, tiling, finite values, bounded schedules), so arrays
    that would make a kernel read out of bounds raise ``ValueError``
    instead of crashing ``H @ x``. Build with :meth:`from_dense`,
    :meth:`from_kernel` or :func:`hmnumba.load`.

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba import HMatrix
    >>> x = np.linspace(0, 1, 300)
    >>> A = 1.0 / (1.0 + np.abs(x[:, None] - x[None, :] + 2.0))
    >>> H = HMatrix.from_dense(A, tol=1e-6)
    >>> bool(H.error_bound <= 1e-6), bool(H.compression_ratio > 1)
    (True, True)
    >>> v = np.ones(300)
    >>> bool(np.linalg.norm(H @ v - A @ v) <= 1e-6 * np.linalg.norm(A) * np.linalg.norm(v))
    True
    """

    # numpy defers ``x @ H`` to ``H.__rmatmul__`` instead of converting H.
    __array_ufunc__ = None

    def __init__(self, storage: Packed, tol: float, norm: float | None = None,
                 params: dict | None = None, source: Any = None):
        if not isinstance(storage, Packed):
            raise TypeError(f"storage must be a hmnumba.storage.Packed (the packed arrays as "
                            f"one value), got {type(storage).__name__}; use "
                            f"HMatrix.from_arrays for loose arrays")
        self.storage = storage
        self.tol = val.check_tol(tol, "tol")
        self.norm = (float(np.ldexp(np.sqrt(np.dot(storage.multiplicity, storage.block_norm2)),
                                    storage.error_exp)) if norm is None
                     else val.check_nonnegative_float(norm, "norm"))
        self.params = dict(params or {})
        self._source = source   # (kernel, points, col_points) for estimate_error
        self._device_arrays = None  # the packed arrays on the GPU, after to("cuda")

    @classmethod
    def from_arrays(cls, shape, row_perm, col_perm, row_start, row_stop, col_start, col_stop,
                    rank, offset, data, block_err2, block_norm2, tol, norm=None, params=None,
                    source=None, symmetric=False, error_exp=0, encoding=None,
                    outliers=None) -> HMatrix:
        """An HMatrix of loose packed arrays (section 4 of the design),
        validated exactly as :func:`hmnumba.load` validates a file
        (:meth:`hmnumba.storage.Packed.from_arrays`).

        Arrays that would make a kernel read out of bounds (permutations,
        block ranges, ranks, offsets, tiling, finite values, bounded
        schedules) raise ``ValueError``; arrays of the wrong kind
        ``TypeError``, naming the argument.

        Examples
        --------
        >>> import numpy as np
        >>> from hmnumba import HMatrix
        >>> H = HMatrix.from_dense(np.ones((40, 30)), tol=1e-8)
        >>> a = H.storage.arrays()
        >>> G = HMatrix.from_arrays(H.shape, tol=H.tol, **a)
        >>> bool(np.array_equal(G @ np.ones(30), H @ np.ones(30)))
        True
        >>> a["offset"] = a["offset"] + 10**6
        >>> HMatrix.from_arrays(H.shape, tol=H.tol, **a)
        Traceback (most recent call last):
        ...
        ValueError: HMatrix storage: inconsistent arrays: ...
        """
        storage = Packed.from_arrays(shape, row_perm, col_perm, row_start, row_stop, col_start,
                                     col_stop, rank, offset, data, block_err2, block_norm2,
                                     symmetric, error_exp, encoding, outliers)
        return cls(storage, tol, norm=norm, params=params, source=source)

    def _wrap(self, storage, **changes):
        """A new HMatrix over ``storage`` with this one's tol, norm, params
        and source (unless changed), on this one's device."""
        kw = dict(tol=self.tol, norm=self.norm, params=self.params, source=self._source)
        kw.update(changes)
        return type(self)(storage, **kw).to(self.device)

    # ------------------------------------------------------------------ build
    @classmethod
    def from_dense(cls, A: ArrayLike, tol: float = 1e-3, leaf_size: int = 32,
                   admissibility: str = "adaptive", eta: float = 2.0, cluster: str = "pca",
                   method: str = "aca", max_rank: int | None = None, budget: str = "block",
                   points: ArrayLike | None = None, col_points: ArrayLike | None = None,
                   random_state: RandomStateLike = None, n_jobs: int | None = None,
                   backend: str = "cpu", symmetric: bool = False,
                   structure: str = "auto", factor_dtype: str | None = None,
                   outliers: int | str | None = None) -> HMatrix:
        """Compress a dense matrix with the guarantee ``||A - H||_F <= tol ||A||_F``.

        The adaptive tree is compared with the whole matrix as one low-rank
        block at its optimal rank and as one dense block
        (``structure="auto"``), and the one that stores fewest bytes is
        returned: an H-matrix never stores more than a truncated SVD at the
        same ``tol``, nor more than ``A`` (``summary()`` says which won).

        Parameters
        ----------
        A : array-like of shape (m, n)
            float32 or float64; float32 is stored as float32. Integer and
            boolean arrays are converted to float64, as
            :class:`~hmnumba.HMatrixCompressor` and ``hmnumba compress`` do.
        tol : float, default=1e-3
            Relative Frobenius tolerance, ``0 < tol < 1``.
        leaf_size : int, default=32
            Clusters with at most this many indices are not split.
        admissibility : {"adaptive", "strong", "weak"}, default="adaptive"
            Initial partition; ``"strong"`` needs ``points``.
        eta : float, default=2.0
            Parameter of strong admissibility.
        cluster : {"pca", "index", "geometric"}, default="pca"
            How rows and columns are clustered; ``"geometric"`` uses ``points``.
        method : {"aca", "svd", "rsvd"}, default="aca"
            Low-rank approximation of a block: ACA with partial pivoting plus
            recompression, exact truncated SVD, or an adaptive randomized range
            finder. Every block's error is then computed exactly; a block that
            misses its budget falls back to the exact SVD or is refined.
        max_rank : int or None
            Blocks needing a larger rank are refined.
        budget : {"block", "size", "perimeter"}, default="block"
            How the error budget is split over the blocks (see
            :mod:`hmnumba.construct`). All meet the global bound.
        points, col_points : array-like of shape (m, d) / (n, d), optional
            Coordinates of rows / columns for ``cluster="geometric"``.
        random_state : int, RandomState, Generator or None
            Seeds the PCA power iteration and the randomized SVD. ``None``
            means the fixed seed 0, not fresh randomness (unlike
            scikit-learn's convention): the same call gives the same bits.
            Pass a ``numpy.random.Generator`` for a seed drawn from it.
        n_jobs : int or None, default=None
            None compresses each round's blocks in this process (numba
            threads). An int sends chunks of blocks to ``joblib.Parallel``
            workers (``-1``: all of the active backend's workers); under
            ``joblib.parallel_config(backend="dask")`` these are the workers of a
            ``dask.distributed`` cluster. The result is the same, bit for bit.
        backend : {"cpu", "cuda", "auto"}, default="cpu"
            Where products run (:mod:`hmnumba.backend`). The build itself runs
            on the CPU; with ``"cuda"`` the result is moved with ``to("cuda")``.
        symmetric : bool, default=False
            ``A`` equals its transpose (checked exactly; e.g. a Gram or NTK
            matrix): build and store only the upper block triangle, on one
            cluster tree (see :attr:`symmetric`). Half the storage and build
            time; the bound still holds exactly, each strictly upper block's
            error counted twice.
        structure : {"auto", "hierarchical"}, default="auto"
            ``"auto"``: the cheapest of the adaptive tree, one global
            low-rank block (:func:`hmnumba.construct.global_low_rank`; exact
            SVD up to 2048 x 2048, a randomized range finder above) and one
            dense block; inside the tree, a cluster pair whose blocks store
            more than the pair as one low-rank block is replaced by it
            (:func:`hmnumba.construct.cheaper_subtrees`, three levels
            below the root). A
            symmetric build keeps its tree (one low-rank block is not
            exactly symmetric). ``"hierarchical"``: the adaptive tree as
            built, without these comparisons.
        factor_dtype : {None, "float16", "int8", "auto"}, default=None
            Store the numbers (low-rank factors and dense blocks) in fewer
            bits (:mod:`hmnumba.storage`): IEEE halves, or 8-bit codes with
            one float32 scale per factor column or dense row. Their rounding
            is measured block by block and counted in :attr:`block_errors`,
            so the guarantee stays exact; where it takes too much of the
            budget the build is repeated at a smaller tolerance (higher
            ranks), and where no rank helps the result is kept at full
            precision (``summary()`` says so). ``"auto"``: the cheapest of
            full precision, ``"float16"`` and ``"int8"``. Products run in
            the input's dtype on a decoded working copy; :attr:`nbytes`
            counts the stored codes. Inputs of extreme magnitude (see
            Notes) stay at full precision. None: the input's dtype.
        outliers : None, "auto" or int, default=None
            Store ``A = S + H`` with ``S`` the given number of
            largest-magnitude entries of ``A``, kept exactly in CSR form
            with int32 indices (counted in :attr:`nbytes`; see
            :class:`hmnumba.storage.SparseOutliers`), and ``H`` built from
            ``A - S`` to the same absolute error, so the bound
            ``||A - (S + H)||_F <= tol ||A||_F`` holds exactly. A few large
            spikes make a low-rank matrix full rank; taken out, ``H``
            stays small. ``"auto"``: among the entries above 3, 4.5, 7 and
            12 robust standard deviations, the count for which ``S`` and a
            truncated SVD of ``A - S`` store least (one SVD each), built
            and kept if it stores less than no split; no split where
            ``min(m, n) > 1024``. Not with ``symmetric=True``.

        Returns
        -------
        HMatrix

        Raises
        ------
        TypeError
            ``A`` is not a real numeric array (complex, object, strings).
        ValueError
            ``A`` is not 2-D, is empty or not finite; its Frobenius norm
            exceeds the float64 range; a parameter is out of range.

        Notes
        -----
        The guarantee holds at every scale, from the smallest normal number
        to the largest: an input whose largest magnitude lies outside
        ``[2**-64, 2**64]`` is scaled by a power of two before the build (an
        exact operation), so no norm or error computed inside underflows or
        overflows, and the stored numbers are scaled back exactly
        (:attr:`error_exp` keeps the squared block errors representable).

        Warns
        -----
        CompressionWarning
            The result stores more bytes than ``A`` itself
            (``compression_ratio < 1``).

        Examples
        --------
        >>> import numpy as np
        >>> from hmnumba import HMatrix
        >>> rng = np.random.default_rng(0)
        >>> W = rng.standard_normal((256, 8)) @ rng.standard_normal((8, 256))
        >>> H = HMatrix.from_dense(W, tol=1e-8)
        >>> bool(np.linalg.norm(H.to_dense() - W) <= 1e-8 * np.linalg.norm(W))
        True
        >>> bool(H.compression_ratio > 10)
        True

        Half-precision factors, the rounding inside the bound:

        >>> H16 = HMatrix.from_dense(W, tol=1e-2, factor_dtype="float16")
        >>> bool(H16.error_bound <= 1e-2), bool(H16.nbytes < H.nbytes)
        (True, True)
        """
        A = val.check_dense_input(A, "A")
        backend = resolve_backend(backend)
        opts = _check_build_options(tol, leaf_size, admissibility, eta, max_rank, budget)
        cluster = val.check_choice(cluster, "cluster", CLUSTER_METHODS)
        method = val.check_choice(method, "method", tuple(METHODS))
        seed = val.check_random_state(random_state)
        n_jobs = val.check_n_jobs(n_jobs)
        symmetric = _check_dense_symmetric(symmetric, A, col_points)
        structure = val.check_choice(structure, "structure", STRUCTURES)
        if outliers is not None:
            outliers = _check_outliers(outliers, symmetric, A.size)
            options = dict(leaf_size=leaf_size, admissibility=admissibility, eta=eta,
                           cluster=cluster, method=method, max_rank=max_rank, budget=budget,
                           points=points, col_points=col_points, random_state=random_state,
                           n_jobs=n_jobs, structure=structure, factor_dtype=factor_dtype)
            return _with_outliers(cls, A, opts["tol"], outliers, options).to(backend)
        if factor_dtype is not None:
            factor_dtype = val.check_choice(factor_dtype, "factor_dtype",
                                            FACTOR_DTYPES + ("auto",))
        started = _log_start("from_dense", A.shape, A.dtype, opts["tol"])
        As, exp = _scaled_input(A)   # exact power-of-two scaling, see _scaled_input
        row_tree, col_tree = build_cluster_trees(A.shape, cluster, opts["leaf_size"], A=As,
                                                 points=points, col_points=col_points,
                                                 random_state=seed)
        if symmetric:   # rows and columns are the same vectors: one tree
            col_tree = row_tree
        Ap = np.ascontiguousarray(As[row_tree.perm][:, col_tree.perm])
        norm_s = float(np.linalg.norm(Ap.astype(np.float64, copy=False)))   # build's units
        norm = _true_norm(norm_s, exp)
        auto = structure == "auto" and not symmetric

        def candidates(build_tol):
            """The tree built at ``build_tol`` (and the global candidates)."""
            bopts = dict(opts, tol=build_tol)
            storage, n_rounds, seconds = build(
                sources.dense_source(Ap), True, row_tree, col_tree, A.dtype, build_tol,
                opts["admissibility"], opts["eta"], method, opts["max_rank"], opts["budget"],
                norm_estimate=norm_s, seed=seed, n_jobs=n_jobs, symmetric=symmetric)
            n_replaced = 0
            if auto:
                t_start = time.perf_counter()
                storage, n_replaced = cheaper_subtrees(storage, Ap, row_tree, col_tree,
                                                       build_tol, opts["budget"],
                                                       opts["max_rank"], seed)
                seconds += time.perf_counter() - t_start
            params = dict(opts, cluster=cluster, method=method, random_state=random_state,
                          structure=structure, build_seconds=seconds, n_rounds=n_rounds,
                          n_subtrees_replaced=n_replaced)
            if build_tol != opts["tol"]:
                params["build_tol"] = build_tol
            if exp:
                _unscale_data(storage, exp)
                storage = storage._replace(error_exp=exp)
            H = cls(storage, opts["tol"], norm=norm, params=params)
            if not auto:
                H.params["stored_as"] = "hierarchical"
                return [H]
            return _global_candidates(H, As, exp, bopts, seed)

        if factor_dtype is None:
            H = _cheapest(candidates(opts["tol"]))
        else:
            H = _low_precision(candidates, As, Ap, exp, opts["tol"], factor_dtype)
        _log_end("from_dense", H, started)
        return H.to(backend)

    @classmethod
    def from_kernel(cls, kernel: Any, points: ArrayLike, col_points: ArrayLike | None = None,
                    tol: float = 1e-6, leaf_size: int = 32, admissibility: str = "strong",
                    eta: float = 2.0, max_rank: int | None = None, budget: str = "block",
                    random_state: RandomStateLike = None, n_jobs: int | None = None,
                    backend: str = "cpu", symmetric: bool | None = None) -> HMatrix:
        """Compress the kernel matrix ``K[i, j] = kernel(points[i], col_points[j])``
        without ever forming it.

        Admissible blocks are approximated by ACA with partial pivoting from
        single rows and columns, then recompressed; dense blocks are evaluated
        directly. Memory is ``O(k N log N)``. Block errors are ACA estimates:
        check the result with :meth:`estimate_error`.

        Parameters
        ----------
        kernel : KernelFunction or numba ``@njit`` function ``k(x, y) -> float``
            ``hmnumba.kernels.laplace`` (1/r, zero diagonal), ``gaussian``,
            ``exponential``, ``matern32``, or your own.
        points : array-like of shape (m, d)
        col_points : array-like of shape (n, d), optional
            Defaults to ``points`` (a square, self-interaction matrix).
        tol : float, default=1e-6
        leaf_size : int, default=32
        admissibility : {"strong", "weak", "adaptive"}, default="strong"
        eta : float, default=2.0
            Strong admissibility ``min(diam t, diam s) <= eta * dist(t, s)``.
        max_rank : int or None
        budget : {"block", "size", "perimeter"}, default="block"
        random_state : int or None
            Seeds the row sampling that estimates ``||K||_F`` for the
            weighted budgets ``"size"`` and ``"perimeter"``.
        n_jobs : int or None, default=None
            As in :meth:`from_dense`: None builds in this process, an int sends
            chunks of blocks to ``joblib`` workers (e.g. a Dask cluster under
            ``joblib.parallel_config(backend="dask")``); the points are shipped
            once, and the result is the same bit for bit.
        backend : {"cpu", "cuda", "auto"}, default="cpu"
            With ``"cuda"`` and a built-in kernel, the cluster trees and the
            ACA of the low-rank candidates run on the GPU (recompression and
            the dense near field on the host; ``n_jobs`` is not used) inside
            the same build loop as on the CPU (look-ahead, coarsening and
            symmetric storage included), and the result stays there
            (:meth:`to`). A user ``@njit`` kernel is
            compressed on the CPU and then moved.
        symmetric : bool or None, default=None
            Store only the upper block triangle (half the storage and build
            time; see :attr:`symmetric`). None means yes for a built-in
            kernel (they depend on ``|x - y|`` only) on one point set
            (``col_points`` None). Pass True for your own
            kernel if ``k(x, y) == k(y, x)``: only the upper triangle is then
            evaluated.

        Returns
        -------
        HMatrix

        Raises
        ------
        TypeError
            A user kernel that numba cannot compile for two float64 vectors,
            or that returns no real number.
        ValueError
            The kernel gave NaN or infinity (the message names the first
            pair ``(i, j)`` found), points whose squared distances overflow,
            or a parameter out of range. An exception raised inside a user
            kernel is re-raised as itself, with a note naming the pair.

        Warns
        -----
        CompressionWarning
            The result stores more bytes than the dense kernel matrix would.

        Examples
        --------
        >>> import numpy as np
        >>> from hmnumba import HMatrix
        >>> from hmnumba.kernels import laplace
        >>> X = np.random.default_rng(0).random((2000, 3))
        >>> H = HMatrix.from_kernel(laplace, X, tol=1e-6)
        >>> bool(H.estimate_error(random_state=0) < 1e-5)
        True
        """
        kern, X, Y = _check_kernel_inputs(kernel, points, col_points)
        backend = resolve_backend(backend)
        opts = _check_build_options(tol, leaf_size, admissibility, eta, max_rank, budget)
        seed = val.check_random_state(random_state)
        n_jobs = val.check_n_jobs(n_jobs)
        on_gpu = backend == "cuda" and isinstance(kern, KernelFunction)
        symmetric = _check_symmetric(symmetric, kern, col_points)
        started = _log_start("from_kernel", (X.shape[0], Y.shape[0]), np.dtype(np.float64),
                             opts["tol"])
        tree = _device_tree if on_gpu else ClusterTree.from_points
        row_tree = tree(X, opts["leaf_size"])
        col_tree = row_tree if col_points is None else tree(Y, opts["leaf_size"])
        Xp, Yp, src, norm_est = _kernel_source(kern, X, Y, row_tree, col_tree, opts["budget"],
                                               seed)
        storage, n_rounds, seconds = build(
            src, False, row_tree, col_tree, np.dtype(np.float64), opts["tol"],
            opts["admissibility"], opts["eta"], "aca", opts["max_rank"], opts["budget"],
            norm_estimate=norm_est, seed=seed, n_jobs=n_jobs, symmetric=symmetric,
            backend="cuda" if on_gpu else "cpu")
        params = dict(opts, kernel=repr(kern), build_seconds=seconds, n_rounds=n_rounds)
        _check_kernel_output(kern, X, Y, src, storage)
        H = cls(storage, opts["tol"], params=params, source=(kern, X, Y))
        _log_end("from_kernel", H, started)
        return H.to(backend)

    # --------------------------------------------------------------- products
    def matvec(self, x: ArrayLike) -> np.ndarray:
        """``A @ x`` for a vector ``x`` of shape ``(n,)`` or ``(n, 1)``.

        As SciPy's ``LinearOperator.matvec``: the result has the operand's
        kind, shape ``(m,)`` or ``(m, 1)``.

        Parameters
        ----------
        x : array-like of shape (n,) or (n, 1)

        Returns
        -------
        ndarray of shape (m,) or (m, 1)

        Examples
        --------
        >>> import numpy as np
        >>> from hmnumba import HMatrix
        >>> H = HMatrix.from_dense(np.eye(40) + 1.0, tol=1e-8)
        >>> H.matvec(np.ones(40)).shape, H.matvec(np.ones((40, 1))).shape
        ((40,), (40, 1))
        """
        return self._vector_product(x, trans=False)

    def rmatvec(self, y: ArrayLike) -> np.ndarray:
        """``A.T @ y`` for a vector ``y`` of shape ``(m,)`` or ``(m, 1)``.

        The result has the operand's kind, shape ``(n,)`` or ``(n, 1)``.

        Parameters
        ----------
        y : array-like of shape (m,) or (m, 1)

        Returns
        -------
        ndarray of shape (n,) or (n, 1)

        Examples
        --------
        >>> import numpy as np
        >>> from hmnumba import HMatrix
        >>> H = HMatrix.from_dense(np.ones((30, 20)), tol=1e-8)
        >>> H.rmatvec(np.ones(30)).shape, H.rmatvec(np.ones((30, 1))).shape
        ((20,), (20, 1))
        """
        return self._vector_product(y, trans=True)

    def _vector_product(self, v, trans):
        """:meth:`matvec` (``trans`` False, operand ``x``) and :meth:`rmatvec`
        (``trans`` True, operand ``y``): a vector or one column, which goes
        through the vector kernel (the same bits as the 1-D call)."""
        name, dim, size, other = (("y", "rows", self.shape[0], "rmatmat") if trans
                                  else ("x", "columns", self.shape[1], "matmat"))
        v = val.check_operand(v, size, self.dtype, name, dim=dim)
        if v.ndim != 1 and v.shape[1] != 1:
            raise ValueError(f"{name} must be 1-D, shape ({size},), or one column, "
                             f"shape ({size}, 1); got shape {v.shape}: use {other} "
                             f"for several vectors")
        if v.ndim == 2 and not val.is_device_operand(v):
            return self._apply(v[:, 0], trans=trans)[:, None]
        return self._apply(v, trans=trans)

    def matmat(self, X: ArrayLike) -> np.ndarray:
        """``A @ X`` for ``X`` of shape ``(n, k)``."""
        X = val.check_operand(X, self.shape[1], self.dtype, "X")
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D, got shape {X.shape}")
        return self._apply(X, trans=False)

    def rmatmat(self, Y: ArrayLike) -> np.ndarray:
        """``A.T @ Y`` for ``Y`` of shape ``(m, k)``."""
        Y = val.check_operand(Y, self.shape[0], self.dtype, "Y", dim="rows")
        if Y.ndim != 2:
            raise ValueError(f"Y must be 2-D, got shape {Y.shape}")
        return self._apply(Y, trans=True)

    def _apply(self, x, trans):
        """The product with a checked operand: on the GPU after
        :meth:`to` (or for a device operand), else the storage value's
        :meth:`~hmnumba.storage.Packed._apply`, the one product of every
        storage variant."""
        if self._device_arrays is None and not val.is_device_operand(x):
            return self.storage._apply(x, trans)
        if self._device_arrays is None:
            raise ValueError("the operand is a CUDA device array but this HMatrix is on the "
                             "CPU; call H.to('cuda') first")
        if self.outliers is not None and val.is_device_operand(x):
            raise ValueError("products of an HMatrix with outliers take numpy operands "
                             "(the sparse part is applied on the host)")
        out_dtype = np.result_type(self.dtype, x.dtype)
        if out_dtype.kind != "f":
            out_dtype = np.dtype(np.float64)
        from hmnumba.kernels import products_cuda
        out = products_cuda.apply(self._device_arrays, self.shape, x, trans, out_dtype)
        return self.storage._add_outliers(out, x, trans)

    @property
    def symmetric(self) -> bool:
        """Only the upper block triangle is stored
        (:class:`hmnumba.storage.SymmetricPacked`)."""
        return self.storage.symmetric

    @property
    def _strictly_upper(self):
        """Mask of the stored blocks that stand for their mirror image too
        (a symmetric matrix's blocks off the diagonal)."""
        return self.storage.strictly_upper

    @property
    def multiplicity(self) -> np.ndarray:
        """How often each stored block occurs in the matrix: 2 for a strictly
        upper block of a symmetric matrix (itself and its mirror), else 1."""
        return self.storage.multiplicity

    def full_storage(self) -> HMatrix:
        """This matrix with every block stored: for a symmetric matrix the
        mirror images of the strictly upper blocks are made explicit (the
        layout the CUDA kernels and :mod:`hmnumba.distributed` expect);
        otherwise ``self``.

        Examples
        --------
        >>> import numpy as np
        >>> from hmnumba import HMatrix
        >>> from hmnumba.kernels import gaussian
        >>> X = np.random.default_rng(0).random((600, 2))
        >>> H = HMatrix.from_kernel(gaussian, X, tol=1e-8)
        >>> F = H.full_storage()
        >>> H.symmetric, F.symmetric, bool(F.nbytes > H.nbytes)
        (True, False, True)
        >>> bool(np.allclose(F.to_dense(), H.to_dense(), rtol=0, atol=1e-13))
        True
        """
        full = self.storage.full()
        return self if full is self.storage else self._wrap(full)

    def to(self, device: str) -> HMatrix:
        """Move the products to ``device`` (in place) and return this matrix.

        ``to("cuda")`` copies the packed arrays to the GPU once and keeps them
        there: afterwards :meth:`matvec`, :meth:`matmat`, :meth:`rmatvec`,
        :meth:`rmatmat` and ``@`` run the CUDA kernels. They return numpy
        arrays, or device arrays when given device arrays (whose values are
        not checked for NaN). ``to("cpu")`` releases the device copy; the host
        arrays are kept throughout, so the round trip copies nothing back.

        Parameters
        ----------
        device : {"cpu", "cuda"}

        Returns
        -------
        HMatrix
            ``self``.

        Raises
        ------
        ValueError
            Unknown device, or ``"cuda"`` without a GPU (numba's CUDA
            simulator, ``NUMBA_ENABLE_CUDASIM=1``, counts as one).

        Examples
        --------
        >>> import numpy as np
        >>> from hmnumba import HMatrix
        >>> A = np.add.outer(np.arange(64.0), np.arange(64.0))
        >>> H = HMatrix.from_dense(A, tol=1e-8).to("cuda")
        >>> H.device, bool(np.allclose(H @ np.ones(64), A.sum(axis=1)))
        ('cuda', True)
        >>> H.to("cpu").device
        'cpu'
        """
        if val.check_device(device) == "cpu":
            self._device_arrays = None
        elif self._device_arrays is None:
            resolve_backend("cuda", "device")
            from hmnumba.kernels import products_cuda
            # The CUDA kernels take every block stored (the mirrors too).
            self._device_arrays = products_cuda.to_device(self.storage.full())
        return self

    @property
    def device(self) -> str:
        """Where products run: ``"cpu"`` or ``"cuda"`` (see :meth:`to`)."""
        return "cpu" if self._device_arrays is None else "cuda"

    def __getstate__(self):
        # Device arrays do not pickle: a copy comes back on the CPU.
        state = dict(self.__dict__)
        state["_device_arrays"] = None
        return state

    def __setstate__(self, state):
        if "storage" not in state:
            state = _state_from_loose_arrays(state)
        self.__dict__.update(state)

    def __matmul__(self, other):
        if isinstance(other, (HMatrix, LinearOperator)):
            return _operator_product(self, other)
        other_arr = val.check_operand(other, self.shape[1], self.dtype, "operand")
        return self._apply(other_arr, trans=False)

    def __rmatmul__(self, other):
        """``x @ H`` = ``(H.T @ x.T).T``."""
        if isinstance(other, (HMatrix, LinearOperator)):
            return _operator_product(other, self)
        arr = val.check_operand(other, self.shape[0], self.dtype, "x", dim="rows",
                                last_axis=True)
        if arr.ndim == 1:
            return self.rmatvec(arr)
        return self.rmatmat(arr.T).T

    def dot(self, x: ArrayLike) -> np.ndarray:
        """``H @ x``: a matrix-vector or matrix-matrix product (SciPy's
        ``LinearOperator.dot``; ``np.dot(H, x)`` calls it too).

        Parameters
        ----------
        x : array-like of shape (n,), (n, 1) or (n, k)

        Returns
        -------
        ndarray of shape (m,), (m, 1) or (m, k)

        Examples
        --------
        >>> import numpy as np
        >>> from hmnumba import HMatrix
        >>> A = np.add.outer(np.arange(50.0), np.arange(40.0))
        >>> H = HMatrix.from_dense(A, tol=1e-10)
        >>> bool(np.allclose(H.dot(np.ones(40)), A.sum(axis=1)))
        True
        >>> bool(np.allclose(np.dot(H, np.ones((40, 2))), A @ np.ones((40, 2))))
        True
        """
        return self @ x

    def __array_function__(self, func, types, args, kwargs):
        # ``np.dot(H, x)`` and ``np.dot(x, H)`` are products; any other numpy
        # function would turn H into a 0-d object array and fail obscurely.
        if func is np.dot and len(args) == 2 and not kwargs:
            a, b = args
            return a @ b
        raise TypeError(f"{func.__module__}.{func.__name__} does not take an HMatrix: use H @ x, "
                        f"H.dot(x), H.to_dense() or H.aslinearoperator()")

    # ------------------------------------------------------------ arithmetic
    # Multiplying by a real number scales the stored factors: the result is an
    # exact HMatrix with the same blocks. Sums are lazy SciPy LinearOperator
    # sums (the partitions of two H-matrices need not agree).
    def __mul__(self, other):
        if isinstance(other, numbers.Real) and not isinstance(other, bool):
            return self._scaled(float(other))
        return NotImplemented

    __rmul__ = __mul__

    def __truediv__(self, other):
        if isinstance(other, numbers.Real) and not isinstance(other, bool):
            if other == 0:
                raise ZeroDivisionError("HMatrix divided by zero")
            return self._scaled(1.0 / float(other))
        return NotImplemented

    def __neg__(self):
        return self._scaled(-1.0)

    def __pos__(self):
        return self

    def __add__(self, other):
        if isinstance(other, (HMatrix, LinearOperator)):
            if other.shape != self.shape:
                raise ValueError(f"cannot add operators of shapes {self.shape} and "
                                 f"{other.shape}")
            return self.aslinearoperator() + _as_operator(other)
        return NotImplemented

    def __radd__(self, other):
        if isinstance(other, LinearOperator):
            return other + self.aslinearoperator()
        return NotImplemented

    def __sub__(self, other):
        if isinstance(other, (HMatrix, LinearOperator)):
            return self + (-_as_operator(other))
        return NotImplemented

    def __rsub__(self, other):
        if isinstance(other, LinearOperator):
            return other - self.aslinearoperator()
        return NotImplemented

    def _scaled(self, c):
        """``c * H`` as a new HMatrix: every dense block and the ``U`` factor
        of every low-rank block scaled (so ``data`` is scaled once), block
        errors and norms scaled by ``|c|``."""
        return self._wrap(self.storage.scaled(c), norm=self.norm * abs(c), source=None)

    @property
    def T(self) -> HMatrix:
        """The transpose, as an :class:`HMatrix` sharing no work with this one."""
        return self.transpose()

    def transpose(self) -> HMatrix:
        """Return ``A.T`` as a new HMatrix (dense blocks are transposed, low-rank
        blocks swap their factors; the data are copied once). A symmetric
        matrix is its own transpose: the new HMatrix shares its storage."""
        t = self.storage.transpose()
        return self._wrap(t, source=self._source if t is self.storage else None)

    @property
    def H(self) -> HMatrix:
        """The adjoint (conjugate transpose): the transpose, as the data are real.

        Examples
        --------
        >>> import numpy as np
        >>> from hmnumba import HMatrix
        >>> A = np.add.outer(np.arange(30.0), np.arange(20.0))
        >>> bool(np.allclose(HMatrix.from_dense(A, tol=1e-10).H.to_dense(), A.T))
        True
        """
        return self.transpose()

    def adjoint(self) -> HMatrix:
        """The adjoint, :attr:`H` (SciPy's ``LinearOperator.adjoint``).

        Examples
        --------
        >>> import numpy as np
        >>> from hmnumba import HMatrix
        >>> HMatrix.from_dense(np.ones((30, 20)), tol=1e-8).adjoint().shape
        (20, 30)
        """
        return self.transpose()

    def aslinearoperator(self) -> LinearOperator:
        """This matrix as a ``scipy.sparse.linalg.LinearOperator``.

        Examples
        --------
        >>> import numpy as np
        >>> from scipy.sparse.linalg import cg
        >>> from hmnumba import HMatrix
        >>> x = np.linspace(0, 1, 200)
        >>> A = np.exp(-np.abs(x[:, None] - x[None, :])) + 200 * np.eye(200)
        >>> op = HMatrix.from_dense(A, tol=1e-10).aslinearoperator()
        >>> sol, info = cg(op, np.ones(200), rtol=1e-10)
        >>> info, bool(np.allclose(A @ sol, 1.0, atol=1e-8))
        (0, True)
        """
        return LinearOperator(self.shape, matvec=self.matvec, rmatvec=self.rmatvec,
                              matmat=self.matmat, rmatmat=self.rmatmat, dtype=self.dtype)

    def save(self, path: str | os.PathLike) -> None:
        """Write this matrix to ``path`` (``.hmz``) atomically; read it back
        with :func:`hmnumba.load`. See :func:`hmnumba.io.save` for the
        format and the guarantees.

        Examples
        --------
        >>> import os, tempfile
        >>> import numpy as np
        >>> from hmnumba import HMatrix, load
        >>> H = HMatrix.from_dense(np.eye(64) + 1.0, tol=1e-8)
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     H.save(os.path.join(tmp, "h.hmz"))
        ...     bool(np.array_equal(load(os.path.join(tmp, "h.hmz")).to_dense(), H.to_dense()))
        True
        """
        from hmnumba.io import save
        save(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> HMatrix:
        """Read a matrix written by :meth:`save`: the same as :func:`hmnumba.load`.

        Parameters
        ----------
        path : str or os.PathLike

        Returns
        -------
        HMatrix

        Examples
        --------
        >>> import os, tempfile
        >>> import numpy as np
        >>> from hmnumba import HMatrix
        >>> H = HMatrix.from_dense(np.eye(64) + 1.0, tol=1e-8)
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     H.save(os.path.join(tmp, "h.hmz"))
        ...     H2 = HMatrix.load(os.path.join(tmp, "h.hmz"))
        >>> bool(np.array_equal(H2.to_dense(), H.to_dense()))
        True
        """
        from hmnumba.io import read
        storage, meta = read(path, expect="h")
        return cls(storage, **meta)

    def plot(self, ax: Any = None, cmap: Any = "viridis", annotate: bool | None = None) -> Any:
        """Draw the block partition: low-rank blocks coloured by rank, dense blocks grey.

        The blocks are drawn in place in the **cluster order** (rows and
        columns permuted by ``row_perm`` / ``col_perm``), where every block
        is a contiguous rectangle; in the original order a block is scattered
        over the rows and columns of its clusters. A colour bar gives the
        rank scale. A symmetric matrix shows its mirrored blocks too. Needs
        matplotlib (the ``plot`` extra).

        Parameters
        ----------
        ax : matplotlib.axes.Axes, optional
            Where to draw; by default a new figure of ``matplotlib.pyplot``.
        cmap : str or matplotlib colormap, default="viridis"
        annotate : bool, optional
            Write each low-rank block's rank in it; by default when there are
            at most 64 blocks.

        Returns
        -------
        matplotlib.axes.Axes

        Raises
        ------
        ImportError
            matplotlib is not installed.

        Examples
        --------
        >>> import numpy as np
        >>> from matplotlib.figure import Figure
        >>> from hmnumba import HMatrix
        >>> x = np.linspace(0, 1, 256)
        >>> H = HMatrix.from_dense(np.exp(-np.abs(x[:, None] - x)), tol=1e-6)
        >>> ax = H.plot(ax=Figure().subplots())
        >>> ax.get_title().startswith("HMatrix 256 x 256: ")
        True
        >>> ax.get_xlabel(), len(ax.figure.axes)   # the blocks' axes and the colour bar
        ('columns (cluster order)', 2)
        """
        from hmnumba._plotting import plot_blocks
        return plot_blocks(self, ax=ax, cmap=cmap, annotate=annotate)

    def to_dense(self, dtype: DTypeLike = None) -> np.ndarray:
        """Expand to a dense array (products computed in float64).

        Parameters
        ----------
        dtype : numpy dtype, optional
            Output dtype; defaults to the storage dtype.
        """
        return self.storage.to_dense(dtype)

    # ------------------------------------------------------------ properties
    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return 2

    @property
    def n_blocks(self) -> int:
        return int(self.rank.size)

    @property
    def ranks(self) -> np.ndarray:
        """Rank of every block (``-1`` for dense blocks), in storage order."""
        return self.rank

    @property
    def block_errors(self) -> np.ndarray:
        """Absolute Frobenius error of every block (0 for dense blocks)."""
        return np.ldexp(np.sqrt(self.block_err2), self.error_exp)

    @property
    def error_bound(self) -> float:
        """Achieved relative bound ``sqrt(sum_b err_b^2) / ||A||_F`` (Theorem 1a).

        Exact for :meth:`from_dense`; built from ACA estimates for
        :meth:`from_kernel`. Zero for the zero matrix.
        """
        return block_error_bound(self)

    @property
    def nbytes(self) -> int:
        """Bytes of everything a product reads: ``data``, the six per-block
        arrays, the permutations (an identity permutation is neither applied
        nor counted), the row and column schedules and the
        offsets of the phase-one buffer. (The per-block error diagnostics
        ``block_err2``/``block_norm2`` are not counted.) A symmetric matrix
        counts its stored blocks and the slabs of its matvec; the schedules
        that a matmat builds on first use are working memory, not counted.
        Low-precision numbers (``factor_dtype``) count as stored, codes and
        scales, not as their decoded working copy (:mod:`hmnumba.storage`);
        sparse outliers count their three CSR arrays."""
        return self.storage.nbytes

    @property
    def _factor_kind(self):
        return None if self.encoding is None else self.encoding.kind

    @property
    def dense_nbytes(self) -> int:
        return int(self.shape[0] * self.shape[1] * self.dtype.itemsize)

    @property
    def compression_ratio(self) -> float:
        """``dense_nbytes / nbytes`` (greater than 1 means smaller than dense)."""
        return self.dense_nbytes / self.nbytes

    def summary(self) -> str:
        """A short text report: blocks, ranks, storage, ratio, error bound."""
        lr = self.rank >= 0
        ranks = self.rank[lr]
        lines = [
            f"HMatrix {self.shape[0]} x {self.shape[1]} {self.dtype}",
            f"  blocks        {self.n_blocks} ({int(lr.sum())} low-rank, "
            f"{int((~lr).sum())} dense)",
            "  ranks         " + (f"min {ranks.min()} / median {int(np.median(ranks))} / "
                                   f"max {ranks.max()}" if ranks.size else "-"),
            f"  storage       {self.nbytes / 1e6:.3f} MB (dense {self.dense_nbytes / 1e6:.3f} MB),"
            f" ratio {self.compression_ratio:.2f}",
            f"  error bound   {self.error_bound:.3e} (tol {self.tol:g}, relative Frobenius)",
        ]
        if "stored_as" in self.params:
            lines.insert(1, f"  stored as     {self.params['stored_as']} (the cheapest of the "
                            "adaptive tree, one low-rank and one dense block)")
        if self.encoding is not None:
            lines.insert(1, f"  numbers       {self.encoding.kind} "
                            + ("(one float32 scale per factor column or dense row)"
                               if self.encoding.kind == "int8" else "(one power-of-two scale)")
                            + ", rounding counted in the error bound")
        if self.outliers is not None:
            lines.insert(1, f"  outliers      {self.outliers.nnz} entries stored exactly in CSR "
                            f"({self.outliers.nbytes / 1e6:.3f} MB), W = S + H")
        if "factor_dtype_fallback" in self.params:
            lines.insert(1, f"  numbers       {self.params['factor_dtype_fallback']}")
        if self.symmetric:
            lines.insert(1, "  symmetric     upper block triangle stored (strictly upper "
                            "blocks mirrored)")
        if "build_seconds" in self.params:
            lines.append(f"  build         {self.params['build_seconds']:.3f} s, "
                         f"{self.params.get('n_rounds', '?')} rounds")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"<HMatrix {self.shape[0]}x{self.shape[1]} {self.dtype}, {self.n_blocks} blocks, "
                f"ratio {self.compression_ratio:.2f}, error bound {self.error_bound:.2e}>")

    # ------------------------------------------------------------- checking
    def estimate_error(self, A: ArrayLike | None = None, n_probe: int = 8, n_rows: int = 256,
                       random_state: RandomStateLike = None) -> float:
        """Estimate ``||A - H||_F / ||A||_F`` by random probing.

        With Gaussian vectors ``g``, ``E ||(A - H) g||^2 = ||A - H||_F^2``; the
        exact ``A g`` is evaluated on ``n_rows`` sampled rows (from the kernel
        for :meth:`from_kernel`, or from ``A`` if given), ``H g`` with one
        matmat.

        Parameters
        ----------
        A : array-like of shape (m, n), optional
            The reference matrix; needed for matrices built by :meth:`from_dense`.
        n_probe : int, default=8
        n_rows : int, default=256
        random_state : int or None

        Returns
        -------
        float
        """
        n_probe = val.check_positive_int(n_probe, "n_probe")
        n_rows = val.check_positive_int(n_rows, "n_rows")
        rng = np.random.default_rng(val.check_random_state(random_state))
        m, n = self.shape
        G = rng.standard_normal((n, n_probe))
        rows = np.sort(rng.choice(m, size=min(n_rows, m), replace=False))
        if A is not None:
            A = val.check_matrix(A, "A")
            if A.shape != self.shape:
                raise ValueError(f"A has shape {A.shape}, expected {self.shape}")
            exact = A[rows].astype(np.float64) @ G
        elif self._source is not None:
            kern, X, Y = self._source
            exact = sources.sample_rows_times(kern.source(X, Y), rows.astype(np.int64), n, G)
        else:
            raise ValueError("estimate_error needs A for a matrix built from dense input")
        approx = self.matmat(G)[rows]
        scale = float(np.max(np.abs(exact)))   # scaled sums of squares (no underflow)
        if scale > 0:
            approx, exact = approx / scale, exact / scale
        num = np.sum((approx - exact) ** 2)
        den = np.sum(exact ** 2)
        return float(np.sqrt(num / den)) if den > 0 else float(np.sqrt(num))


def _forward(name):
    return property(lambda self: getattr(self.storage, name),
                    doc=f"``storage.{name}`` (read-only; see :class:`hmnumba.storage.Packed`).")


# Read-only views of the storage value, as attributes of the matrix.
for _name in PACKED_ARRAYS + ("shape", "error_exp", "encoding", "outliers", "t_off",
                              "z_off_rows", "z_off_cols", "row_sched", "col_sched", "slab_ptr",
                              "_identity_rows", "_identity_cols"):
    setattr(HMatrix, _name, _forward(_name))
del _name



def _state_from_loose_arrays(state):
    """The pickled state of an HMatrix of the layout before the storage
    value (the packed arrays as loose attributes) in today's layout."""
    missing = [k for k in PACKED_ARRAYS + ("shape", "tol") if k not in state]
    if missing:
        raise ValueError(f"cannot unpickle this HMatrix: its state has neither a storage "
                         f"value nor the packed arrays (missing {missing}); it was written "
                         f"by an incompatible hmnumba version")
    kind = SymmetricPacked if state.get("symmetric", False) else Packed
    encoding = state.get("encoding")
    fields = {k: state[k] for k in PACKED_ARRAYS + ("shape",)}
    storage = kind._trusted(error_exp=state.get("error_exp", 0), encoding=encoding,
                            outliers=state.get("outliers"), **fields)
    if storage.data is None:   # low precision pickled its stored form
        storage = storage._replace(data=encoding.decode(storage.run_lengths()))
    return dict(storage=storage, tol=state["tol"], norm=state.get("norm"),
                params=state.get("params", {}), _source=state.get("_source"),
                _device_arrays=None)


def _global_candidates(H, As, exp, opts, seed):
    """``H``, ``A`` as one low-rank block (the root's own candidate,
    :func:`hmnumba.construct.global_low_rank`, at ``opts["tol"]``) and ``A``
    as one dense block, the latter two in the original row and column order
    so that no permutation is stored. The cheapest of them (:func:`_cheapest`)
    never stores more than a truncated SVD at the same ``tol``, nor more
    than ``A`` itself (plus the ~200 bytes of one block's metadata).

    ``As = A * 2**-exp`` is the input in the build's units (see
    :func:`_scaled_input`): the candidates are computed there, their errors
    and norms stay there (``error_exp``), and their stored numbers are
    scaled back as :func:`_unscale_data` does."""
    t_start = time.perf_counter()
    m, n = As.shape
    H.params["stored_as"] = "hierarchical"
    itemsize = As.dtype.itemsize
    found = global_low_rank(As, opts["tol"], opts["max_rank"], As.dtype, H.nbytes // itemsize,
                            seed)
    norm2 = float(np.sum(H.block_norm2 * H.multiplicity))   # build's units
    dense = np.ascontiguousarray(As).ravel()
    candidates = [("dense", -1, np.ldexp(dense, exp).astype(As.dtype) if exp else dense, 0.0)]
    if found is not None:
        U, V, err2, norm2 = found
        eu = exp // 2   # as _unscale_data: neither factor leaves the dtype's range
        candidates.insert(0, ("global low rank", U.shape[1], np.concatenate(
            [np.ldexp(U.T.ravel(), eu), np.ldexp(V.T.ravel(), exp - eu)]).astype(As.dtype),
            err2))
    one = np.zeros(1, np.int64)
    out = [H]
    for stored_as, k, data, err2 in candidates:
        storage = Packed._trusted(shape=H.shape, row_perm=np.arange(m), col_perm=np.arange(n),
                                  row_start=one, row_stop=one + m, col_start=one.copy(),
                                  col_stop=one + n, rank=one + k, offset=one.copy(), data=data,
                                  block_err2=np.array([err2]), block_norm2=np.array([norm2]),
                                  error_exp=exp)
        out.append(HMatrix(storage, H.tol, norm=H.norm,
                           params=dict(H.params, stored_as=stored_as)))
    H.params["build_seconds"] += time.perf_counter() - t_start
    return out


def _cheapest(candidates):
    """The candidate storing fewest bytes (the first of equals), with the
    build seconds of all of them."""
    best = min(candidates, key=lambda c: c.nbytes)
    best.params["build_seconds"] = candidates[0].params["build_seconds"]
    return best


# Build tolerances, as fractions of tol, tried for low-precision storage
# until the rounded matrix meets tol (each a full build). The rounding adds
# about 3e-4 (float16) or 5e-3 (int8) relative error, nearly independent of
# the ranks: where it alone exceeds tol, the search stops early.
LOW_PRECISION_SHRINK = (1.0, 0.85, 0.7, 0.5, 0.35, 0.25)


def _low_precision(candidates, As, Ap, exp, tol, factor_dtype):
    """The cheapest matrix stored at ``factor_dtype`` ("float16", "int8", or
    "auto": the cheapest of these and full precision) that meets ``tol``
    with its rounding counted (see :mod:`hmnumba.storage`); the
    full-precision result where none does."""
    t_start = time.perf_counter()
    built = {1.0: candidates(tol)}
    full = _cheapest(built[1.0])
    seconds = full.params["build_seconds"]
    kinds = FACTOR_DTYPES if factor_dtype == "auto" else (factor_dtype,)
    best = full if factor_dtype == "auto" else None
    if exp:   # extreme magnitudes: kept at full precision (see from_dense)
        kinds = ()
    for kind in kinds:
        previous = math.inf
        for shrink in LOW_PRECISION_SHRINK:
            if shrink not in built:
                built[shrink] = candidates(tol * shrink)
                seconds += built[shrink][0].params["build_seconds"]
            pairs = [(G, _encoded(G, As, Ap, kind)) for G in built[shrink]]
            rounded = [E for _, E in pairs if E is not None]
            passing = [E for E in rounded if E.error_bound <= tol]
            if passing:
                E = min(passing, key=lambda c: c.nbytes)
                if best is None or E.nbytes < best.nbytes:
                    best = E
                break
            bound = min((E.error_bound for E in rounded), default=math.inf)
            # The rounding's own share (about the same at every rank) alone
            # exceeds tol, or shrinking stopped helping: ranks cannot fix it.
            share = min((E.error_bound ** 2 - G.error_bound ** 2 for G, E in pairs
                         if E is not None), default=math.inf)
            if share > tol ** 2 or bound > 0.9 * previous:
                break
            previous = bound
    if best is None:
        best = full
        best.params["factor_dtype_fallback"] = (
            f"{factor_dtype} storage cannot meet tol={tol:g}: kept at full precision")
    best.params["build_seconds"] = seconds + time.perf_counter() - t_start
    return best


def _check_outliers(outliers, symmetric, size):
    """Validate ``outliers`` of :meth:`HMatrix.from_dense`."""
    if symmetric:
        raise ValueError("outliers cannot be combined with symmetric=True (S would have to "
                         "be symmetric too): pass outliers=None")
    if isinstance(outliers, str):
        return val.check_choice(outliers, "outliers", ("auto",))
    if isinstance(outliers, (bool, np.bool_)) or not isinstance(outliers, numbers.Integral):
        raise TypeError(f"outliers must be None, 'auto' or an int, got "
                        f"{type(outliers).__name__}")
    if not 0 <= outliers <= size:
        raise ValueError(f"outliers must be between 0 and A.size = {size}, got {outliers}")
    return int(outliers)


def _with_outliers(cls, A, tol, outliers, options):
    """``A = S + H``, ``H`` built from ``A - S`` at the relative tolerance
    that gives it all of the absolute budget ``tol ||A||_F``. For
    ``outliers="auto"`` the candidate counts are ranked by what a truncated
    SVD of ``A - S`` at that tolerance would store with ``S`` (one SVD each,
    no build), and the best is built and kept if it stores less than
    ``A`` without a sparse part."""
    t_start = time.perf_counter()
    norm = float(np.linalg.norm(A.astype(np.float64, copy=False)))
    if not math.isfinite(norm) or _scaled_input(A)[1]:
        counts = [0]   # extreme magnitudes: no split (see _scaled_input)
    elif outliers == "auto":
        counts = [0, _best_outlier_count(A, tol, norm)]
    else:
        counts = [outliers]
    best = None
    for count in dict.fromkeys(counts):
        split = _split(A, count, tol, norm)
        if split is None:
            continue
        S, R, tol_r = split
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CompressionWarning)
            H = cls.from_dense(R, tol=tol_r, **options)
        if count:
            H = HMatrix(H.storage._replace(outliers=S), tol, norm=norm,
                        params=dict(H.params, tol=tol, outliers=count, outlier_tol=tol_r))
        if best is None or H.nbytes < best.nbytes:
            best = H
    best.params["build_seconds"] = time.perf_counter() - t_start
    warn_if_larger_than_dense(best.compression_ratio, best.nbytes, best.dense_nbytes,
                              stacklevel=4)
    return best


def _split(A, count, tol, norm):
    """``(S, R, tol_r)`` for ``count`` outliers (``R = A``, no ``S`` for 0),
    or None when nothing would be left for ``H``."""
    if count == 0:
        return None, A, tol
    S, R = split_outliers(A, count, tol)
    r_norm = float(np.linalg.norm(R.astype(np.float64, copy=False)))
    if r_norm == 0.0:
        return None
    # ||R - H|| <= tol_r ||R|| = tol ||A|| (a hair less, for the rounding of
    # this quotient); tol_r below 1 as from_dense requires.
    return S, R, min(tol * norm / r_norm * (1.0 - 1e-12), 1.0 - 1e-9)


def _best_outlier_count(A, tol, norm):
    """The candidate count (:func:`hmnumba.storage.outlier_counts`) whose
    ``S`` plus a truncated SVD of ``A - S`` at its tolerance stores least."""
    m, n = A.shape
    best, best_bytes = 0, math.inf
    if min(m, n) > FILL_MAX_SIDE:   # a dense SVD per candidate: too slow, no split
        return 0
    for count in outlier_counts(A)[1:]:
        split = _split(A, count, tol, norm)
        if split is None:
            continue
        S, R, tol_r = split
        s = np.linalg.svd(R.astype(np.float64, copy=False), compute_uv=False)
        tail2 = np.cumsum((s ** 2)[::-1])[::-1]     # tail2[k] = ||s[k:]||**2
        k = int(np.count_nonzero(tail2 > (tol_r ** 2) * tail2[0]))
        stored = S.nbytes + min(k * (m + n), m * n) * A.dtype.itemsize
        if stored < best_bytes:
            best, best_bytes = count, stored
    return best


def _encoded(G, As, Ap, kind):
    """``G`` with its numbers rounded to ``kind`` and every block's error
    measured exactly against the input (``As``, or ``Ap`` in the tree's
    cluster order), or None where ``kind`` cannot hold them."""
    runs = run_lengths(G.row_start, G.row_stop, G.col_start, G.col_stop, G.rank)
    if int(runs.sum()) != G.data.size:   # data with gaps is not encoded
        return None
    enc = encode(G.data, runs, kind, G.dtype)
    if enc is None:
        return None
    data = enc.decode(runs)
    if not np.all(np.isfinite(data)):
        return None
    A = As if G._identity_rows and G._identity_cols else Ap
    err2 = packed_block_errors2(np.ascontiguousarray(A), data, G.row_start, G.row_stop,
                                G.col_start, G.col_stop, G.rank, G.offset)
    return HMatrix(G.storage._replace(data=data, block_err2=err2, encoding=enc), G.tol,
                   norm=G.norm, params=dict(G.params, factor_dtype=kind))


def _scaled_input(A):
    """``(As, e)`` with ``A = As * 2**e`` and ``max |As|`` in ``[0.5, 1)``, or
    ``(A, 0)`` when ``A`` needs no scaling (see ``SCALE_FREE_EXP``).

    Scaling by a power of two is exact (no rounding) for every entry that
    stays normal, so the build of ``As`` is the build of ``A`` in other
    units: no block norm or error computed inside can underflow (entries
    near 1e-170 gave an all-zero H with error bound 0) or overflow (PCA
    clustering failed from about 1e153 on). Entries of ``As`` below the
    subnormal range (more than 2**1074 below the largest) become zero; they
    are far below any tolerance relative to ``||A||_F``.
    """
    amax = max(abs(float(A.max())), abs(float(A.min())))
    if amax == 0.0:
        return A, 0
    e = math.frexp(amax)[1]
    if -SCALE_FREE_EXP <= e <= SCALE_FREE_EXP:
        return A, 0
    return np.ldexp(A, -e).astype(A.dtype, copy=False), e


def _true_norm(norm, exp):
    """``norm * 2**exp``, or ``ValueError`` if that exceeds the float64 range."""
    try:
        true = math.ldexp(norm, exp) if norm > 0 else 0.0
    except OverflowError:
        true = math.inf
    if not math.isfinite(true):
        raise ValueError(f"A has Frobenius norm {norm:.6g} * 2**{exp}, beyond the float64 "
                         f"range (about 1.8e308): the relative error cannot be measured; "
                         f"scale A down, e.g. by 2**-{max(exp - 1000, 1)}")
    return true


def _unscale_data(storage, exp):
    """Scale the stored numbers of a build of ``A * 2**-exp`` back to ``A``:
    dense blocks by ``2**exp``; a low-rank block's ``U`` by ``2**(exp // 2)``
    and ``V`` by the rest, so that neither factor leaves the range of the
    storage dtype (float32 included). Exact, as scaling by powers of two is.
    ``block_err2``/``block_norm2`` stay in the build's units (the HMatrix's
    ``error_exp``), where their squares are representable."""
    data = storage.data   # the build's own buffer, scaled in place
    eu = exp // 2
    ev = exp - eu
    sizes = zip(storage.row_stop - storage.row_start, storage.col_stop - storage.col_start,
                storage.rank, storage.offset)
    for m, n, k, o in sizes:
        if k < 0:
            seg = data[o:o + m * n]
            np.ldexp(seg, exp, out=seg)
        elif k > 0:
            seg = data[o:o + k * m]
            np.ldexp(seg, eu, out=seg)
            seg = data[o + k * m:o + k * (m + n)]
            np.ldexp(seg, ev, out=seg)


def _device_tree(points, leaf_size):
    """Geometric cluster tree built on the GPU (identical to the CPU one)."""
    from hmnumba.kernels import trees_cuda
    return ClusterTree(*trees_cuda.build_geometric_tree(points, leaf_size), method="geometric")


def _check_kernel_inputs(kernel, points, col_points):
    """The validated kernel, row points and column points (``points`` again
    when ``col_points`` is None)."""
    kern = as_kernel(kernel, "kernel")
    X = val.check_points(points, "points")
    Y = X if col_points is None else val.check_points(col_points, "col_points")
    if X.shape[1] != Y.shape[1]:
        raise ValueError(f"points and col_points must have the same dimension, got "
                         f"{X.shape[1]} and {Y.shape[1]}")
    val.check_point_range(X, "points")
    if Y is not X:
        val.check_point_range(Y, "col_points")
    if isinstance(kern, UserKernel):
        kern.probe(X, Y)   # TypeError for mis-typed kernels, before any build compiles
    return kern, X, Y


def _check_kernel_output(kern, X, Y, src, storage):
    """Refuse a build in which the kernel gave NaN or infinity.

    The blocks whose stored numbers, error or norm are not finite are
    searched row by row for the first non-finite entry, which is reported with
    its pair ``(i, j)`` of original indices (a user kernel that raised is
    called there again from Python, so its exception arrives as itself).
    Entries that ACA never evaluated cannot be seen.
    """
    data, err2, norm2 = storage.data, storage.block_err2, storage.block_norm2
    if np.isfinite(data).all() and np.isfinite(err2).all() and np.isfinite(norm2).all():
        return
    r0, r1, c0, c1 = storage.row_start, storage.row_stop, storage.col_start, storage.col_stop
    row_perm, col_perm = storage.row_perm, storage.col_perm
    bad = ~(np.isfinite(err2) & np.isfinite(norm2))
    order = np.argsort(storage.offset, kind="stable")
    items = np.flatnonzero(~np.isfinite(data))
    owner = np.searchsorted(storage.offset[order], items, side="right") - 1
    bad[order[owner[owner >= 0]]] = True
    for b in np.flatnonzero(bad):
        i, j, value = sources.first_nonfinite(src, r0[b], r1[b], c0[b], c1[b])
        if i >= 0:
            kern.raise_bad_value(X, Y, int(row_perm[i]), int(col_perm[j]), float(value))
    raise ValueError(f"kernel {kern!r}: the build produced non-finite factors or norms "
                     f"(NaN or infinite entries, or entries too large to square in float64, "
                     f"e.g. 1/r of points closer than 1e-154); check the kernel, its length "
                     f"scale and the points")


def _kernel_source(kern, X, Y, row_tree, col_tree, budget, seed):
    """Points in cluster order, the entry source over them, and the norm
    estimate that the weighted budgets need (None for ``budget="block"``)."""
    Xp = np.ascontiguousarray(X[row_tree.perm])
    Yp = Xp if Y is X else np.ascontiguousarray(Y[col_tree.perm])
    src = kern.source(Xp, Yp)
    norm_est = _estimate_norm(src, Xp.shape[0], Yp.shape[0], seed) if budget != "block" else None
    return Xp, Yp, src, norm_est


def _estimate_norm(src, m, n, seed, n_rows=256):
    """``||A||_F`` from ``n_rows`` sampled rows (unbiased for ``||A||_F^2``)."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(m, size=min(n_rows, m), replace=False)).astype(np.int64)
    return float(np.sqrt(sources.sample_row_norms2(src, rows, n).sum() * m / rows.size))


def _check_dense_symmetric(symmetric, A, col_points):
    """Validate ``symmetric`` of :meth:`HMatrix.from_dense`."""
    symmetric = val.check_symmetric_array(symmetric, A, "A")
    if symmetric and col_points is not None:
        raise ValueError("symmetric=True uses one tree for rows and columns: pass "
                         "col_points=None")
    return symmetric


def _check_symmetric(symmetric, kern, col_points):
    """Resolve ``symmetric`` of :meth:`HMatrix.from_kernel` (None: automatic)."""
    symmetric = val.check_symmetric(symmetric, allow_none=True)
    if symmetric is None:
        return isinstance(kern, KernelFunction) and col_points is None
    if symmetric and col_points is not None:
        raise ValueError("symmetric=True needs one point set: pass col_points=None")
    return symmetric


def _check_build_options(tol, leaf_size, admissibility, eta, max_rank, budget):
    return dict(tol=val.check_tol(tol, "tol"),
                leaf_size=val.check_positive_int(leaf_size, "leaf_size"),
                admissibility=val.check_choice(admissibility, "admissibility", ADMISSIBILITY),
                eta=val.check_positive_float(eta, "eta"),
                max_rank=val.check_positive_int(max_rank, "max_rank", minimum=0, allow_none=True),
                budget=val.check_choice(budget, "budget", BUDGETS))


def _as_operator(op):
    """An HMatrix as its SciPy LinearOperator; a LinearOperator as it is."""
    return op.aslinearoperator() if isinstance(op, HMatrix) else op


def _operator_product(a, b):
    """``a @ b`` of two operators (an HMatrix or a SciPy LinearOperator): the
    lazy SciPy product; the product of two H-matrices is never formed."""
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"dimension mismatch: cannot multiply operators of shapes "
                         f"{a.shape} and {b.shape}")
    return _as_operator(a) @ _as_operator(b)


def _log_start(where, shape, dtype, tol):
    """Log the start of a build; return the start time for :func:`_log_end`."""
    logger.info("%s: compressing a %d x %d %s matrix, tol %g", where, shape[0], shape[1],
                np.dtype(dtype).name, tol)
    return time.perf_counter()


def _log_end(where, H, started):
    """Log the end of a build and warn if it stores more than dense."""
    n_dense = int(np.count_nonzero(H.rank < 0))
    logger.info("%s: built in %.2f s: %d blocks (%d low-rank, %d dense), compression ratio "
                "%.2f, error bound %.2e", where, time.perf_counter() - started, H.n_blocks,
                H.n_blocks - n_dense, n_dense, H.compression_ratio, H.error_bound)
    warn_if_larger_than_dense(H.compression_ratio, H.nbytes, H.dense_nbytes, stacklevel=4)
    # stacklevel 4: this function's caller's caller (from_dense's user).


def warn_if_larger_than_dense(ratio, nbytes, dense_nbytes, stacklevel=3):
    """Warn with :class:`~hmnumba.CompressionWarning` if a compressed form
    stores more bytes than the dense array (``ratio < 1``). ``stacklevel`` as
    in :func:`warnings.warn`, counted from this function (3: the line that
    called the caller)."""
    if ratio < 1:
        warnings.warn(f"the compressed matrix stores more than the dense one: {nbytes} bytes "
                      f"against {dense_nbytes} (compression ratio {ratio:.2f} < 1); a looser "
                      f"tol, a larger leaf_size or keeping the dense array saves memory",
                      CompressionWarning, stacklevel=stacklevel)
