"""Symmetric storage: only the upper block triangle of a symmetric kernel
matrix is built and stored; every product, the dense expansion, the error
bound, files and pickles account for the mirrored blocks."""
import pickle

import numba
import numpy as np
import pytest

from hmnumba import HMatrix, load
from hmnumba.bounds import block_error_bound
from hmnumba.kernels import assemble_dense, exponential, gaussian, laplace


def _rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


@pytest.fixture(scope="module")
def cube():
    X = np.random.default_rng(0).random((3000, 3))
    H = HMatrix.from_kernel(laplace, X, tol=1e-7, random_state=0)
    return X, H, H.to_dense()


def test_builtin_kernel_on_one_point_set_is_stored_symmetric(cube):
    X, H, D = cube
    assert H.symmetric
    assert np.array_equal(D, D.T)
    strict = H.row_start != H.col_start
    # every stored block is diagonal or strictly upper
    diagonal = (H.row_start == H.col_start) & (H.row_stop == H.col_stop)
    assert np.all(diagonal | (H.row_stop <= H.col_start))
    assert strict.any() and (H.rank[strict] > 0).any()
    assert "symmetric" in H.summary()


def test_symmetric_storage_is_about_half_and_as_accurate(cube):
    X, H, D = cube
    F = HMatrix.from_kernel(laplace, X, tol=1e-7, random_state=0, symmetric=False)
    assert not F.symmetric
    assert H.nbytes < 0.6 * F.nbytes
    A = assemble_dense(laplace, X)
    assert _rel(D, A) <= 1e-7
    assert _rel(F.to_dense(), A) <= 1e-7
    # the same blocks above the diagonal: the two expansions agree closely
    assert _rel(D, F.to_dense()) <= 2e-7


def test_products_agree_with_the_dense_expansion(cube):
    X, H, D = cube
    rng = np.random.default_rng(1)
    x = rng.standard_normal(D.shape[0])
    for op in (x, rng.standard_normal((D.shape[0], 3)), rng.standard_normal((D.shape[0], 40))):
        assert _rel(H @ op, D @ op) <= 1e-12
        assert _rel(H.T @ op, D @ op) <= 1e-12
    assert _rel(H.rmatvec(x), D @ x) <= 1e-12
    assert _rel(x @ H, D @ x) <= 1e-12
    Y = rng.standard_normal((D.shape[0], 20))
    assert _rel(H.rmatmat(Y), D @ Y) <= 1e-12
    assert np.array_equal(H @ x, H @ x)


def test_matvec_bits_do_not_depend_on_the_thread_count(cube):
    X, H, D = cube
    x = np.random.default_rng(2).standard_normal(D.shape[0])
    n = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        y1 = H @ x
    finally:
        numba.set_num_threads(n)
    assert np.array_equal(y1, H @ x)


def test_error_bound_counts_each_strictly_upper_block_twice(cube):
    X, H, D = cube
    mult = np.where(H.row_start == H.col_start, 1.0, 2.0)
    assert np.array_equal(H.multiplicity, mult)
    assert H.error_bound == pytest.approx(np.sqrt(mult @ H.block_err2) / H.norm)
    assert block_error_bound(H) == H.error_bound   # Theorem 1a counts the mirrors too
    assert H.norm == pytest.approx(np.sqrt(mult @ H.block_norm2))
    A = assemble_dense(laplace, X)
    assert H.norm == pytest.approx(np.linalg.norm(A), rel=1e-6)
    assert H.error_bound <= 1e-7
    assert H.estimate_error(random_state=0) <= 1e-6


def test_full_storage_is_the_same_matrix(cube):
    X, H, D = cube
    F = H.full_storage()
    assert not F.symmetric and F.full_storage() is F
    # a mirrored low-rank block expands as V U^T: equal up to summation order
    assert np.allclose(F.to_dense(), D, rtol=1e-14, atol=0)
    assert F.error_bound == pytest.approx(H.error_bound)
    x = np.random.default_rng(3).standard_normal(D.shape[0])
    assert _rel(F @ x, H @ x) <= 1e-13
    assert F.n_blocks == H.n_blocks + int((H.row_start != H.col_start).sum())


