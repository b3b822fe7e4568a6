"""H2Matrix.from_dense: the exact Frobenius bound, products, thread-count bits."""
import numba
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from hmnumba import H2Matrix, load


def poisson_operator(n_side=32, seed=0):
    """Inverse of the 5-point Laplacian on an ``n_side^2`` grid, rows and
    columns shuffled independently."""
    T = 2 * np.eye(n_side) - np.eye(n_side, k=1) - np.eye(n_side, k=-1)
    L = np.kron(T, np.eye(n_side)) + np.kron(np.eye(n_side), T)
    G = np.linalg.inv(L)
    rng = np.random.default_rng(seed)
    return G[rng.permutation(G.shape[0])][:, rng.permutation(G.shape[1])]


def _matrices():
    rng = np.random.default_rng(3)
    low = rng.standard_normal((160, 5)) @ rng.standard_normal((5, 120))
    x = np.linspace(0, 1, 150)
    return {
        "low_rank": low,
        "gaussian": rng.standard_normal((96, 96)),
        "tall": np.exp(-np.abs(rng.random((200, 1)) - rng.random((1, 40))) * 8),
        "wide": np.exp(-np.abs(rng.random((30, 1)) - rng.random((1, 170))) * 8),
        "float32": (1.0 / (1.0 + 30 * np.abs(x[:, None] - x[None, :]))).astype(np.float32),
    }


@pytest.mark.parametrize("name", list(_matrices()))
@pytest.mark.parametrize("tol", [1e-1, 1e-3, 1e-6])
def test_exact_bound(name, tol):
    W = _matrices()[name]
    H = H2Matrix.from_dense(W, tol=tol, leaf_size=16, random_state=0)
    err = np.linalg.norm(H.to_dense() - W.astype(np.float64))
    assert err <= tol * np.linalg.norm(W.astype(np.float64))
    assert H.shape == W.shape and H.dtype == W.dtype


@pytest.mark.slow
@pytest.mark.parametrize("tol", [1e-1, 1e-2, 1e-3])
def test_exact_bound_poisson(tol):
    W = poisson_operator()
    H = H2Matrix.from_dense(W, tol=tol, random_state=0)
    assert np.linalg.norm(H.to_dense() - W) <= tol * np.linalg.norm(W)



@pytest.mark.parametrize("admissibility", ["adaptive", "weak"])
@pytest.mark.parametrize("storage", ["float32", "float64"])
def test_options_keep_bound(admissibility, storage):
    W = _matrices()["wide"]
    H = H2Matrix.from_dense(W, tol=1e-4, leaf_size=8, admissibility=admissibility,
                            storage=storage, random_state=1)
    assert H._a["c_data"].dtype == np.dtype(storage)
    assert np.linalg.norm(H.to_dense() - W) <= 1e-4 * np.linalg.norm(W)


