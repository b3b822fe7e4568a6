"""The error guarantee of DESIGN section 3, for dense input:

    ||A - H||_F <= tol * ||A||_F    always,

and ``H.error_bound`` is the achieved value, computed exactly (so it equals the
measured relative error) and never above ``tol``.
"""
import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hmnumba import HMatrix
from reference import MATRIX_KINDS, ill_conditioned, low_rank_plus_noise, singular_values

# Rounding slack on the bound: the measured error is itself a float64
# computation (the spec's ``* (1 + 1e-12) + 1e-300``).
REL_SLACK = 1e-12
# error_bound must equal the measured error up to rounding of two
# differently-ordered float64 sums.
EQ_RTOL = 1e-6
EQ_ATOL = 1e-13

METHODS = ("aca", "svd", "rsvd")
CLUSTERS = ("pca", "index")
ADMISSIBILITIES = ("adaptive", "weak")
BUDGETS = ("block", "size", "perimeter")

tols = st.floats(np.log10(1e-8), np.log10(0.5)).map(lambda e: min(10.0 ** e, 0.5))
options = st.fixed_dictionaries({
    "method": st.sampled_from(METHODS),
    "cluster": st.sampled_from(CLUSTERS),
    "admissibility": st.sampled_from(ADMISSIBILITIES),
    "budget": st.sampled_from(BUDGETS),
    "leaf_size": st.sampled_from([4, 8, 16, 32]),
})
seeds = st.integers(0, 2**32 - 1)
sizes = st.integers(1, 300)
extreme_shapes = st.one_of(
    st.tuples(st.just(1), sizes),                                # 1 x n
    st.tuples(sizes, st.just(1)),                                # n x 1
    st.tuples(st.integers(100, 300), st.integers(1, 40)),        # tall
    st.tuples(st.integers(1, 40), st.integers(100, 300)),        # wide
)
shapes = st.one_of(st.tuples(sizes, sizes), extreme_shapes)


def assert_guarantee(A, tol, **opts):
    """Build from ``A`` and check the bound, ``error_bound <= tol`` and that
    ``error_bound`` is the exact achieved error. Returns ``H``."""
    H = HMatrix.from_dense(A, tol=tol, **opts)
    A64 = np.asarray(A, dtype=np.float64)
    D = H.to_dense(dtype=np.float64)
    assert D.shape == A.shape
    err = np.linalg.norm(A64 - D)
    norm = np.linalg.norm(A64)
    assert err <= tol * norm * (1 + REL_SLACK) + 1e-300, (
        f"||A - H||_F = {err:.3e} > tol ||A||_F = {tol * norm:.3e} ({opts})")
    rel = err / norm if norm > 0 else err
    assert H.error_bound <= tol, f"error_bound {H.error_bound:.3e} > tol {tol:.3e}"
    assert abs(H.error_bound - rel) <= EQ_RTOL * rel + EQ_ATOL, (
        f"error_bound {H.error_bound!r} is not the achieved error {rel!r}")
    return H


@pytest.mark.parametrize("kind", sorted(MATRIX_KINDS))
@given(shape=shapes, tol=tols, opts=options, seed=seeds)
def test_guarantee_holds_for_every_matrix_kind(kind, shape, tol, opts, seed):
    m, n = shape
    A = MATRIX_KINDS[kind](m, n, seed)
    assert_guarantee(A, tol, random_state=seed % 1000, **opts)


@given(shape=extreme_shapes, tol=tols, opts=options, seed=seeds,
       kind=st.sampled_from(sorted(MATRIX_KINDS)))
def test_guarantee_holds_for_single_rows_columns_and_tall_wide_matrices(shape, tol, opts, seed,
                                                                        kind):
    A = MATRIX_KINDS[kind](*shape, seed)
    assert_guarantee(A, tol, **opts)


@given(n=sizes, tol=tols, opts=options, seed=seeds, kind=st.sampled_from(sorted(MATRIX_KINDS)),
       float32=st.booleans())
