"""H2Matrix.from_kernel: accuracy against the dense kernel matrix, the two
modes, symmetric storage, products (matvec / matmat / rmatvec / LinearOperator),
bits across thread counts, storage accounting and input validation."""
import numba
import numpy as np
import pytest
from scipy.sparse.linalg import LinearOperator

from hmnumba import H2Matrix
from hmnumba.kernels import exponential, gaussian, laplace, matern32


def _points(n, d, seed=0):
    return np.random.default_rng(seed).random((n, d))


@pytest.fixture(scope="module")
def cube():
    X = _points(1500, 3)
    return X, laplace(X)


@pytest.fixture(scope="module")
def cube_h2(cube):
    return H2Matrix.from_kernel(laplace, cube[0], tol=1e-6, leaf_size=32)


def _relerr(A, B):
    return np.linalg.norm(A - B) / np.linalg.norm(B)


def test_laplace_cube_meets_tol_against_dense(cube, cube_h2):
    X, K = cube
    assert _relerr(cube_h2.to_dense(), K) <= 1e-6
    assert np.any(cube_h2.ranks > 0)            # the far field is compressed, not dense
    assert cube_h2.nbytes < K.nbytes


@pytest.mark.parametrize("tol", [1e-3, 1e-5])
def test_error_follows_tol(tol):
    X = _points(1200, 3, seed=1)
    K = laplace(X)
    H = H2Matrix.from_kernel(laplace, X, tol=tol)
    assert _relerr(H.to_dense(), K) <= tol


@pytest.mark.parametrize("kernel, dim", [(gaussian.with_length_scale(0.3), 2),
                                         (exponential.with_length_scale(0.5), 2),
                                         (matern32.with_length_scale(0.4), 3),
                                         (laplace, 2), (laplace, 1)])
def test_other_kernels_and_dimensions_meet_tol(kernel, dim):
    X = _points(900, dim, seed=2)
    K = kernel(X)
    for mode in ("stored", "on-the-fly"):
        H = H2Matrix.from_kernel(kernel, X, tol=1e-6, leaf_size=24, mode=mode)
        assert _relerr(H.to_dense(), K) <= 1e-6


@pytest.mark.parametrize("kernel, dim", [(gaussian.with_length_scale(0.3), 2),
                                         (gaussian.with_length_scale(0.01), 2),
                                         (matern32.with_length_scale(0.4), 3),
                                         (laplace, 3), (laplace, 2), (laplace, 1)])
