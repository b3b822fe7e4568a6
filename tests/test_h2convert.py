"""Conversions between H and H^2: H2Matrix.from_hmatrix (blockwise, with the exact
conversion error kept within tol) and H2Matrix.to_hmatrix for kernel and
general H^2 matrices (exact up to rounding)."""
import numpy as np
import pytest

from hmnumba import H2Matrix, HMatrix, load
from hmnumba.h2dense import range_tree
from hmnumba.h2matrix import GeneralH2Matrix
from hmnumba.kernels import gaussian, laplace


def _relerr(A, B):
    return np.linalg.norm(A - B) / np.linalg.norm(B)


def _smooth(m, n, dtype=np.float64):
    x, y = np.linspace(0, 1, m), np.linspace(0, 1.3, n)
    return (1.0 / (1.0 + 20 * np.abs(x[:, None] - y[None, :]))).astype(dtype)


@pytest.fixture(scope="module")
def kernel_h():
    X = np.random.default_rng(0).random((700, 3))
    return X, HMatrix.from_kernel(laplace, X, tol=1e-6)


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-8), (np.float64, 1e-3),
                                        (np.float32, 1e-4)])
def test_from_hmatrix_keeps_the_conversion_error_within_tol(dtype, tol):
    A = _smooth(300, 200, dtype)
    H = HMatrix.from_dense(A, tol=tol)
    G = H2Matrix.from_hmatrix(H)
    assert isinstance(G, GeneralH2Matrix) and G.shape == A.shape and G.dtype == H.dtype
    Hd = H.to_dense().astype(np.float64)
    measured = _relerr(G.to_dense(), Hd)
    assert measured <= tol
    assert measured == pytest.approx(G.conversion_error, rel=1e-3, abs=1e-12)
    # error bounds ||A - H2|| by the triangle inequality
    assert _relerr(G.to_dense(), A.astype(np.float64)) <= G.error * (1 + 1e-9)
    assert G.error <= H.error_bound + tol * 1.001


def test_from_hmatrix_of_a_symmetric_kernel_matrix_and_looser_tol(kernel_h):
    X, H = kernel_h
    assert H.symmetric
    G = H2Matrix.from_hmatrix(H, tol=1e-4)
    assert _relerr(G.to_dense(), H.to_dense()) <= 1e-4
    x = np.random.default_rng(1).standard_normal(700)
    assert np.allclose(G.rmatvec(x), G.to_dense().T @ x)


@pytest.mark.parametrize("tol", [1e-6, 1e-3])
def test_symmetric_hmatrix_converts_to_symmetric_storage(kernel_h, tol):
    X, H = kernel_h
    G = H2Matrix.from_hmatrix(H, tol=tol)
    F = H2Matrix.from_hmatrix(H.full_storage(), tol=tol)     # the same matrix, not marked
    assert G.symmetric and not F.symmetric
    Hd = H.to_dense()
    measured = _relerr(G.to_dense(), Hd)
    assert measured <= tol
    assert measured == pytest.approx(G.conversion_error, rel=1e-3, abs=1e-12)
    # one set of bases, each mirrored block once: about half the bytes
    assert G.nbytes < 0.6 * F.nbytes
    assert G.col_ranks is not None and np.array_equal(G.ranks, G.col_ranks)
    x = np.random.default_rng(2).standard_normal((700, 3))
    assert np.array_equal(G.rmatmat(x), G.matmat(x))
    # both within tol of H: ||(G - F) x|| <= 2 tol ||H||_F ||x||
    assert (np.linalg.norm(G.matmat(x) - F.matmat(x))
            <= 2 * tol * np.linalg.norm(Hd) * np.linalg.norm(x))
    # back to H: a symmetric H-matrix with the same products
    B = G.to_hmatrix()
    assert B.symmetric
    np.testing.assert_allclose(B.matmat(x), G.matmat(x), rtol=1e-12, atol=1e-12)
    assert "symmetric" in G.summary()


