"""Layers of the PINN: dense, H-matrix (trainable packed storage) and frozen
compressed (baseline compressors).

Every layer maps a stack of derivative channels ``S (n_in, C, N)`` (feature
first; channel 0 holds the activations, the others their input derivatives,
see :mod:`hmnumba.pinn.network`) to ``Z = W S`` with the bias added to
channel 0 only, because derivatives of a constant vanish. Feature-first
storage makes every product one call with ``C * N`` right-hand sides:
``W @ S`` (BLAS) for a dense layer, ``H.matmat(S)`` for an H-matrix layer.
A layer exposes its trainable arrays as ``params`` (the arrays themselves,
updated in place by the optimizers) and the gradient of ``sum(G * Z)`` as
:meth:`backward`.
"""
import numpy as np

from hmnumba import _validation as val
from hmnumba._threads import one_blas_thread
from hmnumba.hmatrix import HMatrix
from hmnumba.pinn import _kernels


class _Layer:
    """Common helpers; subclasses set ``n_in``, ``n_out`` and ``params``."""

    @property
    def n_params(self):
        return int(sum(p.size for p in self.params))

    def _flat(self, S):
        n_in, C, N = S.shape
        return S.reshape(n_in, C * N)

    def _add_bias(self, Z2, C, N):
        Z = Z2.reshape(self.n_out, C, N)
        Z[:, 0, :] += self.b[:, None]
        return Z

    def bias_grad_per_sample(self, G):
        """``(N, n_out)``: the bias gradient of each sample."""
        return G[:, 0, :].T


class DenseLayer(_Layer):
    """A dense affine layer ``x -> W x + b`` with ``W`` of shape ``(n_out, n_in)``.

    Parameters
    ----------
    W : array-like of shape (n_out, n_in)
    b : array-like of shape (n_out,)

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.pinn import DenseLayer
    >>> layer = DenseLayer(np.eye(2), np.array([1.0, 0.0]))
    >>> layer.forward(np.ones((2, 1, 3)))[:, 0, :]
    array([[2., 2., 2.],
           [1., 1., 1.]])
    """

    kind = "dense"

    def __init__(self, W, b):
        self.W = val.check_float_array(W, "W", ndim=2).astype(np.float64, copy=True)
        self.b = _check_bias(b, self.W.shape[0])
        self.n_out, self.n_in = self.W.shape
        self.params = [self.W, self.b]

    def forward(self, S):
        """``Z = W S`` (plus ``b`` on channel 0) for ``S (n_in, C, N)``."""
        _, C, N = S.shape
        return self._add_bias(self.W @ self._flat(S), C, N)

    def backward(self, S, G):
        """Input adjoint ``W^T G`` and the gradients ``[dW, db]`` of ``sum(G * Z)``."""
        n_in, C, N = S.shape
        G2 = G.reshape(self.n_out, C * N)
        S2 = self._flat(S)
        return (self.W.T @ G2).reshape(n_in, C, N), [G2 @ S2.T, G[:, 0, :].sum(axis=1)]

    def backward_input(self, G):
        """Input adjoint ``W^T G`` only."""
        n_out, C, N = G.shape
        return (self.W.T @ G.reshape(n_out, C * N)).reshape(self.n_in, C, N)

    def grad_per_sample(self, S, G):
        """``(N, n_params)``: the parameter gradient of each sample separately."""
        N = S.shape[2]
        JW = np.einsum("oci,jci->ioj", G, S, optimize=True).reshape(N, -1)
        return np.hstack([JW, self.bias_grad_per_sample(G)])

    def to_dense(self):
        return self.W.copy()

    @property
    def weight_nbytes(self):
        """Bytes of the weight array (the bias is not counted)."""
        return int(self.W.nbytes)

    def copy(self):
        return DenseLayer(self.W, self.b)

    def __repr__(self):
        return f"DenseLayer({self.n_in} -> {self.n_out})"


