"""The baselines the paper compares H-matrices against: global truncated SVD,
magnitude pruning, post-training integer quantization and a float16 cast.

All four share :class:`hmnumba.compressor.BaseCompressor` with
:class:`hmnumba.HMatrixCompressor`: ``fit(W)`` on a weight array of shape
``(n_out, n_in)``, ``transform(X) = X @ W_hat.T``, ``adjoint_transform``,
``reconstruct()`` and the fitted ``compression_ratio_``, ``relative_error_`` and
``nbytes_``. Each class's docstring says exactly which arrays its byte count
includes: the count is what the format really has to store, so the ratios of the
four methods can be compared.
"""
from __future__ import annotations

import numbers

import numpy as np
import scipy.sparse as sp

from hmnumba import _validation as val
from hmnumba.compressor import BaseCompressor
from hmnumba.kernels.factors import truncation_rank


class SVDCompressor(BaseCompressor):
    """Global truncated SVD ``W ~ U_k diag(s_k) V_k^T``.

    The rank is ``rank`` when given, otherwise the smallest rank whose tail
    meets ``||W - W_k||_F <= tol * ||W||_F`` (Eckart-Young: the tail's norm is
    ``sqrt(sum_{i>k} s_i^2)``). With neither given, ``tol=1e-3``.

    Storage: ``U_k diag(s_k)`` (``n_out x k``) and ``V_k`` (``n_in x k``) in the
    input's dtype, ``nbytes_ = k * (n_out + n_in) * itemsize``; ``transform``
    is two thin products, ``(X @ V_k) @ (U_k diag(s_k)).T``.

    Parameters
    ----------
    rank : int or None, default=None
        Fixed rank (clipped to ``min(W.shape)``). Exclusive with ``tol``.
    tol : float or None, default=None
        Relative Frobenius tolerance, ``0 < tol < 1``.

    Attributes
    ----------
    rank_ : int
        The rank kept (0 for a zero matrix).
    singular_values_ : ndarray
        All singular values of ``W``, descending.
    compression_ratio_, relative_error_, nbytes_ : float, float, int
        See :mod:`hmnumba.compressor`.

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.baselines import SVDCompressor
    >>> rng = np.random.default_rng(0)
    >>> W = rng.standard_normal((100, 5)) @ rng.standard_normal((5, 80))
    >>> comp = SVDCompressor(tol=1e-8).fit(W)
    >>> comp.rank_, bool(comp.relative_error_ < 1e-8)
    (5, True)
    >>> comp.nbytes_ == 5 * (100 + 80) * 8
    True
    """

    def __init__(self, rank: int | None = None, tol: float | None = None) -> None:
        self.rank = rank
        self.tol = tol

    def _check_params(self):
        if self.rank is not None and self.tol is not None:
            raise ValueError("give either rank or tol to SVDCompressor, not both "
                             f"(got rank={self.rank!r}, tol={self.tol!r})")
        if self.rank is not None:
            val.check_positive_int(self.rank, "rank")
        if self.tol is not None:
            val.check_tol(self.tol)

    def _compress(self, W):
        U, s, Vt = np.linalg.svd(W, full_matrices=False)
        self.singular_values_ = s
        if self.rank is not None:
            k = min(int(self.rank), s.size)
        else:
            k = svd_rank_for_tol(s, 1e-3 if self.tol is None else self.tol)
        self.rank_ = k
        self.left_factor_ = np.ascontiguousarray(U[:, :k] * s[:k])
        self.right_factor_ = np.ascontiguousarray(Vt[:k].T)
        return self.left_factor_.nbytes + self.right_factor_.nbytes

    def _apply(self, X):
        return (X @ self.right_factor_) @ self.left_factor_.T

    def _apply_adjoint(self, Y):
        return (Y @ self.left_factor_) @ self.right_factor_.T

    def _reconstruct(self):
        return self.left_factor_ @ self.right_factor_.T


