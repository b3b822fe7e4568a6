"""The empirical neural tangent kernel (NTK) of a PINN, its comparison under
compression, and its H-matrix compression over large collocation sets.

For a PINN ``u(x; theta)`` with PDE residual ``r(x) = L[u](x) - f(x)``, the
empirical NTK of Wang, Yu & Perdikaris ("When and why PINNs fail to train: a
neural tangent kernel perspective", 2022) has the blocks

    K_uu = J_u J_u^T,   K_ur = J_u J_r^T,   K_rr = J_r J_r^T,

with ``J_u = du(x_u)/dtheta`` (boundary points, one row per sample) and
``J_r = dr(x_r)/dtheta`` (collocation points). The per-sample Jacobians come
from :meth:`hmnumba.pinn.PINN.jacobian`, one batched reverse pass over all
samples.

Two parametrisations of a network with H-matrix layers
------------------------------------------------------
``parametrization="factors"``: ``theta`` is what compression-aware training
moves, i.e. the packed storage ``H.data`` (block factors ``U_b, V_b`` and
dense blocks) of every :class:`~hmnumba.pinn.HMatrixLayer` and the biases
(a frozen :class:`~hmnumba.pinn.CompressedLayer` contributes its bias only).
This is the kernel whose gradient flow the compressed network follows.

``parametrization="dense"``: every layer is replaced by a dense layer holding
its *compressed* weight (``H.to_dense()``), and ``theta`` is the dense
weights and biases. The kernel then lives in the same space as the
uncompressed network's, so ``||K_H - K||_F`` measures what compression did to
the NTK (the paper's Theorem 2; see :func:`ntk_tol_sweep` and
:func:`hmnumba.bounds.fit_ntk_constant`).

Compressing the NTK itself
--------------------------
``K(x_i, x_j) = J(x_i) . J(x_j)`` is a smooth kernel over the collocation
points, so it is compressible as an H-matrix clustered by the *physical*
coordinates. :func:`compress_ntk` forms the Jacobian rows ``J (N, P)`` once
(in batches) and hands :meth:`HMatrix.from_kernel` a :class:`GramKernel`:
the points are the collocation coordinates (they drive the cluster tree and
strong admissibility) and the entries are dot products of Jacobian rows,
read by a numba "Gram" entry source (``hmnumba.kernels.sources``, cached on disk
like the built-in kernels). ``K`` (``8 N^2`` bytes, 3.2 GB at N = 20,000) is
never formed; memory is one ``J`` (reordered in place to cluster order)
plus the H-matrix.
"""
from typing import NamedTuple

import numpy as np
from scipy.sparse.linalg import LinearOperator, eigsh

from hmnumba import _validation as val
from hmnumba.hmatrix import HMatrix
from hmnumba.kernel_functions import UserKernel
from hmnumba.kernels.sources import gram_source
from hmnumba.pinn.layers import DenseLayer
from hmnumba.pinn.network import PINN

PARAMETRIZATIONS = ("factors", "dense")


class NTK(NamedTuple):
    """The blocks of the empirical NTK (see :func:`empirical_ntk`).

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.ntk import NTK
    >>> J_u, J_r = np.ones((1, 3)), np.arange(6.0).reshape(2, 3)
    >>> K = NTK(J_u @ J_u.T, J_u @ J_r.T, J_r @ J_r.T)
    >>> K.full()
    array([[ 3.,  3., 12.],
           [ 3.,  5., 14.],
           [12., 14., 50.]])
    """

    K_uu: np.ndarray
    K_ur: np.ndarray
    K_rr: np.ndarray

    def full(self):
        """The whole kernel ``[[K_uu, K_ur], [K_ur^T, K_rr]]``."""
        return np.block([[self.K_uu, self.K_ur], [self.K_ur.T, self.K_rr]])


def as_dense_model(model):
    """The network with every layer dense, holding its current (compressed) weight.

    H-matrix layers become ``DenseLayer(H.to_dense(), b)`` and frozen
    compressed layers ``DenseLayer(compressor.reconstruct(), b)``: the same
    function, parametrised by dense weights (``parametrization="dense"``).

    Parameters
    ----------
    model : PINN

    Returns
    -------
    PINN

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.pinn import PINN
    >>> from hmnumba.ntk import as_dense_model
    >>> net = PINN([1, 64, 64, 1], random_state=0).compress("hmatrix", tol=1e-3)
    >>> dense = as_dense_model(net)
    >>> x = np.linspace(0, 1, 5)[:, None]
    >>> bool(np.allclose(dense.predict(x), net.predict(x))), dense.n_params
    (True, 4353)
    """
    model = _check_model(model)
    return PINN.from_layers([DenseLayer(layer.to_dense(), layer.b) for layer in model.layers],
                            model.activation)


