"""Exact derivatives and gradients of the PINN against central finite differences.

Every parameter gradient (dense and H-matrix layers, every problem) and every
per-sample Jacobian is compared with central differences of the loss in
float64; the agreement is ~1e-9 relative, the asserted bound 1e-6.
"""
import numpy as np
import pytest

from hmnumba import HMatrix
from hmnumba.pinn import (DenseLayer, Heat1D, Helmholtz2D, HMatrixLayer, PINN, Poisson1D,
                          Poisson2D)
from hmnumba.pinn import _kernels

PROBLEMS = [Poisson1D(), Poisson2D(), Helmholtz2D(), Heat1D()]
IDS = [type(p).__name__ for p in PROBLEMS]


def structured_hmatrix(n, seed):
    """An n x n weight with exp(-|i - j| / 6) structure plus a random
    rank-2 part, compressed so that it has dense and low-rank blocks."""
    rng = np.random.default_rng(seed)
    i = np.arange(n)
    W = np.exp(-np.abs(i[:, None] - i[None, :]) / 6.0) / np.sqrt(n)
    W += rng.standard_normal((n, 2)) @ rng.standard_normal((2, n)) / n
    H = HMatrix.from_dense(W, tol=1e-7, leaf_size=16, cluster="index")
    assert (H.rank > 0).any() and (H.rank < 0).any()
    return H


def hmatrix_net(d, width=48, seed=0):
    """[d, w, w, w, 1] whose two hidden-to-hidden layers are H-matrix layers."""
    net = PINN([d, width, width, width, 1], random_state=seed)
    rng = np.random.default_rng(seed + 10)
    for i in (1, 2):
        net.layers[i] = HMatrixLayer(structured_hmatrix(width, seed + i),
                                     0.1 * rng.standard_normal(width))
    return net


def central_differences(f, theta, idx, h=1e-5):
    out = []
    for i in idx:
        e = np.zeros_like(theta)
        e[i] = h
        out.append((f(theta + e) - f(theta - e)) / (2 * h))
    return np.array(out)


def loss_gradient_error(net, problem, n_idx=8, seed=0):
    x_r = problem.sample_collocation(24, random_state=seed)
    x_b, g_b = problem.sample_boundary(8, random_state=seed + 1)
    theta = net.get_params()
    _, g = net.loss(problem, x_r, x_b, g_b, weights=(1.0, 3.0))

    def f(th):
        net.set_params(th)
        return net.loss(problem, x_r, x_b, g_b, weights=(1.0, 3.0), grad=False)

    rng = np.random.default_rng(seed)
    # every layer's parameters are sampled, not only the largest layer's
    pos = np.cumsum([0] + [p.size for layer in net.layers for p in layer.params])
    idx = np.unique(np.concatenate([rng.choice(np.arange(a, b), min(b - a, n_idx),
                                               replace=False)
                                    for a, b in zip(pos[:-1], pos[1:])]))
    fd = central_differences(f, theta, idx)
    # and one random direction, which touches every parameter at once
    v = rng.standard_normal(theta.size)
    dir_fd = (f(theta + 1e-6 * v) - f(theta - 1e-6 * v)) / 2e-6
    net.set_params(theta)
    return (np.linalg.norm(fd - g[idx]) / np.linalg.norm(fd),
            abs(dir_fd - g @ v) / abs(dir_fd))


@pytest.mark.parametrize("problem", PROBLEMS, ids=IDS)
def test_dense_loss_gradient_matches_finite_differences(problem):
    net = PINN([problem.dim, 16, 16, 16, 1], random_state=1)
    coord_err, dir_err = loss_gradient_error(net, problem)
    assert coord_err < 1e-6 and dir_err < 1e-6


@pytest.mark.parametrize("problem", PROBLEMS, ids=IDS)
def test_hmatrix_loss_gradient_matches_finite_differences(problem):
    net = hmatrix_net(problem.dim)
    coord_err, dir_err = loss_gradient_error(net, problem)
    assert coord_err < 1e-6 and dir_err < 1e-6


def test_sin_activation_gradient_matches_finite_differences():
    net = PINN([2, 12, 12, 1], activation="sin", random_state=2)
    assert max(loss_gradient_error(net, Helmholtz2D())) < 1e-6


