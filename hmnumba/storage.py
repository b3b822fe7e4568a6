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

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["LowPrecision", "SparseOutliers", "encode", "run_lengths", "split_outliers",
           "outlier_counts"]

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