def ntk_jacobians(model, problem, x_u, x_r, parametrization="factors"):
    """Per-sample Jacobians ``J_u = du(x_u)/dtheta`` and ``J_r = dr(x_r)/dtheta``.

    Parameters
    ----------
    model : PINN
    problem : Problem
        Gives the PDE residual ``r`` (:mod:`hmnumba.pinn.problems`).
    x_u : array-like of shape (N_u, d)
        Points where ``u`` itself is fitted (boundary, initial data).
    x_r : array-like of shape (N_r, d)
        Collocation points of the residual.
    parametrization : {"factors", "dense"}, default="factors"
        See the module docstring.

    Returns
    -------
    J_u : ndarray of shape (N_u, P)
    J_r : ndarray of shape (N_r, P)

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.pinn import PINN, Poisson1D
    >>> from hmnumba.ntk import ntk_jacobians
    >>> net = PINN([1, 8, 1], random_state=0)
    >>> J_u, J_r = ntk_jacobians(net, Poisson1D(), np.array([[0.0], [1.0]]),
    ...                          np.linspace(0, 1, 5)[:, None])
    >>> J_u.shape, J_r.shape
    ((2, 25), (5, 25))
    """
    model = _prepare(model, parametrization)
    x_u = val.check_points(x_u, "x_u")
    x_r = val.check_points(x_r, "x_r")
    return (model.jacobian(x_u, output="u"),
            model.jacobian(x_r, output="residual", problem=problem))


def empirical_ntk(model, problem, x_u, x_r, parametrization="factors"):
    """The empirical NTK blocks ``K_uu``, ``K_ur``, ``K_rr`` of a PINN.

    ``K_uu = J_u J_u^T``, ``K_ur = J_u J_r^T``, ``K_rr = J_r J_r^T`` with the
    Jacobians of :func:`ntk_jacobians` (Wang, Yu & Perdikaris 2022, eq. 3.5).

    Parameters
    ----------
    model : PINN
    problem : Problem
    x_u : array-like of shape (N_u, d)
    x_r : array-like of shape (N_r, d)
    parametrization : {"factors", "dense"}, default="factors"
        For H-matrix layers: Jacobians with respect to the block factors
        (``"factors"``) or to the dense weights evaluated at the compressed
        weights (``"dense"``). Identical for a network of dense layers.

    Returns
    -------
    NTK
        Named tuple ``(K_uu, K_ur, K_rr)``; ``.full()`` assembles the whole kernel.

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.pinn import PINN, Poisson1D
    >>> from hmnumba.ntk import empirical_ntk
    >>> net = PINN([1, 8, 8, 1], random_state=0)
    >>> K = empirical_ntk(net, Poisson1D(), np.array([[0.0], [1.0]]),
    ...                   np.linspace(0, 1, 6)[:, None])
    >>> K.K_uu.shape, K.K_ur.shape, K.K_rr.shape, K.full().shape
    ((2, 2), (2, 6), (6, 6), (8, 8))
    >>> bool(np.linalg.eigvalsh(K.full()).min() > -1e-10)   # a Gram matrix
    True
    """
    J_u, J_r = ntk_jacobians(model, problem, x_u, x_r, parametrization)
    return NTK(J_u @ J_u.T, J_u @ J_r.T, J_r @ J_r.T)


