"""The guarantees of H repeated for H^2 (DESIGN sections 3 and 5):

* ``H2Matrix.from_dense``: ``||W - H||_F <= tol ||W||_F`` always and
  ``H.error`` is the exact achieved value, over hard matrices (Gaussian,
  low rank plus noise, ill-conditioned, rank-deficient, zero; tiny, tall,
  wide; float32; entries near underflow and overflow; symmetric storage of
  symmetric ones);
* ``H2Matrix.from_hmatrix``: ``conversion_error`` is the exact ``||H - H2||_F /
  ||H||_F`` and at most ``tol``, ``error`` bounds ``||A - H2||_F / ||A||_F``;
* the same bits for any thread count (builds and products);
* ``rmatvec`` / ``rmatmat`` are the transpose of ``matvec`` / ``matmat``.
"""
import numba
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hmnumba import H2Matrix, HMatrix
from hmnumba.kernels import gaussian, laplace
from reference import MATRIX_KINDS

REL_SLACK = 1e-12
EQ_RTOL = 1e-6
EQ_ATOL = 1e-13

tols = st.floats(np.log10(1e-8), np.log10(0.5)).map(lambda e: min(10.0 ** e, 0.5))
sizes = st.integers(1, 120)
shapes = st.one_of(
    st.tuples(sizes, sizes),
    st.tuples(st.just(1), sizes), st.tuples(sizes, st.just(1)),            # one row / column
    st.tuples(st.integers(80, 160), st.integers(1, 24)),                  # tall
    st.tuples(st.integers(1, 24), st.integers(80, 160)),                  # wide
)
options = st.fixed_dictionaries({
    "cluster": st.sampled_from(("pca", "index")),
    "admissibility": st.sampled_from(("adaptive", "weak")),
    "leaf_size": st.sampled_from([4, 8, 16, 32]),
})
kinds = st.sampled_from(sorted(MATRIX_KINDS))
seeds = st.integers(0, 2**32 - 1)


def _measured(D, A):
    A64 = np.asarray(A, np.float64)
    scale = float(np.max(np.abs(A64))) if A64.size else 0.0
    if scale == 0:
        return float(np.linalg.norm(D)), 0.0
    return float(np.linalg.norm((D - A64) / scale)), float(np.linalg.norm(A64 / scale))


def assert_h2_guarantee(A, tol, **opts):
    H = H2Matrix.from_dense(A, tol=tol, **opts)
    err, norm = _measured(H.to_dense(), A)
    assert err <= tol * norm * (1 + REL_SLACK) + 1e-300, (err, norm, tol, opts)
    rel = err / norm if norm > 0 else err
    assert H.error <= tol
    assert abs(H.error - rel) <= EQ_RTOL * rel + EQ_ATOL, (H.error, rel)
    return H


@pytest.mark.slow
@given(kind=kinds, shape=shapes, tol=tols, opts=options, seed=seeds, float32=st.booleans())
def test_from_dense_guarantee_over_hard_matrices(kind, shape, tol, opts, seed, float32):
    A = MATRIX_KINDS[kind](*shape, seed)
    if float32:
        A = A.astype(np.float32)
    H = assert_h2_guarantee(A, tol, random_state=seed % 1000, **opts)
    assert H.dtype == A.dtype


@pytest.mark.slow
@given(kind=kinds, size=sizes, tol=tols, opts=options, seed=seeds, float32=st.booleans())
def test_symmetric_from_dense_guarantee_over_hard_matrices(kind, size, tol, opts, seed, float32):
    A = MATRIX_KINDS[kind](size, size, seed)
    A = A + A.T
    if float32:
        A = A.astype(np.float32)
    H = assert_h2_guarantee(A, tol, random_state=seed % 1000, symmetric=True, **opts)
    assert H.symmetric and H.dtype == A.dtype
    x = np.random.default_rng(seed % 1000).standard_normal(size)
    assert np.array_equal(H.rmatvec(x), H.matvec(x))


@pytest.mark.parametrize("scale", [1e-300, 1e-170, 1e153, 1e300])
@pytest.mark.parametrize("kind", ["low_rank_plus_noise", "ill_conditioned"])
def test_from_dense_guarantee_near_underflow_and_overflow(scale, kind):
    A = MATRIX_KINDS[kind](90, 70, 3) * scale
    for tol in (1e-8, 1e-3):
        H = assert_h2_guarantee(A, tol, leaf_size=8, random_state=0)
        assert np.all(np.isfinite(H.to_dense()))


@pytest.mark.slow
@given(kind=kinds, shape=shapes, tol=tols, seed=seeds, float32=st.booleans(),
       symmetric=st.booleans())
