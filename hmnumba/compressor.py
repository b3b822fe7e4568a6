"""The scikit-learn front door: :class:`HMatrixCompressor` and the base class
shared with the baselines of :mod:`hmnumba.baselines`.

A compressor treats the array it is fitted on as a **linear operator** ``W`` of
shape ``(n_out, n_in)`` (a layer's weight array: rows are outputs, columns are
inputs) and stores a compressed approximation ``W_hat``. ``transform(X)`` then
applies it to samples like a fitted linear projection: ``X @ W_hat.T``, of shape
``(n_samples, n_out)``. Because ``fit`` looks at ``W`` and not at training
samples, use a fitted compressor inside a pipeline through
:class:`sklearn.frozen.FrozenEstimator`::

    make_pipeline(StandardScaler(), FrozenEstimator(comp), Ridge())

Every compressor reports the same fitted attributes, so an experiment loops over
all four methods (H-matrix, SVD, pruning, quantization) with one code path:

``compression_ratio_``
    ``dense bytes / stored bytes``, where the dense bytes are those of ``W`` in
    the stored dtype and the stored bytes count every array the format keeps.
``relative_error_``
    ``||W - W_hat||_F / ||W||_F``, computed exactly.
``nbytes_``
    Stored bytes.
``reconstruct()``
    The dense ``W_hat``.
``adjoint_transform(Y)``
    ``Y @ W_hat``: the transposed product, as a backward pass needs it.

Input conventions follow scikit-learn: integer and boolean arrays are converted
to float64 (as :meth:`HMatrix.from_dense` does), float32 stays float32, and
errors are those of :func:`sklearn.utils.validation.validate_data`.
"""
from __future__ import annotations

import warnings

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from hmnumba import _validation as val
from hmnumba.hmatrix import HMatrix, warn_if_larger_than_dense

FLOAT_DTYPES = (np.float64, np.float32)


