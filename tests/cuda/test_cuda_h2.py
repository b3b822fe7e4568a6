"""CUDA products of H^2 matrices (``H2Matrix.to("cuda")``,
:mod:`hmnumba.kernels.h2_products_cuda`) against the CPU products.

Kernel matrices: stored (dense and low-rank couplings, transfer matrices,
float64 and float32 storage) and on the fly; general matrices from dense
arrays, products and transposed products; symmetric general matrices
(converted from a symmetric HMatrix: mirrored blocks stored once, read
flipped). The matrices are small (the
simulator runs every CUDA thread in Python) but each one exercises every
part of its product; the fixtures check that they do.
"""
import copy
import pickle

import numpy as np
import pytest

from hmnumba import H2Matrix, HMatrix, backend
from hmnumba.kernels import assemble_dense, exponential, gaussian, laplace
from hmnumba.kernels.h2_products_cuda import to_device

# Device and CPU sum the same stored numbers in float64: they agree to
# rounding. On the fly with float32 storage, the CPU evaluates 3-D Laplace
# entries in float32 and the device in float64.
RTOL_SAME_ENTRIES = 1e-12
RTOL_FLOAT32_ENTRIES = 1e-6


def _relative(got, want):
    return np.linalg.norm(got - want) / np.linalg.norm(want)


def _kernel_matrix(kernel, n, dim, tol, leaf_size, mode):
    X = np.random.default_rng(0).random((n, dim))
    return H2Matrix.from_kernel(kernel, X, tol=tol, leaf_size=leaf_size, mode=mode)


# name: (kernel, n, dim, tol, leaf_size, mode, storage dtype)
KERNEL_CASES = {
    "stored-f64": (exponential.with_length_scale(0.5), 200, 2, 5e-7, 16, "stored", np.float64),
    "stored-f32": (laplace, 250, 2, 1e-4, 32, "stored", np.float32),
    "on-the-fly-f64": (gaussian.with_length_scale(0.1), 150, 1, 1e-8, 16, "on-the-fly",
                       np.float64),
    "on-the-fly-f32": (laplace, 120, 3, 1e-2, 16, "on-the-fly", np.float32),
}


@pytest.fixture(scope="module", params=sorted(KERNEL_CASES))
def kernel_pair(request):
    """``(name, H on the CPU, a copy of H on the device)``."""
    kernel, n, dim, tol, leaf_size, mode, dtype = KERNEL_CASES[request.param]
    H = _kernel_matrix(kernel, n, dim, tol, leaf_size, mode)
    a = H._a
    assert a["T"].dtype == dtype and a["T"].size > 0        # transfer matrices act
    assert a["cb_t"].size > 0 and a["nb_t"].size > 0
    if mode == "stored":
        assert a["lb_t"].size > 0                            # couplings stored as factors
    G = pickle.loads(pickle.dumps(H)).to("cuda")
    return request.param, H, G


@pytest.mark.parametrize("rhs", [None, 2], ids=["matvec", "matmat"])
def test_kernel_products_equal_cpu_and_repeat_bit_for_bit(kernel_pair, rhs):
    name, H, G = kernel_pair
    assert G.device == "cuda" and H.device == "cpu"
    x = np.random.default_rng(1).standard_normal(H.shape[1] if rhs is None else (H.shape[1], rhs))
    want = H @ x
    got = G @ x
    assert isinstance(got, np.ndarray) and got.shape == want.shape and got.dtype == np.float64
    rtol = RTOL_FLOAT32_ENTRIES if name == "on-the-fly-f32" else RTOL_SAME_ENTRIES
    assert _relative(got, want) <= rtol
    # a second run (the transposed product of the symmetric matrix) has the same bits
    assert np.array_equal(G.rmatvec(x) if rhs is None else G.rmatmat(x), got)


# storage: (tol, from_dense options)
GENERAL_CASES = {"float64": (1e-8, dict(cluster="index", admissibility="weak")),
                 "float32": (1e-4, dict(cluster="pca", admissibility="adaptive", random_state=0))}


@pytest.fixture(scope="module", params=sorted(GENERAL_CASES))
def general_pair(request):
    """``(H on the CPU, a copy on the device)``: a 90 x 70 array's H^2 matrix."""
    x = np.linspace(0.0, 1.0, 90)
    y = np.linspace(0.0, 1.0, 70)
    W = 1.0 / (1.0 + 30.0 * np.abs(x[:, None] - y[None, :] - 0.05))
    tol, options = GENERAL_CASES[request.param]
    H = H2Matrix.from_dense(W, tol=tol, leaf_size=16, storage=request.param, **options)
    a = H._a
    assert a["c_data"].dtype == np.dtype(request.param) and a["c_data"].size > 0
    assert (H.ranks > 0).any() and (H.col_ranks > 0).any() and a["n_data"].size > 0
    inner_rows = a["row_children"][:, 0] >= 0
    inner_cols = a["col_children"][:, 0] >= 0
    assert (H.ranks[inner_rows] > 0).any() and (H.col_ranks[inner_cols] > 0).any()   # transfers
    return H, pickle.loads(pickle.dumps(H)).to("cuda")


