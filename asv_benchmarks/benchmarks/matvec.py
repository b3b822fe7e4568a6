"""Matvec / matmat benchmarks on the standard problem, each beside its reference.

* ``HMatrixMatvec``: ``H @ x`` and ``H @ X`` (16 right-hand sides), plus the
  achieved bandwidth (stored bytes / matvec time) and its fraction of what
  numpy reaches streaming the same number of bytes.
* ``DenseMatvec``: reference, ``A @ x`` and ``A @ X`` with the dense kernel
  matrix in numpy (skipped above ``DENSE_MAX_N``).
* ``StreamBytes``: reference, numpy summing a float64 buffer of exactly
  ``H.nbytes`` bytes, i.e. the time a matvec would take if it did nothing
  but read its data once at memory speed.

A matvec over stored blocks is memory-bound, so ``time_stream_bytes`` is the
floor that ``time_hmatrix_matvec`` is compared with, and
``time_dense_numpy_matvec`` the figure it must beat.
"""

from .common import (
    N_RHS,
    N_VALUES,
    Streamer,
    dense_kernel_matrix,
    kernel_hmatrix,
    kernel_hmatrix_nbytes,
    median_time,
    require_dense,
    streamer,
    vectors,
    warm_up_assembly,
    warm_up_kernel,
)


class HMatrixMatvec:
    """``H @ x`` and ``H @ X`` for the standard H-matrix."""

    params = [N_VALUES]
    param_names = ["n"]
    timeout = 900

    def setup(self, n):
        warm_up_kernel()
        self.H = kernel_hmatrix(n)  # built once per process (memoised)
        self.x = vectors(n)
        self.X = vectors(n, N_RHS)

    def time_hmatrix_matvec(self, n):
        self.H @ self.x

    def time_hmatrix_matmat(self, n):
        self.H @ self.X

    def _times(self):
        """Median matvec and streaming times over the same number of bytes."""
        t_matvec = median_time(lambda: self.H @ self.x, repeats=7)
        stream = Streamer(self.H.nbytes)
        try:
            t_stream = median_time(stream, repeats=7)
        finally:
            stream.close()
        return t_matvec, t_stream

    def track_bandwidth_fraction(self, n):
        # (nbytes / t_matvec) / (nbytes / t_stream): 1.0 means the matvec
        # reads its data as fast as numpy can stream it.
        t_matvec, t_stream = self._times()
        return t_stream / t_matvec

    track_bandwidth_fraction.unit = "matvec GB/s / streaming GB/s"

    def track_matvec_GBps(self, n):
        t_matvec = median_time(lambda: self.H @ self.x, repeats=7)
        return self.H.nbytes / t_matvec / 1e9

    track_matvec_GBps.unit = "GB/s (H.nbytes / median matvec time)"


class DenseMatvec:
    """Reference: dense numpy products with the assembled kernel matrix."""

    params = [N_VALUES]
    param_names = ["n"]
    timeout = 900

    def setup(self, n):
        require_dense(n)
        warm_up_assembly()
        self.A = dense_kernel_matrix(n)  # memoised
        self.x = vectors(n)
        self.X = vectors(n, N_RHS)

    def time_dense_numpy_matvec(self, n):
        self.A @ self.x

    def time_dense_numpy_matmat(self, n):
        self.A @ self.X


class StreamBytes:
    """Reference: numpy streaming ``H.nbytes`` bytes (memory bandwidth)."""

    params = [N_VALUES]
    param_names = ["n"]
    timeout = 900

    def setup(self, n):
        warm_up_kernel()
        self.stream = streamer(kernel_hmatrix_nbytes(n))  # both memoised

    def time_stream_bytes(self, n):
        self.stream()

    def track_stream_GBps(self, n):
        return self.stream.nbytes / median_time(self.stream, repeats=7) / 1e9

    track_stream_GBps.unit = "GB/s"
