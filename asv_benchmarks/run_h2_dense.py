"""Bytes of H2Matrix.from_dense beside HMatrix.from_dense and the truncated
SVD on the shuffled 2-D Poisson solution operator (inverse of the 5-point
Laplacian on a 32 x 32 grid, rows and columns shuffled) and, with
``--family N``, on the study's learned operators of size ``N`` (the
least-squares operators of :func:`hmnumba.experiments.families.operator_network`,
seed 0: Poisson 1-D and 2-D, Helmholtz 1-D, advection-diffusion 1-D).

Run: ``python asv_benchmarks/run_h2_dense.py [--family N]`` (prints markdown tables).
"""
import argparse
import time

import numpy as np

from hmnumba import H2Matrix, HMatrix


def poisson_operator(n_side=32, seed=0):
    T = 2 * np.eye(n_side) - np.eye(n_side, k=1) - np.eye(n_side, k=-1)
    L = np.kron(T, np.eye(n_side)) + np.kron(np.eye(n_side), T)
    G = np.linalg.inv(L)
    rng = np.random.default_rng(seed)
    return G[rng.permutation(G.shape[0])][:, rng.permutation(G.shape[1])]


def svd_bytes(W, tol, itemsize=8):
    s = np.linalg.svd(W, compute_uv=False)
    tail = np.concatenate((np.cumsum((s * s)[::-1])[::-1], [0.0]))
    k = int(np.argmax(tail <= tol * tol * (s * s).sum()))
    return k * sum(W.shape) * itemsize


def table(W):
    """One markdown table: bytes of each format at three tolerances."""
    norm = np.linalg.norm(W)
    print("| tol | H2 KB (err) | H2 float64 KB | H hierarchical KB | H default KB "
          "| H factor_dtype=auto KB | SVD f64 KB | SVD f32 KB | H2 / H hier. | H2 / H default "
          "| H2 build s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for tol in (1e-1, 1e-2, 1e-3):
        t0 = time.perf_counter()
        H2 = H2Matrix.from_dense(W, tol=tol, random_state=0)
        t_h2 = time.perf_counter() - t0
        err = np.linalg.norm(H2.to_dense() - W) / norm
        assert err <= tol
        Hh = HMatrix.from_dense(W, tol=tol, structure="hierarchical", random_state=0)
        Hd = HMatrix.from_dense(W, tol=tol, random_state=0)
        Ha = HMatrix.from_dense(W, tol=tol, random_state=0, factor_dtype="auto")
        H64 = H2Matrix.from_dense(W, tol=tol, random_state=0, storage="float64")
        print(f"| {tol:g} | {H2.nbytes / 1e3:.0f} ({err:.2g}) | {H64.nbytes / 1e3:.0f} "
              f"| {Hh.nbytes / 1e3:.0f} | {Hd.nbytes / 1e3:.0f} | {Ha.nbytes / 1e3:.0f} "
              f"| {svd_bytes(W, tol) / 1e3:.0f} "
              f"| {svd_bytes(W, tol, 4) / 1e3:.0f} | {H2.nbytes / Hh.nbytes:.2f} "
              f"| {H2.nbytes / Hd.nbytes:.2f} | {t_h2:.1f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", type=int, metavar="N",
                        help="also the study's learned operators of size N")
    args = parser.parse_args()
    print("Shuffled inverse of the 5-point Laplacian, 1024 x 1024\n")
    table(poisson_operator())
    if args.family:
        from hmnumba.experiments.families import operator_network
        for problem in ("poisson1d", "poisson2d", "helmholtz1d", "advdiff1d"):
            net = operator_network(problem, args.family, 0)
            print(f"\nLearned operator {net.name} (the study's operator family, seed 0)\n")
            table(np.asarray(net.weights[0], np.float64))


if __name__ == "__main__":
    main()
