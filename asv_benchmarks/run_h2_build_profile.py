"""Where the stored kernel H^2 build spends its time, stage by stage.

Builds ``H2Matrix.from_kernel(laplace, points, tol=1e-6, leaf_size=32,
eta=2.0)`` on the anchors' cube points (``../shared/anchors``; uniform
points in the unit cube, seed 0, when that directory is missing) ``--repeat``
times in one process after a small warm-up build, and prints per build the
seconds of each stage: the cluster bases (``build_bases``, of which the
interpolative decompositions ``id_level``), the coupling compression
(``compress_couplings``: ACA and recompression in ``compress_blocks``, the
copy of the accepted factors in ``gather_factors``) and the dense blocks
(``kernel_blocks``, couplings then near field).

``--split`` then times, on one thread, the partial ACA alone and ACA with
its recompression (:func:`hmnumba.kernels.factors.recompress`) over the
couplings the last build stored as factors, per coupling.

Run: ``python asv_benchmarks/run_h2_build_profile.py [N] [--repeat R] [--split]``.
"""
import argparse
import os
import sys
import time

import numpy as np

from numba import njit

import hmnumba
from hmnumba import h2build
from hmnumba.kernels import compress, h2_build
from hmnumba.kernels.factors import GRAM_REL_TOL_FLOOR, aca_partial, recompress
from hmnumba.kernels.sources import builtin_source

STAGES = ((h2build, "build_bases"), (h2build, "compress_couplings"), (compress, "compress_blocks"),
          (compress, "gather_factors"), (h2_build, "kernel_blocks"), (h2_build, "id_level"))


def cube_points(n):
    drivers = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "anchors", "drivers")
    if os.path.isdir(drivers):
        sys.path.insert(0, drivers)
        from cube_problem import points
        return points(n)
    return np.random.default_rng(0).random((n, 3))


def timed(seconds, module, name):
    """Wrap ``module.name`` so that each call adds its seconds to ``seconds[name]``."""
    func = getattr(module, name)

    def run(*args, **kwargs):
        t = time.perf_counter()
        try:
            return func(*args, **kwargs)
        finally:
            seconds.setdefault(name, []).append(time.perf_counter() - t)
    setattr(module, name, run)


@njit
def _aca_all(src, r0, r1, c0, c1, kcap, rel_tol, with_recompression):
    """ACA (and recompression) of each block as ``compress_blocks`` runs them."""
    ranks = np.zeros(r0.shape[0], np.int64)
    for b in range(r0.shape[0]):
        U = np.empty((kcap[b] + 1, r1[b] - r0[b]))
        V = np.empty((kcap[b] + 1, c1[b] - c0[b]))
        k, est2, last, conv = aca_partial(src, r0[b], r1[b], c0[b], c1[b], 0.5 * rel_tol, 0.0,
                                          kcap[b] + 1, U, V)
        ranks[b] = k
        if with_recompression:
            tau = rel_tol * np.sqrt(est2)
            ranks[b] = recompress(U, V, k, max(tau - last, 0.0), GRAM_REL_TOL_FLOOR,
                                  np.sqrt(est2))[0].shape[0]
    return ranks


def split(captured):
    """Seconds per coupling of ACA alone and with recompression (one thread)."""
    code, length_scale, skel_xyz, vec_ptr, bt, bs, rel_tol, dtype = captured["args"]
    lowrank = captured["out"][0]
    t, s = bt[lowrank], bs[lowrank]
    r0, r1, c0, c1 = vec_ptr[t], vec_ptr[t + 1], vec_ptr[s], vec_ptr[s + 1]
    kcap = ((r1 - r0) * (c1 - c0) - 1) // ((r1 - r0) + (c1 - c0))
    src = builtin_source(code, length_scale, skel_xyz.T, skel_xyz.T)
    _aca_all(src, r0[:2], r1[:2], c0[:2], c1[:2], kcap[:2], rel_tol, True)    # compile
    for with_rec, label in ((False, "ACA alone"), (True, "ACA + recompression")):
        times, ranks = [], None
        for _ in range(3):
            t0 = time.perf_counter()
            ranks = _aca_all(src, r0, r1, c0, c1, kcap, rel_tol, with_rec)
            times.append(time.perf_counter() - t0)
        print(f"{label}: {1e6 * np.median(times) / t.size:.1f} us per coupling "
              f"({t.size} couplings, mean rank {ranks.mean():.1f})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("n", type=int, nargs="?", default=40000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--split", action="store_true")
    args = parser.parse_args()
    opts = dict(tol=1e-6, leaf_size=32, eta=2.0, admissibility="strong", mode="stored")
    hmnumba.H2Matrix.from_kernel(hmnumba.kernels.laplace, cube_points(2000), **opts)
    seconds = {}
    for module, name in STAGES:
        timed(seconds, module, name)
    captured = {}
    compress_couplings = h2build.compress_couplings

    def capture(*call):
        captured["args"], captured["out"] = call, compress_couplings(*call)
        return captured["out"]
    h2build.compress_couplings = capture
    X = cube_points(args.n)
    for _ in range(args.repeat):
        seconds.clear()
        t = time.perf_counter()
        hmnumba.H2Matrix.from_kernel(hmnumba.kernels.laplace, X, **opts)
        total = time.perf_counter() - t
        parts = ", ".join(f"{name} {sum(v):.3f} ({len(v)} calls)" for name, v in seconds.items())
        print(f"build {total:.3f} s: {parts}")
    if args.split:
        split(captured)


if __name__ == "__main__":
    main()
