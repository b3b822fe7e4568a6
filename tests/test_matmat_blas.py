"""The BLAS-based product for many right-hand sides and its level schedule."""
import numpy as np
import pytest

from hmnumba import HMatrix
from hmnumba.blocks import level_schedule
from hmnumba.hmatrix import BLAS_MIN_RHS
from hmnumba.kernels import products
from hmnumba.kernels import laplace


def check_schedule(start, stop):
    level_ptr, g_start, g_stop, g_ptr, g_block = level_schedule(start, stop)
    assert np.array_equal(np.sort(g_block), np.arange(start.size))   # each block once
    for g in range(g_start.size):
        blocks = g_block[g_ptr[g]:g_ptr[g + 1]]
        assert np.all(start[blocks] == g_start[g]) and np.all(stop[blocks] == g_stop[g])
    for d in range(level_ptr.size - 1):                               # a depth is disjoint
        lo, hi = g_start[level_ptr[d]:level_ptr[d + 1]], g_stop[level_ptr[d]:level_ptr[d + 1]]
        assert np.all(hi[:-1] <= lo[1:])


@pytest.fixture(scope="module")
def matrices():
    rng = np.random.default_rng(0)
    pts = rng.random((900, 2))
    Hk = HMatrix.from_kernel(laplace, pts, tol=1e-8, leaf_size=16, symmetric=False)
    s = np.sort(rng.random(500))
    A = 1.0 / (0.05 + np.abs(s[:, None] - s[None, ::-1][:, :300]))
    Hd = HMatrix.from_dense(A, tol=1e-6, leaf_size=16, random_state=0)
    Hf = HMatrix.from_dense(A.astype(np.float32), tol=1e-4, leaf_size=16, random_state=0)
    return {"kernel": Hk, "dense": Hd, "float32": Hf}


@pytest.mark.parametrize("name", ["kernel", "dense", "float32"])
@pytest.mark.parametrize("trans", [False, True])
def test_blas_product_equals_fused_loops(matrices, name, trans):
    H = matrices[name]
    assert H.n_blocks > 20
    start, stop = (H.col_start, H.col_stop) if trans else (H.row_start, H.row_stop)
    check_schedule(start, stop)
    n_in = H.shape[0] if trans else H.shape[1]
    X = np.random.default_rng(1).standard_normal((n_in, 24)).astype(H.dtype)
    blocks = (H.data, H.row_start, H.row_stop, H.col_start, H.col_stop, H.rank, H.offset)
    seg, ptr, blk = H.col_sched if trans else H.row_sched
    fused = products.hmatmat(*blocks, H.t_off, seg, ptr, blk, X, trans)
    blas = products.hmatmat_blas(*blocks, H.t_off, *level_schedule(start, stop), X, trans)
    assert blas.dtype == H.dtype
    rtol = 1e-5 if H.dtype == np.float32 else 1e-12
    np.testing.assert_allclose(blas, fused, rtol=rtol, atol=rtol * np.abs(fused).max())


@pytest.mark.parametrize("p", [BLAS_MIN_RHS - 1, BLAS_MIN_RHS, 40])
def test_public_products_on_both_sides_of_the_switch(matrices, p):
    H = matrices["dense"]
    D = H.to_dense()
    rng = np.random.default_rng(p)
    X, Y = rng.standard_normal((H.shape[1], p)), rng.standard_normal((H.shape[0], p))
    np.testing.assert_allclose(H @ X, D @ X, rtol=1e-11, atol=1e-11 * np.abs(D @ X).max())
    np.testing.assert_allclose(H.rmatmat(Y), D.T @ Y, rtol=1e-11,
                               atol=1e-11 * np.abs(D.T @ Y).max())


def test_schedule_of_nested_and_disjoint_ranges():
    rng = np.random.default_rng(3)
    # ranges of a binary tree over 0..64 with random repetition
    ranges = [(a, a + w) for w in (64, 32, 16, 8) for a in range(0, 64, w)]
    picks = rng.integers(0, len(ranges), 200)
    start = np.array([ranges[i][0] for i in picks], np.int64)
    stop = np.array([ranges[i][1] for i in picks], np.int64)
    check_schedule(start, stop)


@pytest.mark.parametrize("trans", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_few_block_matrices_use_numpy_blas_and_agree(trans, dtype, monkeypatch):
    import hmnumba.storage as hm
    from hmnumba.storage import FEW_BLOCKS
    calls = []
    original = hm._few_blocks_product
    monkeypatch.setattr(hm, "_few_blocks_product",
                        lambda *args: calls.append(1) or original(*args))
    rng = np.random.default_rng(5)
    W = (rng.standard_normal((300, 6)) @ rng.standard_normal((6, 200))).astype(dtype)
    H = HMatrix.from_dense(W, tol=1e-5, random_state=0)
    assert H.n_blocks <= FEW_BLOCKS
    D = H.to_dense().astype(np.float64)
    n_in = H.shape[0] if trans else H.shape[1]
    X = rng.standard_normal((n_in, 32)).astype(dtype)
    got = H.rmatmat(X) if trans else H.matmat(X)
    assert calls == [1]
    want = (D.T if trans else D) @ X.astype(np.float64)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max())
    assert got.dtype == dtype
