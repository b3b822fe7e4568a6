"""Scale-out with Dask: joblib ``n_jobs`` builds and DistributedHMatrix.

One LocalCluster (2 worker processes, 1 thread each, loopback) serves the
module. Worker processes are killed with SIGKILL while a build or a product
is running; the nanny restarts them, and each such test waits for two
workers again before it returns.
"""
import os
import signal
import threading
import time

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

import joblib  # noqa: E402
from scipy.sparse.linalg import cg  # noqa: E402

from hmnumba import HMatrix  # noqa: E402
from hmnumba.distributed import DistributedHMatrix, _require_distributed  # noqa: E402
from hmnumba.kernels import laplace  # noqa: E402

N = 4000
BLOCK_ARRAYS = ("row_start", "row_stop", "col_start", "col_stop", "rank", "block_err2",
                "block_norm2")


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", dashboard_address=None)
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


@pytest.fixture(scope="module")
def points():
    return np.random.default_rng(0).random((N, 3))


@pytest.fixture(scope="module")
def local(points):
    return HMatrix.from_kernel(laplace, points, tol=1e-6, symmetric=False)


def block_data(H):
    """Every block's stored numbers, in block order (layout-independent)."""
    m = H.row_stop - H.row_start
    n = H.col_stop - H.col_start
    sizes = np.where(H.rank >= 0, np.maximum(H.rank, 0) * (m + n), m * n)
    return [H.data[o:o + s] for o, s in zip(H.offset, sizes)]


def assert_same_blocks(G, H):
    for name in BLOCK_ARRAYS:
        np.testing.assert_array_equal(getattr(G, name), getattr(H, name), err_msg=name)
    np.testing.assert_array_equal(G.row_perm, H.row_perm)
    np.testing.assert_array_equal(G.col_perm, H.col_perm)
    for a, b in zip(block_data(G), block_data(H)):
        np.testing.assert_array_equal(a, b)


def assert_close(y, ref, rtol=1e-12):
    assert np.linalg.norm(y - ref) <= rtol * np.linalg.norm(ref)