class HMatrixLayer(_Layer):
    """An affine layer whose weight is an :class:`~hmnumba.HMatrix`.

    Products go through ``H.matmat`` (forward) and ``H.rmatmat`` (input
    adjoint); the dense weight is never formed. The trainable parameters are
    ``H.data`` itself (the ``U_b^T, V_b^T`` factors of the low-rank blocks
    and the dense blocks, in storage order) and the bias; their gradient is
    computed block by block in numba (:func:`hmnumba.pinn._kernels.data_grad`).

    Parameters
    ----------
    H : HMatrix
        Of shape ``(n_out, n_in)``, float64.
    b : array-like of shape (n_out,)

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba import HMatrix
    >>> from hmnumba.pinn import HMatrixLayer
    >>> W = np.outer(np.arange(1.0, 65.0), np.ones(64))
    >>> layer = HMatrixLayer(HMatrix.from_dense(W, tol=1e-8), np.zeros(64))
    >>> S = np.ones((64, 1, 2))
    >>> bool(np.allclose(layer.forward(S)[:, 0, 0], W.sum(axis=1)))
    True
    """

    kind = "hmatrix"

    def __init__(self, H, b):
        if not isinstance(H, HMatrix):
            raise TypeError(f"H must be an HMatrix, got {type(H).__name__}")
        if H.dtype != np.float64:
            raise TypeError(f"H must store float64 (PINN gradients are checked in "
                            f"float64), got {H.dtype}")
        # Every block its own parameters: a trained weight does not stay
        # symmetric, and the data gradient kernels take every block stored.
        self.H = H.full_storage()
        self.b = _check_bias(b, H.shape[0])
        self.n_out, self.n_in = H.shape

    @property
    def params(self):
        return [self.H.data, self.b]

    def _blocks(self):
        H = self.H
        return (H.data, H.row_start, H.row_stop, H.col_start, H.col_stop, H.rank, H.offset)

    def forward(self, S):
        _, C, N = S.shape
        return self._add_bias(self.H.matmat(self._flat(S)), C, N)

    def backward(self, S, G):
        """Input adjoint ``H^T G`` (``H.rmatmat``) and the gradients
        ``[d data, db]`` of ``sum(G * Z)``."""
        n_in, C, N = S.shape
        G2 = G.reshape(self.n_out, C * N)
        S2 = self._flat(S)
        Sbar = self.H.rmatmat(G2).reshape(n_in, C, N)
        Sp = np.ascontiguousarray(S2[self.H.col_perm])
        Gp = np.ascontiguousarray(G2[self.H.row_perm])
        with one_blas_thread():
            gdata = _kernels.data_grad(*self._blocks(), Sp, Gp)
        return Sbar, [gdata, G[:, 0, :].sum(axis=1)]

    def backward_input(self, G):
        n_out, C, N = G.shape
        return self.H.rmatmat(G.reshape(n_out, C * N)).reshape(self.n_in, C, N)

    def grad_per_sample(self, S, G):
        Ss = np.ascontiguousarray(S[self.H.col_perm].transpose(2, 1, 0))
        Gs = np.ascontiguousarray(G[self.H.row_perm].transpose(2, 1, 0))
        J = _kernels.data_grad_per_sample(*self._blocks(), Ss, Gs)
        return np.hstack([J, self.bias_grad_per_sample(G)])

    def nuclear_norm(self):
        """``sum_b ||U_b V_b^T||_*`` over the low-rank blocks and its gradient
        with respect to ``H.data``."""
        with one_blas_thread():
            norms, grad = _kernels.nuclear_norms(*self._blocks())
        return float(norms.sum()), grad

    def recompress(self, tol=None, **options):
        """Re-run the adaptive, error-bounded compression on the current
        (trained) operator, replacing ``H``.

        The operator is expanded once here (construction, not a product).
        Build options default to those ``H`` was built with; ``tol`` too.
        Returns the new ``HMatrix``, whose ``error_bound <= tol`` is relative
        to the operator before recompression.
        """
        params = {key: self.H.params[key] for key in
                  ("leaf_size", "admissibility", "cluster", "method", "max_rank",
                   "random_state", "structure") if key in self.H.params}
        params.update(options)
        tol = self.H.tol if tol is None else tol
        self.H = HMatrix.from_dense(self.H.to_dense(np.float64), tol=tol, **params)
        return self.H

    def to_dense(self):
        return self.H.to_dense(np.float64)

    @property
    def weight_nbytes(self):
        """Bytes a product reads (``H.nbytes``; the bias is not counted)."""
        return int(self.H.nbytes)

    def copy(self):
        H = self.H
        Hc = HMatrix(H.storage.copy(), H.tol, norm=H.norm, params=H.params)
        return HMatrixLayer(Hc, self.b)

    def __repr__(self):
        return (f"HMatrixLayer({self.n_in} -> {self.n_out}, ratio "
                f"{self.H.compression_ratio:.2f}, error bound {self.H.error_bound:.1e})")


