"""CUDA backend benchmarks, each with the CPU backend beside it.

Every class is parametrised by ``n`` (the standard problem of ``common``:
Laplace kernel on ``n`` points in the unit cube, ``KERNEL_OPTS``) and by
``backend in ["cpu", "cuda"]``, so ``cuda / cpu`` ratios are read off one
table. The ``"cuda"`` rows are skipped (``NotImplementedError`` in ``setup``,
asv's convention) unless a real GPU is present: numba's simulator runs the
kernels in Python threads and timing it means nothing.

* ``BackendMatvec``: ``H @ x`` and ``H @ X`` (``N_RHS`` right-hand sides)
  with numpy operands (the GPU rows include the host-device copies of ``x``
  and ``y``), ``H @ x`` with operands already on the device, and the achieved
  bandwidth ``H.nbytes / t`` of the device-resident matvec (compare with the
  GPU's peak memory bandwidth, e.g. 3.35 TB/s for an H100 SXM).
* ``BackendBuild``: ``HMatrix.from_kernel(..., backend=...)``: on the GPU the
  cluster trees and the ACA of all admissible blocks run on the device.
"""

from functools import lru_cache

from hmnumba import HMatrix
from hmnumba.backend import gpu_available
from hmnumba.kernels import laplace

from .common import (
    KERNEL_OPTS,
    N_RHS,
    N_VALUES,
    kernel_hmatrix,
    median_time,
    points,
    vectors,
    warm_up_kernel,
)

BACKENDS = ["cpu", "cuda"]


def require_backend(backend):
    """Skip (asv: NotImplementedError in setup) the CUDA rows without a GPU."""
    if backend == "cuda" and not gpu_available():
        raise NotImplementedError("no CUDA GPU (numba.cuda.is_available() is False)")


@lru_cache(maxsize=None)
def warm_up_cuda():
    """Compile the CUDA kernels (tree, ACA, products) on a small problem."""
    X = points(2_000)
    H = HMatrix.from_kernel(laplace, X, backend="cuda", **KERNEL_OPTS)
    H @ vectors(2_000)
    H @ vectors(2_000, N_RHS)


@lru_cache(maxsize=1)
def device_hmatrix(n):
    """The standard H-matrix (built on the CPU, memoised) with its packed
    arrays copied to the GPU; a separate object, so the CPU one stays on the CPU."""
    H = kernel_hmatrix(n)
    G = HMatrix.from_arrays(H.shape, H.row_perm, H.col_perm, H.row_start, H.row_stop, H.col_start,
                H.col_stop, H.rank, H.offset, H.data, H.block_err2, H.block_norm2, H.tol,
                norm=H.norm)
    return G.to("cuda")


class _Backends:
    params = [N_VALUES, BACKENDS]
    param_names = ["n", "backend"]
    timeout = 900

    def setup(self, n, backend):
        """Skip without a GPU; compile everything before anything is timed."""
        require_backend(backend)
        warm_up_kernel()
        if backend == "cuda":
            warm_up_cuda()


class BackendMatvec(_Backends):
    """``H @ x`` on the CPU and on the GPU, same H-matrix."""

    def setup(self, n, backend):
        super().setup(n, backend)
        if backend == "cuda":
            from numba import cuda

            self.H = device_hmatrix(n)
            self.x_dev = cuda.to_device(vectors(n))
            self.sync = cuda.synchronize
        else:
            self.H = kernel_hmatrix(n)
            self.x_dev = vectors(n)
            self.sync = lambda: None
        self.x = vectors(n)
        self.X = vectors(n, N_RHS)

    def time_matvec(self, n, backend):
        self.H @ self.x

    def time_matmat(self, n, backend):
        self.H @ self.X

    def _resident_matvec(self):
        self.H @ self.x_dev
        self.sync()

    def time_matvec_resident(self, n, backend):
        # Operands already where the matrix is (device arrays for CUDA).
        self._resident_matvec()

    def track_matvec_GBps(self, n, backend):
        return self.H.nbytes / median_time(self._resident_matvec, repeats=7) / 1e9

    track_matvec_GBps.unit = "GB/s (H.nbytes / median resident matvec time)"


class BackendBuild(_Backends):
    """``HMatrix.from_kernel`` with ``backend="cpu"`` and ``"cuda"``."""

    number = 1
    repeat = (1, 5, 60.0)
    warmup_time = 0.0

    def setup(self, n, backend):
        super().setup(n, backend)
        self.X = points(n)

    def time_from_kernel(self, n, backend):
        HMatrix.from_kernel(laplace, self.X, backend=backend, **KERNEL_OPTS)

    def track_estimated_error(self, n, backend):
        H = HMatrix.from_kernel(laplace, self.X, backend=backend, **KERNEL_OPTS)
        return H.estimate_error(n_probe=4, random_state=0)

    track_estimated_error.unit = "relative Frobenius error (probed)"
