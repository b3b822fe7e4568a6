"""Backend selection, ``HMatrix.to`` and device-array operands."""
import pickle
import warnings

import numpy as np
import pytest
from numba import cuda

from hmnumba import HMatrix, backend
from hmnumba.backend import resolve_backend
from hmnumba.kernels import laplace
from hmnumba.kernels.common_cuda import is_device_array


@pytest.fixture(scope="module")
def pair():
    """A small kernel matrix with dense and low-rank blocks, and its H-matrix."""
    rng = np.random.default_rng(5)
    X = rng.random((96, 2))
    A = laplace(X, X + [1.5, 0.0])
    return A, HMatrix.from_dense(A, tol=1e-8, leaf_size=16)


def test_resolve_backend_names():
    assert resolve_backend("cpu") == "cpu"
    assert resolve_backend("cuda") == "cuda"  # the simulator counts as a GPU


def test_auto_never_picks_the_simulator_and_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_backend("auto") == "cpu"


@pytest.mark.parametrize("bad", ["gpu", "CUDA", None, 1])
def test_unknown_backend_is_an_error_naming_the_argument(bad):
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend(bad)
    with pytest.raises(ValueError, match="backend must be one of"):
        HMatrix.from_dense(np.eye(8), backend=bad)


def test_cuda_without_gpu_or_simulator_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(backend, "simulator_enabled", lambda: False)
    monkeypatch.setattr(backend, "gpu_available", lambda: False)
    with pytest.raises(ValueError, match="backend='cuda' but no CUDA GPU"):
        resolve_backend("cuda")
    with pytest.raises(ValueError, match="backend='cuda' but no CUDA GPU"):
        HMatrix.from_dense(np.eye(8), backend="cuda")
    with pytest.raises(ValueError, match="device='cuda' but no CUDA GPU"):
        HMatrix.from_dense(np.eye(8)).to("cuda")
    assert resolve_backend("auto") == "cpu"