def compare_ntk(K, K_approx):
    """How far ``K_approx`` is from the kernel ``K``.

    Parameters
    ----------
    K, K_approx : array-like of shape (m, n), or NTK
        An :class:`NTK` is compared through its full matrix.

    Returns
    -------
    dict
        ``relative_frobenius``: ``||K_approx - K||_F / ||K||_F``;
        ``alignment``: kernel alignment ``<K, K_approx>_F / (||K||_F ||K_approx||_F)``
        (1 for kernels equal up to a positive factor);
        ``spectrum_distance``: ``||s(K_approx) - s(K)||_2 / ||s(K)||_2`` for the
        sorted eigenvalues ``s`` when both matrices are symmetric (the singular
        values otherwise). It is at most ``relative_frobenius``
        (Hoffman-Wielandt for eigenvalues, Mirsky for singular values).

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.ntk import compare_ntk
    >>> K = np.diag([4.0, 1.0])
    >>> d = compare_ntk(K, np.diag([4.0, 1.1]))
    >>> round(d["relative_frobenius"], 4), round(d["alignment"], 4)
    (0.0243, 0.9997)
    """
    K = _as_kernel(K, "K")
    K2 = _as_kernel(K_approx, "K_approx")
    if K.shape != K2.shape:
        raise ValueError(f"K and K_approx must have the same shape, got {K.shape} and {K2.shape}")
    nK, nK2 = np.linalg.norm(K), np.linalg.norm(K2)
    diff = np.linalg.norm(K2 - K)
    sym = _is_symmetric(K) and _is_symmetric(K2)
    s, s2 = _spectrum(K, sym), _spectrum(K2, sym)
    ns = np.linalg.norm(s)
    return {"relative_frobenius": float(diff / nK) if nK > 0 else float(diff),
            "alignment": float(np.vdot(K, K2) / (nK * nK2)) if nK * nK2 > 0 else float("nan"),
            "spectrum_distance": float(np.linalg.norm(s2 - s) / ns) if ns > 0
            else float(np.linalg.norm(s2 - s))}


def ntk_spectrum(K, k=None, tol=0.0, random_state=None):
    """Eigenvalues of an NTK, largest first.

    Parameters
    ----------
    K : array-like of shape (n, n), NTK, HMatrix or LinearOperator
        A dense kernel is diagonalised exactly (``numpy.linalg.eigvalsh``;
        singular values if it is not symmetric).
        An :class:`~hmnumba.HMatrix` (e.g. from :func:`compress_ntk`) or a
        ``LinearOperator`` is never expanded: its ``k`` largest eigenvalues come
        from ``scipy.sparse.linalg.eigsh`` on the symmetric part
        ``(H + H^T) / 2``, which is within ``||H - K||_2`` of ``K`` (Weyl).
    k : int, optional
        Number of eigenvalues; all for a dense kernel, 6 for an operator.
    tol : float, default=0
        Passed to ``eigsh`` (0: machine precision).
    random_state : int or None
        Seeds ``eigsh``'s start vector.

    Returns
    -------
    ndarray of shape (k,)

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.ntk import ntk_spectrum
    >>> J = np.random.default_rng(0).standard_normal((50, 3))
    >>> dense = ntk_spectrum(J @ J.T)
    >>> from scipy.sparse.linalg import aslinearoperator
    >>> lanczos = ntk_spectrum(aslinearoperator(J @ J.T), k=3, random_state=0)
    >>> bool(np.allclose(dense[:3], lanczos)), bool(abs(dense[3:]).max() < 1e-10)
    (True, True)
    """
    if isinstance(K, (HMatrix, LinearOperator)):
        n, n2 = K.shape
        if n != n2:
            raise ValueError(f"K must be square, got shape {K.shape}")
        k = 6 if k is None else val.check_positive_int(k, "k")
        if k >= n:
            raise ValueError(f"k must be < {n} (the operator's size) for eigsh, got {k}")
        tol = val.check_nonnegative_float(tol, "tol")
        op = K.aslinearoperator() if isinstance(K, HMatrix) else K

        def sym(x):
            return 0.5 * (op.matvec(x) + op.rmatvec(x))

        v0 = np.random.default_rng(val.check_random_state(random_state)).standard_normal(n)
        w = eigsh(LinearOperator((n, n), matvec=sym, dtype=np.float64), k=k, which="LA",
                  tol=tol, v0=v0, return_eigenvectors=False)
        return np.sort(w)[::-1]
    K = _as_kernel(K, "K")
    if K.shape[0] != K.shape[1]:
        raise ValueError(f"K must be square, got shape {K.shape}")
    w = _spectrum(K, _is_symmetric(K))
    if k is not None:
        w = w[:val.check_positive_int(k, "k")]
    return w