def kill_worker_running(client, prefix, timeout=30.0):
    """SIGKILL the process of a worker as soon as it runs a task whose key
    starts with ``prefix``; returns that worker's address (None on timeout)."""
    pids = client.run(os.getpid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for addr, keys in client.processing().items():
            if addr in pids and any(str(k).startswith(prefix) for k in keys):
                os.kill(pids[addr], signal.SIGKILL)
                return addr
        time.sleep(0.005)
    return None


def start_killer(client, prefix):
    result = {}
    thread = threading.Thread(target=lambda: result.update(addr=kill_worker_running(client,
                                                                                  prefix)))
    thread.start()
    return thread, result


def test_from_kernel_builds_on_workers_the_blocks_of_the_local_build(client, points, local):
    D = DistributedHMatrix.from_kernel(laplace, points, client, tol=1e-6)
    assert D.n_parts == 2
    assert_same_blocks(D.gather(), local)


def test_distributed_products_equal_local_ones(client, points, local):
    D = DistributedHMatrix.from_kernel(laplace, points, client, tol=1e-6)
    rng = np.random.default_rng(1)
    x = rng.standard_normal(N)
    X = rng.standard_normal((N, 5))
    assert_close(D @ x, local @ x)
    assert_close(D.matvec(x), local.matvec(x))
    assert_close(D.matmat(X), local.matmat(X))
    assert_close(D.rmatvec(x), local.rmatvec(x))
    assert_close(D.rmatmat(X), local.rmatmat(X))


def test_scheduler_knows_what_a_part_weighs(client, points):
    # Otherwise it may run a product task away from its part and move the part.
    D = DistributedHMatrix.from_kernel(laplace, points, client, tol=1e-6)
    keys = [f.key for f in D.parts]

    def reported(dask_scheduler):
        return [dask_scheduler.tasks[k].nbytes for k in keys]

    actual = [h.nbytes for h in client.gather(D.parts)]
    assert all(r >= a > 0 for r, a in zip(client.run_on_scheduler(reported), actual))


def test_from_hmatrix_round_trip_and_products(client):
    x = np.linspace(0.0, 1.0, 700)
    A = np.exp(-np.abs(x[:, None] - x[None, :])) + np.sin(7 * x)[:, None] * x[None, :]
    H = HMatrix.from_dense(A, tol=1e-8, cluster="index", admissibility="weak")
    D = DistributedHMatrix.from_hmatrix(H, client, n_parts=3)
    assert D.n_parts >= 2
    assert np.all(np.diff(D.bounds) > 0) and D.bounds[0] == 0 and D.bounds[-1] == 700
    G = D.gather()
    assert_same_blocks(G, H)
    np.testing.assert_array_equal(G.to_dense(), H.to_dense())
    v = np.random.default_rng(2).standard_normal((700, 3))
    assert_close(D.matmat(v), H.matmat(v))
    assert_close(D.rmatvec(v[:, 0]), H.rmatvec(v[:, 0]))
    # SciPy's LinearOperator contract: a (n, 1) column in, a column out.
    assert D.matvec(v[:, :1]).shape == (700, 1) and D.rmatvec(v[:, :1]).shape == (700, 1)
    assert_close(D.matvec(v[:, :1])[:, 0], H.matvec(v[:, 0]))
    assert_close(D.rmatvec(v[:, :1])[:, 0], H.rmatvec(v[:, 0]))
    assert D.nbytes > 0


def test_matrix_without_a_row_cut_lives_in_one_part(client):
    rng = np.random.default_rng(3)
    W = rng.standard_normal((256, 2)) @ rng.standard_normal((2, 256))
    H = HMatrix.from_dense(W, tol=1e-10)
    D = DistributedHMatrix.from_hmatrix(H, client)
    assert D.n_parts == 1 and H.n_blocks == 1
    v = rng.standard_normal(256)
    assert_close(D @ v, H @ v)


def test_worker_killed_mid_build_gives_the_same_matrix(client, points, local):
    D = DistributedHMatrix.from_kernel(laplace, points, client, tol=1e-6, wait=False)
    killed = kill_worker_running(client, "_build_part")
    assert killed is not None
    x = np.random.default_rng(4).standard_normal(N)
    assert_close(D @ x, local @ x)
    assert_same_blocks(D.gather(), local)
    client.wait_for_workers(2, timeout=60)


def test_worker_killed_mid_matmat_gives_the_same_product(client, points, local):
    D = DistributedHMatrix.from_kernel(laplace, points, client, tol=1e-6)
    X = np.random.default_rng(5).standard_normal((N, 64))
    ref = local.matmat(X)
    thread, result = start_killer(client, "_apply_part")
    Y = D.matmat(X)
    thread.join()
    if result.get("addr") is None:
        pytest.fail("the product finished before a worker could be killed")
    assert_close(Y, ref)
    assert_close(D.matmat(X), ref)   # parts were rebuilt where they were lost
    client.wait_for_workers(2, timeout=60)


def test_scattered_part_lost_with_its_worker_is_scattered_again(client, local):
    D = DistributedHMatrix.from_hmatrix(local, client)
    assert D.n_parts == 2
    holder = next(iter(client.who_has(D.parts[0]).values()))[0]
    os.kill(client.run(os.getpid)[holder], signal.SIGKILL)
    x = np.random.default_rng(6).standard_normal(N)
    assert_close(D @ x, local @ x)
    client.wait_for_workers(2, timeout=60)


def test_n_jobs_build_under_dask_backend_is_bit_identical(client, points, local):
    with joblib.parallel_config(backend="dask"):
        H = HMatrix.from_kernel(laplace, points, tol=1e-6, n_jobs=-1, symmetric=False)
    for name in BLOCK_ARRAYS + ("offset", "data"):
        np.testing.assert_array_equal(getattr(H, name), getattr(local, name), err_msg=name)
    x = np.linspace(0.0, 1.0, 300)
    A = 1.0 / (1.0 + np.abs(x[:, None] - x[None, :] + 2.0))
    A += 1e-3 * np.random.default_rng(7).standard_normal(A.shape)
    ref = HMatrix.from_dense(A, tol=1e-4, method="rsvd", random_state=3)
    with joblib.parallel_config(backend="dask"):
        got = HMatrix.from_dense(A, tol=1e-4, method="rsvd", random_state=3, n_jobs=-1)
    for name in BLOCK_ARRAYS + ("offset", "data"):
        np.testing.assert_array_equal(getattr(got, name), getattr(ref, name), err_msg=name)


def test_n_jobs_build_with_default_joblib_backend_is_bit_identical():
    x = np.linspace(0.0, 1.0, 256)
    A = np.exp(-np.abs(x[:, None] - x[None, :])).astype(np.float32)
    ref = HMatrix.from_dense(A, tol=1e-4)
    got = HMatrix.from_dense(A, tol=1e-4, n_jobs=2)
    assert got.dtype == np.float32
    for name in BLOCK_ARRAYS + ("offset", "data"):
        np.testing.assert_array_equal(getattr(got, name), getattr(ref, name), err_msg=name)


@pytest.mark.parametrize("n_jobs, error", [(0, ValueError), (1.5, TypeError), ("2", TypeError),
                                           (True, TypeError)])
def test_n_jobs_is_validated(n_jobs, error):
    with pytest.raises(error, match="n_jobs"):
        HMatrix.from_dense(np.eye(8), n_jobs=n_jobs)


def test_krylov_solver_drives_the_linear_operator(client):
    x = np.linspace(0.0, 1.0, 600)
    A = np.exp(-np.abs(x[:, None] - x[None, :])) + 50.0 * np.eye(600)
    H = HMatrix.from_dense(A, tol=1e-10, cluster="index", admissibility="weak")
    D = DistributedHMatrix.from_hmatrix(H, client)
    b = np.cos(3 * x)
    sol, info = cg(D.aslinearoperator(), b, rtol=1e-10)
    ref, _ = cg(H.aslinearoperator(), b, rtol=1e-10)
    assert info == 0
    assert np.linalg.norm(A @ sol - b) <= 1e-8 * np.linalg.norm(b)
    assert_close(sol, ref)


def test_products_validate_operands(client, local):
    D = DistributedHMatrix.from_hmatrix(local, client)
    with pytest.raises(ValueError, match="dimension mismatch"):
        D @ np.ones(N + 1)
    with pytest.raises(ValueError, match="1-D"):
        D.matvec(np.ones((N, 2)))


def test_missing_dask_names_the_extra(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "distributed", None)
    with pytest.raises(ImportError, match=r"dask.*extra"):
        _require_distributed()
