"""Shared problem, sizes and helpers of the hmnumba asv benchmarks.

The standard problem: ``N`` points uniform in the unit cube
(``np.random.default_rng(0).random((N, 3))``), the Laplace kernel
``1/|x - y|`` with zero diagonal, leaf size 32, strong admissibility with
``eta = 2``, relative tolerance ``1e-6``.

Sizes
-----
The default (quick) profile uses ``N in [5000, 20000]``. Set the environment
variable ``HMNUMBA_ASV_FULL=1`` to switch to ``[10000, 40000, 80000]``. Dense
references (numba assembly of the dense matrix, numpy products) are skipped
above ``DENSE_MAX_N = 40000``: the dense matrix at 80000 needs 51 GB. asv
treats ``NotImplementedError`` raised in ``setup`` as "skipped".

Why memoised builders instead of heavy ``setup``
------------------------------------------------
asv (asv_runner >= 0.2) re-runs ``setup`` before every timed call, and runs
each benchmark and parameter in a fresh process. The expensive objects (the
H-matrix, the dense matrix, the streaming buffer) are therefore built by the
``functools.lru_cache(maxsize=1)`` functions below: the first ``setup`` call
of a process builds them, every later call is a dictionary look-up, and only
one size is held in memory at a time. Numba compilation is kept out of all
timings by the ``warm_up_*`` functions, which ``setup`` calls first.
"""

import os
import time
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import numba
import numpy as np

from hmnumba import HMatrix
from hmnumba.kernels import assemble_dense, laplace

# --------------------------------------------------------------------------
# Profiles and the standard problem
# --------------------------------------------------------------------------

FULL = os.environ.get("HMNUMBA_ASV_FULL", "").strip() not in ("", "0")
N_VALUES = [10_000, 40_000, 80_000] if FULL else [5_000, 20_000]
DENSE_MAX_N = 40_000  # 8 * 40000**2 = 12.8 GB; 80000 would need 51 GB

KERNEL_OPTS = dict(tol=1e-6, leaf_size=32, admissibility="strong", eta=2.0)
N_RHS = 16  # right-hand sides of the matmat benchmarks
N_PROBE = 10  # random probe vectors of H.estimate_error
WARM_UP_N = 2_000  # points of the small build that triggers JIT compilation


def points(n):
    """The standard point set: ``n`` points uniform in the unit cube."""
    return np.random.default_rng(0).random((n, 3))


@lru_cache(maxsize=4)
def vectors(n, k=None):
    """Input vector (``k=None``) or ``(n, k)`` block, uniform in [-0.5, 0.5).

    Memoised (setup re-runs before every timed call); treat as read-only.
    """
    rng = np.random.default_rng(1)
    return rng.random(n if k is None else (n, k)) - 0.5


def require_dense(n):
    """Skip (asv: NotImplementedError in setup) dense references too big to hold."""
    if n > DENSE_MAX_N:
        gb = 8.0 * n * n / 1e9
        raise NotImplementedError(
            f"dense reference skipped at n={n}: {gb:.0f} GB > DENSE_MAX_N={DENSE_MAX_N}"
        )


# --------------------------------------------------------------------------
# JIT warm-up (once per process; compiled code comes from NUMBA_CACHE_DIR
# when numba's cache is warm)
# --------------------------------------------------------------------------


@lru_cache(maxsize=None)
def warm_up_kernel():
    """Compile the kernel build, matvec and matmat paths on a small problem."""
    X = points(WARM_UP_N)
    H = HMatrix.from_kernel(laplace, X, **KERNEL_OPTS)
    H @ vectors(WARM_UP_N)
    H @ vectors(WARM_UP_N, N_RHS)
    H.estimate_error(n_probe=2)


