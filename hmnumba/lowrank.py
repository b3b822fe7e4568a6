"""Low-rank approximation of single blocks: the user-facing functions.

The construction (:mod:`hmnumba.construct`) calls the numba kernels in
:mod:`hmnumba.kernels.factors` directly, block by block in parallel; these
functions expose the same algorithms for one matrix, with validated inputs and
the usual ``A ~= U @ V.T`` convention (``U (m, k)``, ``V (n, k)``).

* :func:`aca`: adaptive cross approximation with partial pivoting, from a
  dense matrix or from a kernel on points (entries computed on demand).
* :func:`truncated_svd`: the optimal approximation for a tolerance or rank.
* :func:`randomized_svd`: adaptive randomized range finder + SVD.
* :func:`recompress`: the smallest rank of a given ``U @ V.T`` that meets a
  tolerance (orthogonalise both factors, SVD of the small core).
* :func:`block_error`: the exact Frobenius residual ``||A - U V^T||_F``.

All tolerances here are relative to ``||A||_F`` (resp. ``||U V^T||_F``).
"""
import numpy as np

from hmnumba import _validation as val
from hmnumba._threads import one_blas_thread
from hmnumba.kernel_functions import as_kernel
from hmnumba.kernels import factors
from hmnumba.kernels.sources import dense_source


def aca(A=None, tol=1e-6, max_rank=None, kernel=None, points=None, col_points=None):
    """Adaptive cross approximation with partial pivoting.

    Give either a dense matrix ``A`` or a ``kernel`` with ``points`` (and
    optionally ``col_points``); the kernel matrix is never formed.

    Parameters
    ----------
    A : array-like of shape (m, n), optional
    tol : float, default=1e-6
        Stop when ACA's estimate of the relative residual is below ``tol``.
    max_rank : int, optional
        At most this many crosses (default ``min(m, n)``).
    kernel : KernelFunction or numba ``@njit`` function, optional
    points, col_points : array-like of shape (m, d) / (n, d), optional

    Returns
    -------
    U : ndarray of shape (m, k)
    V : ndarray of shape (n, k)
    converged : bool
        False if ``max_rank`` crosses were not enough.

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.lowrank import aca
    >>> x = np.linspace(0, 1, 200)
    >>> A = 1.0 / (3.0 + x[:, None] - x[None, :])
    >>> U, V, converged = aca(A, tol=1e-10)
    >>> converged, bool(np.linalg.norm(A - U @ V.T) <= 1e-8 * np.linalg.norm(A))
    (True, True)
    """
    tol = val.check_tol(tol, "tol")
    if A is not None:
        if kernel is not None:
            raise ValueError("give either A or kernel with points, not both")
        src = dense_source(np.asarray(val.check_matrix(A, "A"), dtype=np.float64))
        m, n = src[2].shape
    else:
        if kernel is None or points is None:
            raise ValueError("aca needs A, or kernel and points")
        kern = as_kernel(kernel, "kernel")
        X = val.check_points(points, "points")
        Y = X if col_points is None else val.check_points(col_points, "col_points")
        if X.shape[1] != Y.shape[1]:
            raise ValueError("points and col_points must have the same dimension")
        src = kern.source(X, Y)
        m, n = X.shape[0], Y.shape[0]
    kmax = min(m, n) if max_rank is None else val.check_positive_int(max_rank, "max_rank")
    U = np.empty((kmax, m))
    V = np.empty((kmax, n))
    k, _, _, converged = factors.aca_partial(src, 0, m, 0, n, tol, 0.0, kmax, U, V)
    return U[:k].T.copy(), V[:k].T.copy(), bool(converged)


def truncated_svd(A, tol=None, rank=None):
    """Truncated SVD: the best approximation of ``A`` for a tolerance or rank.

    Parameters
    ----------
    A : array-like of shape (m, n)
    tol : float, optional
        Keep the smallest rank with ``||A - U V^T||_F <= tol * ||A||_F``.
    rank : int, optional
        Keep exactly this rank (at most ``min(m, n)``). Give one of the two.

    Returns
    -------
    U : ndarray of shape (m, k)
        Left singular vectors scaled by the singular values.
    V : ndarray of shape (n, k)
    error : float
        The exact absolute Frobenius error.

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.lowrank import truncated_svd
    >>> A = np.outer(np.arange(4.0), np.ones(3)) + np.eye(4, 3) * 1e-9
    >>> U, V, err = truncated_svd(A, tol=1e-6)
    >>> U.shape[1], bool(err <= 1e-6 * np.linalg.norm(A))
    (1, True)
    """
    A = np.asarray(val.check_matrix(A, "A"), dtype=np.float64)
    if (tol is None) == (rank is None):
        raise ValueError("give exactly one of tol and rank")
    w, s, zt = np.linalg.svd(A, full_matrices=False)
    if tol is not None:
        tol = val.check_tol(tol, "tol")
        k, tail2 = factors.truncation_rank(s, tol * np.linalg.norm(s))
    else:
        k = min(val.check_positive_int(rank, "rank", minimum=0), s.size)
        tail2 = float(np.sum(s[k:] ** 2))
    return w[:, :k] * s[:k], zt[:k].T.copy(), float(np.sqrt(tail2))