class BaseCompressor(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Protocol shared by every compressor of a weight array ``W (n_out, n_in)``.

    Subclasses implement ``_compress(W)`` (store the compressed form and return
    ``nbytes``) and ``_apply(X)`` (``X @ W_hat.T``), ``_apply_adjoint(Y)``
    (``Y @ W_hat``) and ``_reconstruct()``; this class does validation, the
    common fitted attributes and the scikit-learn plumbing.

    Examples
    --------
    Every compressor is one, so one loop serves all four methods:

    >>> import numpy as np
    >>> from hmnumba import HMatrixCompressor
    >>> from hmnumba.baselines import QuantizationCompressor, SVDCompressor
    >>> from hmnumba.compressor import BaseCompressor
    >>> rng = np.random.default_rng(0)
    >>> W, X = rng.standard_normal((64, 48)), rng.standard_normal((5, 48))
    >>> for comp in (HMatrixCompressor(tol=1e-2), SVDCompressor(tol=1e-2),
    ...              QuantizationCompressor(bits=8)):
    ...     assert isinstance(comp, BaseCompressor)
    ...     _ = comp.fit(W)
    ...     print(type(comp).__name__, comp.transform(X).shape,
    ...           bool(comp.relative_error_ <= 1e-2))
    HMatrixCompressor (5, 64) True
    SVDCompressor (5, 64) True
    QuantizationCompressor (5, 64) True
    """

    def fit(self, W: ArrayLike, y: object = None) -> BaseCompressor:
        """Compress the weight array ``W``.

        Parameters
        ----------
        W : array-like of shape (n_out, n_in)
            The operator: rows are outputs, columns are inputs.
        y : None
            Ignored; present for API consistency. Passing one warns: a
            compressor fitted inside a pipeline is refitted on the samples
            ``X`` instead of a weight array; wrap a fitted compressor in
            :class:`sklearn.frozen.FrozenEstimator` instead.

        Returns
        -------
        self

        Warns
        -----
        UserWarning
            ``y`` is not None.
        CompressionWarning
            The compressed form stores more than the dense ``W``
            (``compression_ratio_ < 1``).
        """
        if y is not None:
            warnings.warn(
                f"{type(self).__name__}.fit got y: it compresses its first argument as the "
                f"operator W and ignores y, so inside a Pipeline it is refitted on the samples "
                f"X. To use a fitted compressor in a pipeline, wrap it: "
                f"make_pipeline(FrozenEstimator(comp), Ridge()) with "
                f"sklearn.frozen.FrozenEstimator.", UserWarning, stacklevel=2)
        W = validate_data(self, W, dtype=FLOAT_DTYPES, order="C", ensure_min_samples=1)
        self._check_params()
        norm = _frobenius(W)
        self.nbytes_ = int(self._compress(W))
        self.dense_nbytes_ = int(W.size * W.dtype.itemsize)
        self.compression_ratio_ = self.dense_nbytes_ / max(self.nbytes_, 1)
        self.relative_error_ = self._relative_error(W, norm)
        if not self._build_warns:   # HMatrix.from_dense warns by itself
            warn_if_larger_than_dense(self.compression_ratio_, self.nbytes_,
                                      self.dense_nbytes_, stacklevel=3)
        self.n_outputs_ = W.shape[0]
        self._n_features_out = W.shape[0]
        return self

    def transform(self, X: ArrayLike) -> np.ndarray:
        """Apply the compressed operator to samples: ``X @ W_hat.T``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_in)

        Returns
        -------
        ndarray of shape (n_samples, n_out)
            float32 when both ``X`` and the stored weights are float32.
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=FLOAT_DTYPES, reset=False)
        return self._apply(X)

    def adjoint_transform(self, Y: ArrayLike) -> np.ndarray:
        """The transposed product ``Y @ W_hat`` (a layer's backward pass).

        Parameters
        ----------
        Y : array-like of shape (n_samples, n_out)

        Returns
        -------
        ndarray of shape (n_samples, n_in)
        """
        check_is_fitted(self)
        Y = val.check_float_array(Y, "Y", ndim=2)
        if Y.shape[1] != self.n_outputs_:
            raise ValueError(f"Y has {Y.shape[1]} columns, but {type(self).__name__} has "
                             f"{self.n_outputs_} outputs")
        return self._apply_adjoint(Y)

    def reconstruct(self) -> np.ndarray:
        """The dense approximation ``W_hat`` of shape ``(n_out, n_in)``."""
        check_is_fitted(self)
        return self._reconstruct()

    def _relative_error(self, W, norm):
        diff = _frobenius(W.astype(np.float64, copy=False)
                          - self._reconstruct().astype(np.float64, copy=False))
        return float(diff / norm) if norm > 0 else float(diff)

    # Whether _compress already warns (CompressionWarning) when the result
    # stores more than dense.
    _build_warns = False

    def _check_params(self):
        """Validate the constructor parameters (called by ``fit``, never ``__init__``)."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


def _frobenius(a):
    """``||a||_F`` in float64 without underflow or overflow: scaled by
    ``max |a|`` before squaring, as LAPACK's ``dlange`` does (the plain sum
    of squares is 0 for entries near 1e-170 and inf near 1e170)."""
    a = np.asarray(a, dtype=np.float64)
    scale = float(np.max(np.abs(a))) if a.size else 0.0
    if scale == 0.0 or not np.isfinite(scale):
        return scale
    return scale * float(np.linalg.norm(a / scale))


class HMatrixCompressor(BaseCompressor):
    """Compress a weight array into an adaptive, error-bounded H-matrix.

    ``fit(W)`` builds ``H = HMatrix.from_dense(W, ...)`` with the guarantee
    ``||W - H||_F <= tol * ||W||_F``; ``transform(X)`` returns ``X @ H.T``
    through the numba matmat kernel, never expanding ``H``.

    Parameters
    ----------
    tol : float, default=1e-3
        Relative Frobenius tolerance, ``0 < tol < 1``.
    leaf_size : int, default=32
        Clusters with at most this many rows / columns are not split.
    admissibility : {"adaptive", "weak"}, default="adaptive"
        Initial block partition (weights have no geometry, so ``"strong"`` is
        not offered here; use :meth:`HMatrix.from_dense` with points).
    eta : float, default=2.0
        Kept for parity with :meth:`HMatrix.from_dense`.
    cluster : {"pca", "index"}, default="pca"
        Row / column clustering: principal-direction bisection (groups similar
        neurons) or contiguous halves.
    method : {"aca", "svd", "rsvd"}, default="aca"
        Low-rank approximation of a block.
    max_rank : int or None, default=None
        Blocks needing a larger rank are refined.
    backend : {"auto", "cpu", "cuda"}, default="auto"
        Where ``transform`` runs; ``"auto"`` uses a GPU only if one is present.
    n_jobs : int or None, default=None
        Workers for the block construction through joblib (``None``: numba's
        threads in this process).
    random_state : int, RandomState instance or None, default=None
        Seeds the PCA clustering and randomized SVD; an int makes ``fit``
        reproducible bit for bit. ``None`` is the fixed seed 0, **not** fresh
        randomness as in scikit-learn's glossary: hmnumba promises that the
        same input gives the same bits (every seed meets the error bound, so
        nothing is gained by varying it). For a different draw on every fit
        pass a ``RandomState`` instance, from which each fit takes a seed.
    structure : {"auto", "hierarchical"}, default="auto"
        ``"auto"`` keeps the cheapest of the adaptive tree, one global
        low-rank block and one dense block, so the result never stores more
        than :class:`~hmnumba.baselines.SVDCompressor` at the same ``tol``,
        nor more than ``W``;
        ``"hierarchical"`` keeps the tree (see :meth:`HMatrix.from_dense`).
    factor_dtype : {None, "float16", "int8", "auto"}, default=None
        Store factors and dense blocks in half precision or as 8-bit codes
        with per-column scales, the rounding counted in the error bound;
        ``"auto"`` keeps the cheapest of these and full precision
        (``hmatrix_.summary()`` says which won; see
        :meth:`HMatrix.from_dense`). ``transform`` still computes in the
        input's dtype.
    outliers : None, "auto" or int, default=None
        Store ``W = S + H`` with the largest entries in a sparse part ``S``
        (CSR, counted in ``nbytes_``) and the bound covering ``S + H``;
        ``"auto"`` picks the count that stores fewest bytes, 0 included.
        With ``factor_dtype="auto"`` too, the result is the cheapest of
        every storage option at ``tol`` (see :meth:`HMatrix.from_dense`).
    format : {"h", "h2"}, default="h"
        ``"h"``: an :class:`~hmnumba.HMatrix`; ``"h2"``: an H^2 matrix with
        nested row and column bases (:meth:`H2Matrix.from_dense
        <hmnumba.H2Matrix.from_dense>`, the same bound ``||W - H||_F <= tol
        ||W||_F`` computed exactly), which shares one basis per cluster
        across all of its blocks. ``"h2"`` uses ``tol``, ``leaf_size``,
        ``admissibility``, ``cluster``, ``random_state`` and ``backend`` (the
        build runs on the CPU, the products where ``backend`` says:
        :meth:`H2Matrix.to <hmnumba.H2Matrix.to>`); it needs ``factor_dtype``
        and ``outliers`` to be None; the other parameters are ignored.

    Attributes
    ----------
    hmatrix_ : HMatrix or H2Matrix
        The compressed operator (an :class:`~hmnumba.H2Matrix` for
        ``format="h2"``; its ``save`` and :func:`hmnumba.load` keep it).
    n_features_in_ : int
        ``n_in``, the number of columns of ``W``.
    n_outputs_ : int
        ``n_out``, the number of rows of ``W``.
    compression_ratio_ : float
        ``W.nbytes / hmatrix_.nbytes`` (all packed arrays counted).
    error_bound_ : float
        Guaranteed relative error ``sqrt(sum_b err_b^2) / ||W||_F <= tol``.
    relative_error_ : float
        The same quantity; equal to ``error_bound_`` because every block's error
        is computed exactly for dense input.
    block_errors_ : ndarray
        Absolute Frobenius error of each block (``format="h2"``: one entry,
        the error of the whole matrix, since the H^2 bases are shared).
    ranks_ : ndarray
        Rank of each block, ``-1`` for dense blocks (``format="h2"``: the
        rank of each row cluster basis).
    nbytes_ : int
        Stored bytes.

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba import HMatrixCompressor
    >>> rng = np.random.default_rng(0)
    >>> W = rng.standard_normal((256, 12)) @ rng.standard_normal((12, 256))
    >>> comp = HMatrixCompressor(tol=1e-6, random_state=0).fit(W)
    >>> bool(comp.error_bound_ <= 1e-6), bool(comp.compression_ratio_ > 2)
    (True, True)
    >>> X = rng.standard_normal((5, 256))
    >>> bool(np.allclose(comp.transform(X), X @ W.T))
    True

    ``fit`` looks at the operator ``W``, not at training samples, so a
    pipeline must not refit it: wrap the fitted compressor in
    :class:`~sklearn.frozen.FrozenEstimator` (``fit(X, y)`` of a bare
    compressor warns and compresses ``X``):

    >>> from sklearn.frozen import FrozenEstimator
    >>> from sklearn.linear_model import Ridge
    >>> from sklearn.pipeline import make_pipeline
    >>> X, y = rng.standard_normal((40, 256)), rng.standard_normal(40)
    >>> model = make_pipeline(FrozenEstimator(comp), Ridge()).fit(X, y)
    >>> model[0].estimator is comp, comp.n_outputs_
    (True, 256)

    The H^2 format, with the same guarantee:

    >>> comp2 = HMatrixCompressor(tol=1e-6, format="h2", random_state=0).fit(W)
    >>> type(comp2.hmatrix_).__name__, bool(comp2.error_bound_ <= 1e-6)
    ('GeneralH2Matrix', True)
    >>> Z = comp2.transform(X)
    >>> bool(np.linalg.norm(Z - X @ W.T) <= 1e-6 * np.linalg.norm(X) * np.linalg.norm(W))
    True
    """

    _build_warns = True

    def __init__(self, tol: float = 1e-3, leaf_size: int = 32, admissibility: str = "adaptive",
                 eta: float = 2.0, cluster: str = "pca", method: str = "aca",
                 max_rank: int | None = None, backend: str = "auto", n_jobs: int | None = None,
                 random_state: int | np.random.RandomState | None = None,
                 structure: str = "auto", factor_dtype: str | None = None,
                 outliers: int | str | None = None, format: str = "h") -> None:
        self.tol = tol
        self.leaf_size = leaf_size
        self.admissibility = admissibility
        self.eta = eta
        self.cluster = cluster
        self.method = method
        self.max_rank = max_rank
        self.backend = backend
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.structure = structure
        self.factor_dtype = factor_dtype
        self.outliers = outliers
        self.format = format

    @property
    def _build_warns(self):
        # HMatrix.from_dense warns by itself; H2Matrix.from_dense does not.
        return self.format != "h2"

    def _check_params(self):
        val.check_choice(self.admissibility, "admissibility", ("adaptive", "weak"))
        val.check_choice(self.cluster, "cluster", ("pca", "index"))
        val.check_choice(self.backend, "backend", ("auto", "cpu", "cuda"))
        val.check_choice(self.format, "format", ("h", "h2"))
        if self.format == "h2":
            val.check_h2_compressor_options(self.factor_dtype, self.outliers)

    def _compress(self, W):
        seed = val.check_random_state(self.random_state)
        if self.format == "h2":
            return self._compress_h2(W, seed)
        options = {}
        if self.n_jobs is not None:
            options["n_jobs"] = self.n_jobs
        H = HMatrix.from_dense(W, tol=self.tol, leaf_size=self.leaf_size,
                               admissibility=self.admissibility, eta=self.eta,
                               cluster=self.cluster, method=self.method,
                               max_rank=self.max_rank, random_state=seed,
                               structure=self.structure, factor_dtype=self.factor_dtype,
                               outliers=self.outliers, **options)
        self._place(H)
        self.hmatrix_ = H
        self.error_bound_ = H.error_bound
        self.block_errors_ = H.block_errors
        self.ranks_ = H.ranks
        return H.nbytes

    def _compress_h2(self, W, seed):
        from hmnumba.h2matrix import H2Matrix
        H = H2Matrix.from_dense(W, tol=self.tol, leaf_size=self.leaf_size, cluster=self.cluster,
                                random_state=seed, admissibility=self.admissibility)
        self._place(H)
        self.hmatrix_ = H
        self.error_bound_ = float(H.error)
        self.block_errors_ = np.array([H.error * _frobenius(W)])
        self.ranks_ = H.ranks
        return H.nbytes

    def _place(self, H):
        """Move ``H`` to the GPU when the backend asks for (or finds) one."""
        if self.backend == "cpu":
            return
        from hmnumba.backend import resolve_backend
        if resolve_backend(self.backend) == "cuda":
            H.to("cuda")

    def _relative_error(self, W, norm):
        # Exact: each block's residual was computed from the dense block (H),
        # the whole residual from the stored matrix (H^2).
        return float(self.error_bound_)

    def _apply(self, X):
        return self._h2_dtype(self.hmatrix_.matmat(X.T).T, X)

    def _apply_adjoint(self, Y):
        return self._h2_dtype(self.hmatrix_.rmatmat(Y.T).T, Y)

    def _h2_dtype(self, out, X):
        """H^2 products run in float64: float32 in and stored gives float32 out."""
        if self.format == "h2":
            out = out.astype(np.result_type(X.dtype, self.hmatrix_.dtype), copy=False)
        return out

    def _reconstruct(self):
        return self.hmatrix_.to_dense().astype(self.hmatrix_.dtype, copy=False)