@pytest.mark.parametrize("op,side,rhs", [("matvec", 1, None), ("matmat", 1, 2),
                                         ("rmatvec", 0, None), ("rmatmat", 0, 2)])
def test_general_products_equal_cpu(general_pair, op, side, rhs):
    H, G = general_pair
    n = H.shape[side]
    x = np.random.default_rng(3).standard_normal(n if rhs is None else (n, rhs))
    want = getattr(H, op)(x)
    got = getattr(G, op)(x)
    assert got.shape == want.shape and got.dtype == np.float64
    assert _relative(got, want) <= RTOL_SAME_ENTRIES


def test_general_repeated_transposed_products_have_the_same_bits(general_pair):
    _, G = general_pair
    x = np.random.default_rng(4).standard_normal(G.shape[0])
    assert np.array_equal(G.rmatvec(x), G.rmatvec(x))


@pytest.mark.parametrize("op,side,rhs", [("matvec", 1, None), ("rmatmat", 0, 2)])
def test_one_node_h2_products_equal_cpu(op, side, rhs):
    """A low-rank array's H^2 matrix: one coupling between one-node trees."""
    rng = np.random.default_rng(5)
    W = rng.standard_normal((60, 4)) @ rng.standard_normal((4, 50))
    H = H2Matrix.from_dense(W, tol=1e-6, random_state=0)
    assert H._a["row_children"].shape[0] == 1 and H._a["col_children"].shape[0] == 1
    G = pickle.loads(pickle.dumps(H)).to("cuda")
    x = rng.standard_normal(H.shape[side] if rhs is None else (H.shape[side], rhs))
    want = getattr(H, op)(x)
    assert _relative(getattr(G, op)(x), want) <= RTOL_SAME_ENTRIES


# storage: the symmetric H-matrix of 3-D Laplace on 300 points that
# H2Matrix.from_hmatrix converts. (At tol=1e-6 so few points have no
# admissible block stored as factors: no couplings to test.)
SYMMETRIC_CASES = {
    "float64": lambda K: HMatrix.from_kernel(laplace, K[1], tol=1e-3, leaf_size=16),
    "float32": lambda K: HMatrix.from_dense(K[0].astype(np.float32), tol=1e-3, leaf_size=16,
                                            symmetric=True),
}


@pytest.fixture(scope="module")
def laplace_300():
    X = np.random.default_rng(0).random((300, 3))
    return assemble_dense(laplace, X), X


@pytest.fixture(scope="module", params=sorted(SYMMETRIC_CASES))
def symmetric_pair(request, laplace_300):
    """``(G on the CPU, a copy on the device)``: a symmetric general H^2
    matrix with couplings and near-field blocks read through their mirrors."""
    H = SYMMETRIC_CASES[request.param](laplace_300)
    assert H.symmetric
    G = H2Matrix.from_hmatrix(H)
    a = G._a
    assert G.symmetric and a["c_data"].dtype == np.dtype(request.param)
    assert a["col_vp"] is a["row_vp"] and "c_tptr" not in a
    for name in ("c", "n"):
        flip = a[name + "_flip"]
        assert 0 < flip.sum() < flip.size                     # mirrored entries read flipped
    inner = a["row_children"][:, 0] >= 0
    assert (G.ranks[inner] > 0).any()                         # transfer matrices act
    return G, pickle.loads(pickle.dumps(G)).to("cuda")


@pytest.mark.parametrize("op,rhs", [("matvec", None), ("matmat", 2), ("rmatvec", None)])
def test_symmetric_general_products_equal_cpu(symmetric_pair, op, rhs):
    H, G = symmetric_pair
    x = np.random.default_rng(6).standard_normal(H.shape[1] if rhs is None else (H.shape[1], rhs))
    want = getattr(H, op)(x)
    got = getattr(G, op)(x)
    assert G.device == "cuda" and got.shape == want.shape and got.dtype == np.float64
    assert _relative(got, want) <= RTOL_SAME_ENTRIES
    # H^T = H: the transposed product runs the forward lists, the same bits
    assert np.array_equal(G.matvec(x) if rhs is None else G.matmat(x), got)