def svd_rank_for_tol(s: np.ndarray, tol: float) -> int:
    """Smallest ``k`` with ``sqrt(sum_{i >= k} s_i^2) <= tol * ||s||_2``.

    Parameters
    ----------
    s : ndarray
        Singular values, descending.
    tol : float
        Relative tolerance.

    Returns
    -------
    int

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.baselines import svd_rank_for_tol
    >>> svd_rank_for_tol(np.array([1.0, 0.1, 0.001]), 0.01)
    2
    """
    s = np.ascontiguousarray(s, dtype=np.float64)
    return int(truncation_rank(s, tol * np.linalg.norm(s))[0])


class PruningCompressor(BaseCompressor):
    """Unstructured L1 magnitude pruning, stored as CSR.

    The ``round(sparsity * W.size)`` entries of smallest absolute value are set
    to zero, as ``torch.nn.utils.prune.l1_unstructured(amount=sparsity)`` does
    (ties are broken towards the lower flat index here). The survivors are
    stored in compressed sparse row format.

    Storage: the CSR arrays ``data`` (``nnz`` values in the input's dtype),
    ``indices`` (``nnz`` column indices) and ``indptr`` (``n_out + 1`` row
    pointers), with int32 indices when they fit (scipy's choice), so
    ``nbytes_ = nnz * (itemsize + 4) + (n_out + 1) * 4`` for ordinary sizes.
    At 50 % sparsity in float32 this is *no* saving (ratio ~1): that is the
    honest cost of unstructured sparsity.

    Parameters
    ----------
    sparsity : float, default=0.5
        Fraction of entries removed, ``0 <= sparsity < 1``.

    Attributes
    ----------
    weights_ : scipy.sparse.csr_array
        The pruned weights.
    compression_ratio_, relative_error_, nbytes_ : float, float, int
        See :mod:`hmnumba.compressor`.

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.baselines import PruningCompressor
    >>> W = np.array([[0.1, -2.0], [0.5, 3.0]])
    >>> PruningCompressor(sparsity=0.5).fit(W).reconstruct()
    array([[ 0., -2.],
           [ 0.,  3.]])
    """

    def __init__(self, sparsity: float = 0.5) -> None:
        self.sparsity = sparsity

    def _check_params(self):
        s = self.sparsity
        if isinstance(s, bool) or not isinstance(s, numbers.Real):
            raise TypeError(f"sparsity must be a real number in [0, 1), got {type(s).__name__}")
        if not 0.0 <= float(s) < 1.0:
            raise ValueError(f"sparsity must satisfy 0 <= sparsity < 1, got {s!r}")

    def _compress(self, W):
        n_prune = int(round(float(self.sparsity) * W.size))
        flat = W.ravel()
        keep = np.ones(W.size, dtype=bool)
        if n_prune:
            order = np.argsort(np.abs(flat), kind="stable")
            keep[order[:n_prune]] = False
        kept = np.where(keep.reshape(W.shape), W, 0)
        self.weights_ = sp.csr_array(kept)
        self.weights_.eliminate_zeros()
        w = self.weights_
        self.n_pruned_ = n_prune
        return w.data.nbytes + w.indices.nbytes + w.indptr.nbytes

    def _apply(self, X):
        # (W X^T)^T: CSR times a dense block is scipy's fast path.
        return np.asarray((self.weights_ @ X.T).T)

    def _apply_adjoint(self, Y):
        return np.asarray((self.weights_.T @ Y.T).T)

    def _reconstruct(self):
        return self.weights_.toarray()


