"""``transform`` of a fitted compressor against ``X @ W.T`` and the baselines.

A (4096, 4096) weight-like operator (a kernel ``1 / (0.01 + |s_i - t_j|)``
over shuffled 1-D positions, plus noise of relative size 1e-4, see
:func:`weight_operator`: low rank away from ``s = t``, full rank globally) is
applied to 256 samples by:

* ``time_dense``: the reference, ``X @ W.T`` in numpy (BLAS);
* ``time_hmatrix``: ``HMatrixCompressor(tol=1e-3).transform`` (numba matmat);
* ``time_svd``: ``SVDCompressor(tol=1e-3)`` (two thin BLAS products);
* ``time_pruning``: ``PruningCompressor(sparsity=0.9)`` (scipy CSR product);
* ``time_quantization``: ``QuantizationCompressor(bits=8)`` (float products of
  the integer codes: numpy has no integer GEMM).

All in one class so one ``asv run`` gives every ratio; ``track_*`` record the
compression ratio and relative error of each method. For the figures without
asv: ``python asv_benchmarks/benchmarks/transform.py`` prints the medians and
ratios of one run.
"""
from functools import lru_cache

import numpy as np

from hmnumba import HMatrixCompressor
from hmnumba.baselines import PruningCompressor, QuantizationCompressor, SVDCompressor

N_OUT = N_IN = 4096
N_SAMPLES = 256


@lru_cache(maxsize=1)
def weight_operator(n=N_OUT, noise=1e-4, seed=0):
    """A weight-like ``n x n`` operator: a near-singular kernel on shuffled positions plus noise.

    Rows and columns are in random order (as a trained layer's neurons are),
    so structure is found only by clustering. Its off-diagonal blocks are of
    low rank but the whole matrix is not: a global SVD at ``tol=1e-3`` needs
    rank ~1300, the H-matrix ~18x less storage than dense.
    """
    rng = np.random.default_rng(seed)
    s, t = rng.random(n), rng.random(n)
    W = 1.0 / (0.01 + np.abs(s[:, None] - t[None, :]))
    E = rng.standard_normal((n, n))
    W += (noise * np.linalg.norm(W) / np.linalg.norm(E)) * E
    return W


@lru_cache(maxsize=1)
def samples():
    return np.random.default_rng(1).standard_normal((N_SAMPLES, N_IN))


def make_compressors():
    return {
        "hmatrix": HMatrixCompressor(tol=1e-3, backend="cpu", random_state=0),
        "svd": SVDCompressor(tol=1e-3),
        "pruning": PruningCompressor(sparsity=0.9),
        "quantization": QuantizationCompressor(bits=8),
    }


@lru_cache(maxsize=1)
def fitted():
    W = weight_operator()
    return {name: comp.fit(W) for name, comp in make_compressors().items()}


class Transform:
    """``transform`` of 256 samples by each method, beside dense ``X @ W.T``."""

    timeout = 1200

    def setup(self):
        self.W = weight_operator()
        self.X = samples()
        self.fitted = fitted()
        for comp in self.fitted.values():          # JIT and caches out of the timings
            comp.transform(self.X[:4])

    def time_dense(self):
        self.X @ self.W.T

    def time_hmatrix(self):
        self.fitted["hmatrix"].transform(self.X)

    def time_svd(self):
        self.fitted["svd"].transform(self.X)

    def time_pruning(self):
        self.fitted["pruning"].transform(self.X)

    def time_quantization(self):
        self.fitted["quantization"].transform(self.X)

    def track_compression_ratio(self):
        return {k: c.compression_ratio_ for k, c in self.fitted.items()}["hmatrix"]

    def track_relative_error(self):
        return self.fitted["hmatrix"].relative_error_


def main(repeats=9):
    """Print median times and ratios to dense of one run (same process)."""
    import time
    bench = Transform()
    bench.setup()

    def median(fn):
        fn()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return float(np.median(times)), float(np.min(times)), float(np.max(times))

    dense = median(bench.time_dense)
    print(f"transform of {N_SAMPLES} samples by a {N_OUT}x{N_IN} operator; median of {repeats}")
    print(f"{'method':14s} {'median ms':>10s} {'min-max ms':>15s} {'dense/method':>13s} "
          f"{'compression':>12s} {'rel. error':>11s}")
    print(f"{'dense X@W.T':14s} {1e3 * dense[0]:10.1f} "
          f"{1e3 * dense[1]:7.1f}-{1e3 * dense[2]:<7.1f} {1.0:13.2f} {1.0:12.2f} {0.0:11.1e}")
    for name, comp in bench.fitted.items():
        t = median(getattr(bench, f"time_{name}"))
        print(f"{name:14s} {1e3 * t[0]:10.1f} {1e3 * t[1]:7.1f}-{1e3 * t[2]:<7.1f} "
              f"{dense[0] / t[0]:13.2f} {comp.compression_ratio_:12.2f} "
              f"{comp.relative_error_:11.1e}")


if __name__ == "__main__":
    main()