def ntk_feature_map(model, output="residual", problem=None, parametrization="factors"):
    """The per-sample Jacobian ``x -> J(x)`` of a PINN, for :func:`compress_ntk`.

    Parameters
    ----------
    model : PINN
    output : {"residual", "u"}, default="residual"
        ``"residual"`` gives the kernel ``K_rr``, ``"u"`` gives ``K_uu``.
    problem : Problem, optional
        Needed for ``output="residual"``.
    parametrization : {"factors", "dense"}, default="factors"

    Returns
    -------
    callable
        ``f(x) -> J`` of shape ``(len(x), P)``.

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.pinn import PINN, Poisson2D
    >>> from hmnumba.ntk import ntk_feature_map
    >>> f = ntk_feature_map(PINN([2, 8, 1], random_state=0), problem=Poisson2D())
    >>> f(np.zeros((3, 2))).shape
    (3, 33)
    """
    output = val.check_choice(output, "output", ("residual", "u"))
    model = _prepare(model, parametrization)
    if output == "residual" and problem is None:
        raise ValueError("output='residual' needs the problem")

    def features(x):
        return model.jacobian(x, output=output, problem=problem)
    return features


class GramKernel(UserKernel):
    """The kernel ``k(x_i, x_j) = F[i] @ F[j]`` of feature rows tabulated at points.

    Given to :meth:`HMatrix.from_kernel` with the same ``points``, the
    cluster tree and admissibility use the coordinates ``points (N, d)``
    while the entries are dot products of the rows of ``features (N, P)``
    (the numba "Gram" entry source of ``hmnumba.kernels.sources``, compiled once
    and cached on disk). ``from_kernel`` hands the kernel its points in
    cluster order; since a feature row is a function of its point, the rows
    are matched to the points exactly (lexicographic sort), so duplicate
    points are harmless. The kernel then reorders its rows *in place* (one
    spare row, no second ``N x P`` array) and hands them out; the arrays of a
    :meth:`source` call are valid until the next call.

    Parameters
    ----------
    points : array-like of shape (N, d)
    features : array-like of shape (N, P)
    copy : bool, default=True
        False hands ``features`` over (if it is C-contiguous float64): its
        rows are then reordered in place, which saves a copy of ``J``.

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba import HMatrix
    >>> from hmnumba.ntk import GramKernel
    >>> x = np.linspace(0, 1, 400)[:, None]
    >>> F = np.hstack([np.cos(k * x) for k in range(6)])
    >>> H = HMatrix.from_kernel(GramKernel(x, F), x, tol=1e-8)
    >>> bool(np.linalg.norm(H.to_dense() - F @ F.T) < 1e-7 * np.linalg.norm(F @ F.T))
    True
    """

    def __init__(self, points, features, copy=True):
        super().__init__(None)
        self.points = val.check_points(points, "points").copy()
        F = val.check_float_array(features, "features", ndim=2)
        self.features = F.astype(np.float64, copy=bool(copy))
        if self.features.shape[0] != self.points.shape[0]:
            raise ValueError(f"features must have one row per point ({self.points.shape[0]}), "
                             f"got shape {self.features.shape}")
        self.name = f"gram({self.features.shape[1]} features)"

    def _order(self, X):
        """``idx`` with ``X == points[idx]``, or None if ``X`` is ``points``."""
        P = self.points
        if X is P or (X.shape == P.shape and np.array_equal(X, P)):
            return None
        if X.shape[1] != P.shape[1]:
            raise ValueError(f"points of dimension {P.shape[1]} expected, got {X.shape[1]}")
        if X.shape[0] == P.shape[0]:
            idx = np.empty(X.shape[0], np.int64)
            idx[np.lexsort(X.T[::-1])] = np.lexsort(P.T[::-1])
            if np.array_equal(P[idx], X):
                return idx
        raise ValueError("a GramKernel evaluates only the points it was built with "
                         "(in any order)")

    def source(self, X, Y):
        idx = self._order(X)
        if idx is not None:        # adopt X's order (from_kernel's cluster order)
            _permute_rows(self.points, idx)
            _permute_rows(self.features, idx)
        FX = self.features
        if Y is X:
            return gram_source(FX, FX)
        idy = self._order(Y)
        return gram_source(FX, FX if idy is None else FX[idy])

    def __repr__(self):
        return f"GramKernel({self.points.shape[0]} points, {self.features.shape[1]} features)"


