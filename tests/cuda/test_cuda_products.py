"""CUDA matvec / matmat / rmatvec / rmatmat against the CPU backend."""
import numpy as np
import pytest

from hmnumba import HMatrix
from hmnumba.kernels import gaussian, laplace

RTOL = {np.float64: 1e-12, np.float32: 1e-5}


@pytest.fixture(scope="module")
def matrix64():
    """A rectangular H-matrix with dense and low-rank blocks."""
    rng = np.random.default_rng(2)
    X = rng.random((130, 2))
    Y = rng.random((110, 2)) * [2.0, 1.0]
    A = laplace(X, Y + [1.2, 0.0]) + gaussian.with_length_scale(0.1)(X, Y)
    H = HMatrix.from_dense(A, tol=1e-7, leaf_size=16, cluster="geometric", points=X,
                           col_points=Y, admissibility="strong", eta=1.0)
    assert (H.ranks > 0).any() and (H.ranks < 0).any()
    return H


@pytest.fixture(scope="module", params=[np.float64, np.float32], ids=["f64", "f32"])
def matrices(request, matrix64):
    """The CPU H-matrix in the given storage dtype, and a copy on the device.
    (The float32 one stores the float64 one's numbers rounded; building it
    with ``from_dense`` would only add JIT compilation time.)"""
    H = matrix64
    if request.param == np.float32:
        H = HMatrix.from_arrays(H.shape, H.row_perm, H.col_perm, H.row_start, H.row_stop, H.col_start,
                    H.col_stop, H.rank, H.offset, H.data.astype(np.float32), H.block_err2,
                    H.block_norm2, H.tol)
    G = HMatrix.from_arrays(H.shape, H.row_perm, H.col_perm, H.row_start, H.row_stop, H.col_start,
                H.col_stop, H.rank, H.offset, H.data, H.block_err2, H.block_norm2, H.tol)
    return request.param, H, G.to("cuda")


@pytest.mark.parametrize("op,side,rhs", [("matvec", 1, None), ("matmat", 1, 3),
                                         ("rmatvec", 0, None), ("rmatmat", 0, 2)])
def test_products_equal_cpu(matrices, op, side, rhs):
    dtype, H, G = matrices
    n = H.shape[side]
    x = np.random.default_rng(3).standard_normal(n if rhs is None else (n, rhs)).astype(dtype)
    want = getattr(H, op)(x)
    got = getattr(G, op)(x)
    assert got.dtype == want.dtype == dtype and got.shape == want.shape
    err = np.linalg.norm(got - want) / np.linalg.norm(want)
    assert err <= RTOL[dtype]


def test_mixed_precision_operand_gives_float64(matrices):
    dtype, H, G = matrices
    x = np.random.default_rng(4).standard_normal(H.shape[1])
    got = G @ x
    assert got.dtype == np.float64
    want = H @ x
    assert np.linalg.norm(got - want) <= RTOL[dtype] * np.linalg.norm(want)
