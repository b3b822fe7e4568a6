"""H^2 matrices: nested cluster bases, couplings and a dense near field.

An :class:`H2Matrix` approximates a kernel matrix ``K[i, j] = k(x_i, x_j)``
as ``K ~= D + U B U^T``: a dense near field ``D`` of leaf pairs and, for every
admissible pair ``(t, s)``, a coupling ``B_ts = K(skel_t, skel_s)`` between
the skeletons of two clusters, whose bases ``U_t`` are nested (a parent's
basis is its children's bases times small transfer matrices). Storage grows
like ``O(N)`` where an H-matrix grows like ``O(N log N)``.

Two modes: ``"stored"`` keeps the couplings and the near field (each
symmetric pair once), ``"on-the-fly"`` keeps only the bases and the points
and recomputes both in every product (H2Pack's JIT mode).
"""

import threading

import numpy as np
from scipy.sparse.linalg import LinearOperator

from hmnumba._threads import serial_if_unsafe
from hmnumba._validation import (check_choice, check_device, check_operand, check_points,
                                 check_positive_float, check_positive_int, check_symmetric,
                                 check_symmetric_array, check_tol)
from hmnumba.h2dense import _GeneralH2Products, build_dense_h2
from hmnumba.h2schedule import leaf_index, subtrees, two_phase
from hmnumba.kernels import h2_products as kp
from hmnumba.kernels.codes import H2_MODES

MODES = H2_MODES
_METADATA = ("perm", "level_ptr", "children", "start", "stop", "piv_ptr", "piv", "T_ptr",
             "vec_ptr", "cb_t", "cb_s", "nb_t", "nb_s", "lb_t", "lb_s", "l_off", "l_rank", "L")


# Products with at most this many columns keep their work arrays (see
# H2Matrix._init_work); wider ones allocate theirs each time.
WORK_MAX_COLUMNS = 16


