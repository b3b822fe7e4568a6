"""H^2 format beside the H-matrix on the standard problem.

* ``H2Build``: ``H2Matrix.from_kernel`` (stored and on-the-fly) beside
  ``HMatrix.from_kernel``, with the storage of each (``track_*_MB``) and the
  error of the H^2 product on random rows (``track_h2_error``).
* ``H2Matvec``: ``H @ x`` and ``H @ X`` for both H^2 modes beside the
  H-matrix's ``H @ x`` in the same process.
* ``H2UserKernel``: a user ``@njit`` kernel as a symmetric H-matrix and as
  H^2 (symmetric storage and general storage): bytes and ``H @ x``.

The C references (H2Pack stored / JIT, H2Lib) run from
``../shared/anchors/run.sh`` with ``VARIANTS="h2pack_stored h2pack_jit
hmnumba_h2 hmnumba_h2_otf"``; their builds cannot be timed from Python.
"""
from functools import lru_cache

import numpy as np
from numba import njit

from hmnumba import H2Matrix, HMatrix

from .common import (KERNEL_OPTS, N_RHS, N_VALUES, WARM_UP_N, kernel_hmatrix, laplace,
                     median_time, points, vectors, warm_up_kernel)

MODES = ["stored", "on-the-fly"]


@lru_cache(maxsize=2)
def kernel_h2(n, mode):
    """H^2 matrix of the standard problem of size ``n`` (memoised)."""
    return H2Matrix.from_kernel(laplace, points(n), mode=mode, **KERNEL_OPTS)


def warm_up_h2():
    for mode in MODES:
        H2Matrix.from_kernel(laplace, points(WARM_UP_N), mode=mode, **KERNEL_OPTS)


class H2Build:
    """Construction of H^2 (both modes) and of H, and their storage."""

    params = [N_VALUES, MODES]
    param_names = ["n", "mode"]
    timeout = 1200
    number = 1
    repeat = 3

    def setup(self, n, mode):
        warm_up_kernel()
        warm_up_h2()
        self.X = points(n)

    def time_h2_from_kernel(self, n, mode):
        H2Matrix.from_kernel(laplace, self.X, mode=mode, **KERNEL_OPTS)

    def time_hmatrix_from_kernel(self, n, mode):
        # the reference; the mode does not apply to H
        kernel_hmatrix.__wrapped__(n)

    def track_h2_MB(self, n, mode):
        return kernel_h2(n, mode).nbytes / 1e6

    track_h2_MB.unit = "MB"

    def track_hmatrix_MB(self, n, mode):
        return kernel_hmatrix(n).nbytes / 1e6

    track_hmatrix_MB.unit = "MB"

    def track_h2_error(self, n, mode):
        return kernel_h2(n, mode).estimate_error(self.X, n_rows=200)

    track_h2_error.unit = "relative error on 200 rows"


class H2Matvec:
    """``H @ x`` / ``H @ X`` for H^2 (both modes) beside the H-matrix."""

    params = [N_VALUES, MODES]
    param_names = ["n", "mode"]
    timeout = 1200

    def setup(self, n, mode):
        warm_up_kernel()
        warm_up_h2()
        self.H2 = kernel_h2(n, mode)
        self.H = kernel_hmatrix(n)
        self.x = vectors(n)
        self.X = vectors(n, N_RHS)

    def time_h2_matvec(self, n, mode):
        self.H2 @ self.x

    def time_h2_matmat(self, n, mode):
        self.H2 @ self.X

    def time_hmatrix_matvec(self, n, mode):
        self.H @ self.x

    def track_h2_over_hmatrix_matvec(self, n, mode):
        t2 = median_time(lambda: self.H2 @ self.x, repeats=7)
        t1 = median_time(lambda: self.H @ self.x, repeats=7)
        return t2 / t1

    track_h2_over_hmatrix_matvec.unit = "H^2 matvec time / H matvec time"


@njit
def inverse_multiquadric(x, y):
    """A user kernel (numba ``@njit``), symmetric: ``k(x, y) = k(y, x)``."""
    return 1.0 / np.sqrt(0.01 + ((x - y) ** 2).sum())


USER_N_VALUES = [2_000, 8_000]


@lru_cache(maxsize=6)
def user_kernel_matrix(n, kind):
    """``kind``: ``"hmatrix"`` (symmetric H), ``"h2_symmetric"`` or
    ``"h2_general"`` (both sides stored) of the user kernel on the standard
    points (memoised)."""
    X = points(n)
    if kind == "hmatrix":
        return HMatrix.from_kernel(inverse_multiquadric, X, symmetric=True, **KERNEL_OPTS)
    return H2Matrix.from_kernel(inverse_multiquadric, X, tol=KERNEL_OPTS["tol"],
                                symmetric=kind == "h2_symmetric")


class H2UserKernel:
    """A user ``@njit`` kernel: the H^2 matrix converted from the H-matrix,
    stored symmetric (one set of bases, each mirrored block once) or general,
    beside the symmetric H-matrix: storage and ``H @ x``."""

    params = [USER_N_VALUES, ["hmatrix", "h2_symmetric", "h2_general"]]
    param_names = ["n", "kind"]
    timeout = 1200

    def setup(self, n, kind):
        user_kernel_matrix(WARM_UP_N // 4, kind) @ vectors(WARM_UP_N // 4)
        self.H = user_kernel_matrix(n, kind)
        self.x = vectors(n)

    def time_matvec(self, n, kind):
        self.H @ self.x

    def track_MB(self, n, kind):
        return self.H.nbytes / 1e6

    track_MB.unit = "MB"

    def track_matvec_over_hmatrix(self, n, kind):
        ref = user_kernel_matrix(n, "hmatrix")
        t = median_time(lambda: self.H @ self.x, repeats=7)
        return t / median_time(lambda: ref @ self.x, repeats=7)

    track_matvec_over_hmatrix.unit = "matvec time / symmetric H matvec time"