@pytest.mark.parametrize("tol", [1e-6, 1e-9])
def test_on_the_fly_matvec_matches_its_matmat(kernel, dim, tol):
    # The matvec applies each entry as it is evaluated (kernel_blocks_vec),
    # the matmat evaluates whole rows (kernel_blocks_mat), both over padded
    # columns: the two must agree to rounding, with duplicated points (zero
    # distances in the near field), clusters of every size, float32 1/r
    # (1e-6) and float64 (1e-9), and rank-0 bases (the narrow Gaussian's far
    # field vanishes).
    X = _points(700, dim, seed=9)
    X[350:370] = X[:20]
    H = H2Matrix.from_kernel(kernel, X, tol=tol, leaf_size=20, mode="on-the-fly")
    x = np.random.default_rng(9).standard_normal(700)
    y = H @ x
    ref = H @ np.stack([x, -x], axis=1)
    scale = np.abs(kernel(X)).sum(axis=1).max() * np.abs(x).max()
    np.testing.assert_allclose(y, ref[:, 0], rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose(-y, ref[:, 1], rtol=0, atol=1e-12 * scale)
    assert np.all(np.isfinite(y))


def test_on_the_fly_matches_stored_and_stores_less(cube, cube_h2):
    X, _ = cube
    H = H2Matrix.from_kernel(laplace, X, tol=1e-6, mode="on-the-fly")
    x = np.random.default_rng(3).standard_normal(X.shape[0])
    # Same bases; stored couplings are float32 and partly low-rank (at tol 1e-6).
    y, ref = H @ x, cube_h2 @ x
    assert np.linalg.norm(y - ref) <= 1e-6 * np.linalg.norm(ref)
    assert H.T is H and H._a["T"].dtype == np.float32
    assert H.nbytes < cube_h2.nbytes / 10
    assert "B" not in H._a and "D" not in H._a


def test_symmetric_storage_keeps_each_pair_once(cube_h2):
    a = cube_h2._a
    assert np.all(a["cb_t"] < a["cb_s"])
    assert np.all(a["nb_t"] <= a["nb_s"])
    np.testing.assert_array_equal(cube_h2.T @ np.ones(1500), cube_h2 @ np.ones(1500))
    D = cube_h2.to_dense()
    np.testing.assert_allclose(D, D.T, rtol=0, atol=1e-12 * np.abs(D).max())


def test_matmat_rmatvec_and_linear_operator(cube_h2):
    rng = np.random.default_rng(4)
    Xr = rng.standard_normal((1500, 3))
    Y = cube_h2 @ Xr
    for j in range(3):
        np.testing.assert_allclose(Y[:, j], cube_h2 @ Xr[:, j], rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(cube_h2.rmatvec(Xr[:, 0]), Y[:, 0], rtol=1e-12, atol=1e-10)
    A = cube_h2.aslinearoperator()
    assert isinstance(A, LinearOperator) and A.shape == (1500, 1500)
    np.testing.assert_allclose(A @ Xr[:, 1], Y[:, 1], rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(A.T @ Xr[:, 2], Y[:, 2], rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("mode", ["stored", "on-the-fly"])
def test_same_bits_for_any_thread_count(mode):
    X = _points(1200, 3, seed=5)
    x = np.random.default_rng(5).standard_normal(1200)
    Xr = np.random.default_rng(6).standard_normal((1200, 2))
    before = numba.get_num_threads()
    out = []
    try:
        for n_threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(n_threads)
            H = H2Matrix.from_kernel(laplace, X, tol=1e-6, mode=mode)
            out.append((H @ x, H @ Xr, H._a["T"].copy()))
    finally:
        numba.set_num_threads(before)
    for a, b in zip(out[0], out[1]):
        np.testing.assert_array_equal(a, b)


def test_reused_work_arrays_give_the_same_bits_in_threads_and_after_pickling(cube_h2):
    # Products keep their work arrays between calls; concurrent products
    # (one takes the kept set, the other allocates its own) and a pickled
    # copy (which drops them) must give the bits of the first product.
    import pickle
    from concurrent.futures import ThreadPoolExecutor
    rng = np.random.default_rng(8)
    xs = [rng.standard_normal(1500) for _ in range(4)]
    first = [cube_h2 @ x for x in xs]
    with ThreadPoolExecutor(4) as pool:
        again = list(pool.map(cube_h2.matvec, xs * 3))
    for k, y in enumerate(again):
        np.testing.assert_array_equal(y, first[k % 4])
    copy = pickle.loads(pickle.dumps(cube_h2))
    np.testing.assert_array_equal(copy @ xs[0], first[0])
    Xr = rng.standard_normal((1500, 3))
    np.testing.assert_array_equal(cube_h2 @ Xr, copy @ Xr)


def test_nbytes_counts_every_array(cube_h2):
    arrays = cube_h2._arrays()
    assert cube_h2.nbytes == sum(a.nbytes for a in arrays)
    a = cube_h2._a
    for key in ("B", "D", "T", "piv", "perm"):
        assert any(arr is a[key] for arr in arrays)
    assert cube_h2.compression_ratio == pytest.approx(8 * 1500 ** 2 / cube_h2.nbytes)


def test_estimate_error_agrees_with_dense(cube, cube_h2):
    X, K = cube
    est = cube_h2.estimate_error(X, n_rows=200, random_state=0)
    rng = np.random.default_rng(0)
    x = rng.random(1500) - 0.5
    rows = rng.choice(1500, size=200, replace=False)
    exact = (K @ x)[rows]
    assert est == pytest.approx(np.linalg.norm((cube_h2 @ x)[rows] - exact)
                                / np.linalg.norm(exact))
    assert est <= 1e-6


@numba.njit
def _inverse_multiquadric(x, y):
    return 1.0 / np.sqrt(0.04 + ((x - y) ** 2).sum())


@numba.njit
def _shifted(x, y):          # not symmetric: k(x, y) != k(y, x)
    return np.exp(-((x - y + 0.1) ** 2).sum())


@pytest.mark.parametrize("kernel", [_inverse_multiquadric, _shifted])
@pytest.mark.parametrize("tol", [1e-3, 1e-7])
def test_user_kernels_are_compressed_through_an_hmatrix_within_tol(kernel, tol):
    from hmnumba.h2matrix import GeneralH2Matrix
    X = _points(800, 3, seed=11)
    K = np.array([[kernel(a, b) for b in X] for a in X])
    H = H2Matrix.from_kernel(kernel, X, tol=tol, leaf_size=24)
    assert isinstance(H, GeneralH2Matrix)
    err = _relerr(H.to_dense(), K)
    assert err <= H.error <= tol
    x = np.random.default_rng(11).standard_normal(800)
    np.testing.assert_allclose(H.rmatvec(x), H.to_dense().T @ x, rtol=1e-10,
                               atol=1e-10 * np.abs(K).sum())


@pytest.mark.parametrize("tol", [1e-3, 1e-7])
def test_symmetric_user_kernel_stores_each_mirrored_block_once(tol):
    X = _points(800, 3, seed=12)
    K = np.array([[_inverse_multiquadric(a, b) for b in X] for a in X])
    S = H2Matrix.from_kernel(_inverse_multiquadric, X, tol=tol, leaf_size=24, symmetric=True)
    G = H2Matrix.from_kernel(_inverse_multiquadric, X, tol=tol, leaf_size=24)
    assert S.symmetric and not G.symmetric
    assert _relerr(S.to_dense(), K) <= S.error <= tol
    # one set of bases and one block per mirrored pair
    assert S.nbytes < 0.6 * G.nbytes
    x = np.random.default_rng(12).standard_normal(800)
    assert np.array_equal(S.rmatvec(x), S.matvec(x))
    D = S.to_dense()
    np.testing.assert_allclose(D, D.T, rtol=0, atol=1e-12 * np.abs(K).max())


def test_symmetric_option_is_checked():
    X = _points(60, 3)
    with pytest.raises(ValueError, match="symmetric=False"):
        H2Matrix.from_kernel(laplace, X, symmetric=False)
    with pytest.raises(TypeError, match="symmetric"):
        H2Matrix.from_kernel(_inverse_multiquadric, X, symmetric="yes")
    assert H2Matrix.from_kernel(laplace, X, symmetric=True).symmetric


def test_tiny_and_degenerate_point_sets():
    for X in (_points(5, 3), np.zeros((40, 2)), np.repeat(_points(30, 3), 3, axis=0)):
        K = gaussian(X)
        H = H2Matrix.from_kernel(gaussian, X, leaf_size=8)
        np.testing.assert_allclose(H.to_dense(), K, rtol=1e-6, atol=1e-6 * np.abs(K).max())


def test_invalid_inputs_are_rejected_by_name():
    X = _points(50, 3)
    with pytest.raises(TypeError, match="kernel"):
        H2Matrix.from_kernel(lambda x, y: 1.0, X)            # not compiled by numba
    with pytest.raises(ValueError, match="mode"):
        H2Matrix.from_kernel(numba.njit(lambda x, y: 1.0), X, mode="on-the-fly")
    with pytest.raises(ValueError, match="admissibility"):
        H2Matrix.from_kernel(laplace, X, admissibility="weak")
    with pytest.raises(ValueError, match="mode"):
        H2Matrix.from_kernel(laplace, X, mode="jit")
    with pytest.raises(ValueError, match="tol"):
        H2Matrix.from_kernel(laplace, X, tol=0.0)
    with pytest.raises(ValueError, match="points"):
        H2Matrix.from_kernel(laplace, np.full((10, 2), np.nan))
    with pytest.raises(ValueError, match="leaf_size"):
        H2Matrix.from_kernel(laplace, X, leaf_size=0)
    H = H2Matrix.from_kernel(laplace, X)
    with pytest.raises(ValueError, match="x"):
        H @ np.ones(49)
    with pytest.raises(ValueError, match="points"):
        H.estimate_error(X[:10])


def test_storage_precision_follows_tol(cube):
    X, K = cube
    loose = H2Matrix.from_kernel(laplace, X, tol=1e-6)
    tight = H2Matrix.from_kernel(laplace, X[:600], tol=1e-9)
    for key in ("T", "B", "D", "L"):
        assert loose._a[key].dtype == np.float32
        assert tight._a[key].dtype == np.float64
    assert _relerr(tight.to_dense(), K[:600, :600]) <= 1e-9


def test_low_rank_couplings_store_fewer_numbers_than_dense_ones():
    X = _points(4000, 3, seed=7)
    H = H2Matrix.from_kernel(laplace, X, tol=1e-6)
    a = H._a
    assert a["lb_t"].size > 0
    k = H.ranks
    m, n, r = k[a["lb_t"]], k[a["lb_s"]], a["l_rank"]
    assert np.all(r * (m + n) < m * n)
    assert a["L"].size == int((r * (m + n)).sum())
    x = np.random.default_rng(8).standard_normal(4000)
    otf = H2Matrix.from_kernel(laplace, X, tol=1e-6, mode="on-the-fly")   # all couplings dense
    np.testing.assert_allclose(H @ x, otf @ x, rtol=0, atol=2e-6 * np.abs(otf @ x).max())
    assert H.estimate_error(X, 100) <= 1e-6


def test_coupling_compression_in_chunks_gives_the_same_bits(monkeypatch):
    # compress_couplings reuses one scratch over chunks of candidates; a
    # chunk of any size (down to one candidate each) must not change a bit
    from hmnumba import h2build
    from hmnumba.kernels import compress
    X = _points(3000, 3, seed=12)
    ref = H2Matrix.from_kernel(laplace, X, tol=1e-6)
    assert ref._a["lb_t"].size > 1
    calls = []
    run = compress.compress_blocks
    monkeypatch.setattr(compress, "compress_blocks", lambda *a: calls.append(1) or run(*a))
    for room in (1, 5000):
        monkeypatch.setattr(h2build, "COUPLING_CHUNK_ROOM", room)
        calls.clear()
        H = H2Matrix.from_kernel(laplace, X, tol=1e-6)
        assert len(calls) > 1          # the candidates really ran in several chunks
        for key in ("lb_t", "lb_s", "l_off", "l_rank", "L", "cb_t", "B"):
            np.testing.assert_array_equal(H._a[key], ref._a[key])
        assert H._a["L"].base is None or H._a["L"].base.nbytes == H._a["L"].nbytes


@pytest.mark.parametrize("tol", [1e-3, 1e-6])
def test_interpolative_decompositions_meet_their_frobenius_tolerance(tol):
    from hmnumba.kernels.h2_build import (gram_interpolative_decomposition,
                                          interpolative_decomposition, proxy_matrix)
    rng = np.random.default_rng(9)
    C = rng.random((60, 3))
    proxy = rng.standard_normal((150, 3))
    proxy *= 3.0 / np.linalg.norm(proxy, axis=1, keepdims=True)
    At = proxy_matrix(0, 1.0, proxy, C)              # laplace: smooth, numerically low rank
    ranks = []
    for decompose in (interpolative_decomposition, gram_interpolative_decomposition):
        k, piv, T = decompose(At, tol)
        assert sorted(piv.tolist()) == list(range(60)) and 0 < k < 60
        resid = At[:, piv[k:]] - At[:, piv[:k]] @ T
        assert np.linalg.norm(resid) <= tol * np.linalg.norm(At) * (1 + 1e-6)
        ranks.append(k)
    assert abs(ranks[0] - ranks[1]) <= 1