def test_from_hmatrix_conversion_error_is_exact_and_bounded(kind, shape, tol, seed, float32,
                                                     symmetric):
    A = MATRIX_KINDS[kind](*shape, seed)
    if symmetric:
        A = A[:min(shape), :min(shape)]
        A = A + A.T
    if float32:
        A = A.astype(np.float32)
    H = HMatrix.from_dense(A, tol=tol, symmetric=symmetric, random_state=seed % 1000)
    G = H2Matrix.from_hmatrix(H)
    Hd = H.to_dense(dtype=np.float64)
    conv, hnorm = _measured(G.to_dense(), Hd)
    rel = conv / hnorm if hnorm > 0 else conv
    assert G.conversion_error <= tol
    assert abs(G.conversion_error - rel) <= EQ_RTOL * rel + 1e-12
    err, norm = _measured(G.to_dense(), A)
    assert err <= G.error * norm * (1 + 1e-9) + 1e-300


@pytest.mark.parametrize("scale", [1e-300, 1e300])
def test_from_hmatrix_near_underflow_and_overflow(scale):
    A = MATRIX_KINDS["low_rank_plus_noise"](100, 80, 5) * scale
    H = HMatrix.from_dense(A, tol=1e-6)
    G = H2Matrix.from_hmatrix(H)
    err, norm = _measured(G.to_dense(), A)
    assert G.conversion_error <= 1e-6 and err <= G.error * norm * (1 + 1e-9)


# ------------------------------------------------------------ threads, transpose
def _with_threads(n, fn):
    old = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        return fn()
    finally:
        numba.set_num_threads(old)


def _products(H, seed=0):
    rng = np.random.default_rng(seed)
    m, n = H.shape
    return [H @ rng.standard_normal(n), H @ rng.standard_normal((n, 5)),
            H.rmatvec(rng.standard_normal(m)), H.rmatmat(rng.standard_normal((m, 3)))]


BUILDS = {
    "kernel stored": lambda: H2Matrix.from_kernel(laplace, np.random.default_rng(0).random(
        (1200, 3)), tol=1e-5),
    "kernel on-the-fly": lambda: H2Matrix.from_kernel(
        gaussian.with_length_scale(0.3), np.random.default_rng(1).random((900, 2)), tol=1e-6,
        mode="on-the-fly"),
    "from dense": lambda: H2Matrix.from_dense(
        MATRIX_KINDS["low_rank_plus_noise"](300, 260, 2), tol=1e-6, leaf_size=16,
        random_state=0),
    "from an HMatrix": lambda: H2Matrix.from_hmatrix(HMatrix.from_dense(
        MATRIX_KINDS["ill_conditioned"](160, 200, 4), tol=1e-6, leaf_size=16)),
    "symmetric, from an HMatrix": lambda: H2Matrix.from_hmatrix(HMatrix.from_kernel(
        laplace, np.random.default_rng(2).random((700, 3)), tol=1e-6, leaf_size=16)),
}


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs two numba threads")
@pytest.mark.parametrize("case", list(BUILDS))
def test_same_bits_for_any_thread_count(case):
    one = _with_threads(1, lambda: (lambda H: (H, _products(H)))(BUILDS[case]()))
    many = _with_threads(numba.config.NUMBA_NUM_THREADS,
                         lambda: (lambda H: (H, _products(H)))(BUILDS[case]()))
    for key, v in one[0]._a.items():
        if isinstance(v, np.ndarray):
            assert np.array_equal(v, many[0]._a[key]), key
    for a, b in zip(one[1], many[1]):
        assert np.array_equal(a, b)
    # the products of one matrix, again, with the other thread count
    again = _with_threads(1, lambda: _products(many[0]))
    for a, b in zip(again, many[1]):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("case", list(BUILDS))
def test_rmatvec_is_the_transpose(case):
    H = BUILDS[case]()
    D = H.to_dense()
    rng = np.random.default_rng(5)
    y, Y = rng.standard_normal(H.shape[0]), rng.standard_normal((H.shape[0], 3))
    scale = np.linalg.norm(D)
    assert np.linalg.norm(H.rmatvec(y) - D.T @ y) <= 1e-13 * scale * np.linalg.norm(y)
    assert np.linalg.norm(H.rmatmat(Y) - D.T @ Y) <= 1e-13 * scale * np.linalg.norm(Y)
    assert np.linalg.norm(H.T @ y - D.T @ y) <= 1e-13 * scale * np.linalg.norm(y)
    A = H.aslinearoperator()
    assert np.allclose(A.rmatvec(y), H.rmatvec(y), rtol=0, atol=0)
