"""Transform of the 4096 x 4096 operator, H against dense, for before/after checks.

Fits ``HMatrixCompressor(tol=1e-3, random_state=0)`` on
:func:`benchmarks.transform.weight_operator` and prints, for two rounds, the
medians of 9 timings of ``X @ W.T`` and of ``transform(X)`` (256 samples)
and their ratio. Run it from two checkouts alternately in one session,
each with its own numba cache, and compare the ratios::

    PYTHONPATH=CHECKOUT NUMBA_CACHE_DIR=CACHE python asv_benchmarks/run_transform_ab.py CHECKOUT
"""
import sys
import timeit

import numpy as np

sys.path.insert(0, sys.argv[1] + "/asv_benchmarks")

import hmnumba  # noqa: E402
from benchmarks.transform import samples, weight_operator  # noqa: E402
from hmnumba import HMatrixCompressor  # noqa: E402


def median(fn, repeats=9):
    fn()   # warm-up (numba dispatch, caches)
    return float(np.median(timeit.repeat(fn, number=1, repeat=repeats)))


def main():
    W, X = weight_operator(), samples()
    comp = HMatrixCompressor(tol=1e-3, backend="cpu", random_state=0).fit(W)
    for rnd in range(2):
        d = median(lambda: X @ W.T)
        h = median(lambda: comp.transform(X))
        print(f"{hmnumba.__file__} round {rnd}: dense {1e3 * d:.1f} ms, H {1e3 * h:.1f} ms, "
              f"dense/H {d / h:.2f}, ratio {comp.compression_ratio_:.2f}", flush=True)


if __name__ == "__main__":
    main()
