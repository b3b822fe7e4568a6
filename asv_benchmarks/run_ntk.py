#!/usr/bin/env python3
"""compress_ntk on a large collocation set: time, peak memory, accuracy.

    python3 asv_benchmarks/run_ntk.py [N] [TOL] [WIDTH]     (default 20000 1e-4 32)

A PINN ``[2, W, W, W, 1]`` (tanh, Glorot, ``random_state=0``) is trained
for 20 L-BFGS iterations on Poisson 2-D (128 collocation, 32 boundary
points), then the residual NTK ``K_rr = J_r J_r^T`` over ``N`` uniform
collocation points (``default_rng(0)``) is compressed with
``hmnumba.ntk.compress_ntk`` (leaf 32, strong admissibility, eta 2). The
dense ``K_rr`` would take ``8 N^2`` bytes (3.2 GB at N = 20,000) and is never
formed. A small warm-up run first keeps JIT compilation out of the figures.

The measured part runs in a child process, so its peak RSS
(``getrusage(RUSAGE_CHILDREN).ru_maxrss``) counts only it: the training,
the Jacobian rows (``N x P``, reordered in place), the H-matrix build, ``estimate_error`` (256
exact rows of ``J J^T`` against random probes) and the 6 largest
eigenvalues by ``eigsh`` on the operator.

Measured 2026-11-25 on the shared 2-core test machine (load average 6-10,
so wall times are about twice the CPU times), P = 2241 parameters:

    python3 asv_benchmarks/run_ntk.py 20000 1e-4 32
      42.6 s wall / 21.1 s CPU (Jacobian rows 10.0 s, build 32.6 s), 111 MB
      (dense 3.2 GB, ratio 28.7), estimate_error 5.00e-05, error_bound
      5.54e-05, eigsh top-6 3.5 s, peak RSS 0.94 GB
    python3 asv_benchmarks/run_ntk.py 50000 1e-4 32
      111.1 s wall / 62.1 s CPU (Jacobian rows 34.2 s, build 76.9 s), 319 MB
      (dense 20 GB, ratio 62.7), estimate_error 6.48e-05, error_bound
      5.60e-05, eigsh top-6 8.6 s, peak RSS 1.78 GB
"""
import json
import resource
import subprocess
import sys
import time

import numpy as np


def child(n, tol, width):
    from hmnumba.ntk import compress_ntk, ntk_feature_map, ntk_spectrum
    from hmnumba.pinn import PINN, Poisson2D, train

    prob = Poisson2D()
    net = PINN([2, width, width, width, 1], random_state=0)
    train(net, prob, epochs=20, optimizer="lbfgs", n_collocation=128, n_boundary=32,
          progress=False, random_state=0)
    x = np.random.default_rng(0).random((n, 2))
    fmap = ntk_feature_map(net, problem=prob)
    compress_ntk(fmap, x[:1000], tol=tol)                # warm-up: no JIT below
    t0, c0 = time.perf_counter(), time.process_time()
    H = compress_ntk(fmap, x, tol=tol, random_state=0)
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    t1 = time.perf_counter()
    est = H.estimate_error(random_state=0)
    t_est = time.perf_counter() - t1
    t2 = time.perf_counter()
    top = ntk_spectrum(H, k=6, random_state=0)
    t_eig = time.perf_counter() - t2
    return dict(n=n, tol=tol, width=width, n_params=net.n_params, seconds=total, cpu_seconds=cpu,
                build_seconds=H.params["build_seconds"], jacobian_seconds=total -
                H.params["build_seconds"], estimate_error=est, estimate_seconds=t_est,
                error_bound=H.error_bound, nbytes=H.nbytes, ratio=H.compression_ratio,
                dense_nbytes=H.dense_nbytes, eigsh_seconds=t_eig, top_eigenvalues=top.tolist(),
                summary=H.summary())


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        n, tol, width = int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
        print(json.dumps(child(n, tol, width)))
        return
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    tol = float(sys.argv[2]) if len(sys.argv) > 2 else 1e-4
    width = int(sys.argv[3]) if len(sys.argv) > 3 else 32
    out = subprocess.run([sys.executable, __file__, "--child", str(n), str(tol), str(width)],
                         check=True, capture_output=True, text=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6   # KB -> GB
    print(r["summary"])
    print(f"compress_ntk N={n} tol={tol:g} width={width} (P={r['n_params']}): "
          f"{r['seconds']:.1f} s wall, {r['cpu_seconds']:.1f} s CPU (Jacobian rows {r['jacobian_seconds']:.1f} s, build "
          f"{r['build_seconds']:.1f} s), storage {r['nbytes'] / 1e6:.0f} MB vs dense "
          f"{r['dense_nbytes'] / 1e9:.1f} GB (ratio {r['ratio']:.1f}), estimate_error "
          f"{r['estimate_error']:.2e} ({r['estimate_seconds']:.1f} s), error_bound "
          f"{r['error_bound']:.2e}, eigsh top-6 {r['eigsh_seconds']:.1f} s "
          f"(lambda_max {r['top_eigenvalues'][0]:.4e}), peak RSS {rss:.2f} GB")


if __name__ == "__main__":
    main()
