"""Low-precision storage of an H-matrix's numbers (``factor_dtype``).

The ``data`` buffer of an :class:`~hmnumba.HMatrix` (section 4 of the
design: every low-rank block as ``U^T`` then ``V^T``, every dense block
``m_b x n_b`` row-major) can be *stored* in fewer bits:

``"float16"``
    Every number as an IEEE half (2 bytes), after one exact power-of-two
    scaling of the whole buffer (``scale_exp``) that puts its largest
    magnitude just below ``2**15``, so nothing overflows the half range.
``"int8"``
    Every *run* of the buffer (a column of ``U``, a column of ``V``, a row of
    a dense block) as signed 8-bit codes with one float32 scale per run:
    ``scale = max|run| / 127``, ``q = round(x / scale)``, the symmetric
    per-channel rule of :class:`~hmnumba.baselines.QuantizationCompressor`
    (a dense block's runs are its rows, that baseline's channels).

A value of :class:`LowPrecision` holds the codes and scales; that is what
``nbytes`` counts, what ``save`` writes and what pickles. Products read a
*working copy* decoded once into the matrix's dtype (float32 or float64;
numba has no CPU half arithmetic), so they run the ordinary kernels in
float32/float64 and give the bits that decoding inside the kernels would
give. The working copy is memory, not storage: ``H.data.nbytes`` is larger
than what ``H.nbytes`` counts for it. ``to("cuda")`` copies the working copy.

The rounding is part of the error bound: :meth:`HMatrix.from_dense` measures
every block of the *decoded* matrix against ``A``
(:func:`hmnumba.kernels.lowprec.packed_block_errors2`), so
``||A - H||_F <= tol ||A||_F`` holds exactly, and it rebuilds at a smaller
tolerance (higher ranks) when the rounding takes too much of the budget.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from hmnumba import _validation as val
from hmnumba._threads import one_blas_thread, serial_if_unsafe
from hmnumba.blocks import (SYMMETRIC_SLABS, check_structure, level_schedule, stored_numbers,
                            symmetric_slabs)
from hmnumba.kernels import compress, products
from hmnumba.kernels.symmetric import symmetric_hmatvec

__all__ = ["LowPrecision", "Packed", "SparseOutliers", "SymmetricPacked", "encode",
           "outlier_counts", "row_schedule", "run_lengths", "split_outliers"]

FACTOR_DTYPES = ("float16", "int8")

# Largest magnitude after the float16 power-of-two scaling: below 2**15,
# under the largest half (65504), with the full half precision above 2**-14.
_HALF_TOP_EXP = 15
_INT8_MAX = 127


@dataclass(frozen=True, eq=False)
class LowPrecision:
    """The stored form of a low-precision ``data`` buffer.

    Attributes
    ----------
    kind : {"float16", "int8"}
    codes : ndarray
        ``uint16`` bit patterns of the halves, or ``int8`` codes; one per
        number of ``data``.
    scales : ndarray of float32
        One per run (``"int8"``); empty for ``"float16"``.
    scale_exp : int
        ``"float16"``: ``data = half * 2**scale_exp``; 0 for ``"int8"``.
    dtype : str
        The working dtype the numbers decode to, ``"float32"`` or ``"float64"``.

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.storage import encode
    >>> data = np.array([1.0, -0.5, 3.0, 0.25])
    >>> runs = np.array([2, 2])
    >>> enc = encode(data, runs, "int8", np.float64)
    >>> enc.codes.tolist(), enc.nbytes
    ([127, -64, 127, 11], 12)
    >>> np.round(enc.decode(runs), 3).tolist()
    [1.0, -0.504, 3.0, 0.26]
    """

    kind: str
    codes: np.ndarray
    scales: np.ndarray
    scale_exp: int = 0
    dtype: str = "float64"

    @property
    def nbytes(self) -> int:
        """Bytes stored: the codes and the scales."""
        return int(self.codes.nbytes + self.scales.nbytes)

    def decode(self, run_lengths=None) -> np.ndarray:
        """The numbers in :attr:`dtype`: the working copy.

        ``run_lengths`` (from :func:`run_lengths`) is needed for ``"int8"``.
        """
        dtype = np.dtype(self.dtype)
        if self.kind == "float16":
            out = self.codes.view(np.float16).astype(dtype)
            return np.ldexp(out, self.scale_exp).astype(dtype, copy=False)
        if run_lengths is None:
            raise ValueError("decoding int8 codes needs the run lengths")
        scale = np.repeat(self.scales.astype(np.float64), run_lengths)
        # int8 x float32 is exact in float64; one rounding to dtype after.
        return (self.codes.astype(np.float64) * scale).astype(dtype)


def run_lengths(r0, r1, c0, c1, rank) -> np.ndarray:
    """Lengths of the runs of ``data`` in buffer order: ``k`` runs of ``m_b``
    then ``k`` of ``n_b`` for a low-rank block, ``m_b`` runs of ``n_b`` for a
    dense one (the rows of ``U^T``, of ``V^T``, of the dense block).

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.storage import run_lengths
    >>> one = np.array([0])
    >>> run_lengths(one, one + 3, one, one + 2, np.array([1])).tolist()
    [3, 2]
    """
    m = np.asarray(r1, np.int64) - r0
    n = np.asarray(c1, np.int64) - c0
    k = np.asarray(rank, np.int64)
    dense = k < 0
    count = np.where(dense, m, 2 * np.maximum(k, 0))
    first = np.where(dense, n, m)    # length of the first count_1 runs
    n_first = np.where(dense, m, np.maximum(k, 0))
    lengths = np.empty(int(count.sum()), np.int64)
    starts = np.concatenate([[0], np.cumsum(count)[:-1]])
    for b in np.flatnonzero(count):     # one slice assignment per block
        s, nf = starts[b], n_first[b]
        lengths[s:s + nf] = first[b]
        lengths[s + nf:s + count[b]] = n[b]
    return lengths


def encode(data: np.ndarray, runs: np.ndarray, kind: str, dtype) -> LowPrecision | None:
    """Round ``data`` to ``kind`` (see the module docstring); ``runs`` from
    :func:`run_lengths`, ``dtype`` the working dtype it decodes to.

    Returns ``None`` where the format cannot hold the numbers (a float32
    scale outside the normal float32 range).

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.storage import encode
    >>> runs = np.array([3])
    >>> enc = encode(np.array([1000.0, 0.5, -3.0]), runs, "float16", np.float64)
    >>> enc.scale_exp, enc.decode(runs).tolist(), enc.nbytes
    (-5, [1000.0, 0.5, -3.0], 6)
    """
    x = np.asarray(data, np.float64)
    if kind == "float16":
        amax = float(np.max(np.abs(x))) if x.size else 0.0
        exp = math.frexp(amax)[1] - _HALF_TOP_EXP if amax > 0 else 0
        codes = np.ldexp(x, -exp).astype(np.float16).view(np.uint16)
        return LowPrecision("float16", codes, np.zeros(0, np.float32), int(exp),
                            np.dtype(dtype).name)
    if kind != "int8":
        raise ValueError(f"unknown low-precision kind {kind!r}")
    starts = np.concatenate([[0], np.cumsum(runs)[:-1]]).astype(np.int64)
    amax = (np.maximum.reduceat(np.abs(x), starts) if runs.size else np.zeros(0))
    scale = amax / _INT8_MAX
    scale = np.where(scale > 0, scale, 1.0)
    tiny32, max32 = np.finfo(np.float32).tiny, np.finfo(np.float32).max
    if not np.all((scale >= tiny32) & (scale <= max32)):
        return None
    scale = scale.astype(np.float32)
    codes = np.clip(np.round(x / np.repeat(scale.astype(np.float64), runs)),
                    -_INT8_MAX, _INT8_MAX).astype(np.int8)
    return LowPrecision("int8", codes, scale, 0, np.dtype(dtype).name)


@dataclass(frozen=True, eq=False)
class SparseOutliers:
    """The sparse part ``S`` of ``W = S + H`` (``outliers=`` of
    :meth:`HMatrix.from_dense`), in CSR form with int32 indices, in the
    matrix's own row and column order (no permutation).

    ``S`` holds chosen entries of ``W`` exactly, so the error of ``S + H``
    is the error of ``H`` against ``W - S``; ``nbytes`` counts all three
    arrays.

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.storage import split_outliers
    >>> W = np.array([[0.1, 9.0], [0.2, 0.3]])
    >>> S, R = split_outliers(W, 1)
    >>> S.to_csr().toarray().tolist(), R.tolist(), S.nbytes
    ([[0.0, 9.0], [0.0, 0.0]], [[0.1, 0.0], [0.2, 0.3]], 24)
    """

    shape: tuple
    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray

    @property
    def nnz(self) -> int:
        return int(self.values.size)

    @property
    def nbytes(self) -> int:
        return int(self.indptr.nbytes + self.indices.nbytes + self.values.nbytes)

    def to_csr(self):
        """A ``scipy.sparse.csr_array`` view of ``S`` (int32 indices kept)."""
        from scipy.sparse import csr_array
        return csr_array((self.values, self.indices, self.indptr), shape=self.shape)

    def transpose(self) -> SparseOutliers:
        """``S.T``, in CSR form again."""
        return _from_csr(self.to_csr().T.tocsr())

    def scaled(self, c) -> SparseOutliers:
        """``c * S``."""
        return SparseOutliers(self.shape, self.indptr, self.indices,
                              (self.values * np.asarray(c, self.values.dtype)).astype(
                                  self.values.dtype, copy=False))

    def rows(self, perm, p0, p1, col_perm) -> SparseOutliers:
        """Rows ``perm[p0:p1]`` of ``S`` with columns in the order ``col_perm``."""
        inverse = np.empty_like(col_perm)
        inverse[col_perm] = np.arange(col_perm.size)
        part = self.to_csr()[perm[p0:p1]].tocoo()
        return outliers_from_coo((p1 - p0, self.shape[1]), part.row, inverse[part.col],
                                 part.data)


def outliers_from_coo(shape, rows, cols, values) -> SparseOutliers:
    """A :class:`SparseOutliers` from coordinates (no duplicates)."""
    from scipy.sparse import csr_array
    return _from_csr(csr_array((values, (rows, cols)), shape=shape))


def _from_csr(csr) -> SparseOutliers:
    csr.sum_duplicates()
    csr.sort_indices()
    return SparseOutliers(tuple(int(s) for s in csr.shape), csr.indptr.astype(np.int32),
                          csr.indices.astype(np.int32), np.ascontiguousarray(csr.data))


# Largest min(m, n) for which split_outliers fills the holes that S leaves
# in W - S by low-rank imputation (a dense SVD per sweep); above, S takes
# the entries of W as they are.
FILL_MAX_SIDE = 1024
FILL_SWEEPS = 8


def split_outliers(W: np.ndarray, count: int, tol: float = 0.0):
    """``(S, R)`` with ``S + R = W`` exactly: ``S`` is nonzero on the
    ``count`` entries of largest magnitude (ties broken by position).

    Taking these entries out whole would leave holes (zeros) in ``R`` that
    break its low rank. Instead ``R`` keeps, at those positions, a low-rank
    estimate: ``FILL_SWEEPS`` sweeps of SVD imputation at relative
    tolerance ``tol`` (for ``min(m, n) <= FILL_MAX_SIDE`` and ``tol > 0``),
    and ``S`` the rest. The split is exact entry by entry: where
    ``W - S`` would round, the entry goes to ``S`` whole.

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.storage import split_outliers
    >>> W = np.outer(np.arange(1.0, 7.0), np.ones(5))
    >>> W[2, 3] += 100.0
    >>> S, R = split_outliers(W, 1, tol=1e-6)
    >>> S.nnz, round(float(S.values[0])), bool(np.array_equal(S.to_csr().toarray() + R, W))
    (1, 100, True)
    """
    m, n = W.shape
    flat = np.abs(W).ravel()
    count = int(min(max(count, 0), flat.size))
    if count:
        # stable sort on -|w|: the largest first, equal magnitudes by position
        idx = np.sort(np.argsort(-flat, kind="stable")[:count])
    else:
        idx = np.zeros(0, np.int64)
    w = W.ravel()[idx]
    fill = _low_rank_fill(W, idx, tol) if count and tol > 0 else np.zeros_like(w)
    sv = (w - fill).astype(W.dtype)
    r = (w - sv).astype(W.dtype)
    # Exact iff the rounding error of r = w - sv is zero (Knuth's TwoSum).
    bb = r - w
    inexact = ((w - (r - bb)) + (-sv - bb)) != 0
    sv[inexact] = w[inexact]
    r[inexact] = 0
    rows, cols = np.divmod(idx, n)
    indptr = np.zeros(m + 1, np.int32)
    np.cumsum(np.bincount(rows, minlength=m), out=indptr[1:])
    S = SparseOutliers((m, n), indptr, cols.astype(np.int32), sv)
    R = W.copy()
    R.ravel()[idx] = r
    return S, R


def _low_rank_fill(W, idx, tol):
    """Values at ``idx`` of a low-rank approximation of ``W`` with those
    entries unknown (SVD imputation: one SVD picks the rank, then
    ``FILL_SWEEPS`` sweeps of subspace iteration refit the unknown entries)."""
    m, n = W.shape
    if min(m, n) > FILL_MAX_SIDE:
        return np.zeros(idx.size)
    R = W.astype(np.float64)
    R.ravel()[idx] = 0.0
    U, s, _ = np.linalg.svd(R, full_matrices=False)
    # The rank: at the widest gap of the spectrum among those that leave
    # more than tol of it out (spikes and holes blur the tail, not the gap).
    tail = np.sqrt(np.cumsum((s ** 2)[::-1]))[::-1]   # tail[k] = ||s[k:]||
    k_max = max(min(int(np.count_nonzero(tail > tol * tail[0])), min(m, n) // 4), 1)
    ratio = s[:k_max] / np.maximum(s[1:k_max + 1], np.finfo(np.float64).tiny)
    k = int(np.argmax(ratio)) + 1 if ratio.size else 1
    Q = U[:, :k]
    rows, cols = np.divmod(idx, n)
    fill = np.zeros(idx.size)
    for _ in range(FILL_SWEEPS):
        C = Q.T @ R                       # R ~ Q C, rank k
        fill = np.einsum("ik,ki->i", Q[rows], C[:, cols])
        R.ravel()[idx] = fill
        Q = np.linalg.qr(R @ C.T)[0]      # one step of subspace iteration
    return fill


# Outlier thresholds tried by outliers="auto", in robust standard deviations
# (1.4826 * median |w|, the normal-consistent median absolute value).
OUTLIER_SIGMAS = (3.0, 4.5, 7.0, 12.0)


def outlier_counts(W: np.ndarray) -> list:
    """Candidate counts for ``outliers="auto"``: 0 and the number of entries
    above each robust threshold of ``OUTLIER_SIGMAS``, at most a quarter of
    the entries (beyond that CSR stores more than the dense array).

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.storage import outlier_counts
    >>> W = np.random.default_rng(0).standard_normal((50, 40))
    >>> W[0, :5] = 40.0
    >>> outlier_counts(W)[0], 5 in outlier_counts(W)
    (0, True)
    """
    a = np.abs(W.astype(np.float64, copy=False)).ravel()
    sigma = 1.4826 * float(np.median(a))
    counts = {0}
    if sigma > 0:
        for k in OUTLIER_SIGMAS:
            c = int(np.count_nonzero(a > k * sigma))
            if 0 < c <= a.size // 4:
                counts.add(c)
    return sorted(counts)


# ---------------------------------------------------------------------------
# The packed arrays as one value (DESIGN section 4)
# ---------------------------------------------------------------------------

# From this many right-hand sides on, products use BLAS block products
# (products.hmatmat_blas); below, the fused loops of products.hmatmat are faster.
BLAS_MIN_RHS = 16

# With at most this many blocks (a weight array that is one low-rank block,
# say), matmat runs block by block in numpy so that BLAS may use all its
# threads; the numba kernels parallelise over blocks and would use one core.
FEW_BLOCKS = 8

# An operand whose largest magnitude lies in [2**-SCALE_FREE_EXP,
# 2**SCALE_FREE_EXP] is applied as it is (see _operand_exponent); the same
# range decides whether HMatrix.from_dense scales its input.
SCALE_FREE_EXP = 64

BLOCK_ARRAYS = ("row_start", "row_stop", "col_start", "col_stop", "rank", "offset")
PACKED_ARRAYS = ("row_perm", "col_perm") + BLOCK_ARRAYS + ("data", "block_err2",
                                                           "block_norm2")


@dataclass(frozen=True, eq=False)
class Packed:
    """The packed arrays of an H-matrix stored in full: one value that
    :func:`hmnumba.construct.build` returns, :mod:`hmnumba.io` saves and
    loads, ``to("cuda")`` copies, :mod:`hmnumba.distributed` ships and
    :class:`~hmnumba.HMatrix` wraps (``H.storage``).

    Made from outside (``Packed(...)``, :meth:`from_arrays`), the arrays are
    checked as :func:`hmnumba.load` checks a file
    (:func:`hmnumba._validation.check_packed_arrays`, then
    :func:`hmnumba.blocks.check_structure`), so no kernel reads out of
    bounds; the library's own builds skip the checks (``_trusted``).

    A variant (:class:`SymmetricPacked`) differs in :meth:`_product`, the
    product in cluster order: :meth:`_apply` is the one product every
    variant shares (permutations, scaling of extreme operands, and the
    sparse part). Low precision (``encoding``: ``data`` is then the decoded
    working copy of the stored codes) and sparse outliers (``outliers``:
    ``W = S + H``) wrap any variant.

    Attributes
    ----------
    shape : tuple of int
    row_perm, col_perm : ndarray of int64
        The cluster trees' permutations.
    row_start, row_stop, col_start, col_stop, rank, offset : ndarray of int64
        Per block, in cluster order; ``rank = -1`` for a dense block.
    data : ndarray of float32 or float64
        Each low-rank block as ``U^T`` then ``V^T``, each dense block
        ``m_b x n_b`` row-major.
    block_err2, block_norm2 : ndarray of float64
        Squared block errors and norms, in units of ``4**error_exp``.
    error_exp : int
    encoding : LowPrecision or None
    outliers : SparseOutliers or None

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.storage import Packed
    >>> one = np.zeros(1, np.int64)
    >>> P = Packed.from_arrays((2, 3), [0, 1], [0, 1, 2], [0], [2], [0], [3], [1], [0],
    ...                        np.array([1.0, 2.0, 1.0, 0.0, -1.0]), [0.0], [30.0])
    >>> P._apply(np.ones(3), trans=False).tolist()
    [0.0, 0.0]
    >>> P._apply(np.ones(2), trans=True).tolist()
    [3.0, 0.0, -3.0]
    """

    shape: tuple
    row_perm: np.ndarray
    col_perm: np.ndarray
    row_start: np.ndarray
    row_stop: np.ndarray
    col_start: np.ndarray
    col_stop: np.ndarray
    rank: np.ndarray
    offset: np.ndarray
    data: np.ndarray
    block_err2: np.ndarray
    block_norm2: np.ndarray
    error_exp: int = 0
    encoding: LowPrecision | None = None
    outliers: SparseOutliers | None = None

    symmetric = False

    def __post_init__(self):
        # Only a value made from outside comes here (_trusted bypasses it).
        shape, a, _, error_exp = val.check_packed_arrays(
            self.shape, {k: getattr(self, k) for k in PACKED_ARRAYS}, self.symmetric,
            self.error_exp)
        check_structure(*shape, a, "HMatrix storage: inconsistent arrays", self.symmetric)
        if self.encoding is not None and not isinstance(self.encoding, LowPrecision):
            raise TypeError(f"encoding must be a LowPrecision or None, got "
                            f"{type(self.encoding).__name__}")
        if self.outliers is not None and (not isinstance(self.outliers, SparseOutliers)
                                          or tuple(self.outliers.shape) != shape):
            raise ValueError(f"outliers must be a SparseOutliers of shape {shape} or None")
        for k, v in dict(a, shape=shape, error_exp=error_exp).items():
            object.__setattr__(self, k, v)

    @classmethod
    def from_arrays(cls, shape, row_perm, col_perm, row_start, row_stop, col_start, col_stop,
                    rank, offset, data, block_err2, block_norm2, symmetric=False, error_exp=0,
                    encoding=None, outliers=None) -> Packed:
        """The storage value of loose arrays, checked (symmetric storage for
        ``symmetric=True``); raises ``TypeError``/``ValueError`` naming
        the offending argument."""
        kind = SymmetricPacked if symmetric else Packed
        return kind(shape, row_perm, col_perm, row_start, row_stop, col_start, col_stop, rank,
                    offset, data, block_err2, block_norm2, error_exp, encoding, outliers)

    @classmethod
    def _trusted(cls, **fields) -> Packed:
        """A value of arrays the library made itself: no checks."""
        obj = object.__new__(cls)
        for f in dataclasses.fields(cls):
            value = fields.pop(f.name, f.default)
            if f.name == "shape":
                value = (int(value[0]), int(value[1]))
            elif f.name == "error_exp":
                value = int(value)
            object.__setattr__(obj, f.name, value)
        if fields:
            raise TypeError(f"unknown storage fields {sorted(fields)}")
        return obj

    def _replace(self, kind=None, **changes) -> Packed:
        """A trusted copy with some fields changed (and of variant ``kind``)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields.update(changes)
        return (kind or type(self))._trusted(**fields)

    def arrays(self) -> dict:
        """The packed arrays by name (the names of the file format)."""
        return {k: getattr(self, k) for k in PACKED_ARRAYS}

    def copy(self) -> Packed:
        """A copy owning its arrays (the encoding and outliers are shared:
        they are never changed in place)."""
        return self._replace(**{k: v.copy() for k, v in self.arrays().items()})

    # pickles hold the fields only (schedules are rebuilt on first use), and
    # low precision its stored codes, not the decoded working copy
    def __getstate__(self):
        state = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if self.encoding is not None:
            state["data"] = None
        return state

    def __setstate__(self, state):
        for k, v in state.items():
            object.__setattr__(self, k, v)
        if self.data is None:
            object.__setattr__(self, "data", self.encoding.decode(self.run_lengths()))

    def run_lengths(self) -> np.ndarray:
        """:func:`run_lengths` of these blocks."""
        return run_lengths(self.row_start, self.row_stop, self.col_start, self.col_stop,
                           self.rank)

    # ---------------------------------------------------------- schedules
    @cached_property
    def _identity_rows(self) -> bool:
        # An identity permutation (one block, or cluster="index") is
        # neither applied nor stored.
        return _is_identity(self.row_perm)

    @cached_property
    def _identity_cols(self) -> bool:
        return _is_identity(self.col_perm)

    @cached_property
    def t_off(self) -> np.ndarray:
        """Offsets of the phase-one buffer (``V_b^T x``) per block."""
        out = np.zeros(self.rank.size + 1, np.int64)
        np.cumsum(np.maximum(self.rank, 0), out=out[1:])
        return out

    def _z_off(self, start, stop):
        out = np.zeros(self.rank.size + 1, np.int64)
        np.cumsum(np.where(self.rank > 0, stop - start, 0), out=out[1:])
        return out

    @cached_property
    def z_off_rows(self) -> np.ndarray:
        return self._z_off(self.row_start, self.row_stop)

    @cached_property
    def z_off_cols(self) -> np.ndarray:
        return self._z_off(self.col_start, self.col_stop)

    @cached_property
    def row_sched(self) -> tuple:
        """:func:`row_schedule` of the block rows."""
        return row_schedule(self.row_start, self.row_stop)

    @cached_property
    def col_sched(self) -> tuple:
        return row_schedule(self.col_start, self.col_stop)

    @cached_property
    def _level_rows(self) -> tuple:
        return level_schedule(self.row_start, self.row_stop)

    @cached_property
    def _level_cols(self) -> tuple:
        return level_schedule(self.col_start, self.col_stop)

    # ------------------------------------------------------------ accounting
    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def strictly_upper(self) -> np.ndarray:
        """Mask of the stored blocks that stand for their mirror too."""
        return np.zeros(self.rank.size, bool)

    @property
    def multiplicity(self) -> np.ndarray:
        """How often each stored block occurs in the matrix."""
        return np.where(self.strictly_upper, 2.0, 1.0)

    def _product_arrays(self) -> list:
        """The arrays besides the numbers and blocks that a product reads."""
        return [self.t_off, self.z_off_rows, self.z_off_cols, *self.row_sched,
                *self.col_sched]

    @property
    def nbytes(self) -> int:
        """Bytes of everything a product reads (see :attr:`HMatrix.nbytes`)."""
        perms = [p for p, identity in ((self.row_perm, self._identity_rows),
                                       (self.col_perm, self._identity_cols)) if not identity]
        numbers = self.data.nbytes if self.encoding is None else self.encoding.nbytes
        if self.outliers is not None:
            numbers += self.outliers.nbytes
        arrays = perms + self._product_arrays() + [getattr(self, k) for k in BLOCK_ARRAYS]
        return numbers + int(sum(a.nbytes for a in arrays))

    # -------------------------------------------------------------- products
    def _apply(self, x, trans):
        """``A x`` (``A^T x`` for ``trans``) in the original order, for a
        host operand ``x`` (1-D or 2-D, already checked): the one product of
        every variant; the variant's part is :meth:`_product`."""
        out_dtype = np.result_type(self.dtype, x.dtype)
        if out_dtype.kind != "f":
            out_dtype = np.dtype(np.float64)
        x0 = x
        exp = _operand_exponent(x, self.dtype)
        if exp:   # float64 values beyond float32's range: scale exactly, scale back
            x = np.ldexp(x, -exp)
        in_perm, out_perm = ((self.row_perm, self.col_perm) if trans
                             else (self.col_perm, self.row_perm))
        in_identity, out_identity = ((self._identity_rows, self._identity_cols) if trans
                                     else (self._identity_cols, self._identity_rows))
        xp = np.ascontiguousarray(x if in_identity else x[in_perm], dtype=self.dtype)
        yp = self._product(xp, trans)
        if out_identity:
            out = yp.astype(out_dtype, copy=False)
        else:
            out = np.empty(yp.shape, dtype=out_dtype)
            out[out_perm] = yp
        if exp:
            np.ldexp(out, exp, out=out)
        return self._add_outliers(out, x0, trans)

    def _add_outliers(self, out, x, trans):
        """``out + S x`` (or ``S^T x``) for the sparse part of ``W = S + H``."""
        if self.outliers is None:
            return out
        S = self.outliers.to_csr()
        out += (S.T @ x) if trans else (S @ x)
        return out

    def _product(self, xp, trans):
        """``A xp`` (``A^T xp``) in cluster order: every block stored."""
        seg, ptr, blk = self.col_sched if trans else self.row_sched
        blocks = (self.data,) + tuple(getattr(self, k) for k in BLOCK_ARRAYS)
        if xp.ndim == 2 and xp.shape[1] >= BLAS_MIN_RHS and self.rank.size <= FEW_BLOCKS:
            return _few_blocks_product(*blocks, xp, trans, self.shape[1 if trans else 0])
        with serial_if_unsafe(), one_blas_thread():
            if xp.ndim == 1:
                z_off = self.z_off_cols if trans else self.z_off_rows
                return products.hmatvec(*blocks, z_off, seg, ptr, blk, xp, trans)
            if xp.shape[1] >= BLAS_MIN_RHS:
                levels = self._level_cols if trans else self._level_rows
                return products.hmatmat_blas(*blocks, self.t_off, *levels, xp, trans)
            return products.hmatmat(*blocks, self.t_off, seg, ptr, blk, xp, trans)

    def _dense_clustered(self) -> np.ndarray:
        """The matrix in cluster order, without the sparse part."""
        return products.hm_to_dense(self.data, *(getattr(self, k) for k in BLOCK_ARRAYS),
                                    *self.shape)

    def to_dense(self, dtype=None) -> np.ndarray:
        """The matrix as a dense array (products in float64), sparse part included."""
        Dp = self._dense_clustered()
        dtype = self.dtype if dtype is None else dtype
        if self.outliers is None:
            out = np.empty(self.shape, dtype=dtype)
            out[np.ix_(self.row_perm, self.col_perm)] = Dp
            return out
        out = np.empty(self.shape)
        out[np.ix_(self.row_perm, self.col_perm)] = Dp
        out += self.outliers.to_csr().toarray()
        return out.astype(dtype, copy=False)

    # ------------------------------------------------------------- variants
    def full(self) -> Packed:
        """Every block stored (the layout the CUDA kernels and row parts need)."""
        return self

    def transpose(self) -> Packed:
        """``A^T``: dense blocks transposed, low-rank blocks' factors swapped."""
        data = products.transpose_data(self.data, *(getattr(self, k) for k in BLOCK_ARRAYS))
        return Packed._trusted(
            shape=self.shape[::-1], row_perm=self.col_perm, col_perm=self.row_perm,
            row_start=self.col_start, row_stop=self.col_stop, col_start=self.row_start,
            col_stop=self.row_stop, rank=self.rank, offset=self.offset, data=data,
            block_err2=self.block_err2, block_norm2=self.block_norm2,
            error_exp=self.error_exp,
            outliers=None if self.outliers is None else self.outliers.transpose(),
            encoding=self._reencoded(data, transposed=True))

    def scaled(self, c) -> Packed:
        """``c A``: every dense block and every ``U`` factor scaled once."""
        m_b = self.row_stop - self.row_start
        length = np.where(self.rank < 0, m_b * (self.col_stop - self.col_start),
                          np.maximum(self.rank, 0) * m_b)   # dense block, or U only
        edges = np.zeros(self.data.size + 1, np.int64)
        np.add.at(edges, self.offset, 1)
        np.add.at(edges, self.offset + length, -1)
        scaled = np.cumsum(edges[:-1]) > 0
        data = np.where(scaled, self.data * np.asarray(c, self.dtype),
                        self.data).astype(self.dtype, copy=False)
        out = self._replace(data=data, block_err2=self.block_err2 * c * c,
                            block_norm2=self.block_norm2 * c * c,
                            outliers=None if self.outliers is None else self.outliers.scaled(c))
        return out._replace(encoding=out._reencoded(data))

    def _reencoded(self, data, transposed=False):
        """The low-precision form of ``data`` (laid out as these blocks, or
        as their transposes) in this value's kind when it holds ``data``
        exactly, else None: the result is then stored at full precision."""
        if self.encoding is None:
            return None
        runs = run_lengths(self.col_start, self.col_stop, self.row_start, self.row_stop,
                           self.rank) if transposed else self.run_lengths()
        return reencode(self.encoding.kind, data, runs)


