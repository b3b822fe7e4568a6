"""Built-in kernel functions, dense assembly, user kernels and
:meth:`HMatrix.from_kernel` accuracy on the standard point sets."""
import numba
import numpy as np
import pytest

from hmnumba import HMatrix
from hmnumba.kernel_functions import as_kernel
from hmnumba.kernels import (KernelFunction, assemble_dense, exponential, gaussian, laplace,
                             matern32, sources)
from reference import (KERNEL_NAMES, dense_kernel_matrix, dense_kernel_matrix_vectorized,
                       relative_error)

BUILTIN = {"laplace": laplace, "gaussian": gaussian, "exponential": exponential,
           "matern32": matern32}

CUTOFF = 3.0


@numba.njit
def truncated_gaussian(x, y):
    """exp(-r^2 / 2) for r < 3, else 0: equals the built-in gaussian on point
    sets of diameter below 3, and has compact support beyond.

    The one user kernel of this module: every distinct user kernel costs a
    fresh (uncacheable) compilation of the construction code."""
    d = 0.0
    for k in range(x.shape[0]):
        t = x[k] - y[k]
        d += t * t
    return np.exp(-0.5 * d) if d < CUTOFF * CUTOFF else 0.0


def truncated_gaussian_reference(X, Y):
    K = dense_kernel_matrix("gaussian", X, Y)
    r = np.sqrt(((X[:, None, :] - Y[None, :, :]) ** 2).sum(-1))
    return np.where(r < CUTOFF, K, 0.0)


@pytest.fixture(scope="module")
def small_points():
    rng = np.random.default_rng(0)
    X = rng.random((23, 3))
    Y = np.vstack([rng.random((16, 3)), X[:3]])  # coincident points: r = 0 off the diagonal
    return X, Y


def unit_sphere(n, seed):
    P = np.random.default_rng(seed).standard_normal((n, 3))
    return P / np.linalg.norm(P, axis=1, keepdims=True)


# ---------------------------------------------------------------- formulas


@pytest.mark.parametrize("name", KERNEL_NAMES)
@pytest.mark.parametrize("length_scale", [1.0, 0.37])
def test_builtin_kernel_matches_reference_formula(name, length_scale, small_points):
    X, Y = small_points
    kern = BUILTIN[name].with_length_scale(length_scale)
    K = kern(X, Y)
    ref = dense_kernel_matrix(name, X, Y, length_scale=length_scale)
    assert K.shape == (X.shape[0], Y.shape[0])
    assert K.dtype == np.float64
    np.testing.assert_allclose(K, ref, rtol=1e-13, atol=0.0)


def test_laplace_is_zero_at_coincident_points(small_points):
    X, Y = small_points
    assert np.all(np.diag(laplace(X)) == 0.0)
    assert np.all(laplace(X, Y)[np.arange(3), Y.shape[0] - 3 + np.arange(3)] == 0.0)


def test_vectorized_reference_agrees_with_the_double_loop(small_points):
    X, Y = small_points
    for name in KERNEL_NAMES:
        np.testing.assert_allclose(dense_kernel_matrix_vectorized(name, X, Y, 0.6),
                                   dense_kernel_matrix(name, X, Y, 0.6), rtol=1e-13, atol=0.0)


def test_kernel_function_metadata():
    assert laplace.name == "laplace"
    assert gaussian.with_length_scale(2.0).length_scale == 2.0
    assert gaussian.with_length_scale(2.0) == KernelFunction("gaussian", 2.0)
    assert "exp" in matern32.formula
    with pytest.raises(ValueError, match="name"):
        KernelFunction("cauchy")
    with pytest.raises(ValueError, match="length_scale"):
        KernelFunction("gaussian", length_scale=0.0)


# ---------------------------------------------------------------- assembly


@pytest.mark.parametrize("name", KERNEL_NAMES)
def test_assemble_dense_with_builtin_kernel(name, small_points):
    X, Y = small_points
    np.testing.assert_allclose(assemble_dense(BUILTIN[name], X, Y),
                               dense_kernel_matrix(name, X, Y), rtol=1e-13, atol=0.0)
    np.testing.assert_allclose(assemble_dense(BUILTIN[name], X),
                               dense_kernel_matrix(name, X), rtol=1e-13, atol=0.0)


def test_assemble_dense_with_user_njit_kernel():
    rng = np.random.default_rng(1)
    X = rng.random((20, 2)) * 4.0   # diameter > 3: both branches of the kernel
    Y = rng.random((13, 2)) * 4.0
    np.testing.assert_allclose(assemble_dense(truncated_gaussian, X, Y),
                               truncated_gaussian_reference(X, Y), rtol=1e-13, atol=0.0)


def test_assemble_dense_accepts_one_dimensional_points():
    x = np.linspace(0.0, 1.0, 7)
    np.testing.assert_allclose(assemble_dense(exponential, x),
                               dense_kernel_matrix("exponential", x[:, None]), rtol=1e-13)


