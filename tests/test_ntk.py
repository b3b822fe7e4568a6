"""Tests of hmnumba.ntk: Jacobians and NTK entries against finite differences
(dense and H-matrix layers, both parametrisations), the NTK's response to
compression over a tol sweep (Theorem 2's constant C), comparisons and
spectra, and compress_ntk against the dense kernel."""
import numba
import numpy as np
import pytest
from scipy.sparse.linalg import LinearOperator

from hmnumba import HMatrix
from hmnumba.bounds import fit_ntk_constant
from hmnumba.ntk import (NTK, GramKernel, as_dense_model, compare_ntk, compress_ntk,
                         empirical_ntk, ntk_feature_map, ntk_jacobians, ntk_spectrum,
                         ntk_tol_sweep)
from hmnumba.pinn import PINN, HMatrixLayer, Heat1D, Poisson2D, train

H_STEP = 1e-6


# One numba and one BLAS thread, as in tests/pinn: the finite differences run
# thousands of tiny products (see the fixture in tests/conftest.py).
pytestmark = pytest.mark.usefixtures("single_threaded")


def _fd_jacobians(model, problem, x_u, x_r):
    """Central differences of u(x_u) and r(x_r) in every parameter."""
    theta = model.get_params()
    d = model.dim
    c = problem.lap_weights

    def outputs():
        u = model.predict(x_u)
        v, du, lap = model.derivatives(x_r, lap_weights=c)
        return u, problem.residual(x_r, v, du, lap)[0]

    J_u = np.empty((x_u.shape[0], theta.size))
    J_r = np.empty((x_r.shape[0], theta.size))
    for p in range(theta.size):
        e = np.zeros_like(theta)
        e[p] = H_STEP
        model.set_params(theta + e)
        up, rp = outputs()
        model.set_params(theta - e)
        um, rm = outputs()
        J_u[:, p] = (up - um) / (2 * H_STEP)
        J_r[:, p] = (rp - rm) / (2 * H_STEP)
    model.set_params(theta)
    assert d == x_u.shape[1]
    return J_u, J_r


def _hmatrix_net():
    """A [2, 24, 24, 1] network whose hidden layer is an H-matrix (HODLR
    partition, leaf size 6) with dense diagonal and low-rank off-diagonal
    blocks."""
    net = PINN([2, 24, 24, 1], init_rank=3, random_state=1)
    W = net.layers[1].W + 1e-3 * np.random.default_rng(2).standard_normal((24, 24))
    H = HMatrix.from_dense(W, tol=1e-2, leaf_size=6, admissibility="weak", cluster="index",
                           structure="hierarchical")
    assert (H.rank > 0).any() and (H.rank < 0).any()
    rng = np.random.default_rng(3)   # non-zero biases exercise every parameter
    layers = [net.layers[0], HMatrixLayer(H, 0.1 * rng.standard_normal(24)), net.layers[2]]
    for layer in (layers[0], layers[2]):
        layer.b[:] = 0.1 * rng.standard_normal(layer.b.size)
    return PINN.from_layers(layers, net.activation)


@pytest.fixture(scope="module")
def points():
    rng = np.random.default_rng(0)
    return rng.random((4, 2)), rng.random((5, 2))


@pytest.mark.parametrize("problem", [Poisson2D(), Heat1D()], ids=["poisson2d", "heat1d"])
def test_jacobians_and_ntk_match_finite_differences_dense(problem, points):
    x_u, x_r = points
    net = PINN([2, 10, 10, 1], random_state=0)
    for layer in net.layers:
        layer.b[:] = 0.1
    J_u, J_r = ntk_jacobians(net, problem, x_u, x_r)
    F_u, F_r = _fd_jacobians(net, problem, x_u, x_r)
    assert J_u.shape == (4, net.n_params) and J_r.shape == (5, net.n_params)
    np.testing.assert_allclose(J_u, F_u, atol=1e-7, rtol=1e-6)
    np.testing.assert_allclose(J_r, F_r, atol=1e-6 * np.abs(F_r).max())
    K = empirical_ntk(net, problem, x_u, x_r)
    for got, ref in [(K.K_uu, F_u @ F_u.T), (K.K_ur, F_u @ F_r.T), (K.K_rr, F_r @ F_r.T)]:
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-7 * np.abs(ref).max())
    # The dense parametrisation of a dense network is the same kernel.
    Kd = empirical_ntk(net, problem, x_u, x_r, parametrization="dense")
    np.testing.assert_allclose(Kd.full(), K.full(), rtol=1e-13, atol=1e-13)