def reencode(kind, data, runs):
    """``encode(data, runs, kind)`` when that holds ``data`` exactly, else
    None (and None for ``kind`` None)."""
    if kind is None:
        return None
    enc = encode(data, runs, kind, data.dtype)
    if enc is None or not np.array_equal(enc.decode(runs), data):
        return None
    return enc


@dataclass(frozen=True, eq=False)
class SymmetricPacked(Packed):
    """Symmetric storage: only the diagonal and strictly upper blocks are
    stored, and a strictly upper block also stands for its mirror image,
    so ``H`` equals its transpose exactly. The matvec reads every stored
    number once and applies it twice
    (:func:`hmnumba.kernels.symmetric.symmetric_hmatvec`).

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.storage import Packed
    >>> z = lambda *v: np.array(v, np.int64)
    >>> P = Packed.from_arrays((2, 2), z(0, 1), z(0, 1), z(0, 0, 1), z(1, 1, 2),
    ...                        z(0, 1, 1), z(1, 2, 2), z(-1, 1, -1), z(0, 1, 3),
    ...                        np.array([1.0, 2.0, 3.0, 4.0]), np.zeros(3), np.ones(3),
    ...                        symmetric=True)
    >>> P.to_dense().tolist(), P._apply(np.array([1.0, 0.0]), trans=False).tolist()
    ([[1.0, 6.0], [6.0, 4.0]], [1.0, 6.0])
    """

    symmetric = True

    @cached_property
    def slab_ptr(self) -> np.ndarray:
        """The slabs of the fused symmetric matvec."""
        return symmetric_slabs(self.row_start, self.row_stop, self.col_start, self.col_stop,
                               self.rank, SYMMETRIC_SLABS)

    @property
    def strictly_upper(self) -> np.ndarray:
        return self.row_start != self.col_start

    def _product_arrays(self):
        # The schedules a matmat builds on first use are working memory.
        return [self.slab_ptr]

    @cached_property
    def _halves(self) -> tuple:
        """``(upper, strict)``: the stored blocks, and the strictly upper ones
        (None if there are none), as full storage over this ``data``."""
        upper = Packed._trusted(**{f.name: getattr(self, f.name)
                                   for f in dataclasses.fields(self)
                                   if f.name not in ("encoding", "outliers")})
        mask = self.strictly_upper
        strict = None
        if mask.any():
            strict = upper._replace(**{k: getattr(self, k)[mask] for k in BLOCK_ARRAYS
                                       + ("block_err2", "block_norm2")})
        return upper, strict

    def _product(self, xp, trans):
        """``A xp`` in cluster order (a symmetric matrix is its own
        transpose). A vector goes through the fused kernel (one read of
        ``data``); a block of vectors is the upper triangle's product plus
        the transposed product of its strictly upper blocks."""
        if xp.ndim == 1:
            with serial_if_unsafe(), one_blas_thread():
                return symmetric_hmatvec(self.data, *(getattr(self, k) for k in BLOCK_ARRAYS),
                                         self.slab_ptr, xp)
        yp = np.zeros((self.shape[0], xp.shape[1]))
        for half, t in zip(self._halves, (False, True)):
            if half is not None:
                part = half._product(xp, t)
                yp[:part.shape[0]] += part
        return yp

    def _dense_clustered(self):
        Dp = self._halves[0]._dense_clustered()
        strict = self._halves[1]
        if strict is not None:   # add the mirrors of the strictly upper blocks
            Dp += strict._dense_clustered().T
        return Dp

    def full(self) -> Packed:
        """The same matrix with the mirror images of the strictly upper
        blocks stored explicitly."""
        strict = np.flatnonzero(self.strictly_upper)
        k = self.rank[strict]
        sizes = stored_numbers(self.row_start[strict], self.row_stop[strict],
                               self.col_start[strict], self.col_stop[strict], k)
        packed_off = np.cumsum(sizes) - sizes
        packed = np.empty(int(sizes.sum()), self.dtype)
        compress.gather_factors(self.data, self.offset[strict], sizes, packed, packed_off)
        mirrored = products.transpose_data(packed, self.row_start[strict],
                                           self.row_stop[strict], self.col_start[strict],
                                           self.col_stop[strict], k, packed_off)
        r0 = np.concatenate([self.row_start, self.col_start[strict]])
        c0 = np.concatenate([self.col_start, self.row_start[strict]])
        order = np.lexsort((c0, r0))

        def cat(a):
            return np.concatenate([a, a[strict]])[order]

        return Packed._trusted(
            shape=self.shape, row_perm=self.row_perm, col_perm=self.col_perm,
            row_start=r0[order],
            row_stop=np.concatenate([self.row_stop, self.col_stop[strict]])[order],
            col_start=c0[order],
            col_stop=np.concatenate([self.col_stop, self.row_stop[strict]])[order],
            rank=cat(self.rank),
            offset=np.concatenate([self.offset, packed_off + self.data.size])[order],
            data=np.concatenate([self.data, mirrored]), block_err2=cat(self.block_err2),
            block_norm2=cat(self.block_norm2), error_exp=self.error_exp)

    def transpose(self) -> SymmetricPacked:
        """A symmetric matrix is its own transpose."""
        return self