# ------------------------------------------------------------- from_kernel


@pytest.mark.slow
def test_user_kernel_hmatrix_equals_builtin_equivalent():
    X = np.random.default_rng(2).random((700, 2))      # diameter < 3: same kernel
    K = dense_kernel_matrix_vectorized("gaussian", X)
    H_user = HMatrix.from_kernel(truncated_gaussian, X, tol=1e-6)
    H_builtin = HMatrix.from_kernel(gaussian, X, tol=1e-6)
    assert relative_error(K, H_user.to_dense()) <= 1e-5
    assert relative_error(K, H_builtin.to_dense()) <= 1e-5
    assert relative_error(H_builtin.to_dense(), H_user.to_dense()) <= 2e-5


def test_probing_exposes_what_aca_misses_on_a_discontinuous_kernel():
    # The truncated Gaussian jumps by exp(-4.5) at r = 3: blocks straddling
    # the jump are not low rank along a diagonal line, and no sampling
    # stopping rule of partial-pivoting ACA can see that from a few rows.
    # The documented safeguard for kernels is estimate_error: it must report
    # the true error (here far above tol), not ACA's optimistic estimate.
    X = np.sort(np.random.default_rng(0).random(1500))[:, None] * 10.0
    H = HMatrix.from_kernel(truncated_gaussian, X, tol=1e-6, leaf_size=16)
    K = truncated_gaussian_reference(X, X)
    err = relative_error(K, H.to_dense())
    probe = H.estimate_error(n_probe=16, n_rows=1500, random_state=0)
    assert 0.5 * err <= probe <= 2.0 * err
    assert err < 1e-2   # still a usable approximation


@pytest.fixture(scope="module")
def cube_points():
    return np.random.default_rng(3).random((3000, 3))


@pytest.fixture(scope="module")
def sphere_points():
    return unit_sphere(3000, seed=4)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["cube", "sphere"])
def test_laplace_on_3000_points_meets_1e_minus_5(where, cube_points, sphere_points):
    X = cube_points if where == "cube" else sphere_points
    H = HMatrix.from_kernel(laplace, X, tol=1e-6, leaf_size=32, admissibility="strong",
                            eta=2.0)
    assert H.shape == (3000, 3000)
    assert H.estimate_error(random_state=0) <= 1e-5
    K = dense_kernel_matrix_vectorized("laplace", X)
    assert relative_error(K, H.to_dense()) <= 1e-5
    assert H.error_bound <= 1e-6
    assert H.compression_ratio > 1.0


@pytest.mark.parametrize("name", ["gaussian", "exponential", "matern32"])
@pytest.mark.parametrize("length_scale", [1.0, 0.2])
def test_smooth_kernels_at_tol_1e_minus_4(name, length_scale):
    X = np.random.default_rng(5).random((1500, 2))
    kern = BUILTIN[name].with_length_scale(length_scale)
    H = HMatrix.from_kernel(kern, X, tol=1e-4)
    K = dense_kernel_matrix_vectorized(name, X, length_scale=length_scale)
    assert relative_error(K, H.to_dense()) <= 1e-3
    assert H.estimate_error(random_state=1) <= 1e-3
    assert H.error_bound <= 1e-4


def test_rectangular_kernel_matrix_with_col_points():
    rng = np.random.default_rng(6)
    X = rng.random((1200, 2))
    Y = rng.random((700, 2)) + np.array([1.5, 0.0])
    H = HMatrix.from_kernel(laplace, X, col_points=Y, tol=1e-6)
    assert H.shape == (1200, 700)
    K = dense_kernel_matrix_vectorized("laplace", X, Y)
    assert relative_error(K, H.to_dense()) <= 1e-5
    assert H.compression_ratio > 5
    y = rng.standard_normal(1200)
    assert np.linalg.norm(H.rmatvec(y) - K.T @ y) <= 1e-5 * np.linalg.norm(K) * np.linalg.norm(y)


@pytest.mark.parametrize("admissibility", ["weak", "adaptive"])
def test_laplace_with_weak_and_adaptive_admissibility(admissibility):
    X = np.random.default_rng(7).random((800, 2))
    H = HMatrix.from_kernel(laplace, X, tol=1e-6, admissibility=admissibility)
    assert relative_error(dense_kernel_matrix_vectorized("laplace", X), H.to_dense()) <= 1e-5


def test_size_budget_for_kernels_meets_the_tolerance():
    X = np.random.default_rng(8).random((1000, 3))
    H = HMatrix.from_kernel(laplace, X, tol=1e-6, budget="size", random_state=0)
    assert relative_error(dense_kernel_matrix_vectorized("laplace", X), H.to_dense()) <= 1e-5


