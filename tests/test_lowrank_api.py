"""The user-facing low-rank functions of hmnumba.lowrank."""
import numpy as np
import pytest

from hmnumba.kernels import laplace
from hmnumba.lowrank import aca, block_error, randomized_svd, recompress, truncated_svd
from reference import best_rank_k_error


def _ill_conditioned(m, n, seed=0):
    rng = np.random.default_rng(seed)
    Q1, _ = np.linalg.qr(rng.standard_normal((m, min(m, n))))
    Q2, _ = np.linalg.qr(rng.standard_normal((n, min(m, n))))
    return (Q1 * np.logspace(0, -12, min(m, n))) @ Q2.T


@pytest.mark.parametrize("tol", [1e-2, 1e-5, 1e-9])
def test_truncated_svd_is_optimal_and_reports_its_exact_error(tol):
    A = _ill_conditioned(60, 40)
    U, V, err = truncated_svd(A, tol=tol)
    k = U.shape[1]
    assert err == pytest.approx(np.linalg.norm(A - U @ V.T), rel=1e-6, abs=1e-15)
    assert err <= tol * np.linalg.norm(A)
    assert best_rank_k_error(A, k - 1) > tol * np.linalg.norm(A)   # k is the smallest


@pytest.mark.parametrize("tol", [1e-3, 1e-7, 1e-10])
def test_randomized_svd_meets_the_tolerance(tol):
    A = _ill_conditioned(80, 50, seed=1)
    U, V, converged = randomized_svd(A, tol=tol, random_state=0)
    assert converged
    assert block_error(A, U, V) <= tol * np.linalg.norm(A)


def test_randomized_svd_finds_an_exact_rank():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((300, 10)) @ rng.standard_normal((10, 200))
    U, V, converged = randomized_svd(A, tol=1e-8, random_state=0)
    assert converged and U.shape[1] == 10


def test_aca_on_dense_and_on_kernel_entries_agree():
    rng = np.random.default_rng(0)
    X = rng.random((120, 3))
    Y = rng.random((90, 3)) + np.array([3.0, 0.0, 0.0])   # well separated
    K = laplace(X, Y)
    Ud, Vd, cd = aca(K, tol=1e-8)
    Uk, Vk, ck = aca(kernel=laplace, points=X, col_points=Y, tol=1e-8)
    assert cd and ck and Ud.shape[1] == Uk.shape[1]
    for U, V in ((Ud, Vd), (Uk, Vk)):
        assert block_error(K, U, V) <= 1e-7 * np.linalg.norm(K)


def test_aca_reports_non_convergence_at_max_rank():
    A = np.random.default_rng(0).standard_normal((50, 50))
    U, V, converged = aca(A, tol=1e-6, max_rank=5)
    assert not converged and U.shape == (50, 5)


def test_recompress_finds_the_smallest_rank():
    A = _ill_conditioned(70, 50, seed=2)
    U, V, _ = aca(A, tol=1e-10)
    U2, V2, cut = recompress(U, V, tol=1e-4)
    _, _, err_svd = truncated_svd(A, tol=1e-4)
    assert U2.shape[1] <= U.shape[1]
    assert block_error(A, U2, V2) <= 1e-4 * np.linalg.norm(A) + block_error(A, U, V)
    assert U2.shape[1] == truncated_svd(U @ V.T, tol=1e-4)[0].shape[1]


def test_block_error_is_the_frobenius_residual():
    rng = np.random.default_rng(3)
    A, U, V = rng.random((7, 5)), rng.random((7, 2)), rng.random((5, 2))
    assert block_error(A, U, V) == pytest.approx(np.linalg.norm(A - U @ V.T))


@pytest.mark.parametrize("call, message", [
    (lambda: truncated_svd(np.ones((3, 3))), "exactly one of tol and rank"),
    (lambda: truncated_svd(np.ones((3, 3)), tol=2.0), "tol"),
    (lambda: aca(), "needs A"),
    (lambda: aca(np.ones((3, 3)), kernel=laplace, points=np.ones((3, 1))), "either A or kernel"),
    (lambda: recompress(np.ones((3, 2)), np.ones((4, 3)), 1e-3), "same number of columns"),
    (lambda: block_error(np.ones((3, 3)), np.ones((2, 1)), np.ones((3, 1))), "shapes"),
])
def test_bad_arguments_raise_value_errors_naming_the_problem(call, message):
    with pytest.raises(ValueError, match=message):
        call()