def test_symmetric_general_device_arrays_have_one_side():
    from hmnumba.kernels.h2_products_cuda import apply
    X = np.random.default_rng(0).random((300, 3))
    H = H2Matrix.from_hmatrix(HMatrix.from_kernel(laplace, X, tol=1e-3, leaf_size=16))
    dev = to_device(H)
    assert dev["symmetric"] and dev["col"] is dev["row"]
    assert "c_t" not in dev and "n_t" not in dev
    xp = np.random.default_rng(7).standard_normal((300, 1))
    assert np.array_equal(apply(dev, xp, trans=True), apply(dev, xp))


def test_symmetric_near_field_between_inner_nodes_is_refused():
    X = np.random.default_rng(0).random((300, 3))
    H = copy.copy(H2Matrix.from_hmatrix(HMatrix.from_kernel(laplace, X, tol=1e-3,
                                                              leaf_size=16)))
    H._a = dict(H._a)
    H._a["n_ptr"] = H._a["n_ptr"].copy()
    H._a["n_ptr"][1:] += 1               # the root (an inner node) gets a near-field block
    with pytest.raises(ValueError, match="needs leaf pairs"):
        to_device(H)


def test_to_returns_self_and_to_cpu_drops_the_device_copy():
    H = _kernel_matrix(laplace, 100, 2, 1e-8, 32, "stored")
    x = np.random.default_rng(5).standard_normal(100)
    want = H @ x
    assert H.to("cuda") is H and H.device == "cuda"
    assert H.to("cuda") is H                  # already there: nothing copied again
    device_copy = H._device_arrays
    H.to("cuda")
    assert H._device_arrays is device_copy
    assert H.to("cpu") is H and H.device == "cpu" and H._device_arrays is None
    assert np.array_equal(H @ x, want)        # the CPU product again, bit for bit


def test_pickled_device_matrix_comes_back_on_the_cpu():
    H = _kernel_matrix(laplace, 100, 2, 1e-8, 32, "stored").to("cuda")
    G = pickle.loads(pickle.dumps(H))
    assert G.device == "cpu" and H.device == "cuda"
    x = np.ones(100)
    assert _relative(G @ x, H @ x) <= RTOL_SAME_ENTRIES


def test_unknown_device_is_an_error_naming_the_argument():
    H = _kernel_matrix(laplace, 100, 2, 1e-8, 32, "stored")
    with pytest.raises(ValueError, match="device must be one of"):
        H.to("gpu")
    assert H.device == "cpu"


def test_cuda_without_gpu_or_simulator_is_a_clear_error(monkeypatch):
    H = _kernel_matrix(laplace, 100, 2, 1e-8, 32, "stored")
    monkeypatch.setattr(backend, "simulator_enabled", lambda: False)
    monkeypatch.setattr(backend, "gpu_available", lambda: False)
    with pytest.raises(ValueError, match="device='cuda' but no CUDA GPU"):
        H.to("cuda")
    assert H.device == "cpu"


def test_general_near_field_between_inner_nodes_is_refused():
    W = np.add.outer(np.arange(40.0), np.arange(30.0)) ** 0.5
    H = copy.copy(H2Matrix.from_dense(W, tol=1e-6, leaf_size=8, cluster="index",
                                      admissibility="weak"))     # a tree (no one-node pair)
    H._a = dict(H._a)
    H._a["n_ptr"] = H._a["n_ptr"].copy()
    H._a["n_ptr"][1:] += 1               # the root (an inner node) gets a near-field block
    with pytest.raises(ValueError, match="needs leaf pairs"):
        to_device(H)


def test_compressor_with_h2_format_runs_its_products_on_the_device():
    from hmnumba import HMatrixCompressor
    W = np.random.default_rng(1).standard_normal((60, 48)) @ np.diag(0.8 ** np.arange(48))
    X = np.random.default_rng(2).standard_normal((5, 48))
    cpu = HMatrixCompressor(tol=1e-3, leaf_size=8, format="h2", backend="cpu").fit(W)
    gpu = HMatrixCompressor(tol=1e-3, leaf_size=8, format="h2", backend="cuda").fit(W)
    assert cpu.hmatrix_.device == "cpu" and gpu.hmatrix_.device == "cuda"
    assert _relative(gpu.transform(X), cpu.transform(X)) <= RTOL_SAME_ENTRIES
    Y = np.random.default_rng(3).standard_normal((5, 60))
    assert _relative(gpu.adjoint_transform(Y), cpu.adjoint_transform(Y)) <= RTOL_SAME_ENTRIES
