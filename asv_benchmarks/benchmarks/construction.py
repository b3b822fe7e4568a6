"""Construction benchmarks: H-matrix builds, each beside its reference.

* ``KernelConstruction`` / ``DenseAssembly``: ``HMatrix.from_kernel`` on the
  standard problem vs the numba-parallel assembly of the dense kernel matrix
  (``hmnumba.kernels.assemble_dense``), time and peak memory. The ratio
  ``time_hmatrix_from_kernel / time_dense_assembly_numba`` is the figure to
  read; the dense reference is skipped above ``DENSE_MAX_N``.
* ``KernelQuality``: compression ratio, storage, error bound and probed
  error of the same builds, tracked so that a quality regression shows up
  next to a speed-up.
* ``DenseWeights``: ``HMatrix.from_dense`` on 1024 x 1024 matrices (low rank
  plus noise, and Gaussian) vs ``numpy.linalg.svd`` of the same matrix.
"""

import numpy as np

from hmnumba import HMatrix
from hmnumba.kernels import assemble_dense, laplace

from .common import (
    KERNEL_OPTS,
    N_PROBE,
    N_VALUES,
    dense_weights,
    points,
    require_dense,
    warm_up_assembly,
    warm_up_dense_weights,
    warm_up_kernel,
)


class KernelConstruction:
    """``HMatrix.from_kernel`` on the standard problem (Laplace, unit cube)."""

    params = [N_VALUES]
    param_names = ["n"]
    # One build is seconds at the large sizes: take 1-5 samples per process,
    # no discarded warm-up call (JIT is compiled in setup).
    number = 1
    repeat = (1, 5, 60.0)
    warmup_time = 0.0
    timeout = 900

    def setup(self, n):
        warm_up_kernel()
        self.X = points(n)

    def time_hmatrix_from_kernel(self, n):
        HMatrix.from_kernel(laplace, self.X, **KERNEL_OPTS)

    def peakmem_hmatrix_from_kernel(self, n):
        HMatrix.from_kernel(laplace, self.X, **KERNEL_OPTS)


class DenseAssembly:
    """Reference: numba-parallel assembly of the dense kernel matrix."""

    params = [N_VALUES]
    param_names = ["n"]
    number = 1
    repeat = (1, 5, 60.0)
    warmup_time = 0.0
    timeout = 900

    def setup(self, n):
        require_dense(n)
        warm_up_assembly()
        self.X = points(n)

    def time_dense_assembly_numba(self, n):
        assemble_dense(laplace, self.X)

    def peakmem_dense_assembly_numba(self, n):
        assemble_dense(laplace, self.X)


class KernelQuality:
    """Quality of the standard builds (deterministic: one build per size)."""

    params = [N_VALUES]
    param_names = ["n"]
    timeout = 600

    def setup_cache(self):
        warm_up_kernel()
        out = {}
        for n in N_VALUES:
            H = HMatrix.from_kernel(laplace, points(n), **KERNEL_OPTS)
            out[n] = {
                "compression_ratio": float(H.compression_ratio),
                "storage_MB": H.nbytes / 1e6,
                "error_bound": float(H.error_bound),
                "probe_error": float(H.estimate_error(n_probe=N_PROBE, random_state=0)),
            }
            del H
        return out

    setup_cache.timeout = 3600  # all sizes in one process

    def track_compression_ratio(self, cache, n):
        return cache[n]["compression_ratio"]

    track_compression_ratio.unit = "dense bytes / stored bytes"

    def track_storage_MB(self, cache, n):
        return cache[n]["storage_MB"]

    track_storage_MB.unit = "MB (1e6 bytes)"

    def track_error_bound(self, cache, n):
        return cache[n]["error_bound"]

    track_error_bound.unit = "H.error_bound"

    def track_probe_error(self, cache, n):
        return cache[n]["probe_error"]

    track_probe_error.unit = "relative error (H.estimate_error)"


class DenseWeights:
    """``HMatrix.from_dense`` (tol 1e-4, PCA clustering) vs ``numpy.linalg.svd``."""

    params = [["lowrank_noise", "gaussian"]]
    param_names = ["kind"]
    tol = 1e-4
    timeout = 300

    def setup(self, kind):
        warm_up_dense_weights()
        self.A = dense_weights(kind)  # memoised

    def _build(self):
        return HMatrix.from_dense(self.A, tol=self.tol, cluster="pca")

    def time_hmatrix_from_dense(self, kind):
        self._build()

    def time_numpy_svd(self, kind):
        np.linalg.svd(self.A, full_matrices=False)

    def peakmem_hmatrix_from_dense(self, kind):
        self._build()

    def peakmem_numpy_svd(self, kind):
        np.linalg.svd(self.A, full_matrices=False)

    def track_compression_ratio(self, kind):
        return float(self._build().compression_ratio)

    track_compression_ratio.unit = "dense bytes / stored bytes"

    def track_relative_error(self, kind):
        # Exact ||A - H||_F / ||A||_F, with H formed as H @ I.
        H = self._build()
        D = H @ np.eye(self.A.shape[1])
        return float(np.linalg.norm(self.A - D) / np.linalg.norm(self.A))

    track_relative_error.unit = "relative Frobenius error (exact)"

    def track_error_bound(self, kind):
        return float(self._build().error_bound)

    track_error_bound.unit = "H.error_bound"
