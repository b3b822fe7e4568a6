"""A user ``@njit`` kernel as a symmetric H-matrix, a symmetric H^2 matrix and
a general H^2 matrix (the matrices of the asv class ``H2UserKernel``): build
seconds, MB and ``H @ x`` (median of 9) with its ratio to the H-matrix's, in
one process.

Run: ``PYTHONPATH=. python asv_benchmarks/run_h2_user_kernel.py 2000 8000``
(prints a markdown table).
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmarks.common import median_time, vectors  # noqa: E402
from benchmarks.h2 import user_kernel_matrix  # noqa: E402

KINDS = ("hmatrix", "h2_symmetric", "h2_general")


def main(sizes):
    print("| n | kind | build s | MB | matvec ms | / H matvec |")
    print("|---|---|---|---|---|---|")
    for n in sizes:
        rows = {}
        for kind in KINDS:
            user_kernel_matrix(500, kind)          # compile first
            t0 = time.perf_counter()
            H = user_kernel_matrix(n, kind)
            build = time.perf_counter() - t0
            x = vectors(n)
            rows[kind] = (build, H.nbytes / 1e6, median_time(lambda: H @ x, repeats=9))
        for kind, (build, mb, t) in rows.items():
            print(f"| {n:,} | {kind} | {build:.2f} | {mb:.1f} | {1e3 * t:.2f} | "
                  f"{t / rows['hmatrix'][2]:.2f} |")


if __name__ == "__main__":
    main([int(v) for v in sys.argv[1:]] or [2000, 8000])