def compress_ntk(K_fn, points, tol=1e-4, leaf_size=32, admissibility="strong", eta=2.0,
                 max_rank=None, batch_size=1024, random_state=None):
    """An :class:`~hmnumba.HMatrix` of the NTK over ``points``, never forming it.

    ``K[i, j] = J(x_i) . J(x_j)`` with ``J = K_fn`` the per-sample Jacobian
    (e.g. :func:`ntk_feature_map`). ``J`` is evaluated once, ``batch_size``
    points at a time, into one ``(N, P)`` array; the kernel is then compressed
    by :meth:`HMatrix.from_kernel` with a :class:`GramKernel` (cluster tree
    and admissibility on the coordinates of ``points``, entries from the
    Jacobian rows), so memory is ``N P`` numbers (``2 N P`` when ``K_fn``
    is an array, which is copied) plus the H-matrix instead of ``N^2``. The block errors are ACA estimates: check the result with
    ``H.estimate_error()``, which samples exact rows of ``J J^T``. The
    spectrum follows from :func:`ntk_spectrum` (``eigsh`` on the operator).

    Parameters
    ----------
    K_fn : callable or array-like of shape (N, P)
        ``K_fn(x) -> (len(x), P)`` Jacobian rows, or the rows already computed.
    points : array-like of shape (N, d)
        Collocation points (physical coordinates).
    tol : float, default=1e-4
        Relative Frobenius tolerance of the H-matrix.
    leaf_size, admissibility, eta, max_rank, random_state
        As in :meth:`HMatrix.from_kernel`.
    batch_size : int, default=1024
        Points per call of ``K_fn``.

    Returns
    -------
    HMatrix
        Of shape ``(N, N)``.

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.pinn import PINN, Poisson2D
    >>> from hmnumba.ntk import compress_ntk, ntk_feature_map
    >>> prob = Poisson2D()
    >>> net = PINN([2, 16, 16, 1], random_state=0)
    >>> x = prob.sample_collocation(1000, random_state=0)
    >>> H = compress_ntk(ntk_feature_map(net, problem=prob), x, tol=1e-4)
    >>> H.shape, bool(H.estimate_error(random_state=0) < 1e-4)
    ((1000, 1000), True)
    """
    X = val.check_points(points, "points")
    batch_size = val.check_positive_int(batch_size, "batch_size")
    N = X.shape[0]
    if callable(K_fn):
        F = None
        for start in range(0, N, batch_size):
            rows = val.check_float_array(K_fn(X[start:start + batch_size]), "K_fn(x)", ndim=2)
            if rows.shape[0] != min(batch_size, N - start) or (
                    F is not None and rows.shape[1] != F.shape[1]):
                raise ValueError(f"K_fn(x) must return one row of P features per point, got "
                                 f"shape {rows.shape} for {min(batch_size, N - start)} points")
            if F is None:
                F = np.empty((N, rows.shape[1]))
            F[start:start + rows.shape[0]] = rows
        kern = GramKernel(X, F, copy=False)     # our buffer: reordered in place
    else:
        F = val.check_float_array(K_fn, "K_fn", ndim=2)
        if F.shape[0] != N:
            raise ValueError(f"K_fn as an array must have one row per point ({N}), got shape "
                             f"{F.shape}")
        kern = GramKernel(X, F)
    return HMatrix.from_kernel(kern, X, tol=tol, leaf_size=leaf_size,
                               admissibility=admissibility, eta=eta, max_rank=max_rank,
                               random_state=random_state)