def randomized_svd(A, tol, max_rank=None, random_state=None):
    """Adaptive randomized range finder (Halko, Martinsson & Tropp 2011) + SVD.

    Grows an orthonormal basis of ``A``'s range 8 columns at a time until the
    exact projection residual is below ``tol * ||A||_F / 2``, then truncates
    the SVD of the projection with the rest of the budget.

    Parameters
    ----------
    A : array-like of shape (m, n)
    tol : float
    max_rank : int, optional
    random_state : int or None

    Returns
    -------
    U : ndarray of shape (m, k)
    V : ndarray of shape (n, k)
    converged : bool

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.lowrank import randomized_svd
    >>> rng = np.random.default_rng(0)
    >>> A = rng.standard_normal((300, 10)) @ rng.standard_normal((10, 200))
    >>> U, V, converged = randomized_svd(A, tol=1e-8, random_state=0)
    >>> U.shape[1], converged
    (10, True)
    """
    A = np.asarray(val.check_matrix(A, "A"), dtype=np.float64)
    tol = val.check_tol(tol, "tol")
    kmax = min(A.shape) if max_rank is None else val.check_positive_int(max_rank, "max_rank")
    seed = val.check_random_state(random_state)
    with one_blas_thread():
        Ut, Vt, _, converged = factors.randomized_factors(A, tol * np.linalg.norm(A), kmax, seed)
    return Ut.T.copy(), Vt.T.copy(), bool(converged)


def recompress(U, V, tol):
    """The smallest-rank truncation of ``U @ V.T`` within ``tol * ||U V^T||_F``.

    Parameters
    ----------
    U : array-like of shape (m, k)
    V : array-like of shape (n, k)
    tol : float

    Returns
    -------
    U, V : ndarrays of shape (m, r) and (n, r)
    error : float
        Absolute Frobenius norm of what was cut.

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.lowrank import recompress
    >>> rng = np.random.default_rng(0)
    >>> U = rng.standard_normal((50, 3)); V = rng.standard_normal((40, 3))
    >>> U2, V2, err = recompress(np.hstack([U, U]), np.hstack([V, V]), tol=1e-12)
    >>> U2.shape[1], bool(np.allclose(U2 @ V2.T, 2 * U @ V.T))
    (3, True)
    """
    U = np.asarray(val.check_matrix(U, "U"), dtype=np.float64)
    V = np.asarray(val.check_matrix(V, "V"), dtype=np.float64)
    if U.shape[1] != V.shape[1]:
        raise ValueError(f"U and V must have the same number of columns, got "
                         f"{U.shape[1]} and {V.shape[1]}")
    tol = val.check_tol(tol, "tol")
    norm = float(np.sqrt(max(np.sum((U.T @ U) * (V.T @ V)), 0.0)))
    k = U.shape[1]
    with one_blas_thread():
        Ut, Vt, tail2 = factors.recompress(np.ascontiguousarray(U.T), np.ascontiguousarray(V.T),
                                       k, tol * norm, factors.GRAM_REL_TOL_FLOOR, norm)
    return Ut.T.copy(), Vt.T.copy(), float(np.sqrt(tail2))


def block_error(A, U, V):
    """The exact residual ``||A - U @ V.T||_F`` (accumulated in float64).

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.lowrank import block_error
    >>> block_error(np.ones((2, 2)), np.ones((2, 1)), np.ones((2, 1)))
    0.0
    """
    A = np.asarray(val.check_matrix(A, "A"), dtype=np.float64)
    U = np.asarray(val.check_float_array(U, "U", allow_empty=True), dtype=np.float64)
    V = np.asarray(val.check_float_array(V, "V", allow_empty=True), dtype=np.float64)
    if U.shape[0] != A.shape[0] or V.shape[0] != A.shape[1] or U.shape[1] != V.shape[1]:
        raise ValueError(f"shapes do not match: A {A.shape}, U {U.shape}, V {V.shape}")
    return float(np.sqrt(factors.block_residual2(A, np.ascontiguousarray(U.T),
                                             np.ascontiguousarray(V.T))))