class CompressedLayer(_Layer):
    """An affine layer whose weight is held by a fitted baseline compressor
    (``SVDCompressor``, ``PruningCompressor``, ``QuantizationCompressor`` or
    ``HMatrixCompressor``) and is frozen: only the bias trains.

    Products use ``compressor.transform`` (``X @ W_hat.T``) and
    ``compressor.adjoint_transform`` (``Y @ W_hat``).

    Parameters
    ----------
    compressor : fitted compressor
        With ``transform``, ``adjoint_transform``, ``reconstruct`` and
        ``nbytes_``; fitted on ``W`` of shape ``(n_out, n_in)``.
    b : array-like of shape (n_out,)

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.baselines import SVDCompressor
    >>> from hmnumba.pinn import CompressedLayer
    >>> W = np.outer(np.arange(1.0, 5.0), np.ones(3))       # rank 1, shape (4, 3)
    >>> layer = CompressedLayer(SVDCompressor(rank=1).fit(W), np.zeros(4))
    >>> layer.forward(np.ones((3, 1, 2)))[:, 0, 0]
    array([ 3.,  6.,  9., 12.])
    """

    kind = "compressed"

    def __init__(self, compressor, b):
        for attr in ("transform", "adjoint_transform", "reconstruct"):
            if not hasattr(compressor, attr):
                raise TypeError(f"compressor must provide {attr}(); got "
                                f"{type(compressor).__name__}")
        W = np.asarray(compressor.reconstruct())
        self.compressor = compressor
        self.n_out, self.n_in = W.shape
        self.b = _check_bias(b, self.n_out)
        self.params = [self.b]

    def forward(self, S):
        _, C, N = S.shape
        Z2 = np.asarray(self.compressor.transform(self._flat(S).T), dtype=np.float64).T
        return self._add_bias(np.ascontiguousarray(Z2), C, N)

    def backward(self, S, G):
        n_in, C, N = S.shape
        G2 = G.reshape(self.n_out, C * N)
        Sbar = np.asarray(self.compressor.adjoint_transform(G2.T), dtype=np.float64).T
        return np.ascontiguousarray(Sbar).reshape(n_in, C, N), [G[:, 0, :].sum(axis=1)]

    def backward_input(self, G):
        n_out, C, N = G.shape
        Sbar = np.asarray(self.compressor.adjoint_transform(G.reshape(n_out, C * N).T),
                          dtype=np.float64).T
        return np.ascontiguousarray(Sbar).reshape(self.n_in, C, N)

    def grad_per_sample(self, S, G):
        return np.ascontiguousarray(self.bias_grad_per_sample(G))

    def to_dense(self):
        return np.asarray(self.compressor.reconstruct(), dtype=np.float64)

    @property
    def weight_nbytes(self):
        return int(self.compressor.nbytes_)

    def copy(self):
        return CompressedLayer(self.compressor, self.b)

    def __repr__(self):
        return f"CompressedLayer({self.n_in} -> {self.n_out}, {type(self.compressor).__name__})"


def _check_bias(b, n_out):
    b = val.check_float_array(b, "b", ndim=1).astype(np.float64, copy=True)
    if b.shape[0] != n_out:
        raise ValueError(f"b must have length {n_out} (the layer's outputs), got {b.shape[0]}")
    return b