def test_jacobians_and_ntk_match_finite_differences_hmatrix_factors(points):
    x_u, x_r = points
    prob = Poisson2D()
    net = _hmatrix_net()
    H = net.layers[1].H
    n_dense = (2 * 24 + 24) + 24 + (24 + 1)   # first layer, hidden bias, last layer
    assert net.n_params == n_dense + H.data.size
    J_u, J_r = ntk_jacobians(net, prob, x_u, x_r, parametrization="factors")
    F_u, F_r = _fd_jacobians(net, prob, x_u, x_r)
    np.testing.assert_allclose(J_u, F_u, atol=1e-7 * np.abs(F_u).max())
    np.testing.assert_allclose(J_r, F_r, atol=1e-6 * np.abs(F_r).max())
    K = empirical_ntk(net, prob, x_u, x_r, parametrization="factors").full()
    F = np.vstack([F_u, F_r])
    np.testing.assert_allclose(K, F @ F.T, atol=1e-6 * np.abs(K).max())


def test_jacobians_and_ntk_match_finite_differences_hmatrix_dense_weights(points):
    x_u, x_r = points
    prob = Poisson2D()
    net = _hmatrix_net()
    dense = as_dense_model(net)
    # Same function, evaluated at the compressed weights...
    np.testing.assert_allclose(dense.predict(x_r), net.predict(x_r), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dense.layers[1].W, net.layers[1].H.to_dense(), atol=0)
    # ...differentiated with respect to the dense weights.
    J_u, J_r = ntk_jacobians(net, prob, x_u, x_r, parametrization="dense")
    assert J_u.shape[1] == dense.n_params == 2 * 24 + 24 + 24 * 24 + 24 + 24 + 1
    F_u, F_r = _fd_jacobians(dense, prob, x_u, x_r)
    np.testing.assert_allclose(J_u, F_u, atol=1e-7 * np.abs(F_u).max())
    np.testing.assert_allclose(J_r, F_r, atol=1e-6 * np.abs(F_r).max())
    K = empirical_ntk(net, prob, x_u, x_r, parametrization="dense")
    np.testing.assert_allclose(K.K_rr, F_r @ F_r.T, atol=1e-6 * np.abs(K.K_rr).max())
    # The two parametrisations give different kernels of the same function.
    Kf = empirical_ntk(net, prob, x_u, x_r, parametrization="factors")
    assert compare_ntk(K, Kf)["relative_frobenius"] > 1e-3


@pytest.fixture(scope="module")
def trained_net():
    """A [2, 128, 128, 128, 1] PINN trained briefly with L-BFGS on Poisson 2D.

    L-BFGS steps are combinations of gradients, i.e. sums of outer products of
    smooth functions of x, so the trained hidden weights keep a decaying
    spectrum and stay compressible across tol = 1e-1 .. 1e-5 (an Adam-trained
    or full-rank Glorot network of this size is stored dense below ~1e-3, and
    its NTK error is then exactly zero).
    """
    prob = Poisson2D()
    net = PINN([2, 128, 128, 128, 1], init_rank=4, random_state=0)
    hist = train(net, prob, epochs=30, optimizer="lbfgs", n_collocation=128, n_boundary=32,
                 progress=False, random_state=0)
    assert hist["loss"][-1] < hist["loss"][0]
    return prob, net