def test_from_hmatrix_never_forms_the_dense_matrix(monkeypatch):
    H = HMatrix.from_dense(_smooth(200, 160), tol=1e-6)
    for name in ("to_dense", "matmat", "matvec", "rmatvec", "_apply"):
        monkeypatch.setattr(HMatrix, name, lambda *a, **k: pytest.fail("densified"))
    G = H2Matrix.from_hmatrix(H)
    assert G.conversion_error <= 1e-6


def test_from_hmatrix_of_tiny_and_one_block_matrices():
    for A in (np.array([[2.0]]), np.ones((1, 7)), np.ones((9, 1)),
              np.outer(np.arange(1.0, 41), np.arange(1.0, 31))):
        H = HMatrix.from_dense(A, tol=1e-6)
        G = H2Matrix.from_hmatrix(H)
        assert np.allclose(G.to_dense(), A, rtol=1e-6, atol=0)


def test_from_hmatrix_refuses_outliers_and_bad_tol():
    rng = np.random.default_rng(0)
    A = _smooth(64, 64)
    A[3, 5] += 50.0
    H = HMatrix.from_dense(A, tol=1e-3, outliers=1)
    assert H.outliers is not None     # the spike is kept as a sparse outlier
    with pytest.raises(ValueError, match="outliers"):
        H2Matrix.from_hmatrix(H)
    H = HMatrix.from_dense(rng.standard_normal((20, 20)), tol=1e-3)
    with pytest.raises(ValueError, match="tol"):
        H2Matrix.from_hmatrix(H, tol=2.0)
    with pytest.raises(TypeError, match="H must be an HMatrix"):
        H2Matrix.from_hmatrix(np.eye(3))


def test_converted_matrix_saves_and_loads(tmp_path):
    G = H2Matrix.from_hmatrix(HMatrix.from_dense(_smooth(120, 90), tol=1e-5))
    G.save(tmp_path / "g.hmz")
    L = load(tmp_path / "g.hmz")
    assert np.array_equal(L.to_dense(), G.to_dense()) and L.error == G.error


def test_range_tree_completes_and_refuses_ranges():
    tree, node = range_tree(12, [0, 3, 7, 0], [3, 7, 12, 12], np.arange(12))
    assert {(0, 3), (3, 7), (7, 12)} <= set(node)
    ch = tree.children
    inner = ch[:, 0] >= 0
    assert np.all(tree.start[ch[inner, 0]] == tree.start[inner])
    assert np.all(tree.stop[ch[inner, 1]] == tree.stop[inner])
    assert np.all(ch[inner, 1] == ch[inner, 0] + 1)
    with pytest.raises(ValueError, match="overlap without nesting"):
        range_tree(10, [0, 3], [5, 8], np.arange(10))


@pytest.mark.parametrize("mode", ["stored", "on-the-fly"])
def test_kernel_h2_to_hmatrix_is_the_same_symmetric_matrix(mode):
    X = np.random.default_rng(2).random((900, 3))
    H2 = H2Matrix.from_kernel(laplace, X, tol=1e-9, mode=mode)   # float64 entries
    H = H2.to_hmatrix()
    assert H.symmetric and H.shape == H2.shape
    assert np.allclose(H.to_dense(), H2.to_dense(), rtol=0, atol=1e-12)
    assert _relerr(H.to_dense(), laplace(X)) <= 1e-9


def test_kernel_h2_with_low_rank_couplings_to_hmatrix():
    X = np.random.default_rng(0).random((800, 3))
    H2 = H2Matrix.from_kernel(laplace, X, tol=1e-4)
    assert H2._a["lb_t"].size > 0          # couplings stored as factors are converted too
    H = H2.to_hmatrix()
    assert np.allclose(H.to_dense(), H2.to_dense(), rtol=0, atol=1e-10)


def test_kernel_h2_to_hmatrix_and_back_round_trip():
    X = np.random.default_rng(3).random((400, 2))
    H2 = H2Matrix.from_kernel(gaussian.with_length_scale(0.3), X, tol=1e-6)
    G = H2Matrix.from_hmatrix(H2.to_hmatrix(), tol=1e-6)
    assert _relerr(G.to_dense(), H2.to_dense()) <= 1e-6
