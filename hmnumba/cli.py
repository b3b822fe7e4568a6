"""The ``hmnumba`` command line (``python -m hmnumba ...``).

Subcommands
-----------
``demo``
    Compress the standard kernel problem (3-D Laplace, points uniform in the
    unit cube) and a permuted weight-like matrix; print build time,
    compression ratio, error bound and matvec speed-up against dense numpy.

Bad input exits with status 2 and a one-line message.
"""
import argparse
import sys
import time


def _demo(args):
    import numpy as np

    from hmnumba import HMatrix
    from hmnumba.kernels import assemble_dense, laplace

    rng = np.random.default_rng(args.seed)
    n = args.n
    points = rng.random((n, 3))
    x = rng.uniform(-0.5, 0.5, n)

    print(f"hmnumba demo: 3-D Laplace kernel 1/r, {n} points uniform in the unit cube, "
          f"tol {args.tol:g}, leaf 32, strong admissibility eta 2")
    t = time.perf_counter()
    HMatrix.from_kernel(laplace, points[:1000], tol=args.tol)
    print(f"  warm-up build (numba compilation or cache load)  {time.perf_counter() - t:8.2f} s")
    t = time.perf_counter()
    H = HMatrix.from_kernel(laplace, points, tol=args.tol)
    build = time.perf_counter() - t
    t = time.perf_counter()
    A = assemble_dense(laplace, points)
    assembly = time.perf_counter() - t
    H @ x
    mv_h = _median_time(lambda: H @ x)
    mv_d = _median_time(lambda: A @ x)
    err = np.linalg.norm(H @ x - A @ x) / np.linalg.norm(A @ x)
    print(f"  H-matrix build                                   {build:8.2f} s "
          f"(dense assembly with numba {assembly:.2f} s)")
    print(f"  storage                                          {H.nbytes / 1e6:8.1f} MB "
          f"(dense {H.dense_nbytes / 1e6:.1f} MB), compression ratio {H.compression_ratio:.2f}")
    print(f"  error bound (ACA estimates)                      {H.error_bound:8.1e} "
          f"(probe {H.estimate_error(random_state=0):.1e}, matvec vs dense {err:.1e})")
    print(f"  matvec                                           {1e3 * mv_h:8.1f} ms "
          f"(dense numpy {1e3 * mv_d:.1f} ms): speed-up {mv_d / mv_h:.2f}x")
    del A

    m = 1024
    s = np.sort(rng.random(m))
    W = np.exp(-8.0 * np.abs(s[:, None] - s[None, :])) + 1e-3 * rng.standard_normal((m, m)) / m
    W = W[rng.permutation(m)][:, rng.permutation(m)]
    print(f"\nweight-like {m} x {m} matrix (smooth kernel, rows and columns shuffled, "
          f"small noise), tol 1e-3, PCA clustering")
    t = time.perf_counter()
    Hw = HMatrix.from_dense(W, tol=1e-3, random_state=args.seed)
    print(f"  build {time.perf_counter() - t:.2f} s, compression ratio "
          f"{Hw.compression_ratio:.2f}, error bound {Hw.error_bound:.2e} (exact), true error "
          f"{np.linalg.norm(Hw.to_dense() - W) / np.linalg.norm(W):.2e}")
    return 0


def _median_time(fn, repeats=7):
    import numpy as np
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def build_parser():
    parser = argparse.ArgumentParser(
        prog="hmnumba",
        description="Adaptive, error-bounded hierarchical matrices with Numba.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="compress the standard problems and report figures")
    demo.add_argument("--n", type=int, default=12000,
                      help="number of points of the kernel problem (default 12000)")
    demo.add_argument("--tol", type=float, default=1e-6,
                      help="relative tolerance (default 1e-6)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.set_defaults(func=_demo)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, OSError) as exc:
        print(f"hmnumba: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