def test_file_and_pickle_round_trips(cube, tmp_path):
    X, H, D = cube
    x = np.random.default_rng(4).standard_normal(D.shape[0])
    H.save(tmp_path / "h.hmz")
    H2 = load(tmp_path / "h.hmz")
    assert H2.symmetric and H2.nbytes == H.nbytes
    assert np.array_equal(H2 @ x, H @ x)
    H3 = pickle.loads(pickle.dumps(H))
    assert H3.symmetric and np.array_equal(H3 @ x, H @ x)
    assert np.array_equal(H3.to_dense(), D)


def test_user_kernel_symmetric_on_request():
    @numba.njit
    def inverse_distance(x, y):
        r2 = 0.0
        for i in range(x.shape[0]):
            r2 += (x[i] - y[i]) ** 2
        return 0.0 if r2 == 0.0 else 1.0 / np.sqrt(r2)

    X = np.random.default_rng(5).random((700, 3))
    auto = HMatrix.from_kernel(inverse_distance, X, tol=1e-6)
    assert not auto.symmetric           # unknown symmetry: everything is built
    sym = HMatrix.from_kernel(inverse_distance, X, tol=1e-6, symmetric=True)
    builtin = HMatrix.from_kernel(laplace, X, tol=1e-6)
    assert sym.symmetric
    # Same entries, same blocks and ranks; the factors may differ in the last
    # bits (a user kernel is evaluated through a wrapper that catches its
    # exceptions, which changes the compiled code around it).
    assert np.array_equal(sym.rank, builtin.rank)
    np.testing.assert_allclose(sym.to_dense(), builtin.to_dense(), rtol=1e-12, atol=1e-12)
    assert _rel(sym.to_dense(), assemble_dense(laplace, X)) <= 1e-6


def test_two_point_sets_are_not_symmetric_and_a_bad_symmetric_is_refused():
    X = np.random.default_rng(6).random((300, 2))
    assert not HMatrix.from_kernel(gaussian, X, X.copy(), tol=1e-6).symmetric
    with pytest.raises(ValueError, match="symmetric=True needs one point set"):
        HMatrix.from_kernel(gaussian, X, X.copy(), symmetric=True)
    with pytest.raises(TypeError, match="symmetric must be True, False or None"):
        HMatrix.from_kernel(gaussian, X, symmetric="yes")


@pytest.mark.parametrize("budget", ["block", "size", "perimeter"])
@pytest.mark.parametrize("admissibility", ["strong", "weak", "adaptive"])
def test_every_partition_and_budget(budget, admissibility):
    X = np.random.default_rng(7).random((900, 2))
    H = HMatrix.from_kernel(exponential, X, tol=1e-5, budget=budget,
                            admissibility=admissibility, leaf_size=16, random_state=0)
    A = assemble_dense(exponential, X)
    assert H.symmetric
    assert _rel(H.to_dense(), A) <= 2e-5
    assert H.error_bound <= 1.05e-5
    x = np.random.default_rng(8).standard_normal(900)
    assert _rel(H @ x, H.to_dense() @ x) <= 1e-12


@pytest.mark.parametrize("n", [1, 2, 17, 64])
def test_tiny_matrices(n):
    X = np.random.default_rng(n).random((n, 3))
    H = HMatrix.from_kernel(laplace, X, tol=1e-6, leaf_size=8)
    A = assemble_dense(laplace, X)
    assert H.symmetric
    assert np.allclose(H.to_dense(), A, rtol=0, atol=1e-6 * max(np.linalg.norm(A), 1e-300))
    x = np.ones(n)
    assert np.allclose(H @ x, H.to_dense() @ x, rtol=1e-12, atol=1e-12)


