#!/usr/bin/env python3
"""The standard problem in one process: hmnumba beside its references.

    python3 asv_benchmarks/run_standard.py --n 40000 --repeats 3 --tol 1e-6

Problem: ``n`` points uniform in the unit cube
(``np.random.default_rng(0).random((n, 3))``), Laplace kernel ``1/|x - y|``
with zero diagonal, leaf size 32, strong admissibility, eta 2.

Measured, after a small warm-up build that compiles every numba path used
(so no JIT time is in any figure):

* H-matrix build (``HMatrix.from_kernel``), median of ``--repeats``;
* H matvec, median of 7 after one warm-up call;
* numpy streaming of ``H.nbytes`` bytes (1 thread and numba's thread count),
  median of 7: the memory-bandwidth floor of a matvec;
* errors: ``H.error_bound``, ``H.estimate_error(n_probe)``, and the exact
  relative error over ``--n-check`` random rows (direct kernel sums);
* references, only if ``n <= --dense-max`` (the dense matrix needs 8 n^2
  bytes): numba assembly of the dense matrix (``assemble_dense``, median of
  ``--repeats``) and the dense numpy matvec (median of 7), and the relative
  difference between ``H @ x`` and ``A @ x`` over all rows;
* peak resident memory (``getrusage``) after the H-matrix stages and at the
  end. The H-matrix is freed before the dense matrix is assembled.

Prints the command line, versions and thread settings, then one table.
"""

import argparse
import os
import platform
import resource
import sys
import time

import numpy as np


def median_time(func, repeats, warm_up=0):
    for _ in range(warm_up):
        func()
    times = []
    out = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = func()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), times, out