@pytest.mark.slow
def test_ntk_error_decreases_with_tol_and_fitted_constant_predicts_smaller_tols(
        trained_net, record_property):
    """Theorem 2's C, fitted on the two larger tolerances, must bound the NTK
    change at the smaller ones, where it was not fitted (a constant fitted on
    every point would bound them by construction)."""
    prob, net = trained_net
    x_r = prob.sample_collocation(64, random_state=1)
    x_u, _ = prob.sample_boundary(16, random_state=1)
    tols = (1e-2, 1e-3, 1e-4, 1e-5)
    sweep = ntk_tol_sweep(net, prob, x_u, x_r, tols=tols, leaf_size=16, random_state=0)
    err, eps = sweep["ntk_error"], sweep["weight_error"]
    assert np.all(err > 0) and np.all(eps > 0), (err, eps)
    assert np.all(np.diff(err) < 0), err          # strictly decreasing
    assert np.all(eps <= np.array(tols) * (1 + 1e-12))
    assert np.all(np.diff(sweep["alignment"]) >= -1e-12) and sweep["alignment"][-1] > 1 - 1e-8
    assert np.all(sweep["spectrum_distance"] <= err * (1 + 1e-9))   # Mirsky
    fit = fit_ntk_constant(eps[:2], err[:2])
    assert np.all(err[2:] <= fit["C"] * eps[2:]), (fit["C"], err / eps)
    # and the linear regime the theorem is about, over the whole sweep
    assert 0.5 < fit_ntk_constant(eps, err)["exponent"] < 2.0
    record_property("ntk_C", fit["C"])


def test_theorem2_bound_and_definiteness_on_a_compressed_network():
    """ntk_perturbation_bound from the Jacobians of a network and its
    H-matrix compression (dense parametrisation): the kernel moves by at most
    delta, every eigenvalue stays in its interval, and the guaranteed
    positive eigenvalues are positive."""
    from hmnumba.bounds import ntk_perturbation_bound
    prob = Poisson2D()
    net = PINN([2, 32, 32, 1], init_rank=4, random_state=0)
    x_u, x_r = np.random.default_rng(0).random((4, 2)), np.random.default_rng(1).random((12, 2))
    J0 = np.vstack(ntk_jacobians(net, prob, x_u, x_r, parametrization="dense"))
    for tol in (1e-1, 1e-3):
        small = net.compress("hmatrix", tol=tol, leaf_size=8, random_state=0)
        assert np.linalg.norm(small.layers[1].to_dense() - net.layers[1].W) > 0
        J = np.vstack(ntk_jacobians(small, prob, x_u, x_r, parametrization="dense"))
        b = ntk_perturbation_bound(J0, J)
        K0, K = J0 @ J0.T, J @ J.T
        assert np.linalg.norm(K - K0) <= b["delta"]
        lam = np.linalg.eigvalsh(K)[::-1]
        assert np.all((b["lower"] <= lam + 1e-12) & (lam <= b["upper"] + 1e-12))
        assert np.all(lam[:b["n_positive"]] > 0)


def test_compare_ntk_and_spectrum():
    rng = np.random.default_rng(0)
    J = rng.standard_normal((40, 10))
    K = J @ J.T
    same = compare_ntk(K, 3.0 * K)
    assert same["alignment"] == pytest.approx(1.0)
    assert same["relative_frobenius"] == pytest.approx(2.0)
    assert same["spectrum_distance"] == pytest.approx(2.0)
    E = 1e-3 * rng.standard_normal((40, 40))
    d = compare_ntk(K, K + E + E.T)
    w, w2 = np.linalg.eigvalsh(K)[::-1], np.linalg.eigvalsh(K + E + E.T)[::-1]
    assert d["spectrum_distance"] == pytest.approx(np.linalg.norm(w2 - w) / np.linalg.norm(w))
    assert d["spectrum_distance"] <= d["relative_frobenius"]
    # One non-symmetric matrix: both are compared through singular values.
    A = K.copy()
    A[0, 1] += 1e-3
    sv, sv2 = np.linalg.svd(K, compute_uv=False), np.linalg.svd(A, compute_uv=False)
    assert compare_ntk(K, A)["spectrum_distance"] == pytest.approx(
        np.linalg.norm(sv2 - sv) / np.linalg.norm(sv))
    # A rectangular block (K_ur) is compared through its singular values.
    r = compare_ntk(K[:5], K[:5] * 1.1)
    assert r["spectrum_distance"] == pytest.approx(0.1)
    # NTK tuples are compared through their full matrices.
    T = NTK(K[:5, :5], K[:5, 5:], K[5:, 5:])
    np.testing.assert_allclose(T.full(), K)
    assert compare_ntk(T, K)["relative_frobenius"] == 0.0
    np.testing.assert_allclose(ntk_spectrum(T, k=10), w[:10])
    with pytest.raises(ValueError, match="same shape"):
        compare_ntk(K, K[:5])
    with pytest.raises(ValueError, match="NaN"):
        compare_ntk(K, np.full_like(K, np.nan))
    with pytest.raises(ValueError, match="square"):
        ntk_spectrum(K[:5])
    with pytest.raises(ValueError, match="k must be <"):
        ntk_spectrum(LinearOperator((4, 4), matvec=lambda x: x), k=4)