@pytest.mark.parametrize("activation", ["tanh", "sin"])
def test_input_derivatives_match_finite_differences(activation):
    net = PINN([2, 16, 16, 1], activation=activation, random_state=3)
    x = np.random.default_rng(0).random((7, 2))
    h = 1e-4
    u, du, lap = net.derivatives(x)
    uxx = net.derivatives(x, lap_weights=[1.0, 0.0])[2]
    fd_grad = np.empty_like(du)
    fd_second = np.empty_like(du)
    for j in range(2):
        e = np.zeros(2)
        e[j] = h
        up, um = net.predict(x + e), net.predict(x - e)
        fd_grad[:, j] = (up - um) / (2 * h)
        fd_second[:, j] = (up - 2 * u + um) / h ** 2
    np.testing.assert_allclose(du, fd_grad, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(lap, fd_second.sum(axis=1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(uxx, fd_second[:, 0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(net.derivatives(x, order=1)[1], du)


def test_hmatrix_layers_match_their_dense_expansion():
    hnet = hmatrix_net(2)
    dnet = PINN.from_layers([DenseLayer(layer.to_dense(), layer.b) for layer in hnet.layers])
    x = np.random.default_rng(1).random((9, 2))
    for a, b in zip(hnet.derivatives(x), dnet.derivatives(x)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("output", ["u", "residual"])
@pytest.mark.parametrize("kind", ["dense", "hmatrix"])
def test_per_sample_jacobian_matches_finite_differences(output, kind):
    problem = Heat1D()
    net = hmatrix_net(2, width=32) if kind == "hmatrix" else PINN([2, 10, 10, 1], random_state=4)
    x = problem.sample_collocation(6, random_state=5)
    J = net.jacobian(x, output=output, problem=problem)
    assert J.shape == (6, net.n_params)

    def value(th):
        net.set_params(th)
        if output == "u":
            return net.predict(x)
        u, du, lap = net.derivatives(x, lap_weights=problem.lap_weights)
        return problem.residual(x, u, du, lap)[0]

    theta = net.get_params()
    idx = np.random.default_rng(0).choice(theta.size, 40, replace=False)
    fd = central_differences(value, theta, idx).T
    net.set_params(theta)
    assert np.linalg.norm(J[:, idx] - fd) <= 1e-6 * np.linalg.norm(fd)


def test_per_sample_jacobians_sum_to_the_loss_gradient():
    # L_b = mean((u - g)^2): its gradient is (2/N) sum_i (u_i - g_i) J_u[i]
    problem = Poisson2D()
    net = hmatrix_net(2, width=32)
    x_b, g_b = problem.sample_boundary(10, random_state=0)
    (_, _), (_, grad_b) = net.loss_terms(problem, problem.sample_collocation(4), x_b, g_b)
    e = net.predict(x_b) - g_b
    np.testing.assert_allclose(2.0 / 10 * e @ net.jacobian(x_b), grad_b, rtol=1e-10,
                               atol=1e-13)


def test_nuclear_norm_and_gradient():
    H = structured_hmatrix(48, 0)
    layer = HMatrixLayer(H, np.zeros(48))
    value, grad = layer.nuclear_norm()
    expected = 0.0
    for b in np.flatnonzero(H.rank > 0):
        k, m = H.rank[b], H.row_stop[b] - H.row_start[b]
        n = H.col_stop[b] - H.col_start[b]
        UT = H.data[H.offset[b]:H.offset[b] + k * m].reshape(k, m)
        VT = H.data[H.offset[b] + k * m:H.offset[b] + k * (m + n)].reshape(k, n)
        expected += np.linalg.svd(UT.T @ VT, compute_uv=False).sum()
    assert value == pytest.approx(expected, rel=1e-12)
    for b in np.flatnonzero(H.rank < 0):   # dense blocks carry no penalty
        size = (H.row_stop[b] - H.row_start[b]) * (H.col_stop[b] - H.col_start[b])
        assert np.all(grad[H.offset[b]:H.offset[b] + size] == 0)
    data0 = H.data.copy()
    v = np.random.default_rng(0).standard_normal(data0.size) * (grad != 0)
    h = 1e-6
    H.data[:] = data0 + h * v
    fp = layer.nuclear_norm()[0]
    H.data[:] = data0 - h * v
    fm = layer.nuclear_norm()[0]
    H.data[:] = data0
    assert (fp - fm) / (2 * h) == pytest.approx(grad @ v, rel=1e-6)


def test_data_grad_kernel_matches_dense_gradient_of_each_block():
    H = structured_hmatrix(32, 1)
    rng = np.random.default_rng(0)
    S, G = rng.standard_normal((32, 5)), rng.standard_normal((32, 5))
    grad = _kernels.data_grad(H.data, H.row_start, H.row_stop, H.col_start, H.col_stop,
                              H.rank, H.offset, S[H.col_perm].copy(), G[H.row_perm].copy())
    Wbar = G[H.row_perm] @ S[H.col_perm].T   # dense gradient in cluster order
    for b in range(H.n_blocks):
        r0, r1, c0, c1 = H.row_start[b], H.row_stop[b], H.col_start[b], H.col_stop[b]
        m, n, k, off = r1 - r0, c1 - c0, H.rank[b], H.offset[b]
        if k < 0:
            np.testing.assert_allclose(grad[off:off + m * n], Wbar[r0:r1, c0:c1].ravel())
        elif k > 0:
            UT = H.data[off:off + k * m].reshape(k, m)
            VT = H.data[off + k * m:off + k * (m + n)].reshape(k, n)
            np.testing.assert_allclose(grad[off:off + k * m].reshape(k, m),
                                       (Wbar[r0:r1, c0:c1] @ VT.T).T)
            np.testing.assert_allclose(grad[off + k * m:off + k * (m + n)].reshape(k, n),
                                       (Wbar[r0:r1, c0:c1].T @ UT.T).T)


def test_parameter_vector_round_trip():
    net = hmatrix_net(2, width=32)
    theta = net.get_params()
    assert theta.shape == (net.n_params,)
    net.set_params(2 * theta)
    np.testing.assert_array_equal(net.get_params(), 2 * theta)
    np.testing.assert_array_equal(net.layers[1].H.data, 2 * theta[
        net.layers[0].n_params:net.layers[0].n_params + net.layers[1].H.data.size])


@pytest.mark.parametrize("sizes, error", [
    ([2], ValueError), ([2, 8, 2], ValueError), ([2, 0, 1], ValueError),
    ([2, 8.5, 1], TypeError), (3, TypeError)])
def test_invalid_sizes_are_refused(sizes, error):
    with pytest.raises(error):
        PINN(sizes)


def test_invalid_inputs_are_refused():
    net = PINN([2, 8, 1], random_state=0)
    with pytest.raises(ValueError, match="2 columns"):
        net.predict(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="NaN"):
        net.predict(np.array([[np.nan, 0.0]]))
    with pytest.raises(ValueError, match="activation"):
        PINN([2, 8, 1], activation="relu")
    with pytest.raises(ValueError, match="length"):
        net.set_params(np.zeros(3))
    with pytest.raises(ValueError, match="order"):
        net.derivatives(np.zeros((1, 2)), order=3)
    with pytest.raises(ValueError, match="problem"):
        net.jacobian(np.zeros((1, 2)), output="residual")
    with pytest.raises(ValueError, match="method"):
        net.compress("lowrank")
    with pytest.raises(ValueError, match="g_b"):
        net.loss(Poisson2D(), np.zeros((4, 2)), np.zeros((3, 2)), np.zeros(2))
    with pytest.raises(TypeError, match="HMatrix"):
        HMatrixLayer(np.eye(3), np.zeros(3))
    with pytest.raises(ValueError, match="inputs"):
        PINN.from_layers([DenseLayer(np.ones((3, 2)), np.zeros(3)),
                          DenseLayer(np.ones((1, 4)), np.zeros(1))])


def test_layer_from_a_symmetric_hmatrix_trains_every_block():
    """A symmetric H is expanded: the data gradient kernels take every block
    stored, and a trained weight need not stay symmetric."""
    from hmnumba.kernels import gaussian
    X = np.random.default_rng(3).random((40, 2))
    Hs = HMatrix.from_kernel(gaussian, X, tol=1e-8, leaf_size=8)
    assert Hs.symmetric
    layer = HMatrixLayer(Hs, np.zeros(40))
    assert not layer.H.symmetric
    np.testing.assert_allclose(layer.to_dense(), Hs.to_dense(), rtol=0, atol=1e-13)
    rng = np.random.default_rng(4)
    S, G = rng.standard_normal((40, 1, 3)), rng.standard_normal((40, 1, 3))
    gdata = layer.backward(S, G)[1][0]
    data0 = layer.H.data.copy()
    v = rng.standard_normal(data0.size)
    h = 1e-6
    layer.H.data[:] = data0 + h * v
    fp = np.sum(G * layer.forward(S))
    layer.H.data[:] = data0 - h * v
    fm = np.sum(G * layer.forward(S))
    layer.H.data[:] = data0
    assert (fp - fm) / (2 * h) == pytest.approx(gdata @ v, rel=1e-6)
