"""Slow, obviously correct references and test matrices.

Nothing here uses hmnumba: the kernel matrices are double loops over the
point sets with the formula written out, the best low-rank errors come from
``numpy.linalg.svd`` (Eckart-Young). The tests compare the library against
these.
"""
import math

import numpy as np

KERNEL_NAMES = ("laplace", "gaussian", "exponential", "matern32")


# ---------------------------------------------------------------------------
# Kernel functions
# ---------------------------------------------------------------------------


def kernel_of_distance(name, r, length_scale=1.0):
    """Value of kernel ``name`` at distance ``r`` (a Python float)."""
    ell = float(length_scale)
    if name == "laplace":
        return 0.0 if r == 0.0 else 1.0 / r          # 1/r, zero on the diagonal
    if name == "gaussian":
        return math.exp(-r * r / (2.0 * ell * ell))  # exp(-r^2 / (2 l^2))
    if name == "exponential":
        return math.exp(-r / ell)                    # exp(-r / l)
    if name == "matern32":
        s = math.sqrt(3.0) * r / ell                 # (1 + sqrt3 r/l) exp(-sqrt3 r/l)
        return (1.0 + s) * math.exp(-s)
    raise ValueError(name)


def dense_kernel_matrix(name, X, Y=None, length_scale=1.0):
    """``K[i, j] = k(|X[i] - Y[j]|)`` by a Python double loop (small sets only)."""
    X = np.asarray(X, dtype=np.float64)
    X = X[:, None] if X.ndim == 1 else X
    Y = X if Y is None else np.asarray(Y, dtype=np.float64)
    Y = Y[:, None] if Y.ndim == 1 else Y
    K = np.empty((X.shape[0], Y.shape[0]))
    for i in range(X.shape[0]):
        for j in range(Y.shape[0]):
            r = math.sqrt(sum((float(a) - float(b)) ** 2 for a, b in zip(X[i], Y[j])))
            K[i, j] = kernel_of_distance(name, r, length_scale)
    return K


def dense_kernel_matrix_vectorized(name, X, Y=None, length_scale=1.0):
    """The same matrix with numpy broadcasting, for point sets too large for the
    double loop (checked against :func:`dense_kernel_matrix` in test_kernels)."""
    X = np.asarray(X, dtype=np.float64)
    Y = X if Y is None else np.asarray(Y, dtype=np.float64)
    r = np.sqrt(((X[:, None, :] - Y[None, :, :]) ** 2).sum(axis=-1))
    ell = float(length_scale)
    if name == "laplace":
        with np.errstate(divide="ignore"):
            K = np.where(r == 0.0, 0.0, 1.0 / r)
        return K
    if name == "gaussian":
        return np.exp(-r * r / (2.0 * ell * ell))
    if name == "exponential":
        return np.exp(-r / ell)
    if name == "matern32":
        s = np.sqrt(3.0) * r / ell
        return (1.0 + s) * np.exp(-s)
    raise ValueError(name)


# ---------------------------------------------------------------------------
# Low-rank references (Eckart-Young)
# ---------------------------------------------------------------------------


def singular_values(A):
    return np.linalg.svd(np.asarray(A, dtype=np.float64), compute_uv=False)


def best_rank_k_error(A, k):
    """``min_{rank B <= k} ||A - B||_F`` = ``sqrt(sum_{i >= k} s_i^2)``."""
    s = singular_values(A)
    return float(np.sqrt(np.sum(s[k:] ** 2)))


def smallest_rank_within(A, abs_tol):
    """Smallest ``k`` with ``best_rank_k_error(A, k) <= abs_tol``."""
    s = singular_values(A)
    for k in range(s.size + 1):
        if np.sqrt(np.sum(s[k:] ** 2)) <= abs_tol:
            return k
    return s.size  # pragma: no cover - k = s.size always qualifies


def relative_error(A, B):
    """``||A - B||_F / ||A||_F`` in float64 (absolute error if ``A`` is 0)."""
    A = np.asarray(A, dtype=np.float64)
    B = np.asarray(B, dtype=np.float64)
    num = np.linalg.norm(A - B)
    den = np.linalg.norm(A)
    return float(num / den) if den > 0 else float(num)


# ---------------------------------------------------------------------------
# Test matrices (float64; the caller casts)
# ---------------------------------------------------------------------------


def _orthonormal(rng, n, k):
    q, _ = np.linalg.qr(rng.standard_normal((n, k)))
    return q


def gaussian_matrix(m, n, seed):
    """i.i.d. N(0, 1) entries: incompressible."""
    return np.random.default_rng(seed).standard_normal((m, n))


def low_rank_plus_noise(m, n, seed, rank=None, noise=None):
    rng = np.random.default_rng(seed)
    rank = int(rng.integers(1, 9)) if rank is None else rank
    noise = 10.0 ** rng.uniform(-9, -2) if noise is None else noise
    A = rng.standard_normal((m, rank)) @ rng.standard_normal((rank, n))
    return A + noise * np.linalg.norm(A) / np.sqrt(m * n) * rng.standard_normal((m, n))


def ill_conditioned(m, n, seed, smallest=1e-12):
    """``U diag(logspace(0, log10(smallest))) V^T``: condition number ``1/smallest``."""
    rng = np.random.default_rng(seed)
    k = min(m, n)
    s = np.logspace(0.0, np.log10(smallest), k)
    return (_orthonormal(rng, m, k) * s) @ _orthonormal(rng, n, k).T


def rank_deficient(m, n, seed):
    """Exactly low rank (no noise), with some zero and duplicated rows."""
    rng = np.random.default_rng(seed)
    rank = int(rng.integers(1, max(2, min(m, n) // 2 + 1)))
    A = rng.standard_normal((m, rank)) @ rng.standard_normal((rank, n))
    if m >= 4:
        A[rng.choice(m, size=m // 4, replace=False)] = 0.0
        A[-1] = A[0]
    return A


def zero_matrix(m, n, seed):
    return np.zeros((m, n))


def smooth_matrix(m, n):
    """``1 / (0.05 + |x_i - y_j|)`` on two grids of [0, 1]: low-rank blocks away
    from the diagonal, nearly full-rank ones on it (both kinds of block)."""
    x = np.linspace(0.0, 1.0, m)
    y = np.linspace(0.0, 1.0, n)
    return 1.0 / (0.05 + np.abs(x[:, None] - y[None, :]))


MATRIX_KINDS = {
    "gaussian": gaussian_matrix,
    "low_rank_plus_noise": low_rank_plus_noise,
    "ill_conditioned": ill_conditioned,
    "rank_deficient": rank_deficient,
    "zero": zero_matrix,
}