def test_to_round_trip_keeps_products(pair):
    A, H = pair
    x = np.linspace(-1.0, 1.0, A.shape[1])
    y_cpu = H @ x
    assert H.to("cuda") is H and H.device == "cuda"
    y_gpu = H @ x
    assert isinstance(y_gpu, np.ndarray)
    assert H.to("cpu").device == "cpu"
    np.testing.assert_allclose(y_gpu, y_cpu, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(H @ x, y_cpu)
    with pytest.raises(ValueError, match="device must be one of"):
        H.to("gpu")


def test_device_array_in_device_array_out(pair):
    A, H = pair
    H.to("cuda")
    try:
        x = np.random.default_rng(0).standard_normal((A.shape[1], 3))
        Y = H.matmat(cuda.to_device(x))
        assert is_device_array(Y)
        assert Y.shape == (A.shape[0], 3)
        np.testing.assert_allclose(Y.copy_to_host(), H.to("cpu").matmat(x), rtol=1e-12)
    finally:
        H.to("cpu")


def test_device_operand_on_cpu_matrix_or_of_wrong_shape_is_an_error(pair):
    A, H = pair
    with pytest.raises(ValueError, match="call H.to\\('cuda'\\) first"):
        H.matvec(cuda.to_device(np.ones(A.shape[1])))
    H.to("cuda")
    try:
        with pytest.raises(ValueError, match="dimension mismatch"):
            H.matvec(cuda.to_device(np.ones(A.shape[1] + 1)))
        with pytest.raises(TypeError, match="float32 or float64 device array"):
            H.matvec(cuda.to_device(np.ones(A.shape[1], dtype=np.int64)))
    finally:
        H.to("cpu")


def test_from_dense_backend_cuda_returns_a_device_matrix(pair):
    A, H = pair
    Hg = HMatrix.from_dense(A, tol=1e-8, leaf_size=16, backend="cuda")
    assert Hg.device == "cuda"
    np.testing.assert_array_equal(Hg.data, H.data)
    # The transpose follows its matrix; a pickled copy comes back on the CPU.
    assert Hg.T.device == "cuda"
    np.testing.assert_allclose(Hg.T @ np.ones(A.shape[0]), H.rmatvec(np.ones(A.shape[0])),
                               rtol=1e-12)
    assert pickle.loads(pickle.dumps(Hg)).device == "cpu"
    op = Hg.aslinearoperator()
    np.testing.assert_allclose(op.matvec(np.ones(A.shape[1])), H @ np.ones(A.shape[1]),
                               rtol=1e-12)


def test_symmetric_matrix_moves_to_the_device_with_every_block():
    """The CUDA kernels take every block stored: ``to("cuda")`` copies the
    expansion of a symmetric matrix; the products agree with the CPU's."""
    X = np.random.default_rng(12).random((300, 3))
    H = HMatrix.from_kernel(laplace, X, tol=1e-8, leaf_size=16)
    assert H.symmetric
    rng = np.random.default_rng(13)
    x, Y = rng.standard_normal(300), rng.standard_normal((300, 4))
    y_cpu, Z_cpu = H @ x, H @ Y
    H.to("cuda")
    assert H.device == "cuda" and H.symmetric
    np.testing.assert_allclose(H @ x, y_cpu, rtol=1e-12, atol=1e-12 * np.abs(y_cpu).max())
    np.testing.assert_allclose(H.rmatmat(Y), Z_cpu, rtol=1e-12, atol=1e-12 * np.abs(Z_cpu).max())
    H.to("cpu")
    assert np.array_equal(H @ x, y_cpu)


@pytest.mark.parametrize("admissibility", ["strong", "weak"])
def test_gpu_build_runs_the_cpu_loop_symmetric_and_look_ahead(admissibility):
    # One build loop: the device build stores the upper triangle of a
    # symmetric kernel, and under weak admissibility tries the children of
    # poorly compressed blocks (look-ahead) and coarsens, as the CPU build does.
    X = np.random.default_rng(14).random((200, 3))
    H = HMatrix.from_kernel(laplace, X, tol=1e-6, leaf_size=16, backend="cuda",
                            admissibility=admissibility)
    assert H.symmetric and H.device == "cuda"
    assert np.all((H.row_stop <= H.col_start) | ((H.row_start == H.col_start)
                                                  & (H.row_stop == H.col_stop)))
    C = HMatrix.from_kernel(laplace, X, tol=1e-6, leaf_size=16, backend="cpu",
                            admissibility=admissibility)
    # The same loop with the same tree; ranks as ACA finds them on either side.
    np.testing.assert_array_equal(H.row_perm, C.row_perm)
    assert C.symmetric and H.nbytes <= 1.1 * C.nbytes
    K = laplace(X, X)
    x = np.random.default_rng(15).standard_normal(200)
    err = np.linalg.norm(H @ x - K @ x) / np.linalg.norm(K @ x)
    assert err < 1e-5
    assert H.params["n_rounds"] >= 1
    R = HMatrix.from_kernel(laplace, X, tol=1e-6, leaf_size=16, backend="cuda",
                            symmetric=False, admissibility=admissibility)
    assert not R.symmetric and R.n_blocks > H.n_blocks


@pytest.mark.parametrize("structure", ["global low rank", "dense", "hierarchical"])
def test_every_from_dense_structure_moves_to_the_device(structure):
    # One block in the original order (no permutation), or a tree whose
    # subtrees the cheaper_subtrees pass replaced: the device products agree.
    rng = np.random.default_rng(11)
    if structure == "global low rank":
        A = rng.standard_normal((120, 6)) @ rng.standard_normal((6, 90))
    elif structure == "dense":
        A = rng.standard_normal((64, 40))
    else:
        x = np.sort(rng.random(300))
        A = 1.0 / (1.0 + 10.0 * np.abs(x[:, None] - x[None, :]))
    H = HMatrix.from_dense(A, tol=1e-6, leaf_size=16)
    assert H.params["stored_as"] == structure
    v = rng.standard_normal(A.shape[1])
    expected = H @ v
    D = pickle.loads(pickle.dumps(H)).to("cuda")
    np.testing.assert_allclose(D @ v, expected, rtol=1e-12, atol=1e-12)
    w = rng.standard_normal(A.shape[0])
    np.testing.assert_allclose(D.T @ w, H.T @ w, rtol=1e-12, atol=1e-12)
