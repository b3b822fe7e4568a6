"""HMatrix among its neighbours: SciPy's LinearOperator contract, arithmetic,
numpy functions, HMatrix.load, the block picture, warnings and logging."""
import logging
import warnings

import numpy as np
import pytest
from scipy.sparse.linalg import LinearOperator, aslinearoperator, lobpcg

from hmnumba import CompressionWarning, HMatrix

N = 200


@pytest.fixture(scope="module")
def A():
    x = np.linspace(0.0, 1.0, N)
    return np.exp(-np.abs(x[:, None] - x[None, :])) + 0.1 * np.outer(np.sin(5 * x), x)


@pytest.fixture(scope="module")
def H(A):
    return HMatrix.from_dense(A, tol=1e-10, leaf_size=16, random_state=0)


@pytest.fixture(scope="module")
def R():
    """A rectangular matrix (3 x more rows than columns)."""
    s = np.linspace(0.0, 1.0, 150)
    t = np.linspace(0.0, 1.0, 50)
    M = 1.0 / (1.0 + np.abs(s[:, None] - t[None, :]))
    return M, HMatrix.from_dense(M, tol=1e-10, leaf_size=16, random_state=0)


# ------------------------------------------------- SciPy LinearOperator contract

def test_matvec_and_rmatvec_take_a_column_and_return_a_column(R):
    M, H = R
    x = np.arange(50.0)[:, None]
    y = np.arange(150.0)[:, None]
    assert H.matvec(x).shape == (150, 1) and H.rmatvec(y).shape == (50, 1)
    np.testing.assert_allclose(H.matvec(x)[:, 0], H.matvec(x[:, 0]), rtol=0, atol=0)
    np.testing.assert_allclose(H.rmatvec(y), M.T @ y, rtol=1e-8)
    op = H.aslinearoperator()
    assert op.matvec(x).shape == (150, 1) and op.rmatvec(y).shape == (50, 1)


def test_matvec_refuses_several_columns(R):
    _, H = R
    with pytest.raises(ValueError, match=r"x must be 1-D.*\(50, 1\).*matmat"):
        H.matvec(np.ones((50, 2)))
    with pytest.raises(ValueError, match=r"y must be 1-D.*\(150, 1\).*rmatmat"):
        H.rmatvec(np.ones((150, 2)))


def test_lobpcg_with_one_vector_finds_the_largest_eigenvalue(A, H):
    S = HMatrix.from_dense(A + A.T, tol=1e-10, leaf_size=16, random_state=0)
    X = np.random.default_rng(0).standard_normal((N, 1))
    vals, _ = lobpcg(S.aslinearoperator(), X, maxiter=500, tol=1e-9)
    assert vals[0] == pytest.approx(np.linalg.eigvalsh(A + A.T)[-1], rel=1e-7)


def test_dot_H_and_adjoint(R):
    M, H = R
    x = np.linspace(-1.0, 1.0, 50)
    np.testing.assert_allclose(H.dot(x), M @ x, rtol=1e-8)
    np.testing.assert_allclose(H.dot(x[:, None]), (M @ x)[:, None], rtol=1e-8)
    assert H.H.shape == (50, 150) and H.adjoint().shape == (50, 150)
    np.testing.assert_allclose(H.H.to_dense(), M.T, atol=1e-9)


def test_np_dot_is_the_product_and_other_numpy_functions_say_what_to_do(R):
    M, H = R
    x = np.linspace(-1.0, 1.0, 50)
    y = np.linspace(-1.0, 1.0, 150)
    np.testing.assert_allclose(np.dot(H, x), M @ x, rtol=1e-8)
    np.testing.assert_allclose(np.dot(y, H), y @ M, rtol=1e-8)
    with pytest.raises(TypeError, match=r"numpy.linalg.norm does not take an HMatrix.*to_dense"):
        np.linalg.norm(H)


# ------------------------------------------------------------------ arithmetic

@pytest.mark.parametrize("c", [2.0, -0.5, 3, np.float64(0.25), np.float32(4.0)])
def test_real_multiples_are_exact_hmatrices_with_scaled_errors(R, c):
    M, H = R
    for scaled in (c * H, H * c):
        assert isinstance(scaled, HMatrix)
        np.testing.assert_allclose(scaled.to_dense(), float(c) * H.to_dense(), rtol=1e-14,
                                   atol=1e-14)
        assert scaled.norm == pytest.approx(abs(float(c)) * H.norm)
        np.testing.assert_allclose(scaled.block_errors, abs(float(c)) * H.block_errors)
        assert scaled.error_bound == pytest.approx(H.error_bound)
        assert scaled.nbytes == H.nbytes
    np.testing.assert_allclose((H / 4).to_dense(), H.to_dense() / 4)
    np.testing.assert_array_equal((-H).to_dense(), -H.to_dense())