def row_schedule(start, stop):
    """CSR schedule: the output segments and, for each, the blocks covering it.

    Segments are the intervals between consecutive block boundaries, so each
    lies inside the row range of every block that touches it; each segment is
    owned by one thread in the products (no races, no atomics).

    Returns ``(seg_bounds, sched_ptr, sched_block)``.

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.storage import row_schedule
    >>> [a.tolist() for a in row_schedule(np.array([0, 0, 2]), np.array([2, 4, 4]))]
    [[0, 2, 4], [0, 2, 4], [0, 1, 1, 2]]
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


def _is_identity(perm):
    return bool(np.array_equal(perm, np.arange(perm.size)))


def _operand_exponent(x, dtype):
    """``e`` such that ``x * 2**-e`` fits a float32 product, for a float64
    operand of a float32 matrix whose magnitudes leave ``[2**-64, 2**64]``
    (cast as they are, values above 3.4e38 became inf and the product NaN);
    0 when no scaling is needed."""
    if dtype != np.float32 or x.dtype.itemsize <= 4 or x.dtype.kind != "f" or x.size == 0:
        return 0
    amax = max(abs(float(x.max())), abs(float(x.min())))
    if amax == 0.0:
        return 0
    e = math.frexp(amax)[1]
    return e if abs(e) > SCALE_FREE_EXP else 0


def _few_blocks_product(data, r0, r1, c0, c1, rank, offset, X, trans, n_out):
    """``A X`` (or ``A^T X``) in cluster order, one numpy BLAS call per block
    product: the product of :func:`products.hmatmat_blas` for matrices of few blocks."""
    Y = np.zeros((n_out, X.shape[1]), dtype=data.dtype)
    for b in range(rank.size):
        m, n, k, o = r1[b] - r0[b], c1[b] - c0[b], rank[b], offset[b]
        rows, cols = slice(r0[b], r1[b]), slice(c0[b], c1[b])
        if k < 0:
            D = data[o:o + m * n].reshape(m, n)
            if trans:
                Y[cols] += D.T @ X[rows]
            else:
                Y[rows] += D @ X[cols]
        elif k > 0:
            Ut = data[o:o + k * m].reshape(k, m)
            Vt = data[o + k * m:o + k * (m + n)].reshape(k, n)
            if trans:
                Y[cols] += Vt.T @ (Ut @ X[rows])
            else:
                Y[rows] += Ut.T @ (Vt @ X[cols])
    return Y