@lru_cache(maxsize=None)
def warm_up_assembly():
    """Compile the numba dense assembly."""
    assemble_dense(laplace, points(WARM_UP_N // 4))


@lru_cache(maxsize=None)
def warm_up_dense_weights():
    """Compile the from_dense path (PCA clustering, dense low-rank blocks)."""
    A = np.random.default_rng(2).standard_normal((256, 256))
    H = HMatrix.from_dense(A, tol=1e-4, cluster="pca")
    H @ np.eye(256)


# --------------------------------------------------------------------------
# Memoised operands (one size per process, see module docstring)
# --------------------------------------------------------------------------


@lru_cache(maxsize=1)
def kernel_hmatrix(n):
    """H-matrix of the standard problem of size ``n``."""
    return HMatrix.from_kernel(laplace, points(n), **KERNEL_OPTS)


@lru_cache(maxsize=1)
def kernel_hmatrix_nbytes(n):
    """Storage of the standard H-matrix; the matrix itself is not kept."""
    return int(kernel_hmatrix.__wrapped__(n).nbytes)


@lru_cache(maxsize=1)
def dense_kernel_matrix(n):
    """Dense kernel matrix of the standard problem (numba assembly)."""
    require_dense(n)
    return assemble_dense(laplace, points(n))


# --------------------------------------------------------------------------
# Memory-bandwidth reference
# --------------------------------------------------------------------------


class Streamer:
    """Sum a float64 buffer of ``nbytes`` bytes, as fast as numpy reads memory.

    The buffer is split into one contiguous chunk per thread and each chunk is
    summed by ``ndarray.sum`` in a thread pool (numpy releases the GIL in the
    reduction). With ``n_threads=None`` the pool has as many threads as numba
    uses for the H-matrix matvec, so the two are compared on equal terms; a
    single numpy ``buf.sum()`` reaches only one core's share of the bandwidth.
    """

    def __init__(self, nbytes, n_threads=None):
        self.n_threads = int(n_threads or numba.get_num_threads())
        # np.ones writes every page, so first-touch page faults happen here
        # and not in the timed calls.
        self.buf = np.ones(max(int(nbytes) // 8, 1), dtype=np.float64)
        self.nbytes = self.buf.nbytes
        self._chunks = np.array_split(self.buf, self.n_threads)
        self._pool = (
            ThreadPoolExecutor(self.n_threads) if self.n_threads > 1 else None
        )

    def __call__(self):
        if self._pool is None:
            return self.buf.sum()
        return sum(self._pool.map(np.sum, self._chunks))

    def close(self):
        if self._pool is not None:
            self._pool.shutdown()


@lru_cache(maxsize=1)
def streamer(nbytes):
    return Streamer(nbytes)


def median_time(func, repeats=7, warm_up=1):
    """Median wall time of ``func()`` over ``repeats`` calls, after ``warm_up``."""
    for _ in range(warm_up):
        func()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        func()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


# --------------------------------------------------------------------------
# Dense test matrices for the weight-compression benchmarks
# --------------------------------------------------------------------------


@lru_cache(maxsize=2)
def dense_weights(kind, n=1024, rank=64, noise=1e-5):
    """A reproducible ``n x n`` test matrix (memoised: setup re-runs often).

    ``"lowrank_noise"``: rank-``rank`` matrix with decaying singular values
    plus Gaussian noise of relative Frobenius size ``noise`` (compressible at
    ``tol = 1e-4``). ``"gaussian"``: i.i.d. standard normal entries (full
    rank, flat spectrum: nothing to compress; measures the overhead).
    """
    rng = np.random.default_rng(3)
    if kind == "gaussian":
        return rng.standard_normal((n, n))
    if kind == "lowrank_noise":
        U, _ = np.linalg.qr(rng.standard_normal((n, rank)))
        V, _ = np.linalg.qr(rng.standard_normal((n, rank)))
        s = np.logspace(0, -3, rank)
        A = (U * s) @ V.T
        E = rng.standard_normal((n, n))
        A += (noise * np.linalg.norm(A) / np.linalg.norm(E)) * E
        return A
    raise ValueError(f"unknown kind {kind!r}")
