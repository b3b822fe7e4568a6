"""Device cluster tree and batched ACA against the CPU kernels."""
import numpy as np
import pytest

from hmnumba import HMatrix
from hmnumba.blocks import initial_partition
from hmnumba.cluster import ClusterTree
from hmnumba.kernels import codes, trees
from hmnumba.kernels import exponential, gaussian, laplace, matern32
from hmnumba.kernels import compress_cuda, trees_cuda

TREE_FIELDS = ("perm", "start", "stop", "children", "level", "box_lo", "box_hi")


def _point_sets():
    rng = np.random.default_rng(0)
    cube = rng.random((260, 3))
    dup = np.repeat(rng.random((20, 2)), 6, axis=0)  # zero-extent boxes
    line = np.linspace(0.0, 1.0, 77)[:, None]
    graded = (2.0 ** -np.arange(40.0))[:, None]       # midpoints leave a side empty
    return {"cube": (cube, 16), "duplicates": (dup, 5), "line": (line, 4),
            "graded": (graded, 3), "one_leaf": (cube[:10], 16)}


@pytest.mark.parametrize("name", list(_point_sets()))
def test_device_tree_is_identical_to_cpu_tree(name):
    points, leaf = _point_sets()[name]
    want = trees.build_geometric_tree(points, leaf)
    got = trees_cuda.build_geometric_tree(points, leaf)
    for field, a, b in zip(TREE_FIELDS, want, got):
        assert a.dtype == b.dtype, field
        np.testing.assert_array_equal(b, a, err_msg=field)


def test_device_tree_does_not_depend_on_block_size(monkeypatch):
    points = np.random.default_rng(1).random((90, 2))
    want = trees.build_geometric_tree(points, 8)
    monkeypatch.setattr(trees_cuda, "THREADS_PER_BLOCK", 2)
    for a, b in zip(want, trees_cuda.build_geometric_tree(points, 8)):
        np.testing.assert_array_equal(b, a)


def _admissible_blocks(X, Y, eta, leaf):
    rt, ct = ClusterTree.from_points(X, leaf), ClusterTree.from_points(Y, leaf)
    t, s, adm = initial_partition(rt, ct, "strong", eta)
    Xp, Yp = X[rt.perm], Y[ct.perm]
    return (rt.start[t[adm]], rt.stop[t[adm]], ct.start[s[adm]], ct.stop[s[adm]]), Xp, Yp


@pytest.mark.parametrize("kernel", [laplace, gaussian.with_length_scale(0.5), exponential,
                                    matern32], ids=lambda k: k.name)
def test_device_aca_blocks_meet_their_tolerance(kernel):
    rng = np.random.default_rng(7)
    X = rng.random((64, 3))
    Y = rng.random((48, 3)) + [1.0, 0.0, 0.0]
    (r0, r1, c0, c1), Xp, Yp = _admissible_blocks(X, Y, 1.0, 8)
    # The three largest blocks (the simulator is slow).
    keep = np.sort(np.argsort(-(r1 - r0) * (c1 - c0), kind="stable")[:3])
    r0, r1, c0, c1 = r0[keep], r1[keep], c0[keep], c1[keep]
    assert r0.size == 3
    src = kernel.source(Xp, Yp)
    tol = 1e-5
    nb = r0.size
    kcap = np.full(nb, 20, np.int64)
    kmax_final = (r1 - r0) * (c1 - c0) // (r1 - r0 + c1 - c0)
    status, rank, err2, norm2, out_off, store = compress_cuda.DeviceACA(src).compress(
        (r0, r1, c0, c1, np.zeros(nb), kcap, kmax_final), tol)
    K = kernel(Xp, Yp)
    accepted = 0
    for b in range(nb):
        block = K[r0[b]:r1[b], c0[b]:c1[b]]
        if status[b] != codes.STATUS_ACCEPTED:
            continue
        accepted += 1
        m, n, k = block.shape[0], block.shape[1], rank[b]
        Ut = store[out_off[b]:out_off[b] + k * m].reshape(k, m)
        Vt = store[out_off[b] + k * m:out_off[b] + k * (m + n)].reshape(k, n)
        exact = np.linalg.norm(block - Ut.T @ Vt)
        assert exact <= tol * np.linalg.norm(block)
        # ACA's norm estimate is the norm of its approximation.
        assert np.sqrt(norm2[b]) == pytest.approx(np.linalg.norm(block), rel=tol)
    assert accepted == 3


def test_device_aca_reports_too_small_room_for_retry():
    rng = np.random.default_rng(8)
    X = rng.random((40, 3))
    Y = rng.random((40, 3)) + [2.0, 0.0, 0.0]
    src = laplace.source(X, Y)
    one = np.ones(1, np.int64)
    status, rank, _, _, _, _ = compress_cuda.DeviceACA(src).compress(
        (0 * one, 40 * one, 0 * one, 40 * one, np.zeros(1), 2 * one, 19 * one), 1e-10)
    assert status[0] == codes.STATUS_RETRY and rank[0] > 2


@pytest.mark.parametrize("budget", ["block", "size"])
def test_from_kernel_on_device_meets_tol(budget):
    rng = np.random.default_rng(9)
    X = rng.random((120, 2))
    Y = rng.random((100, 2)) + [1.5, 0.0]
    tol = 1e-4
    G = HMatrix.from_kernel(laplace, X, Y, tol=tol, leaf_size=16, eta=1.0, budget=budget,
                            backend="cuda")
    H = HMatrix.from_kernel(laplace, X, Y, tol=tol, leaf_size=16, eta=1.0, budget=budget)
    assert G.device == "cuda" and (G.ranks > 0).sum() >= 5
    K = laplace(X, Y)
    assert np.linalg.norm(G.to_dense() - K) <= tol * np.linalg.norm(K)
    assert G.estimate_error(random_state=0) <= tol
    assert G.error_bound <= tol
    # Identical trees and partition; ranks as ACA finds them on either side.
    np.testing.assert_array_equal(G.row_perm, H.row_perm)
    np.testing.assert_array_equal(G.col_perm, H.col_perm)
    np.testing.assert_array_equal(np.sort(G.ranks < 0), np.sort(H.ranks < 0))
    assert G.nbytes <= 1.1 * H.nbytes


def test_from_kernel_on_device_square_with_diagonal():
    X = np.random.default_rng(10).random((128, 1))
    tol = 1e-5
    G = HMatrix.from_kernel(laplace, X, tol=tol, leaf_size=16, eta=1.0, backend="cuda")
    assert (G.ranks > 0).sum() >= 10
    K = laplace(X, X)
    assert np.linalg.norm(G.to_dense() - K) <= tol * np.linalg.norm(K)
    x = np.ones(128)
    y = G @ x
    np.testing.assert_allclose(y, G.to("cpu") @ x, rtol=1e-12)
