#!/usr/bin/env python3
"""from_kernel on points of the unit sphere's surface, one line of figures.

    python3 asv_benchmarks/run_sphere.py N TOL      (e.g. 200000 1e-4)

Points: standard normal (``default_rng(0)``), normalised; Laplace 1/r with
zero diagonal, leaf 32, strong admissibility, eta 2. Build after a small
warm-up build (no JIT in the figure); matvec is the median of 7 after one
warm-up; peak RSS from getrusage. No dense reference: at N=200,000 it would
need 320 GB.
"""
import resource
import sys
import time

import numpy as np

from hmnumba import HMatrix
from hmnumba.kernels import laplace


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 80000
    tol = float(sys.argv[2]) if len(sys.argv) > 2 else 1e-6
    rng = np.random.default_rng(0)
    P = rng.standard_normal((n, 3))
    P /= np.linalg.norm(P, axis=1)[:, None]
    HMatrix.from_kernel(laplace, P[:2000], tol=tol)
    t = time.perf_counter()
    H = HMatrix.from_kernel(laplace, P, tol=tol)
    build = time.perf_counter() - t
    x = rng.uniform(-0.5, 0.5, n)
    H @ x
    times = []
    for _ in range(7):
        t = time.perf_counter()
        H @ x
        times.append(time.perf_counter() - t)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"sphere N={n} tol={tol}: build {build:.2f} s, storage {H.nbytes / 1e6:.0f} MB "
          f"({H.nbytes / n / 1e3:.1f} KB/pt), ratio {H.compression_ratio:.1f}, matvec "
          f"{1e3 * np.median(times):.1f} ms, error_bound {H.error_bound:.2e}, probe "
          f"{H.estimate_error(random_state=0):.2e}, peak RSS {rss:.2f} GB")


if __name__ == "__main__":
    main()