def test_products_match_dense():
    W = _matrices()["tall"]
    H = H2Matrix.from_dense(W, tol=1e-4, leaf_size=16, cluster="index")
    D = H.to_dense()
    rng = np.random.default_rng(0)
    x, X = rng.standard_normal(40), rng.standard_normal((40, 3))
    y, Y = rng.standard_normal(200), rng.standard_normal((200, 3))
    np.testing.assert_allclose(H @ x, D @ x, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(H.matmat(X), D @ X, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(H.rmatvec(y), D.T @ y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(H.rmatmat(Y), D.T @ Y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(H.aslinearoperator().T @ y, D.T @ y, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="X"):
        H.matvec(np.ones(41))


def test_thread_count_bits():
    W = _matrices()["low_rank"] + 0.01 * _matrices()["gaussian"][:1].sum()
    H = H2Matrix.from_dense(W, tol=1e-3, leaf_size=16, random_state=0)
    x = np.random.default_rng(1).standard_normal((120, 2))
    y = np.random.default_rng(2).standard_normal((160, 2))
    old = numba.get_num_threads()
    try:
        out = []
        for k in sorted({1, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(k)
            out.append((H.matmat(x), H.rmatmat(y)))
    finally:
        numba.set_num_threads(old)
    for a, b in out[1:]:
        assert np.array_equal(a, out[0][0]) and np.array_equal(b, out[0][1])


def test_nbytes_counts_everything():
    W = _matrices()["gaussian"]
    H = H2Matrix.from_dense(W, tol=1e-2, leaf_size=16, random_state=0)
    a = H._a
    assert H.nbytes >= a["c_data"].nbytes + a["n_data"].nbytes + a["row_basis"].nbytes
    stored = sum(v.nbytes for v in a.values() if isinstance(v, np.ndarray))
    schedule = sum(v.nbytes for part in H._split.values() for v in part)     # product passes
    assert H.nbytes == stored + schedule


def test_validation():
    with pytest.raises(ValueError, match="tol"):
        H2Matrix.from_dense(np.ones((10, 10)), tol=2.0)
    with pytest.raises(ValueError, match="cluster"):
        H2Matrix.from_dense(np.ones((10, 10)), cluster="geometric")
    with pytest.raises(ValueError, match="storage"):
        H2Matrix.from_dense(np.ones((10, 10)), storage="float16")
    with pytest.raises(ValueError, match="W"):
        H2Matrix.from_dense(np.full((4, 4), np.nan))
    H = H2Matrix.from_dense(np.zeros((20, 30)), leaf_size=4)
    assert np.array_equal(H.to_dense(), np.zeros((20, 30)))


@settings(max_examples=40, deadline=None)
@given(m=st.integers(1, 48), n=st.integers(1, 48), tol=st.floats(1e-6, 0.5),
       decay=st.floats(0.3, 1.0), seed=st.integers(0, 2 ** 16), leaf=st.integers(1, 12),
       float32=st.booleans())
def test_bound_property(m, n, tol, decay, seed, leaf, float32):
    rng = np.random.default_rng(seed)
    k = min(m, n)
    W = rng.standard_normal((m, k)) @ np.diag(decay ** np.arange(k)) @ rng.standard_normal((k, n))
    if float32:
        W = W.astype(np.float32)
    H = H2Matrix.from_dense(W, tol=tol, leaf_size=leaf, random_state=seed)
    W64 = W.astype(np.float64)
    assert np.linalg.norm(H.to_dense() - W64) <= tol * np.linalg.norm(W64)


@pytest.mark.parametrize("tol", [1e-1, 1e-2])
def test_low_rank_operator_stores_its_truncated_svd(tol, tmp_path):
    """The study's shuffled 1-D Poisson operator is low-rank everywhere: its
    H^2 matrix is one coupling between one-node trees, the bytes of the
    optimal rank (Eckart-Young) in float32 plus the two permutations and the
    k x k coupling. (Nested bases over the PCA tree stored 59.9 KB at 1e-2,
    rank 16 costs 32.8 KB.)"""
    from hmnumba.experiments.families import operator_network
    W = np.asarray(operator_network("poisson1d", 256, 0).weights[0], np.float64)
    s = np.linalg.svd(W, compute_uv=False)
    tail = np.sqrt(np.concatenate((np.cumsum((s * s)[::-1])[::-1], [0.0])))
    k = int(np.argmax(tail <= tol * np.linalg.norm(s)))
    H = H2Matrix.from_dense(W, tol=tol, random_state=0)
    m, n = W.shape
    assert H._a["row_children"].shape[0] == 1 and H.ranks.tolist() == [k]
    assert H.nbytes <= 4 * (k * (m + n) + k * k) + 8 * (m + n) + 2048
    err = np.linalg.norm(H.to_dense() - W) / np.linalg.norm(W)
    assert err <= tol and err == pytest.approx(H.error, rel=1e-6)
    x = np.random.default_rng(0).standard_normal(m)
    np.testing.assert_allclose(H.rmatvec(x), H.to_dense().T @ x, rtol=1e-12, atol=1e-12)
    H.save(tmp_path / "low.hmz")
    assert np.array_equal(load(tmp_path / "low.hmz").to_dense(), H.to_dense())
    np.testing.assert_allclose(H.to_hmatrix().to_dense(), H.to_dense(), rtol=0, atol=1e-12)


def test_symmetric_low_rank_keeps_symmetric_storage():
    """symmetric=True keeps one tree and one basis (no one-node pair of
    different bases, even where that would be smaller)."""
    G = np.random.default_rng(1).standard_normal((80, 3))
    W = G @ G.T
    H = H2Matrix.from_dense(W, tol=1e-6, symmetric=True, random_state=0)
    assert H.symmetric
    assert np.linalg.norm(H.to_dense() - W) <= 1e-6 * np.linalg.norm(W)


@pytest.mark.parametrize("name", ["tall", "wide", "float32"])
def test_to_hmatrix(name):
    W = _matrices()[name]
    H2 = H2Matrix.from_dense(W, tol=1e-3, leaf_size=8, random_state=0)
    H = H2.to_hmatrix()
    x = np.random.default_rng(0).standard_normal(W.shape[1])
    np.testing.assert_allclose(H @ x, H2 @ x, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(H.to_dense(), H2.to_dense(), rtol=1e-9, atol=1e-9)


def test_symmetric_from_dense_stores_each_mirrored_block_once(tmp_path):
    x = np.sort(np.random.default_rng(0).random(600))
    W = 1.0 / (1.0 + 30 * np.abs(x[:, None] - x[None, :]))
    S = H2Matrix.from_dense(W, tol=1e-4, leaf_size=16, random_state=0, symmetric=True)
    G = H2Matrix.from_dense(W, tol=1e-4, leaf_size=16, random_state=0)
    assert S.symmetric and not G.symmetric
    assert np.linalg.norm(S.to_dense() - W) <= 1e-4 * np.linalg.norm(W)
    assert S.nbytes < G.nbytes
    # the stored couplings hold each mirrored pair once
    flip = S._a["c_flip"]
    assert S._a["c_data"].size < G._a["c_data"].size and np.count_nonzero(flip) > 0
    S.save(tmp_path / "s.hmz")
    L = load(tmp_path / "s.hmz")
    v = np.random.default_rng(1).standard_normal(600)
    assert L.symmetric and np.array_equal(L @ v, S @ v) and L.error == S.error


def test_symmetric_from_dense_of_a_rank_one_matrix_is_one_diagonal_coupling():
    v = np.random.default_rng(1).standard_normal(300)
    S = H2Matrix.from_dense(np.outer(v, v), tol=1e-6, leaf_size=16, symmetric=True,
                            random_state=0)
    assert S._a["c_other"].size == 1 and S._a["n_other"].size == 0
    assert np.linalg.norm(S.to_dense() - np.outer(v, v)) <= 1e-6 * v @ v


def test_symmetric_from_dense_refuses_arrays_that_are_not():
    W = np.random.default_rng(2).random((20, 20))
    with pytest.raises(ValueError, match="symmetric=True needs W"):
        H2Matrix.from_dense(W, symmetric=True)
    with pytest.raises(ValueError, match="symmetric=True needs W"):
        H2Matrix.from_dense(np.ones((20, 21)), symmetric=True)
    with pytest.raises(TypeError, match="symmetric"):
        H2Matrix.from_dense(W + W.T, symmetric="yes")