def peak_rss_gb():
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=40_000, help="number of points")
    p.add_argument("--repeats", type=int, default=3,
                   help="builds / assemblies per median")
    p.add_argument("--tol", type=float, default=1e-6, help="relative tolerance")
    p.add_argument("--leaf-size", type=int, default=32)
    p.add_argument("--eta", type=float, default=2.0)
    p.add_argument("--n-probe", type=int, default=10,
                   help="probe vectors of H.estimate_error")
    p.add_argument("--n-check", type=int, default=200,
                   help="random rows of the exact error check")
    p.add_argument("--dense-max", type=int, default=40_000,
                   help="largest n with dense references (8 n^2 bytes)")
    p.add_argument("--no-symmetric", action="store_true",
                   help="store every block (symmetric=False) instead of the upper "
                        "block triangle")
    args = p.parse_args(argv)

    import numba
    from threadpoolctl import threadpool_info

    import hmnumba
    from hmnumba import HMatrix
    from hmnumba.kernels import assemble_dense, laplace

    # The asv benchmarks' streaming helper, so both measure bandwidth alike.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from benchmarks.common import Streamer

    # Import and JIT cost are not part of any figure below.
    n = args.n
    opts = dict(tol=args.tol, leaf_size=args.leaf_size,
                admissibility="strong", eta=args.eta, symmetric=not args.no_symmetric)
    rng = np.random.default_rng(0)
    X = rng.random((n, 3))
    x = np.random.default_rng(1).random(n) - 0.5
    check = np.random.default_rng(2).choice(n, size=min(args.n_check, n),
                                             replace=False)

    print("command: " + " ".join([sys.executable] + sys.argv))
    blas = ", ".join(f"{d.get('internal_api')}={d.get('num_threads')}"
                     for d in threadpool_info()) or "none found"
    print(f"hmnumba {getattr(hmnumba, '__version__', '?')}, numba "
          f"{numba.__version__}, numpy {np.__version__}, Python "
          f"{platform.python_version()}, {platform.machine()}; numba threads "
          f"{numba.get_num_threads()}, BLAS threads (outside hmnumba) {blas}")
    print(f"problem: n={n} unit cube, Laplace 1/r, leaf {args.leaf_size}, "
          f"strong eta={args.eta}, tol={args.tol:g}, "
          f"{'every block stored' if args.no_symmetric else 'symmetric storage'}")

    t0 = time.perf_counter()
    nw = min(2_000, n)
    Hw = HMatrix.from_kernel(laplace, X[:nw], **opts)
    Hw @ x[:nw]
    Hw.estimate_error(n_probe=2)
    del Hw
    if n <= args.dense_max:
        assemble_dense(laplace, X[:min(500, n)])
    print(f"warm-up (JIT, {nw} points): {time.perf_counter() - t0:.1f} s")

    rows = []  # (quantity, value, unit)

    # -- H-matrix -----------------------------------------------------------
    build_times = []
    H = None
    for _ in range(args.repeats):
        H = None  # free the previous build before the next one
        t0 = time.perf_counter()
        H = HMatrix.from_kernel(laplace, X, **opts)
        build_times.append(time.perf_counter() - t0)
    t_build = float(np.median(build_times))
    nbytes = int(H.nbytes)

    t_mv, mv_times, y_h = median_time(lambda: H @ x, 7, warm_up=1)
    bound = float(H.error_bound)
    probe = float(H.estimate_error(n_probe=args.n_probe, random_state=0))
    y_ref_rows = laplace(X[check], X) @ x
    row_err = float(np.linalg.norm(y_h[check] - y_ref_rows)
                    / np.linalg.norm(y_ref_rows))
    ratio = float(H.compression_ratio)
    del H

    # Streaming reference over exactly nbytes, 1 thread and numba's threads.
    stream_t = {}
    for threads in sorted({1, numba.get_num_threads()}):
        s = Streamer(nbytes, n_threads=threads)
        stream_t[threads] = median_time(s, 7, warm_up=1)[0]
        s.close()
        del s
    t_stream = stream_t[max(stream_t)]
    rss_h = peak_rss_gb()

    rows += [
        ("H build (from_kernel)", t_build, "s",
         "builds: " + ", ".join(f"{t:.2f}" for t in build_times)),
        ("H matvec", 1e3 * t_mv, "ms",
         f"range {1e3 * min(mv_times):.1f}-{1e3 * max(mv_times):.1f} over 7"),
        ("H storage", nbytes / 1e9, "GB", f"{nbytes / 1e6:.1f} MB"),
        ("storage per point", nbytes / n / 1e3, "KB", "H.nbytes / n"),
        ("compression ratio", ratio, "x", "8 n^2 / H.nbytes"),
        ("error bound", bound, "", "H.error_bound"),
        ("probe error", probe, "", f"H.estimate_error(n_probe={args.n_probe})"),
        ("row error (exact)", row_err, "", f"{len(check)} random rows, direct sums"),
        ("H matvec bandwidth", nbytes / t_mv / 1e9, "GB/s", "H.nbytes / matvec time"),
    ]
    for threads, t in stream_t.items():
        rows.append((f"numpy stream, {threads} thread(s)", nbytes / t / 1e9, "GB/s",
                     f"{1e3 * t:.1f} ms over H.nbytes"))
    rows.append(("bandwidth fraction", t_stream / t_mv, "",
                 f"matvec GB/s / stream GB/s ({max(stream_t)} threads)"))
    rows.append(("peak RSS after H stages", rss_h, "GB", "getrusage"))

    # -- dense references ---------------------------------------------------
    if n <= args.dense_max:
        asm_times = []
        A = None
        for _ in range(args.repeats):
            A = None
            t0 = time.perf_counter()
            A = assemble_dense(laplace, X)
            asm_times.append(time.perf_counter() - t0)
        t_asm = float(np.median(asm_times))
        t_dmv, dmv_times, y_d = median_time(lambda: A @ x, 7, warm_up=1)
        dense_diff = float(np.linalg.norm(y_h - y_d) / np.linalg.norm(y_d))
        del A
        rows += [
            ("dense assembly (numba)", t_asm, "s",
             "assemblies: " + ", ".join(f"{t:.2f}" for t in asm_times)),
            ("dense numpy matvec", 1e3 * t_dmv, "ms",
             f"range {1e3 * min(dmv_times):.1f}-{1e3 * max(dmv_times):.1f} over 7"),
            ("build / assembly", t_build / t_asm, "", "H build time / dense assembly time"),
            ("matvec speed-up", t_dmv / t_mv, "x", "dense matvec / H matvec"),
            ("||Hx - Ax|| / ||Ax||", dense_diff, "", "all rows"),
        ]
    else:
        rows.append(("dense references", float("nan"), "",
                     f"skipped: n > --dense-max={args.dense_max} "
                     f"({8.0 * n * n / 1e9:.0f} GB)"))
    rows.append(("peak RSS overall", peak_rss_gb(), "GB", "getrusage"))

    # -- table ----------------------------------------------------------------
    w = max(len(r[0]) for r in rows)
    print()
    print(f"{'quantity':<{w}}  {'value':>11}  {'unit':<5}  note")
    print(f"{'-' * w}  {'-' * 11}  {'-' * 5}  {'-' * 30}")
    for name, value, unit, note in rows:
        v = f"{value:.3g}" if (abs(value) < 1e-2 and value != 0) else f"{value:.3f}"
        print(f"{name:<{w}}  {v:>11}  {unit:<5}  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
