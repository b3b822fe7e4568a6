#!/usr/bin/env python3
"""The Laplace cube on a Dask LocalCluster and in one process, same run.

    python3 asv_benchmarks/run_distributed.py --n 200000 --tol 1e-4 --workers 2

Problem: ``n`` points uniform in the unit cube
(``np.random.default_rng(0).random((n, 3))``), Laplace kernel ``1/|x - y|``
with zero diagonal, leaf size 32, strong admissibility, eta 2.

Stages, in this order (numba is warmed up first, in this process and in
every worker, on 2,000 points, so no JIT time is in any figure):

1. ``DistributedHMatrix.from_kernel`` on a LocalCluster of ``--workers``
   processes with 1 Dask thread each (no memory limit, so nothing spills):
   build time, then matvec (median of 5 after one warm-up call);
   peak resident memory of every worker (its own ``getrusage`` maximum,
   exact, reported next to its resident size after the warm-up);
2. optionally (``--joblib``) ``HMatrix.from_kernel(n_jobs=-1)`` under
   ``joblib.parallel_config(backend="dask")`` on the same cluster (the
   blocks are compressed on the workers, the matrix is assembled here);
3. the cluster is closed, then ``HMatrix.from_kernel`` in this process
   (numba's threads): build time, matvec, peak RSS of this process; and the
   relative difference between the distributed and the local ``H @ x``.

Measured on this 2-core, 24 GB VM, shared with other jobs (so the times are
upper bounds). ``--n 200000 --tol 1e-4 --workers 2`` (load average 2-7):

| stage | build s | matvec ms | storage GB |
|---|---|---|---|
| distributed build | 99.9 | 3059 | 8.87 |
| local build (this process) | 102.7 | 2668 | 8.87 |

Peak RSS per worker 5.04 and 5.08 GB (0.31 after warm-up), this process
9.75 GB; error bound 7.15e-5; distributed vs local ``H @ x``: relative
difference 0 (the same bits).

``--n 200000 --tol 1e-3 --workers 2 --joblib`` (load average 6-9):

| stage | build s | matvec ms | storage GB |
|---|---|---|---|
| distributed build | 52.7 | 3083 | 5.83 |
| n_jobs=-1, dask backend | 129.5 | 2953 | 5.83 |
| local build (this process) | 73.4 | 2044 | 5.83 |

Peak RSS per worker 3.53 and 3.55 GB; this process 8.36 GB (it also held
the ``n_jobs`` result); error bound 7.26e-4; relative difference 0. Tol 1e-6
would need about 17 GB per copy of the matrix.
"""
import argparse
import os
import resource
import sys
import time

import numpy as np


def peak_rss_gb():
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def rss_gb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9


def median_time(func, repeats, warm_up=1):
    for _ in range(warm_up):
        func()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = func()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--joblib", action="store_true",
                   help="also time the n_jobs build under joblib's dask backend")
    args = p.parse_args(argv)

    import dask
    import distributed
    import joblib
    import numba

    from hmnumba import HMatrix
    from hmnumba.distributed import DistributedHMatrix
    from hmnumba.kernels import laplace

    print("$ python3 asv_benchmarks/run_distributed.py " + " ".join(sys.argv[1:]))
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, numba {numba.__version__}, "
          f"dask {dask.__version__}, distributed {distributed.__version__}, "
          f"cores {os.cpu_count()}, numba threads {numba.get_num_threads()}")
    X = np.random.default_rng(0).random((args.n, 3))
    x = np.random.default_rng(1).standard_normal(args.n)
    small = np.random.default_rng(2).random((2000, 3))
    HMatrix.from_kernel(laplace, small, tol=args.tol) @ small[:, 0]
    rows = []

    cluster = distributed.LocalCluster(n_workers=args.workers, threads_per_worker=1,
                                       processes=True, host="127.0.0.1",
                                       dashboard_address=None, memory_limit=0)
    client = distributed.Client(cluster)
    try:
        warm = DistributedHMatrix.from_kernel(laplace, small, client, tol=args.tol)
        warm @ small[:, 0]
        del warm
        base = client.run(rss_gb)
        t0 = time.perf_counter()
        D = DistributedHMatrix.from_kernel(laplace, X, client, tol=args.tol)
        t_build = time.perf_counter() - t0
        t_mv, y_dist = median_time(lambda: D @ x, 5)
        peaks = client.run(peak_rss_gb)
        nbytes = D.nbytes
        rows.append(("distributed build", t_build, t_mv, nbytes))
        print(f"distributed: {D.n_parts} parts, bounds {D.bounds.tolist()}, build "
              f"{t_build:.1f} s, matvec {1e3 * t_mv:.0f} ms, storage {nbytes / 1e9:.2f} GB")
        for addr in sorted(peaks):
            print(f"  worker {addr}: peak RSS {peaks[addr]:.2f} GB "
                  f"(after warm-up {base[addr]:.2f} GB)")
        del D
        if args.joblib:
            t0 = time.perf_counter()
            with joblib.parallel_config(backend="dask"):
                Hj = HMatrix.from_kernel(laplace, X, tol=args.tol, n_jobs=-1)
            t_build = time.perf_counter() - t0
            t_mv, _ = median_time(lambda: Hj @ x, 5)
            rows.append(("n_jobs=-1, dask backend", t_build, t_mv, Hj.nbytes))
            del Hj
            print(f"  after the n_jobs build, worker peak RSS: "
                  + ", ".join(f"{v:.2f} GB" for v in client.run(peak_rss_gb).values()))
    finally:
        client.close()
        cluster.close()

    t0 = time.perf_counter()
    H = HMatrix.from_kernel(laplace, X, tol=args.tol)
    t_build = time.perf_counter() - t0
    t_mv, y_local = median_time(lambda: H @ x, 5)
    rows.append(("local build (this process)", t_build, t_mv, H.nbytes))
    print(f"local: peak RSS of this process {peak_rss_gb():.2f} GB, "
          f"error bound {H.error_bound:.2e}")
    diff = np.linalg.norm(y_dist - y_local) / np.linalg.norm(y_local)
    print(f"distributed vs local H @ x: relative difference {diff:.1e}")
    print()
    print("| stage | build s | matvec ms | storage GB |")
    print("|---|---|---|---|")
    for name, tb, tm, nb in rows:
        print(f"| {name} | {tb:.1f} | {1e3 * tm:.0f} | {nb / 1e9:.2f} |")


if __name__ == "__main__":
    main()