class QuantizationCompressor(BaseCompressor):
    """Post-training integer quantization, per output channel or per tensor.

    Symmetric (``zero_point = 0``): ``scale = max|w| / (2^(b-1) - 1)`` and
    ``q = clip(round(w / scale), -(2^(b-1) - 1), 2^(b-1) - 1)``.
    Affine: the range ``[min(w, 0), max(w, 0)]`` is mapped onto ``0 .. 2^b - 1``:
    ``scale = (hi - lo) / (2^b - 1)``, ``zero_point = clip(round(-lo / scale))``,
    ``q = clip(round(w / scale) + zero_point, 0, 2^b - 1)``. Then
    ``w_hat = scale * (q - zero_point)``. ``per_channel=True`` gives every row
    (output channel) its own scale and zero point, as PyTorch's per-channel
    weight observers do for ``Linear`` layers.

    Storage: the codes bit-packed at ``bits`` bits each
    (``ceil(W.size * bits / 8)`` bytes), one scale per channel (or one) in
    float32, and for affine quantization one int32 zero point per channel (or
    one). ``transform`` dequantizes with float32 arithmetic on the integer codes
    (NumPy has no integer GEMM), so it is not faster than a dense product here.

    Parameters
    ----------
    bits : int, default=8
        Bits per weight, 2 to 16.
    per_channel : bool, default=True
        One scale (and zero point) per output row instead of per tensor.
    symmetric : bool, default=True
        Symmetric (signed codes, zero point 0) or affine (unsigned codes).

    Attributes
    ----------
    codes_ : ndarray
        Integer codes, shape ``(n_out, n_in)`` (unpacked copy kept for speed).
    packed_codes_ : ndarray of uint8
        The codes packed at ``bits`` bits each: what ``nbytes_`` counts.
    scale_, zero_point_ : ndarray
        Shape ``(n_out, 1)`` per channel, ``(1, 1)`` per tensor.
    compression_ratio_, relative_error_, nbytes_ : float, float, int
        See :mod:`hmnumba.compressor`.

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.baselines import QuantizationCompressor
    >>> W = np.array([[1.0, -0.3, 0.25], [2.0, 0.0, -2.0]])
    >>> q = QuantizationCompressor(bits=8).fit(W)
    >>> q.codes_
    array([[ 127,  -38,   32],
           [ 127,    0, -127]], dtype=int16)
    >>> bool(q.relative_error_ < 1e-2)
    True
    """

    def __init__(self, bits: int = 8, per_channel: bool = True, symmetric: bool = True) -> None:
        self.bits = bits
        self.per_channel = per_channel
        self.symmetric = symmetric

    def _check_params(self):
        val.check_positive_int(self.bits, "bits", minimum=2)
        if self.bits > 16:
            raise ValueError(f"bits must be between 2 and 16, got {self.bits}")
        for name in ("per_channel", "symmetric"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise TypeError(f"{name} must be True or False, "
                                f"got {type(getattr(self, name)).__name__}")

    def _compress(self, W):
        b = int(self.bits)
        W64 = W.astype(np.float64)
        axis = 1 if self.per_channel else None
        if self.symmetric:
            qmin, qmax = -(2 ** (b - 1) - 1), 2 ** (b - 1) - 1
            scale = np.max(np.abs(W64), axis=axis, keepdims=True) / qmax
            zero_point = np.zeros_like(scale)
        else:
            qmin, qmax = 0, 2 ** b - 1
            lo = np.minimum(np.min(W64, axis=axis, keepdims=True), 0.0)
            hi = np.maximum(np.max(W64, axis=axis, keepdims=True), 0.0)
            scale = hi / (qmax - qmin) - lo / (qmax - qmin)   # hi - lo may overflow
            zero_point = np.clip(np.round(-lo / np.where(scale > 0, scale, 1.0)), qmin, qmax)
        scale = np.where(scale > 0, scale, 1.0)   # all-zero channel
        # One float32 per scale, unless a scale leaves the normal float32
        # range (entries beyond ~1e38 or below ~1e-36): then float64, counted
        # as such in nbytes (a float32 scale of 1e300 / 127 is inf: NaN out).
        tiny32, max32 = np.finfo(np.float32).tiny, np.finfo(np.float32).max
        scale = scale.astype(np.float32 if np.all((scale >= tiny32) & (scale <= max32))
                             else np.float64)
        if np.ndim(scale) == 0:
            scale = scale.reshape(1, 1)
        zero_point = np.broadcast_to(zero_point, scale.shape).astype(np.int32)
        codes = np.clip(np.round(W64 / scale) + zero_point, qmin, qmax)
        self.codes_ = codes.astype(np.int16 if self.symmetric or b < 16 else np.int32)
        self.scale_ = scale
        self.zero_point_ = zero_point
        self.packed_codes_ = pack_bits(self.codes_ - qmin, b)
        self._dtype = W.dtype
        nbytes = self.packed_codes_.nbytes + self.scale_.nbytes
        if not self.symmetric:
            nbytes += self.zero_point_.nbytes
        return nbytes

    def _dequantized(self):
        return (self.scale_ * (self.codes_ - self.zero_point_)).astype(self._dtype)

    def _apply(self, X):
        # X @ (s (q - z))^T = (X @ q^T) s^T - (X 1) (s z)^T, q held as exact floats.
        dtype = np.result_type(X.dtype, self._dtype)
        q = self.codes_.astype(dtype)
        s = self.scale_.T.astype(dtype)
        out = (X @ q.T) * s
        if not self.symmetric:
            out -= X.sum(axis=1, keepdims=True) * (s * self.zero_point_.T)
        return out

    def _apply_adjoint(self, Y):
        return Y @ self._dequantized()

    def _reconstruct(self):
        return self._dequantized()


class Float16Compressor(BaseCompressor):
    """Cast to IEEE half precision (float16): the simplest strong baseline.

    Every weight is rounded to the nearest float16 (``numpy.float16``, round to
    nearest even); weights beyond float16's range (``|w| > 65504``) become
    ``inf``, so such an array is refused. The relative rounding error of each
    entry is at most ``2**-11`` (about 4.9e-4) for normal numbers, so
    ``relative_error_`` is at most that for weights in float16's normal range.

    Storage: the float16 copy, ``nbytes_ = 2 * W.size``: a ratio of 2 against
    float32 weights, 4 against float64. ``transform`` computes in the input's
    dtype (NumPy has no fast float16 GEMM on the CPU), so it is not faster
    than a dense product here.

    Attributes
    ----------
    weights_ : ndarray of float16
    compression_ratio_, relative_error_, nbytes_ : float, float, int
        See :mod:`hmnumba.compressor`.

    Raises
    ------
    ValueError
        From ``fit``, if an entry of ``W`` overflows float16.

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.baselines import Float16Compressor
    >>> W = np.random.default_rng(0).standard_normal((40, 30)).astype(np.float32)
    >>> comp = Float16Compressor().fit(W)
    >>> comp.nbytes_, comp.compression_ratio_
    (2400, 2.0)
    >>> bool(comp.relative_error_ < 2.0 ** -11)
    True
    """

    def __init__(self) -> None:
        pass

    def _check_params(self):
        pass

    def _compress(self, W):
        limit = float(np.finfo(np.float16).max)
        if np.max(np.abs(W), initial=0.0) > limit:
            raise ValueError(f"W has entries beyond float16's range (|w| > {limit:g}); "
                             "Float16Compressor would store them as inf")
        self.weights_ = W.astype(np.float16)
        self._dtype = W.dtype
        return self.weights_.nbytes

    def _apply(self, X):
        return X @ self.weights_.astype(np.result_type(X.dtype, self._dtype)).T

    def _apply_adjoint(self, Y):
        return Y @ self.weights_.astype(np.result_type(Y.dtype, self._dtype))

    def _reconstruct(self):
        return self.weights_.astype(self._dtype)


def pack_bits(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack non-negative integer codes at ``bits`` bits each into bytes.

    Parameters
    ----------
    codes : ndarray of int
        Values in ``[0, 2**bits)``.
    bits : int

    Returns
    -------
    ndarray of uint8 of length ``ceil(codes.size * bits / 8)``

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.baselines import pack_bits, unpack_bits
    >>> pack_bits(np.array([1, 2, 3, 0]), 2)
    array([108], dtype=uint8)
    >>> bool(np.array_equal(unpack_bits(pack_bits(np.arange(10), 4), 4, 10), np.arange(10)))
    True
    """
    c = np.asarray(codes, dtype=np.uint32).ravel()
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint32)
    bit_planes = ((c[:, None] >> shifts) & 1).astype(np.uint8)   # most significant first
    return np.packbits(bit_planes.ravel())


def unpack_bits(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: the first ``count`` codes as int64.

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.baselines import unpack_bits
    >>> unpack_bits(np.array([108], dtype=np.uint8), 2, 4)
    array([1, 2, 3, 0])
    """
    flat = np.unpackbits(np.asarray(packed, dtype=np.uint8))[: count * bits]
    weights = (1 << np.arange(bits - 1, -1, -1)).astype(np.int64)
    return flat.reshape(count, bits).astype(np.int64) @ weights