def test_guarantee_holds_for_symmetric_storage(n, tol, opts, seed, kind, float32):
    """Only the upper block triangle is stored; each strictly upper block's
    exact error counts twice, and the bound still holds exactly."""
    A = MATRIX_KINDS[kind](n, n, seed)
    A = A + A.T
    if float32:
        A = A.astype(np.float32)
    H = assert_guarantee(A, tol, symmetric=True, random_state=seed % 1000, **opts)
    assert H.symmetric
    assert np.all(((H.row_start == H.col_start) & (H.row_stop == H.col_stop))
                  | (H.row_stop <= H.col_start))
    D = H.to_dense()
    assert np.array_equal(D, D.T)


def test_ill_conditioned_test_matrix_has_condition_number_at_least_1e10():
    for shape in ((2, 2), (300, 7), (120, 250)):
        s = singular_values(ill_conditioned(*shape, seed=1))
        assert s[0] / s[-1] >= 1e10


@given(shape=shapes, tol=tols, opts=options, seed=seeds,
       kind=st.sampled_from(sorted(MATRIX_KINDS)))
def test_float32_input_stays_float32_and_meets_the_bound(shape, tol, opts, seed, kind):
    A = MATRIX_KINDS[kind](*shape, seed).astype(np.float32)
    H = assert_guarantee(A, tol, **opts)  # against A.astype(float64)
    assert H.dtype == np.float32
    assert H.data.dtype == np.float32
    assert H.to_dense().dtype == np.float32


@pytest.mark.parametrize("method,cluster,admissibility,budget",
                         list(itertools.product(METHODS, CLUSTERS, ADMISSIBILITIES, BUDGETS)))
def test_every_option_combination_meets_the_bound(method, cluster, admissibility, budget):
    # A deterministic sweep, so that no combination depends on hypothesis' draw.
    A = low_rank_plus_noise(180, 150, seed=7, rank=6, noise=1e-5)
    for tol in (1e-8, 1e-4, 0.3):
        H = assert_guarantee(A, tol, method=method, cluster=cluster,
                             admissibility=admissibility, budget=budget, leaf_size=16)
        if tol >= 1e-4:  # rank 6 + noise 1e-5: compressible at these tolerances
            assert H.compression_ratio > 1.0


def test_zero_matrix_has_zero_error_and_tiny_storage():
    H = assert_guarantee(np.zeros((200, 100)), 1e-6)
    assert H.error_bound == 0.0
    assert np.array_equal(H.to_dense(), np.zeros((200, 100)))
    assert H.compression_ratio > 10


@pytest.mark.parametrize("admissibility", ADMISSIBILITIES)
def test_one_by_one_matrix_is_reproduced_exactly(admissibility):
    H = assert_guarantee(np.array([[3.5]]), 1e-3, admissibility=admissibility)
    assert H.to_dense()[0, 0] == 3.5


@pytest.mark.parametrize("shape", [(2, 2), (20, 20), (32, 5)])
def test_weak_admissibility_on_a_matrix_smaller_than_a_leaf(shape):
    # Both cluster trees are a single leaf: the initial partition has no
    # low-rank candidate at all, and the build must still return one dense block.
    A = np.random.default_rng(0).standard_normal(shape)
    H = assert_guarantee(A, 1e-3, admissibility="weak", leaf_size=32)
    assert np.array_equal(H.to_dense(), A)


def test_strong_admissibility_with_points_meets_the_bound():
    # geometric clustering + strong admissibility on a dense kernel-like matrix
    x = np.sort(np.random.default_rng(0).random(240))
    A = 1.0 / (0.01 + np.abs(x[:, None] - x[None, :]))
    for cluster, points in (("geometric", x[:, None]), ("index", None)):
        for tol in (1e-8, 1e-3):
            assert_guarantee(A, tol, admissibility="strong", cluster=cluster, points=points,
                             leaf_size=16)


def test_max_rank_is_respected_and_the_bound_still_holds():
    A = low_rank_plus_noise(200, 200, seed=5, rank=12, noise=1e-6)
    H = assert_guarantee(A, 1e-8, max_rank=3, leaf_size=16)
    assert H.ranks.max() <= 3
