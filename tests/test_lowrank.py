"""Low-rank approximation of one block, through the numba kernels directly:
ACA with partial pivoting, recompression, truncated SVD, the randomized range
finder and the truncation rule."""
import inspect

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hmnumba.kernels import factors
from hmnumba.kernels.sources import dense_source
from reference import best_rank_k_error, singular_values, smallest_rank_within

# The kernels' factor layout: ``(Ut (r, m), Vt (r, n))`` (current) or
# ``(U (m, r), V (n, r))`` (first version). The adapters below hand the tests
# ``U (m, r), V (n, r)`` either way, so the properties are stated once.
_TRANSPOSED = "Ut" in inspect.signature(factors.block_residual2.py_func).parameters
_RECOMPRESS_ARGS = len(inspect.signature(factors.recompress.py_func).parameters)


def _mn(a, b):
    return (a.T, b.T) if _TRANSPOSED else (a, b)


def recompress(U, V, k, abs_tol, accurate=False):
    """``factors.recompress`` -> ``(U (m, r), V (n, r), tail2)``. ``accurate``
    forces the orthogonalisation + SVD path where the kernel has a cheaper
    Gram-matrix path for loose tolerances."""
    if _RECOMPRESS_ARGS == 4:
        a, b, tail2 = factors.recompress(U, V, k, abs_tol)
    else:
        aca_norm = float(np.linalg.norm(U[:k].T @ V[:k])) if k else 0.0
        floor = np.inf if accurate else factors.GRAM_REL_TOL_FLOOR
        a, b, tail2 = factors.recompress(U, V, k, abs_tol, floor, aca_norm)
    return (*_mn(a, b), tail2)


def svd_factors(block, abs_tol):
    a, b, tail2 = factors.svd_factors(block, abs_tol)
    return (*_mn(a, b), tail2)


def randomized_factors(block, abs_tol, kmax, seed):
    a, b, resid2, conv = factors.randomized_factors(block, abs_tol, kmax, seed)
    return (*_mn(a, b), resid2, conv)


def block_residual2(block, U, V):
    return factors.block_residual2(block, *((U.T.copy(), V.T.copy()) if _TRANSPOSED else (U, V)))


def run_aca(A, kmax=40, rel_tol=1e-12, abs_tol=0.0):
    """ACA on the whole of ``A``; returns ``(k, norm2, last, converged, U, V)``."""
    A = np.ascontiguousarray(A, dtype=np.float64)
    m, n = A.shape
    U = np.zeros((kmax, m))
    V = np.zeros((kmax, n))
    k, norm2, last, conv = factors.aca_partial(dense_source(A), 0, m, 0, n, rel_tol, abs_tol, kmax, U, V)
    return k, norm2, last, conv, U[:k], V[:k]