def test_a_file_claiming_symmetry_it_lacks_is_refused(tmp_path):
    from hmnumba.blocks import check_structure
    X = np.random.default_rng(9).random((500, 3))
    F = HMatrix.from_kernel(laplace, X, tol=1e-6, symmetric=False)
    arrays = {name: getattr(F, name) for name in (
        "row_perm", "col_perm", "row_start", "row_stop", "col_start", "col_stop", "rank",
        "offset", "block_err2", "block_norm2", "data")}
    with pytest.raises(ValueError, match="neither diagonal nor strictly upper"):
        check_structure(500, 500, arrays, "where", symmetric=True)
    H = HMatrix.from_kernel(laplace, X, tol=1e-6)
    arrays = {name: getattr(H, name).copy() for name in arrays}
    check_structure(500, 500, arrays, "where", symmetric=True)
    with pytest.raises(ValueError, match="overlap or leave gaps|not \\[0"):
        check_structure(500, 500, arrays, "where", symmetric=False)
    diagonal = np.flatnonzero((arrays["row_start"] == arrays["col_start"])
                              & (arrays["rank"] < 0))[0]
    lowrank_diagonal = {**arrays, "rank": arrays["rank"].copy()}
    lowrank_diagonal["rank"][diagonal] = 1
    with pytest.raises(ValueError, match="diagonal blocks are stored dense"):
        check_structure(500, 500, lowrank_diagonal, "where", symmetric=True)
    perm = arrays["col_perm"].copy()
    arrays["col_perm"] = perm[::-1].copy()
    with pytest.raises(ValueError, match="one permutation"):
        check_structure(500, 500, arrays, "where", symmetric=True)


def test_n_jobs_build_is_bit_identical(cube):
    X, H, D = cube
    got = HMatrix.from_kernel(laplace, X, tol=1e-7, random_state=0, n_jobs=2)
    assert got.symmetric
    for name in ("row_start", "row_stop", "col_start", "col_stop", "rank", "offset", "data"):
        np.testing.assert_array_equal(getattr(got, name), getattr(H, name), err_msg=name)


def test_distributed_from_symmetric_hmatrix():
    distributed = pytest.importorskip("distributed")
    from hmnumba.distributed import DistributedHMatrix
    X = np.random.default_rng(10).random((1200, 3))
    H = HMatrix.from_kernel(laplace, X, tol=1e-6)
    assert H.symmetric
    with distributed.Client(distributed.LocalCluster(n_workers=2, threads_per_worker=1,
                                                     processes=False)) as client:
        Dh = DistributedHMatrix.from_hmatrix(H, client)
        x = np.random.default_rng(11).standard_normal(1200)
        assert _rel(Dh @ x, H @ x) <= 1e-13


def test_symmetric_build_needs_one_tree():
    from hmnumba.cluster import ClusterTree
    from hmnumba.construct import build
    X = np.random.default_rng(15).random((100, 2))
    rows, cols = ClusterTree.from_points(X, 16), ClusterTree.from_points(X, 16)
    with pytest.raises(ValueError, match="one cluster tree"):
        build(np.eye(100), True, rows, cols, np.dtype(np.float64), 1e-6, "strong",
              symmetric=True)


def test_from_dense_symmetric_halves_storage_with_the_exact_bound():
    x = np.random.default_rng(16).random(1500)
    A = 1.0 / (1.0 + 10.0 * np.abs(x[:, None] - x[None, :]))
    A += 1e-5 * np.random.default_rng(17).standard_normal(A.shape)
    A = A + A.T
    H = HMatrix.from_dense(A, tol=1e-3, symmetric=True, admissibility="weak", cluster="index")
    F = HMatrix.from_dense(A, tol=1e-3, admissibility="weak", cluster="index",
                           structure="hierarchical")
    assert H.symmetric and not F.symmetric
    assert H.nbytes < 0.55 * F.nbytes
    err = np.linalg.norm(H.to_dense() - A) / np.linalg.norm(A)
    assert err <= 1e-3
    assert H.error_bound == pytest.approx(err, rel=1e-6)
    v = np.random.default_rng(18).standard_normal(1500)
    assert _rel(H @ v, H.to_dense() @ v) <= 1e-12


def test_from_dense_symmetric_checks_its_input():
    A = np.random.default_rng(19).standard_normal((50, 50))
    with pytest.raises(ValueError, match="symmetric=True needs A equal to its transpose"):
        HMatrix.from_dense(A, symmetric=True)
    with pytest.raises(ValueError, match="symmetric=True needs A equal to its transpose"):
        HMatrix.from_dense(np.ones((4, 5)), symmetric=True)
    with pytest.raises(TypeError, match="symmetric must be True or False"):
        HMatrix.from_dense(A + A.T, symmetric=None)
    x = np.linspace(0, 1, 50)[:, None]
    with pytest.raises(ValueError, match="pass col_points=None"):
        HMatrix.from_dense(A + A.T, symmetric=True, cluster="geometric", points=x,
                           col_points=x)