class H2Matrix:
    """A symmetric kernel matrix in the H^2 format (nested bases).

    Build one with :meth:`from_kernel`; it multiplies with ``@`` (vectors and
    matrices), works as a SciPy ``LinearOperator`` and reports its exact
    storage in :attr:`nbytes`.

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba import H2Matrix
    >>> from hmnumba.kernels import laplace
    >>> X = np.random.default_rng(0).random((600, 3))
    >>> H = H2Matrix.from_kernel(laplace, X, tol=1e-6, leaf_size=32)
    >>> x = np.ones(600)
    >>> bool(np.linalg.norm(H @ x - laplace(X) @ x) < 1e-5 * np.linalg.norm(laplace(X) @ x))
    True
    """

    def __init__(self, arrays):
        self._a = dict(arrays)
        a = self._a
        self.mode = a["mode"]
        self.tol = a["tol"]
        self._n = int(a["n"])
        n_nodes = a["children"].shape[0]
        vp = a["vec_ptr"]
        rank = np.diff(vp)
        # Two-phase schedule (derived from the block lists, counted in nbytes).
        for key in ("lb_t", "lb_s", "l_off", "l_rank"):
            a.setdefault(key, np.zeros(0, np.int64))
        a.setdefault("L", np.zeros(0))
        # Coupling slots: dense couplings first, then those stored as factors.
        ct = np.concatenate((a["cb_t"], a["lb_t"]))
        cs = np.concatenate((a["cb_s"], a["lb_s"]))
        tmp0, tmp1, self._c_ntmp, _, self._c_ptr, self._c_slot = two_phase(
            rank, ct, cs, np.arange(n_nodes), n_nodes)     # no coupling on the diagonal
        n_dense = a["cb_t"].size
        self._c_tmp0, self._c_tmp1 = tmp0[:n_dense], tmp1[:n_dense]
        self._l_tmp0, self._l_tmp1 = tmp0[n_dense:], tmp1[n_dense:]
        self._c_do = np.ones(ct.size, np.bool_)
        leaves, leaf_of = leaf_index(a["children"])
        self._leaves = leaves
        (self._n_tmp0, self._n_tmp1, self._n_ntmp, self._n_do1, self._n_ptr,
         self._n_slot) = two_phase(a["stop"] - a["start"], a["nb_t"], a["nb_s"], leaf_of,
                                   leaves.size)
        self._n_do0 = np.ones(a["nb_t"].size, np.bool_)
        self._top, self._sub_ptr, self._sub_nodes = subtrees(a["children"], a["level_ptr"])
        self._init_work()
        self._device_arrays = None    # the product's arrays on the GPU, after to("cuda")

    def _init_work(self):
        # Work arrays of a product, kept between calls: a fresh np.empty of
        # this size is fresh pages from the OS, and touching them first costs
        # more than the product's arithmetic on a VM. One set per column
        # count up to WORK_MAX_COLUMNS; a product that finds its set taken
        # (another thread's product) allocates its own.
        self._work_lock = threading.Lock()
        self._work = {}

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_work_lock", None)    # a lock does not pickle; the work
        state.pop("_work", None)         # arrays are made again on demand
        state["_device_arrays"] = None   # device arrays do not pickle: back on the CPU
        return state

    def __setstate__(self, state):
        state.setdefault("_device_arrays", None)      # pickled before H2Matrix.to existed
        self.__dict__.update(state)
        self._init_work()

    def _take_work(self, r):
        with self._work_lock:
            w = self._work.pop(r, None)
        if w is None:
            vp = self._a["vec_ptr"]
            w = (np.empty((vp[-1], r)), np.empty((vp[-1], r)), np.empty((self._c_ntmp, r)),
                 np.empty((self._n_ntmp, r)))
        return w

    def _give_work(self, r, w):
        if r <= WORK_MAX_COLUMNS:
            with self._work_lock:
                self._work.setdefault(r, w)

    # ------------------------------------------------------------------
    @classmethod
    def from_kernel(cls, kernel, points, tol=1e-6, leaf_size=32, eta=2.0, admissibility="strong",
                    mode="stored", symmetric=None):
        """Compress the kernel matrix ``K[i, j] = kernel(points[i], points[j])``.

        Parameters
        ----------
        kernel : KernelFunction or numba ``@njit`` function ``k(x, y) -> float``
            A built-in kernel (``hmnumba.kernels.laplace``, ``gaussian``,
            ``exponential``, ``matern32``) gets proxy-point bases (below). A
            user kernel has no proxy surface that is known to represent its
            far field, so it is compressed algebraically instead: an
            :class:`~hmnumba.HMatrix` at ``tol / 2`` (partial ACA, any
            kernel) converted by :meth:`from_hmatrix` at ``tol / 2``; the
            result is a :class:`GeneralH2Matrix` whose ``.error`` bounds
            ``||K - H2||_F / ||K||_F`` (the H-matrix's ACA estimate plus the
            exact conversion error). Only ``mode="stored"``.
        points : array-like of shape (n, dim)
        tol : float, default=1e-6
            Built-in kernels: relative tolerance of the interpolative
            decompositions that choose each cluster's skeleton from its proxy
            matrix (as H2Pack's ``QR_REL_NRM``); :meth:`estimate_error`
            measures the result. User kernels: the Frobenius bound above.
        leaf_size : int, default=32
        eta : float, default=2.0
            Strong admissibility ``min(diam t, diam s) <= eta dist(t, s)``.
        admissibility : {"strong"}
            Nested proxy bases need well-separated far fields.
        mode : {"stored", "on-the-fly"}
            ``"on-the-fly"`` stores only bases and points; couplings and near
            field are recomputed in every product.
        symmetric : bool or None, default=None
            A user kernel with ``kernel(x, y) == kernel(y, x)``: True stores
            one set of bases and each mirrored pair of blocks once (about
            half the bytes; see :attr:`GeneralH2Matrix.symmetric`). None
            means False for a user kernel (numba cannot tell) and True for a
            built-in one, whose matrices are always symmetric (False is an
            error there).

        Returns
        -------
        H2Matrix
            (a :class:`GeneralH2Matrix` for a user kernel)

        Raises
        ------
        TypeError
            ``kernel`` is neither a built-in kernel nor a numba ``@njit``
            function of two float64 vectors.
        ValueError
            Invalid points, tolerance, sizes or choices; ``mode="on-the-fly"``
            with a user kernel.

        Examples
        --------
        >>> import numpy as np
        >>> from hmnumba import H2Matrix
        >>> from hmnumba.kernels import gaussian
        >>> X = np.random.default_rng(1).random((300, 2))
        >>> H = H2Matrix.from_kernel(gaussian.with_length_scale(0.3), X, mode="on-the-fly")
        >>> H.shape, H.mode
        ((300, 300), 'on-the-fly')

        A user kernel (compressed through an H-matrix):

        >>> import numba
        >>> @numba.njit
        ... def inverse_multiquadric(x, y):
        ...     return 1.0 / np.sqrt(0.01 + ((x - y) ** 2).sum())
        >>> G = H2Matrix.from_kernel(inverse_multiquadric, X, tol=1e-6)
        >>> bool(G.error <= 1e-6), type(G).__name__
        (True, 'GeneralH2Matrix')
        """
        from hmnumba.h2build import build_kernel_h2
        from hmnumba.kernel_functions import KernelFunction, as_kernel
        kern = as_kernel(kernel, "kernel")
        points = check_points(points, "points")
        tol = check_tol(tol, "tol")
        leaf_size = check_positive_int(leaf_size, "leaf_size")
        eta = check_positive_float(eta, "eta")
        check_choice(admissibility, "admissibility", ("strong",))
        mode = check_choice(mode, "mode", MODES)
        symmetric = check_symmetric(symmetric, allow_none=True)
        if isinstance(kern, KernelFunction):
            if symmetric is not None and not symmetric:
                raise ValueError("symmetric=False: the built-in kernels are symmetric and their "
                                 "H^2 matrices are always stored as such; pass None or True")
            return cls(build_kernel_h2(kern, points, tol, leaf_size, eta, mode))
        if mode != "stored":
            raise ValueError(f"mode={mode!r} needs a built-in kernel (the products recompute "
                             f"its entries); a user kernel is stored: use mode='stored'")
        from hmnumba.hmatrix import HMatrix
        H = HMatrix.from_kernel(kern, points, tol=tol / 2, leaf_size=leaf_size, eta=eta,
                                symmetric=bool(symmetric))
        # ||H||_F <= (1 + tol / 2) ||K||_F, so this conversion error relative
        # to ||H||_F stays within tol / 2 relative to ||K||_F
        return cls.from_hmatrix(H, tol=tol / (2 + tol))

    @classmethod
    def from_dense(cls, W, tol=1e-3, leaf_size=32, cluster="pca", random_state=None,
                   admissibility="adaptive", storage="auto", symmetric=False):
        """Compress a dense (weight) array with ``||W - H||_F <= tol ||W||_F``.

        Rows and columns are clustered from ``W`` itself, the block partition
        is adaptive (or weak, HODLR), and the nested bases are algebraic
        (truncated SVDs of each cluster's far field, parents through their
        children's bases); the error of the result is computed exactly and
        the bases are tightened until it meets the bound (see
        :mod:`hmnumba.h2dense`). An array of low rank everywhere becomes one
        coupling between one-node trees (its truncated SVD at ``tol``)
        where that stores less than the tree, so the format never stores
        much more than the SVD does (not with ``symmetric=True`` or
        ``admissibility="weak"``, which keep their layouts).

        Parameters
        ----------
        W : array-like of shape (m, n)
            float32 or float64 (integers are converted to float64). Entries
            are stored in float32 when ``W`` is float32 or ``tol >= 1e-6``
            (the bound is checked on the stored values).
        tol : float, default=1e-3
            Relative Frobenius tolerance, ``0 < tol < 1``.
        leaf_size : int, default=32
        cluster : {"pca", "index"}, default="pca"
        random_state : int or None
            Seeds the ``"pca"`` clustering.
        admissibility : {"adaptive", "weak"}, default="adaptive"
            ``"adaptive"``: a block is far field when its rank at ``tol``
            halves its storage (several partitions are tried, the smallest
            kept); ``"weak"``: HODLR (HSS-like nested bases).
        storage : {"auto", "float32", "float64"}, default="auto"
            dtype of the stored bases, couplings and near field; ``"auto"``
            is float32 when ``W`` is float32 or ``tol >= 1e-6``, falling back
            to float64 if the rounding breaks the bound.
        symmetric : bool, default=False
            ``W`` equals its transpose (checked exactly, e.g. a kernel or an
            NTK Gram matrix): one tree and one set of bases serve rows and
            columns and each mirrored pair of blocks is stored once (about
            half the bytes; see :attr:`GeneralH2Matrix.symmetric`).

        Returns
        -------
        GeneralH2Matrix
            An :class:`H2Matrix` with ``rmatvec``; ``.error`` is the exact
            relative error.

        Examples
        --------
        >>> import numpy as np
        >>> from hmnumba import H2Matrix
        >>> x = np.linspace(0, 1, 200)
        >>> W = 1.0 / (1.0 + 50 * np.abs(x[:, None] - x[None, :]))
        >>> H = H2Matrix.from_dense(W, tol=1e-3, leaf_size=16, random_state=0)
        >>> bool(H.error <= 1e-3), H.nbytes < W.nbytes
        (True, True)
        """
        from hmnumba._validation import check_dense_input
        W = check_dense_input(W, "W")
        tol = check_tol(tol, "tol")
        leaf_size = check_positive_int(leaf_size, "leaf_size")
        cluster = check_choice(cluster, "cluster", ("pca", "index"))
        admissibility = check_choice(admissibility, "admissibility", ("adaptive", "weak"))
        storage = check_choice(storage, "storage", ("auto", "float32", "float64"))
        symmetric = check_symmetric_array(symmetric, W, "W")
        return build_dense_h2(GeneralH2Matrix, W, tol, leaf_size, cluster, random_state,
                              admissibility, storage, symmetric)

    @classmethod
    def from_hmatrix(cls, H, tol=None):
        """Convert an :class:`~hmnumba.HMatrix` block by block, never forming
        the dense matrix.

        The cluster trees are the H-matrix's block rows and columns; a
        cluster's basis spans the factors of the low-rank blocks in its own
        and its ancestors' block rows (Börm's H -> H^2 conversion). See
        :func:`hmnumba.h2dense.hmatrix_to_h2`. (The conversion lives here,
        not on ``HMatrix``: the H^2 layer sits above the H layer and
        ``hmatrix`` never imports ``h2matrix``.)

        Parameters
        ----------
        H : HMatrix
            Without sparse outliers; a symmetric one is converted with its
            mirrored blocks.
        tol : float or None, default=None
            ``||H - H2||_F <= tol ||H||_F``, computed exactly block by block;
            None: ``H.tol``.

        Returns
        -------
        GeneralH2Matrix
            ``.error`` bounds ``||A - H2||_F / ||A||_F`` (``H.error_bound``
            plus the conversion's error relative to ``||A||_F``);
            ``.conversion_error`` is ``||H - H2||_F / ||H||_F``.

        Examples
        --------
        >>> import numpy as np
        >>> from hmnumba import H2Matrix, HMatrix
        >>> from hmnumba.kernels import laplace
        >>> X = np.random.default_rng(0).random((500, 3))
        >>> H = HMatrix.from_kernel(laplace, X, tol=1e-6)
        >>> H2 = H2Matrix.from_hmatrix(H, tol=1e-6)
        >>> bool(H2.conversion_error <= 1e-6), H2.shape
        (True, (500, 500))
        """
        from hmnumba.h2dense import hmatrix_to_h2
        from hmnumba.hmatrix import HMatrix
        if not isinstance(H, HMatrix):
            raise TypeError(f"H must be an HMatrix, got {type(H).__name__}")
        return hmatrix_to_h2(GeneralH2Matrix, H, check_tol(H.tol if tol is None else tol, "tol"))

    # ------------------------------------------------------------------
    @property
    def shape(self):
        return (self._n, self._n)

    @property
    def dtype(self):
        return np.dtype(np.float64)

    @property
    def ndim(self):
        return 2

    @property
    def T(self):
        """The transpose (the matrix itself: kernel H^2 matrices are symmetric)."""
        return self

    @property
    def symmetric(self):
        """True: a kernel H^2 matrix stores each mirrored pair of blocks once."""
        return True

    @property
    def ranks(self):
        """Rank of each cluster basis (0: the node has no far field)."""
        return np.diff(self._a["vec_ptr"])

    def _arrays(self):
        arrays = [self._a[k] for k in _METADATA]
        arrays += [self._a[k] for k in ("T", "B", "c_off", "D", "n_off", "xyz", "skel_xyz")
                   if k in self._a]
        arrays += [self._c_tmp0, self._c_tmp1, self._l_tmp0, self._l_tmp1, self._c_ptr,
                   self._c_slot, self._c_do, self._n_tmp0, self._n_tmp1, self._n_ptr,
                   self._n_slot, self._n_do0, self._n_do1, self._leaves, self._top,
                   self._sub_ptr, self._sub_nodes]
        return arrays

    @property
    def nbytes(self):
        """Bytes of every array kept: bases, couplings, near field, points
        (on-the-fly), tree, block lists and the product schedule."""
        return int(sum(a.nbytes for a in self._arrays()))

    @property
    def compression_ratio(self):
        """Dense bytes (``8 n^2``) over :attr:`nbytes`."""
        return 8.0 * self._n * self._n / self.nbytes

    def summary(self):
        """One line: size, mode, blocks, ranks and storage."""
        a = self._a
        r = self.ranks
        return (f"H2Matrix {self._n}x{self._n} ({self.mode}): {a['cb_t'].size} dense and "
                f"{a['lb_t'].size} low-rank couplings, "
                f"{a['nb_t'].size} near-field blocks, ranks max {int(r.max(initial=0))} / mean "
                f"{r[r > 0].mean() if np.any(r > 0) else 0:.1f}, {self.nbytes / 1e6:.1f} MB")

    def __repr__(self):
        return f"<{self.summary()}>"

    # ------------------------------------------------------------------
    def _apply(self, xp):
        """``K xp`` in cluster order, ``xp`` of shape ``(n, r)``."""
        if self._device_arrays is not None:
            from hmnumba.kernels import h2_products_cuda
            return h2_products_cuda.apply(self._device_arrays, xp)
        a = self._a
        r = xp.shape[1]
        vp = a["vec_ptr"]
        lo, hi = vp[:-1], vp[1:]
        work = self._take_work(r)
        xh, yh, tmp, tmp_n = work
        tree = (self._top, self._sub_ptr, self._sub_nodes, a["children"], a["start"],
                a["piv_ptr"], a["piv"], a["T_ptr"], a["T"], vp)
        kp.upward(*tree, xp, xh)
        if self.mode == "stored":
            c_src, c_off, n_src, n_off = a["B"], a["c_off"], a["D"], a["n_off"]
        else:
            code, ls = np.int64(a["code"]), np.float64(a["length_scale"])
            single = a["T"].dtype == np.float32    # tol allows float32 entries
            c_src = (code, ls, a["skel_xyz"], a["skel_xyz"], single)
            n_src = (code, ls, a["xyz"], a["xyz"], single)
            c_off = n_off = a["cb_t"]       # unused by the on-the-fly entries
        kp.phase_one(c_src, c_off, a["cb_t"], a["cb_s"], self._c_do, self._c_do, lo, hi, xh, tmp,
                     self._c_tmp0, self._c_tmp1)
        if a["lb_t"].size:
            lowrank = kp.lowrank_vec if r == 1 else kp.lowrank_mat
            lowrank(a["L"], a["l_off"], a["l_rank"], a["lb_t"], a["lb_s"], self._c_do, self._c_do,
                    lo, hi, lo, hi, xh.reshape(-1) if r == 1 else xh,
                    tmp.reshape(-1) if r == 1 else tmp, self._l_tmp0, self._l_tmp1)
        kp.gather_slots(lo, hi, self._c_ptr, self._c_slot, tmp, yh)
        st, sp = a["start"], a["stop"]
        tmp = tmp_n
        kp.phase_one(n_src, n_off, a["nb_t"], a["nb_s"], self._n_do0, self._n_do1, st, sp, xp, tmp,
                     self._n_tmp0, self._n_tmp1)
        yp = np.empty_like(xp)
        lv = self._leaves
        kp.gather_slots(st[lv], sp[lv], self._n_ptr, self._n_slot, tmp, yp)
        kp.downward(*tree, yh, yp)
        self._give_work(r, work)
        return yp

    def matmat(self, X):
        """``H @ X`` for ``X`` of shape ``(n, k)``.

        Examples
        --------
        >>> import numpy as np
        >>> from hmnumba import H2Matrix
        >>> from hmnumba.kernels import laplace
        >>> X = np.random.default_rng(0).random((200, 3))
        >>> H = H2Matrix.from_kernel(laplace, X)
        >>> H.matmat(np.eye(200)[:, :3]).shape
        (200, 3)
        """
        X = check_operand(X, self._n, np.float64, "X", dim="rows")
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D, got shape {X.shape}")
        perm = self._a["perm"]
        xp = np.ascontiguousarray(X[perm], dtype=np.float64)
        with serial_if_unsafe():
            yp = self._apply(xp)
        Y = np.empty_like(yp)
        Y[perm] = yp
        return Y

    def matvec(self, x):
        """``H @ x`` for ``x`` of shape ``(n,)``."""
        x = check_operand(x, self._n, np.float64, "x", dim="rows")
        if x.ndim != 1:
            raise ValueError(f"x must be 1-D, got shape {x.shape}")
        return self.matmat(x[:, None])[:, 0]

    def rmatvec(self, x):
        """``H^T @ x`` (equal to ``H @ x``: the matrix is symmetric)."""
        return self.matvec(x)

    def rmatmat(self, X):
        """``H^T @ X`` (equal to ``H @ X``)."""
        return self.matmat(X)

    def __matmul__(self, x):
        x = np.asarray(x)
        if x.ndim == 1:
            return self.matvec(x)
        return self.matmat(x)

    def to(self, device):
        """Move the products to ``device`` (in place) and return this matrix.

        ``to("cuda")`` copies the arrays a product reads (bases, couplings,
        near field or, on the fly, the points, and the two-phase schedule) to
        the GPU once and keeps them there: afterwards :meth:`matvec`,
        :meth:`matmat`, :meth:`rmatvec`, :meth:`rmatmat` and ``@`` run the
        CUDA kernels of :mod:`hmnumba.kernels.h2_products_cuda` and return
        numpy arrays, equal to the CPU products up to rounding and the same
        bits on every run. ``to("cpu")`` releases the device copy; the host
        arrays are kept throughout. A pickled copy comes back on the CPU.

        Parameters
        ----------
        device : {"cpu", "cuda"}

        Returns
        -------
        H2Matrix
            ``self``.

        Raises
        ------
        ValueError
            Unknown device, or ``"cuda"`` without a GPU (numba's CUDA
            simulator, ``NUMBA_ENABLE_CUDASIM=1``, counts as one).

        Examples
        --------
        >>> import numpy as np
        >>> from hmnumba import H2Matrix
        >>> from hmnumba.backend import gpu_available, simulator_enabled
        >>> from hmnumba.kernels import laplace
        >>> X = np.random.default_rng(0).random((100, 2))
        >>> H = H2Matrix.from_kernel(laplace, X, tol=1e-8, leaf_size=32)
        >>> y = H @ np.ones(100)
        >>> device = "cuda" if gpu_available() or simulator_enabled() else "cpu"
        >>> H.to(device).device == device
        True
        >>> bool(np.allclose(H @ np.ones(100), y, rtol=1e-12, atol=0))
        True
        >>> H.to("cpu").device
        'cpu'
        """
        if check_device(device) == "cpu":
            self._device_arrays = None
        elif self._device_arrays is None:
            from hmnumba.backend import resolve_backend
            from hmnumba.kernels import h2_products_cuda
            resolve_backend("cuda", "device")
            self._device_arrays = h2_products_cuda.to_device(self)
        return self

    @property
    def device(self):
        """Where products run: ``"cpu"`` or ``"cuda"`` (see :meth:`to`)."""
        return "cpu" if self._device_arrays is None else "cuda"

    def aslinearoperator(self):
        """The matrix as a :class:`scipy.sparse.linalg.LinearOperator`.

        Examples
        --------
        >>> import numpy as np
        >>> from scipy.sparse.linalg import cg
        >>> from hmnumba import H2Matrix
        >>> from hmnumba.kernels import gaussian
        >>> X = np.random.default_rng(0).random((200, 2))
        >>> H = H2Matrix.from_kernel(gaussian.with_length_scale(0.2), X)
        >>> A = H.aslinearoperator()
        >>> A.shape
        (200, 200)
        """
        return LinearOperator(self.shape, matvec=self.matvec, rmatvec=self.rmatvec,
                              matmat=self.matmat, rmatmat=self.rmatmat, dtype=np.float64)

    def to_dense(self):
        """The full ``(n, n)`` matrix (for small ``n``: ``H @ I``)."""
        return self.matmat(np.eye(self._n))

    def _explicit_bases(self):
        """``U_t`` (cluster order, float64) of every node: ``x_t -> U_t^T x_t``
        is the upward pass's ``x_t[skel] + T x_t[rest]``."""
        a = self._a
        ch, st, sp, vp, pp, piv = (a[k] for k in ("children", "start", "stop", "vec_ptr",
                                                 "piv_ptr", "piv"))
        U = [None] * ch.shape[0]
        for t in range(ch.shape[0] - 1, -1, -1):         # children first
            k, m = vp[t + 1] - vp[t], pp[t + 1] - pp[t]
            E = np.zeros((m, k))
            if k:
                p = piv[pp[t]:pp[t + 1]]
                E[p[:k], np.arange(k)] = 1.0
                T = a["T"][a["T_ptr"][t]:a["T_ptr"][t + 1]].reshape(k, m - k)
                E[p[k:]] = T.T.astype(np.float64)
            if ch[t, 0] < 0:
                U[t] = E if k else np.zeros((sp[t] - st[t], 0))
            elif k == 0:
                U[t] = np.zeros((sp[t] - st[t], 0))
            else:
                c0, c1 = ch[t]
                k0 = vp[c0 + 1] - vp[c0]
                U[t] = np.vstack((U[c0] @ E[:k0], U[c1] @ E[k0:]))
        return U

    def to_hmatrix(self):
        """The same matrix as an :class:`~hmnumba.HMatrix` (float64; symmetric
        storage for a kernel matrix).

        Each coupling ``U_t B U_s^T`` becomes the low-rank block ``(U_t B)
        U_s^T`` (or ``U_t (U_s B^T)^T``, the smaller rank; a coupling stored as
        factors keeps its rank), the near field stays dense, and each block
        of the upper triangle also stands for its mirror, as in the H^2
        matrix. The conversion is exact up to float64 rounding: the HMatrix
        has the error of this matrix (:meth:`estimate_error`), and its
        ``block_errors`` are 0 (they count only what the conversion adds).
        An on-the-fly matrix forms its couplings and near field once.

        Examples
        --------
        >>> import numpy as np
        >>> from hmnumba import H2Matrix
        >>> from hmnumba.kernels import laplace
        >>> X = np.random.default_rng(0).random((400, 3))
        >>> H2 = H2Matrix.from_kernel(laplace, X, tol=1e-6)
        >>> H = H2.to_hmatrix()
        >>> H.symmetric, bool(np.allclose(H.to_dense(), H2.to_dense(), rtol=0, atol=1e-12))
        (True, True)

        An H^2 matrix of a weight array (:meth:`from_dense`) becomes a
        general HMatrix the same way, with separate row and column bases:

        >>> x = np.linspace(0, 1, 100)
        >>> W = 1.0 / (1.0 + 20 * np.abs(x[:, None] - x[None, :] - 0.1))
        >>> G = H2Matrix.from_dense(W, tol=1e-4, leaf_size=16, random_state=0)
        >>> bool(np.allclose(G.to_hmatrix().to_dense(), G.to_dense()))
        True
        """
        from hmnumba.hmatrix import HMatrix
        return HMatrix(self._hmatrix_storage(), self.tol)

    def _hmatrix_storage(self):
        """The symmetric storage value of :meth:`to_hmatrix` (kernel matrices)."""
        from hmnumba.h2dense import pack_hmatrix
        a = self._a
        U = self._explicit_bases()
        st, sp = a["start"], a["stop"]
        blocks = []

        def add(t, s, L, R):
            if st[t] > st[s]:          # store the upper one of the mirrored pair
                t, s, L, R = s, t, (L.T if R is None else R), (None if R is None else L)
            blocks.append((st[t], sp[t], st[s], sp[s], L, R))

        for q, (t, s) in enumerate(zip(a["cb_t"], a["cb_s"])):
            B = self._entries("c", q, U[t].shape[1], U[s].shape[1])
            add(t, s, *((U[t] @ B, U[s]) if U[s].shape[1] <= U[t].shape[1]
                        else (U[t], U[s] @ B.T)))
        for q, (t, s) in enumerate(zip(a["lb_t"], a["lb_s"])):
            o, k = a["l_off"][q], a["l_rank"][q]
            mt, ms = U[t].shape[1], U[s].shape[1]
            Lf = a["L"][o:o + k * mt].reshape(k, mt).T.astype(np.float64)
            Rf = a["L"][o + k * mt:o + k * (mt + ms)].reshape(k, ms).T.astype(np.float64)
            add(t, s, U[t] @ Lf, U[s] @ Rf)
        for q, (t, s) in enumerate(zip(a["nb_t"], a["nb_s"])):
            add(t, s, self._entries("n", q, sp[t] - st[t], sp[s] - st[s]), None)
        return pack_hmatrix(self.shape, a["perm"], a["perm"], blocks, symmetric=True)

    def _entries(self, kind, q, m, n):
        """Block ``q`` of the couplings (``kind="c"``) or near field (``"n"``)
        as an ``(m, n)`` float64 array: stored, or evaluated from the points."""
        a = self._a
        if self.mode == "stored":
            data, off = (a["B"], a["c_off"]) if kind == "c" else (a["D"], a["n_off"])
            return data[off[q]:off[q] + m * n].reshape(m, n).astype(np.float64)
        t, s = (a["cb_t"][q], a["cb_s"][q]) if kind == "c" else (a["nb_t"][q], a["nb_s"][q])
        if kind == "c":
            vp = a["vec_ptr"]
            X, Y = a["skel_xyz"][:, vp[t]:vp[t + 1]], a["skel_xyz"][:, vp[s]:vp[s + 1]]
        else:
            X = a["xyz"][:, a["start"][t]:a["stop"][t]]
            Y = a["xyz"][:, a["start"][s]:a["stop"][s]]
        return _kernel_of(a)(np.ascontiguousarray(X.T), np.ascontiguousarray(Y.T))

    def _file_fields(self):
        """``(kind, mode, meta, arrays)`` that :func:`hmnumba.io.save_h2` writes."""
        a = self._a
        meta = {"n": int(a["n"]), "dim": int(a["dim"]), "kernel": _kernel_of(a).name,
                "length_scale": float(a["length_scale"]), "mode": self.mode,
                "tol": float(self.tol)}
        return "kernel", self.mode, meta, a

    @classmethod
    def load(cls, path):
        """Read an H^2 matrix written by :meth:`save` (as :func:`hmnumba.load`
        does, which also opens H-matrix files).

        Raises
        ------
        ValueError
            The file is damaged, or holds an HMatrix (read that with
            :func:`hmnumba.load` or :meth:`HMatrix.load`).

        Examples
        --------
        >>> import os, tempfile
        >>> import numpy as np
        >>> from hmnumba import H2Matrix
        >>> from hmnumba.kernels import laplace
        >>> H = H2Matrix.from_kernel(laplace, np.random.default_rng(0).random((300, 3)))
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     H.save(os.path.join(tmp, "k.hmz"))
        ...     G = H2Matrix.load(os.path.join(tmp, "k.hmz"))
        >>> bool(np.array_equal(G @ np.ones(300), H @ np.ones(300)))
        True
        """
        from hmnumba.io import read
        return from_file(*read(path, expect="h2"))

    def save(self, path):
        """Write the matrix to ``path`` (``.hmz``) atomically; :func:`hmnumba.load`
        reads it back as the same kind of :class:`H2Matrix`, products equal
        bit for bit. See :func:`hmnumba.io.save_h2`.

        Examples
        --------
        >>> import os, tempfile
        >>> import numpy as np
        >>> from hmnumba import H2Matrix, load
        >>> W = np.add.outer(np.arange(50.0), np.arange(40.0)) ** 0.5
        >>> H = H2Matrix.from_dense(W, tol=1e-4, leaf_size=8)
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     H.save(os.path.join(tmp, "w.hmz"))
        ...     H2 = load(os.path.join(tmp, "w.hmz"))
        >>> bool(np.array_equal(H2.to_dense(), H.to_dense())), bool(H2.error == H.error)
        (True, True)
        """
        from hmnumba.io import save_h2
        save_h2(self, path)

    def estimate_error(self, points, n_rows=100, random_state=0):
        """Relative error of ``H @ x`` on ``n_rows`` random rows against the
        exact kernel sums over ``points`` (the points it was built from),
        ``x`` uniform in ``[-0.5, 0.5)``, as the anchors measure it.

        Examples
        --------
        >>> import numpy as np
        >>> from hmnumba import H2Matrix
        >>> from hmnumba.kernels import laplace
        >>> X = np.random.default_rng(0).random((500, 3))
        >>> H2Matrix.from_kernel(laplace, X, tol=1e-6).estimate_error(X, 50) < 1e-5
        True
        """
        points = check_points(points, "points")
        if points.shape != (self._n, self._a["dim"]):
            raise ValueError(f"points must have shape {(self._n, self._a['dim'])}, "
                             f"got {points.shape}")
        n_rows = check_positive_int(n_rows, "n_rows")
        rng = np.random.default_rng(random_state)
        x = rng.random(self._n) - 0.5
        rows = rng.choice(self._n, size=min(n_rows, self._n), replace=False)
        exact = _kernel_of(self._a)(points[rows], points) @ x
        y = self.matvec(x)[rows]
        return float(np.linalg.norm(y - exact) / np.linalg.norm(exact))


