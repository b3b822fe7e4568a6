#!/usr/bin/env python3
"""Memory bandwidth of the symmetric-storage matvec on a synthetic block list.

    python3 asv_benchmarks/run_symmetric_matvec.py [--dtype float64]
        [--slabs 16] [--layout ordered|split|shuffled] [--repeats 9]

The blocks resemble an H-matrix of the 3-D Laplace kernel at N = 40,000
(``default_rng(0)``): 38,000 strictly upper low-rank blocks of 70-200 rows
and columns with ranks 18-22, 32 x 32 dense diagonal blocks and strictly
upper dense blocks of 20-32 x 32 holding about a quarter of the numbers
(about 2.2 GB of float64). ``--layout`` puts the blocks' numbers in ``data``
in storage order (``ordered``), low-rank blocks first then dense ones, as
:func:`hmnumba.construct.build` does (``split``), or in a random block order
(``shuffled``).

Prints, for :func:`hmnumba.kernels.symmetric.symmetric_hmatvec` with each
slab count and for ``np.dot(data, data)`` (the streaming reference, all
threads), the median time of ``--repeats`` interleaved calls and the
bandwidth fraction ``t_dot / t``. ``np.dot`` runs first in each round:
OpenBLAS threads spin for a while after a call and would slow a numba
kernel that ran right after them.
"""
import argparse
import time

import numba
import numpy as np
from threadpoolctl import threadpool_limits

from hmnumba.blocks import symmetric_slabs
from hmnumba.kernels.symmetric import symmetric_hmatvec

N = 40_000


def block_list(dtype, layout, rng):
    """``(data, r0, r1, c0, c1, rank, offset)`` of the synthetic matrix."""
    n_lr = 38_000
    m_lr, n_lr_ = rng.integers(70, 201, n_lr), rng.integers(70, 201, n_lr)
    k_lr = rng.integers(18, 23, n_lr)
    r0_lr, c0_lr = rng.integers(0, N // 2 - 200, n_lr), rng.integers(N // 2, N - 200, n_lr)
    n_diag = N // 32
    m_d = rng.integers(20, 33, 200_000)
    target = int((k_lr * (m_lr + n_lr_)).sum()) // 3 - n_diag * 1024
    n_up = int(np.searchsorted(np.cumsum(m_d * 32), target))
    m_d = m_d[:n_up]
    r0_d, c0_d = rng.integers(0, N // 2 - 32, n_up), rng.integers(N // 2, N - 32, n_up)
    diag = np.arange(n_diag) * 32
    r0 = np.concatenate([diag, r0_lr, r0_d])
    r1 = np.concatenate([diag + 32, r0_lr + m_lr, r0_d + m_d])
    c0 = np.concatenate([diag, c0_lr, c0_d])
    c1 = np.concatenate([diag + 32, c0_lr + n_lr_, c0_d + 32])
    rank = np.concatenate([-np.ones(n_diag, np.int64), k_lr, -np.ones(n_up, np.int64)])
    order = np.lexsort((c0, r0))
    r0, r1, c0, c1, rank = (a[order].astype(np.int64) for a in (r0, r1, c0, c1, rank))
    size = np.where(rank < 0, (r1 - r0) * (c1 - c0), rank * ((r1 - r0) + (c1 - c0)))
    memory_order = {"ordered": np.arange(rank.size),
                    "split": np.concatenate([np.flatnonzero(rank >= 0),
                                             np.flatnonzero(rank < 0)]),
                    "shuffled": rng.permutation(rank.size)}[layout]
    offset = np.zeros(rank.size, np.int64)
    offset[memory_order[1:]] = np.cumsum(size[memory_order])[:-1]
    data = rng.standard_normal(int(size.sum())).astype(dtype)
    return data, r0, r1, c0, c1, rank, offset


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    p.add_argument("--slabs", type=int, nargs="+", default=[16])
    p.add_argument("--layout", default="split", choices=("ordered", "split", "shuffled"))
    p.add_argument("--repeats", type=int, default=9)
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    data, r0, r1, c0, c1, rank, offset = block_list(np.dtype(args.dtype), args.layout, rng)
    x = rng.standard_normal(N)
    threads = numba.get_num_threads()
    print(f"N={N}, {rank.size} blocks, {data.nbytes / 1e9:.2f} GB of {args.dtype}, "
          f"layout {args.layout}, {threads} threads")

    def dot():
        with threadpool_limits(threads, "blas"):
            return np.dot(data, data)

    funcs = {"np.dot(data, data)": dot}
    for s in args.slabs:
        ptr = symmetric_slabs(r0, r1, c0, c1, rank, s)
        funcs[f"symmetric_hmatvec, {s} slabs"] = (
            lambda ptr=ptr: symmetric_hmatvec(data, r0, r1, c0, c1, rank, offset, ptr, x))
    times = {name: [] for name in funcs}
    for f in funcs.values():
        f()
    for _ in range(args.repeats):   # interleaved: machine noise hits all alike
        for name, f in funcs.items():
            t = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t)
    t_dot = float(np.median(times["np.dot(data, data)"]))
    for name, ts in times.items():
        t = float(np.median(ts))
        print(f"{name:32s} median {1e3 * t:7.1f} ms  {data.nbytes / t / 1e9:6.2f} GB/s  "
              f"fraction {t_dot / t:.3f}")


if __name__ == "__main__":
    main()