@pytest.mark.parametrize("admissibility", ["strong", "weak", "adaptive"])
def test_from_kernel_with_fewer_points_than_a_leaf(admissibility):
    # One leaf cluster: the whole matrix is a single dense block.
    X = np.random.default_rng(10).random((20, 3))
    H = HMatrix.from_kernel(laplace, X, tol=1e-6, leaf_size=32, admissibility=admissibility)
    np.testing.assert_allclose(H.to_dense(), dense_kernel_matrix("laplace", X), rtol=1e-13)


def test_from_kernel_accepts_one_dimensional_points():
    x = np.linspace(0.0, 1.0, 400)
    H = HMatrix.from_kernel(exponential, x, tol=1e-8)
    K = dense_kernel_matrix_vectorized("exponential", x[:, None])
    assert relative_error(K, H.to_dense()) <= 1e-7


def test_estimate_error_of_a_dense_build_needs_the_matrix():
    A = dense_kernel_matrix_vectorized("gaussian", np.random.default_rng(9).random((200, 2)))
    H = HMatrix.from_dense(A, tol=1e-6)
    assert H.estimate_error(A, random_state=0) <= 1e-5
    with pytest.raises(ValueError, match="A"):
        H.estimate_error()


# ------------------------------------------------------------ entry sources
@numba.njit
def _reads(src, r0, r1, c0, c1):
    """A[r0:r1, c0:c1] read three ways: by rows, by columns and as a block."""
    by_row = np.empty((r1 - r0, c1 - c0))
    by_col = np.empty((r1 - r0, c1 - c0))
    block = np.empty((r1 - r0, c1 - c0))
    row = np.empty(c1 - c0)
    col = np.empty(r1 - r0)
    for i in range(r1 - r0):
        sources.fetch_row(src, r0 + i, c0, c1, row)
        by_row[i] = row
    for j in range(c1 - c0):
        sources.fetch_col(src, c0 + j, r0, r1, col)
        by_col[:, j] = col
    sources.fetch_block(src, r0, r1, c0, c1, block)
    return by_row, by_col, block


def _entry_sources():
    """(name, source, dense reference) for every kind of entry source."""
    rng = np.random.default_rng(3)
    X, Y = rng.random((9, 3)), rng.random((7, 3)) + 0.5
    FX, FY = rng.standard_normal((9, 4)), rng.standard_normal((7, 4))
    A = rng.standard_normal((9, 7))
    return [("dense", sources.dense_source(A), A),
            ("laplace", laplace.source(X, Y), dense_kernel_matrix("laplace", X, Y)),
            ("matern32", matern32.with_length_scale(0.7).source(X, Y),
             dense_kernel_matrix("matern32", X, Y, 0.7)),
            ("gram", sources.gram_source(FX, FY), FX @ FY.T),
            ("dense float32", sources.dense_source(A.astype(np.float32)),
             A.astype(np.float32).astype(np.float64)),
            ("user", as_kernel(truncated_gaussian).source(X, Y),
             truncated_gaussian_reference(X, Y))]


@pytest.mark.parametrize("case", range(6))
def test_every_entry_source_reads_rows_columns_and_blocks_of_its_matrix(case):
    name, src, ref = _entry_sources()[case]
    for got in _reads(src, 2, 8, 1, 6):
        np.testing.assert_allclose(got, ref[2:8, 1:6], rtol=1e-12, atol=1e-13, err_msg=name)


def test_dense_kernel_and_gram_sources_are_one_numba_type():
    """The tag, not the tuple's shape, tells them apart: one compiled build
    chain serves all three (float32 dense keeps its float32 entries)."""
    by_name = {name: src for name, src, _ in _entry_sources()}
    kinds = {name: sources.source_kind(src) for name, src in by_name.items()}
    assert kinds == {"dense": "dense", "laplace": "builtin", "matern32": "builtin",
                     "gram": "gram", "dense float32": "dense", "user": "user"}
    tagged = {numba.typeof(by_name[n]) for n in ("dense", "laplace", "matern32", "gram")}
    assert len(tagged) == 1
    assert by_name["dense float32"][2].dtype == np.float32
    assert numba.typeof(by_name["dense float32"]) not in tagged
    assert isinstance(numba.typeof(by_name["user"][0]), numba.types.Dispatcher)


def test_dense_and_kernel_builds_share_one_compiled_compression():
    from hmnumba.kernels import compress

    rng = np.random.default_rng(0)
    HMatrix.from_dense(rng.standard_normal((64, 4)) @ rng.standard_normal((4, 64)), tol=1e-6,
                       leaf_size=16)
    HMatrix.from_kernel(laplace, rng.random((300, 3)), tol=1e-6)
    float64_sources = {sig[2] for sig in compress._compress_slabs.signatures
                       if isinstance(sig[2], numba.types.BaseTuple)
                       and isinstance(sig[2][0], numba.types.Integer)
                       and sig[2][2].dtype == numba.types.float64}
    assert len(float64_sources) == 1