def test_multiples_of_a_symmetric_matrix_stay_symmetric():
    x = np.linspace(0.0, 1.0, 120)
    A = np.exp(-np.abs(x[:, None] - x[None, :]))
    S = HMatrix.from_dense(A, tol=1e-8, leaf_size=16, symmetric=True)
    T = -2.0 * S
    assert T.symmetric
    v = np.cos(x)
    np.testing.assert_allclose(T @ v, -2.0 * (S @ v), rtol=1e-14)


def test_sums_and_differences_are_lazy_scipy_operators(A, H):
    v = np.linspace(0.0, 1.0, N)
    for op, ref in ((H + H, 2 * A), (H - 2.0 * H, -A), (H + aslinearoperator(A), 2 * A),
                    (aslinearoperator(A) - H, 0 * A)):
        assert isinstance(op, LinearOperator) and op.shape == (N, N)
        np.testing.assert_allclose(op @ v, ref @ v, atol=1e-7)
    with pytest.raises(ValueError, match="cannot add"):
        H + aslinearoperator(np.ones((3, N)))


def test_product_of_two_operators_is_lazy(R):
    M, H = R
    G = H.T @ H
    assert isinstance(G, LinearOperator) and G.shape == (50, 50)
    x = np.linspace(0.0, 1.0, 50)
    np.testing.assert_allclose(G @ x, M.T @ (M @ x), rtol=1e-8)
    with pytest.raises(ValueError, match="dimension mismatch"):
        H @ H


def test_unsupported_operands_are_type_errors(H):
    with pytest.raises(TypeError):
        H + 1.0
    with pytest.raises(TypeError):
        H * np.ones(N)
    with pytest.raises(TypeError):
        (1 + 2j) * H
    with pytest.raises(ZeroDivisionError):
        H / 0


# ------------------------------------------------------------ load and plot

def test_load_classmethod_reads_what_save_wrote(H, tmp_path):
    H.save(tmp_path / "h.hmz")
    G = HMatrix.load(tmp_path / "h.hmz")
    assert isinstance(G, HMatrix)
    np.testing.assert_array_equal(G.to_dense(), H.to_dense())


def test_plot_draws_every_block_with_a_rank_colour_bar(H):
    pytest.importorskip("matplotlib")
    from matplotlib.collections import PolyCollection
    from matplotlib.figure import Figure
    fig = Figure()
    ax = H.plot(ax=fig.subplots())
    polys = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert sum(len(c.get_paths()) for c in polys) == H.n_blocks
    assert len(fig.axes) == 2                       # the axes and the colour bar
    n_lowrank = int((H.rank >= 0).sum())
    assert f"{H.n_blocks} blocks" in ax.get_title()
    assert f"{H.n_blocks - n_lowrank} dense" in ax.get_title()
    assert ax.get_xlim() == (0.0, N) and ax.get_ylim() == (N, 0.0)
    assert fig.axes[1].get_ylim()[1] == pytest.approx(max(1, H.rank.max()))


def test_plot_shows_the_mirrored_blocks_of_a_symmetric_matrix():
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure
    x = np.linspace(0.0, 1.0, 160)
    S = HMatrix.from_dense(np.exp(-np.abs(x[:, None] - x[None, :])), tol=1e-8,
                           leaf_size=16, symmetric=True)
    ax = S.plot(ax=Figure().subplots())
    n_drawn = S.n_blocks + int(S._strictly_upper.sum())
    assert ax.get_title().startswith(f"HMatrix 160 x 160: {n_drawn} blocks")


def test_plot_without_matplotlib_names_the_extra(H, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"matplotlib.*hmnumba\[plot\]"):
        H.plot()


# ------------------------------------------------------- warnings and logging

def test_compression_that_stores_more_than_dense_warns():
    noise = np.random.default_rng(0).standard_normal((64, 48))
    with pytest.warns(CompressionWarning, match=r"compression ratio 0\.\d\d < 1"):
        H = HMatrix.from_dense(noise, tol=1e-6)
    assert H.compression_ratio < 1


def test_compression_that_saves_memory_does_not_warn(A):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        H = HMatrix.from_dense(A, tol=1e-4)
    assert H.compression_ratio > 1


def test_builds_log_start_and_end_to_the_hmnumba_logger(A, caplog):
    with caplog.at_level(logging.INFO, logger="hmnumba"):
        H = HMatrix.from_dense(A, tol=1e-4)
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("hmnumba")]
    assert any(m.startswith(f"from_dense: compressing a {N} x {N} float64") for m in messages)
    end = [m for m in messages if m.startswith("from_dense: built in")]
    assert len(end) == 1 and f"{H.n_blocks} blocks" in end[0]


def test_long_builds_report_each_round(A, caplog):
    # The progress of a build: one INFO line per round of the adaptive loop.
    with caplog.at_level(logging.INFO, logger="hmnumba"):
        H = HMatrix.from_dense(A, tol=1e-4, structure="hierarchical")
    rounds = [r.getMessage() for r in caplog.records if r.name == "hmnumba.construct"]
    assert len(rounds) == H.params["n_rounds"] >= 1
    assert rounds[0].startswith("build round 1: ") and "candidates" in rounds[0]