def ntk_tol_sweep(model, problem, x_u, x_r, tols=(1e-1, 1e-2, 1e-3, 1e-4, 1e-5), layers=None,
                  **compress_params):
    """How the NTK moves as the hidden layers are compressed at each ``tol``.

    For each ``tol`` the network is compressed (``model.compress("hmatrix",
    layers, tol=tol, **compress_params)``) and its NTK, in the dense
    parametrisation at the compressed weights, is compared with the
    uncompressed network's (:func:`compare_ntk` on the full kernels). Feed
    ``weight_error`` (or ``tol``) and ``ntk_error`` to
    :func:`hmnumba.bounds.fit_ntk_constant` for Theorem 2's constant ``C``.

    Parameters
    ----------
    model : PINN
        With dense hidden layers.
    problem : Problem
    x_u, x_r : array-like of shape (N_u, d), (N_r, d)
    tols : sequence of float
    layers : list of int, optional
        Layers to compress; default all hidden-to-hidden layers.
    **compress_params
        For ``HMatrixCompressor`` (e.g. ``random_state=0``, ``leaf_size=16``).

    Returns
    -------
    dict of ndarray
        ``tol``, ``weight_error`` (relative Frobenius error of the compressed
        weights, all compressed layers together), ``ntk_error``
        (``||K_H - K||_F / ||K||_F``), ``alignment``, ``spectrum_distance``,
        ``compression_ratio`` (of the compressed layers' weights).

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.pinn import PINN, Poisson1D
    >>> from hmnumba.ntk import ntk_tol_sweep
    >>> net = PINN([1, 64, 64, 1], random_state=0)
    >>> t = np.linspace(0, 1, 64)      # a smooth, compressible hidden weight
    >>> net.layers[1].W[:] = 1.0 / (1.0 + 10 * np.abs(t[:, None] - t[None, :]))
    >>> sweep = ntk_tol_sweep(net, Poisson1D(), np.array([[0.0], [1.0]]),
    ...                       np.linspace(0, 1, 20)[:, None], tols=(1e-2, 1e-4),
    ...                       leaf_size=16, random_state=0)
    >>> bool(0 < sweep["ntk_error"][1] < sweep["ntk_error"][0] < 1e-2)
    True
    """
    model = _check_model(model)
    tols = np.array([val.check_tol(t, "tols[]") for t in np.atleast_1d(tols)])
    if tols.size == 0:
        raise ValueError("tols must not be empty")
    idx = model.hidden_layers if layers is None else list(layers)
    K = empirical_ntk(model, problem, x_u, x_r, "dense").full()
    W = [model.layers[i].to_dense() for i in idx]
    w_norm2 = sum(float(np.sum(w * w)) for w in W)
    dense_bytes = sum(w.nbytes for w in W)
    out = {key: np.empty(tols.size) for key in ("weight_error", "ntk_error", "alignment",
                                                "spectrum_distance", "compression_ratio")}
    for t, tol in enumerate(tols):
        small = model.compress("hmatrix", layers=idx, tol=float(tol), **compress_params)
        err2 = sum(float(np.sum((small.layers[i].to_dense() - w) ** 2)) for i, w in zip(idx, W))
        d = compare_ntk(K, empirical_ntk(small, problem, x_u, x_r, "dense").full())
        out["weight_error"][t] = np.sqrt(err2 / w_norm2) if w_norm2 > 0 else np.sqrt(err2)
        out["ntk_error"][t] = d["relative_frobenius"]
        out["alignment"][t] = d["alignment"]
        out["spectrum_distance"][t] = d["spectrum_distance"]
        out["compression_ratio"][t] = dense_bytes / sum(small.layers[i].weight_nbytes
                                                        for i in idx)
    out["tol"] = tols
    return out


# ----------------------------------------------------------------- helpers
def _check_model(model):
    if not isinstance(model, PINN):
        raise TypeError(f"model must be a hmnumba.pinn.PINN, got {type(model).__name__}")
    return model


def _prepare(model, parametrization):
    model = _check_model(model)
    parametrization = val.check_choice(parametrization, "parametrization", PARAMETRIZATIONS)
    return as_dense_model(model) if parametrization == "dense" else model


def _as_kernel(K, name):
    if isinstance(K, NTK):
        K = K.full()
    return val.check_float_array(K, name, ndim=2).astype(np.float64, copy=False)


def _permute_rows(A, idx):
    """``A[:] = A[idx]`` in place, following the permutation's cycles with one
    spare row (a Python loop over rows: ~0.1 s for 20,000 rows)."""
    done = np.zeros(idx.size, np.bool_)
    for start in range(idx.size):
        if done[start]:
            continue
        done[start] = True
        if idx[start] == start:
            continue
        spare = A[start].copy()
        j = start
        while idx[j] != start:
            A[j] = A[idx[j]]
            j = idx[j]
            done[j] = True
        A[j] = spare


def _is_symmetric(K):
    return K.shape[0] == K.shape[1] and np.allclose(
        K, K.T, rtol=1e-10, atol=1e-12 * (np.abs(K).max() + 1e-300))


def _spectrum(K, symmetric):
    """Sorted eigenvalues (symmetric) or singular values, largest first."""
    if symmetric:
        return np.linalg.eigvalsh(0.5 * (K + K.T))[::-1]
    return np.linalg.svd(K, compute_uv=False)