def test_validation_of_models_and_parametrizations(points):
    x_u, x_r = points
    net = PINN([2, 4, 1], random_state=0)
    with pytest.raises(TypeError, match="PINN"):
        empirical_ntk("net", Poisson2D(), x_u, x_r)
    with pytest.raises(ValueError, match="parametrization"):
        empirical_ntk(net, Poisson2D(), x_u, x_r, parametrization="blocks")
    with pytest.raises(ValueError, match="problem"):
        ntk_feature_map(net, output="residual")
    with pytest.raises(ValueError, match="x_r"):
        empirical_ntk(net, Poisson2D(), x_u, np.full((3, 2), np.inf))


def test_gram_kernel_matches_points_in_any_order_and_refuses_others():
    rng = np.random.default_rng(0)
    x = rng.random((30, 2))
    x[7] = x[3]                                    # duplicates are harmless
    F = np.hstack([np.sin(x @ rng.standard_normal((2, 4))), np.cos(x)])
    F0 = F.copy()
    kern = GramKernel(x, F)
    perm = rng.permutation(30)
    _, _, FX, FY = kern.source(x[perm], x[perm][::-1])
    np.testing.assert_array_equal(FX, F0[perm])
    np.testing.assert_array_equal(FY, F0[perm][::-1])
    np.testing.assert_array_equal(F, F0)               # copy=True: the caller's F is kept
    _, _, FX, FY = kern.source(x, x)                      # back to the original order
    assert FY is FX
    np.testing.assert_array_equal(FX, F0)
    # copy=False reorders the given rows in place (cycle following, one spare row).
    owned = GramKernel(x, F, copy=False)
    FX = owned.source(x[perm], x[perm])[2]
    assert FX is F
    np.testing.assert_array_equal(F, F0[perm])
    with pytest.raises(ValueError, match="only the points"):
        kern.source(x + 1.0, x)
    with pytest.raises(ValueError, match="one row per point"):
        GramKernel(x, F[:5])
    with pytest.raises(ValueError, match="one row per point"):
        compress_ntk(F[:5], x, tol=1e-3)
    with pytest.raises(ValueError, match="one row of P features"):
        compress_ntk(lambda z: np.ones((1, 3)), x, tol=1e-3)


@pytest.mark.slow
def test_compress_ntk_meets_tol_on_2000_points_and_gives_spectrum():
    prob = Poisson2D()
    net = PINN([2, 32, 32, 32, 1], random_state=0)
    x = prob.sample_collocation(2000, random_state=0)
    fmap = ntk_feature_map(net, problem=prob)
    tol = 1e-4
    H = compress_ntk(fmap, x, tol=tol, batch_size=700, random_state=0)
    assert isinstance(H, HMatrix) and H.shape == (2000, 2000)
    assert H.compression_ratio > 2
    est = H.estimate_error(random_state=0)
    assert est < tol
    J = fmap(x)
    K = J @ J.T
    true = np.linalg.norm(H.to_dense() - K) / np.linalg.norm(K)
    assert true < tol
    assert est == pytest.approx(true, rel=0.5)
    # eigsh on the operator: within ||H - K||_2 <= ||H - K||_F of the exact top eigenvalues.
    w = np.linalg.eigvalsh(K)[::-1][:5]
    wh = ntk_spectrum(H, k=5, random_state=0)
    assert np.all(np.abs(wh - w) <= true * np.linalg.norm(K) * (1 + 1e-6))
    # Precomputed Jacobian rows give the same matrix.
    J0 = J.copy()
    H2 = compress_ntk(J, x, tol=tol, random_state=0)
    np.testing.assert_array_equal(H2.data, H.data)
    np.testing.assert_array_equal(J, J0)