class GeneralH2Matrix(_GeneralH2Products, H2Matrix):
    """A general (non-symmetric, rectangular) H^2 matrix, built by
    :meth:`H2Matrix.from_dense`: nested row and column bases, couplings and a
    dense near field (layout and construction in :mod:`hmnumba.h2dense`).

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba import H2Matrix
    >>> W = np.random.default_rng(0).standard_normal((120, 80)) @ np.diag(0.9 ** np.arange(80))
    >>> H = H2Matrix.from_dense(W, tol=1e-2, leaf_size=16, random_state=0)
    >>> bool(np.linalg.norm(H.to_dense() - W) <= 1e-2 * np.linalg.norm(W))
    True
    >>> isinstance(H, H2Matrix), H.rmatvec(np.ones(120)).shape
    (True, (80,))
    """

    def _file_fields(self):
        """``(kind, mode, meta, arrays)`` that :func:`hmnumba.io.save_h2` writes."""
        meta = {"shape": [int(v) for v in self.shape], "tol": float(self.tol),
                "dtype": np.dtype(self.dtype).name,
                "error": None if self.error is None else float(self.error)}
        return ("symmetric" if self.symmetric else "general"), None, meta, self._a


def _kernel_of(a):
    from hmnumba.kernel_functions import KernelFunction
    return KernelFunction.from_code(a["code"], a["length_scale"])


def from_file(arrays, meta):
    """The H^2 matrix of the checked arrays and meta that
    :func:`hmnumba.io.read` returns for an H^2 file."""
    if meta["kind"] == "kernel":
        return H2Matrix(arrays)
    H = GeneralH2Matrix(arrays)     # "general" or "symmetric" (its column side aliased)
    H.error = meta["error"]
    return H