def exact_rank(m, n, r, seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((m, r)) @ rng.standard_normal((r, n))


def with_spectrum(m, n, s, seed):
    rng = np.random.default_rng(seed)
    k = s.size
    U, _ = np.linalg.qr(rng.standard_normal((m, k)))
    V, _ = np.linalg.qr(rng.standard_normal((n, k)))
    return (U * s) @ V.T


# ---------------------------------------------------------------------- ACA


def test_aca_on_an_exactly_rank_5_matrix_finds_rank_5():
    A = exact_rank(80, 60, 5, seed=0)
    k, norm2, last, conv, U, V = run_aca(A)
    assert conv
    # five crosses reproduce A; a sixth (if any) only picks up rounding noise
    assert 5 <= k <= 6
    assert np.linalg.norm(A - U.T @ V) <= 1e-12 * np.linalg.norm(A)
    Ur, Vr, tail2 = recompress(U, V, k, 1e-10 * np.linalg.norm(A))
    assert Ur.shape[1] == 5
    # the estimate of ||A||_F that ACA keeps is exact
    assert np.isclose(np.sqrt(norm2), np.linalg.norm(A), rtol=1e-10)


@pytest.mark.parametrize("zero_rows", [[0, 1, 2], [3, 17, 40, 41, 79], [0, 2, 4, 6, 8, 10, 12]])
def test_aca_with_zero_rows_and_columns_still_finds_the_rank(zero_rows):
    A = exact_rank(80, 60, 4, seed=1)
    A[zero_rows] = 0.0
    A[:, ::5] = 0.0
    k, _, _, conv, U, V = run_aca(A)
    assert conv
    assert np.linalg.norm(A - U.T @ V) <= 1e-12 * np.linalg.norm(A)
    assert recompress(U, V, k, 1e-10 * np.linalg.norm(A))[0].shape[1] == 4


@pytest.mark.parametrize("n_leading_zero_rows", [9, 20, 70])
def test_aca_with_many_leading_zero_rows_still_finds_the_rank(n_leading_zero_rows):
    # A block of a compactly supported kernel: the first rows (in cluster
    # order) lie outside the support. Stopping after a few zero rows and
    # reporting convergence with rank 0 silently drops the block.
    A = exact_rank(80, 60, 3, seed=2)
    A[:n_leading_zero_rows] = 0.0
    k, norm2, _, conv, U, V = run_aca(A)
    assert k >= 3, f"ACA stopped at rank {k} (converged={conv}) on a rank-3 block"
    assert np.linalg.norm(A - U.T @ V) <= 1e-10 * np.linalg.norm(A)


def test_aca_on_the_zero_matrix_returns_rank_zero():
    k, norm2, last, conv, _, _ = run_aca(np.zeros((30, 20)))
    assert (k, norm2, conv) == (0, 0.0, True)


def test_aca_stops_at_kmax_without_convergence():
    A = np.random.default_rng(3).standard_normal((50, 40))  # full rank
    k, _, _, conv, _, _ = run_aca(A, kmax=7)
    assert k == 7 and not conv


def test_aca_on_a_sub_block_reads_only_that_block():
    A = exact_rank(100, 90, 3, seed=4)
    B = A.copy()
    B[:20] = 1e6  # outside the block [20:70, 30:80]
    B[:, :30] = -1e6
    m, n, kmax = 50, 50, 20
    U, V = np.zeros((kmax, m)), np.zeros((kmax, n))
    k, _, _, conv = factors.aca_partial(dense_source(B), 20, 70, 30, 80, 1e-12, 0.0, kmax, U, V)
    assert conv
    assert np.linalg.norm(A[20:70, 30:80] - U[:k].T @ V[:k]) <= 1e-11 * np.linalg.norm(A)


@given(m=st.integers(2, 80), n=st.integers(2, 80), seed=st.integers(0, 2**32 - 1),
       decay=st.floats(0.2, 0.8))
def test_aca_estimate_tracks_the_error_on_smooth_blocks(m, n, seed, decay):
    # singular values decay geometrically (a smooth kernel's far field)
    s = decay ** np.arange(min(m, n))
    A = with_spectrum(m, n, s, seed)
    tol = 1e-6
    k, norm2, last, conv, U, V = run_aca(A, kmax=min(m, n) + 1, rel_tol=tol)
    assert conv
    err = np.linalg.norm(A - U.T @ V)
    assert np.sqrt(norm2) == pytest.approx(np.linalg.norm(U.T @ V), rel=1e-8)
    # ACA's stopping estimate is heuristic; on such blocks it is good to 100x
    assert err <= 100 * tol * np.linalg.norm(A)


# ------------------------------------------------------------ recompression


@given(m=st.integers(5, 60), n=st.integers(5, 60), k=st.integers(1, 12),
       seed=st.integers(0, 2**32 - 1), tol_exp=st.floats(-10, 0), accurate=st.booleans())
def test_recompress_returns_the_smallest_rank_meeting_the_tolerance(m, n, k, seed, tol_exp,
                                                                   accurate):
    rng = np.random.default_rng(seed)
    U = rng.standard_normal((k, m)) * np.logspace(0, -6, k)[:, None]
    V = rng.standard_normal((k, n))
    S = U.T @ V
    abs_tol = 10.0 ** tol_exp * np.linalg.norm(S)
    Ur, Vr, tail2 = recompress(U, V, k, abs_tol, accurate=accurate)
    r = Ur.shape[1]
    assert Ur.shape == (m, r) and Vr.shape == (n, r)
    err = np.linalg.norm(S - Ur @ Vr.T)
    # rounding slack: the Gram-matrix path (loose tolerances only) computes
    # singular values to ~1e-8 of the largest; the SVD path to ~1e-15
    slack = (1e-12 if accurate else 1e-7) * np.linalg.norm(S)
    assert err <= abs_tol + slack
    assert np.sqrt(tail2) == pytest.approx(best_rank_k_error(S, r), abs=slack)
    # no smaller rank would do (Eckart-Young), up to rounding at the boundary
    assert smallest_rank_within(S, abs_tol + slack) <= r
    assert r <= smallest_rank_within(S, max(abs_tol - slack, 0.0))


def test_recompress_of_zero_crosses_is_empty():
    Ur, Vr, tail2 = recompress(np.zeros((4, 10)), np.zeros((4, 7)), 0, 1.0)
    assert Ur.shape == (10, 0) and Vr.shape == (7, 0) and tail2 == 0.0


def test_recompress_of_aca_factors_matches_the_svd_truncation():
    s = 0.5 ** np.arange(40)
    A = with_spectrum(70, 55, s, seed=5)
    k, _, _, _, U, V = run_aca(A, kmax=41, rel_tol=1e-14)
    for tol in (1e-2, 1e-5, 1e-8):
        abs_tol = tol * np.linalg.norm(A)
        Ur, Vr, _ = recompress(U, V, k, abs_tol)
        r_opt = smallest_rank_within(A, abs_tol)
        assert abs(Ur.shape[1] - r_opt) <= 1
        assert np.linalg.norm(A - Ur @ Vr.T) <= 2 * abs_tol


# --------------------------------------------------------------------- SVD


@given(m=st.integers(1, 60), n=st.integers(1, 60), seed=st.integers(0, 2**32 - 1),
       tol_exp=st.floats(-12, 0.5))
def test_svd_factors_are_the_optimal_truncation(m, n, seed, tol_exp):
    s = np.logspace(0, -10, min(m, n))
    A = with_spectrum(m, n, s, seed)
    abs_tol = 10.0 ** tol_exp * np.linalg.norm(A)
    U, V, tail2 = svd_factors(A, abs_tol)
    r = U.shape[1]
    assert U.shape == (m, r) and V.shape == (n, r)
    slack = 1e-12 * np.linalg.norm(A)
    assert smallest_rank_within(A, abs_tol + slack) <= r
    assert r <= smallest_rank_within(A, max(abs_tol - slack, 0.0))
    err = np.linalg.norm(A - U @ V.T)
    assert err <= abs_tol + slack
    assert np.sqrt(tail2) == pytest.approx(err, rel=1e-6, abs=1e-12 * np.linalg.norm(A))


# -------------------------------------------------------------- randomized


def assert_randomized_meets_tolerance(A, abs_tol, seed):
    kmax = min(A.shape)
    U, V, resid2, conv = randomized_factors(A, abs_tol, kmax, seed)
    r = U.shape[1]
    assert conv
    assert r <= kmax
    bound = abs_tol * (1 + 1e-9) + 1e-12 * np.linalg.norm(A)
    err = np.linalg.norm(A - U @ V.T)
    assert err <= bound, f"converged, but error {err:.3e} > abs_tol {abs_tol:.3e}"
    # never better than the SVD, and not much worse (half the budget at most)
    assert r >= smallest_rank_within(A, bound)
    assert r <= smallest_rank_within(A, 0.5 * abs_tol), f"rank {r} of {kmax}"


@given(m=st.integers(2, 120), n=st.integers(2, 120), seed=st.integers(0, 2**31 - 1),
       tol_exp=st.floats(-6, -1), decay=st.floats(0.3, 0.9))
def test_randomized_factors_meet_their_tolerance(m, n, seed, tol_exp, decay):
    A = with_spectrum(m, n, decay ** np.arange(min(m, n)), seed)
    assert_randomized_meets_tolerance(A, 10.0 ** tol_exp * np.linalg.norm(A), seed)


@pytest.mark.parametrize("m,n,decay,tol", [(43, 34, 0.3125, 1e-7), (19, 17, 0.3125, 1e-8),
                                           (120, 100, 0.7, 1e-10)])
def test_randomized_factors_meet_tight_tolerances_with_near_optimal_rank(m, n, decay, tol):
    # ``||A||^2 - ||Q^T A||^2`` cannot resolve a residual below ~1e-8 ||A||
    # (cancellation). The range finder must still stop at a near-optimal rank
    # and must not orthonormalise rounding noise into a non-orthonormal basis
    # (which yields errors far above abs_tol while reporting convergence).
    A = with_spectrum(m, n, decay ** np.arange(min(m, n)), 0)
    assert_randomized_meets_tolerance(A, tol * np.linalg.norm(A), 0)


def test_randomized_factors_are_deterministic_for_a_seed():
    A = with_spectrum(90, 70, 0.6 ** np.arange(70), seed=6)
    a = randomized_factors(A, 1e-6, 70, 11)
    b = randomized_factors(A, 1e-6, 70, 11)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_randomized_factors_report_no_convergence_when_kmax_is_too_small():
    A = np.random.default_rng(7).standard_normal((60, 60))
    U, V, resid2, conv = randomized_factors(A, 1e-8 * np.linalg.norm(A), 10, 0)
    assert not conv
    assert U.shape[1] <= 10


# -------------------------------------------------------------- truncation


def test_truncation_rank_keeps_the_smallest_rank_within_the_tolerance():
    s = np.array([4.0, 3.0, 2.0, 1.0])
    assert factors.truncation_rank(s, np.sqrt(5.0)) == (2, 5.0)
    r, tail2 = factors.truncation_rank(s, np.sqrt(5.0) * (1 - 1e-12))
    assert (r, tail2) == (3, 1.0)
    assert factors.truncation_rank(s, 0.0) == (4, 0.0)
    assert factors.truncation_rank(s, 100.0) == (0, 30.0)


def test_truncation_rank_drops_exact_zero_singular_values_at_zero_tolerance():
    assert factors.truncation_rank(np.array([2.0, 1.0, 0.0, 0.0]), 0.0) == (2, 0.0)


@given(s=st.lists(st.floats(0.0, 1e3), min_size=1, max_size=30), frac=st.floats(0.0, 1.0))
def test_truncation_rank_agrees_with_the_reference(s, frac):
    s = np.sort(np.array(s))[::-1].copy()
    abs_tol = frac * np.linalg.norm(s)
    r, tail2 = factors.truncation_rank(s, abs_tol)
    assert np.sqrt(tail2) <= abs_tol * (1 + 1e-12)
    assert tail2 == pytest.approx(np.sum(s[r:] ** 2), rel=1e-12, abs=1e-300)
    if r > 0:  # dropping one more value would exceed the tolerance
        assert np.sum(s[r - 1:] ** 2) > abs_tol ** 2 * (1 - 1e-12)


def test_block_residual_is_the_exact_squared_error():
    rng = np.random.default_rng(8)
    B = rng.standard_normal((30, 20))
    U = rng.standard_normal((30, 3))
    V = rng.standard_normal((20, 3))
    assert block_residual2(B, U, V) == pytest.approx(np.linalg.norm(B - U @ V.T) ** 2,
                                                         rel=1e-12)
    assert np.isclose(best_rank_k_error(B, 20), 0.0)
    assert singular_values(B).size == 20
