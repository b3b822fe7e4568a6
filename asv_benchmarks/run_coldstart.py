"""Cold and warm first use: seconds with an empty and with a filled numba cache.

Each case runs in a fresh ``python`` subprocess, first with an empty
``NUMBA_CACHE_DIR`` (numba compiles what the case calls), then again with
the cache the first run left (numba loads it):

* ``readme``: the README's example (``from_kernel`` on 20,000 points, a
  matvec, ``from_dense`` of a rank-32 1024 x 512 array, ``summary()``);
* ``from_dense``: a first ``HMatrix.from_dense`` on a 256 x 256 array;
* ``from_kernel``: a first ``HMatrix.from_kernel`` on 1,000 points;
* ``warmup``: ``hmnumba warmup`` (every kernel group).

Each case gets its own empty cache, so the cold figures do not share
compilations. The reference is the same script with the cache filled.
Beside the wall seconds it prints the CPU seconds of the process (user +
system): on a shared machine the wall time of a compilation follows the
load, its CPU time much less (compilation runs on one thread).

Run from the repository root (several minutes on 2 cores)::

    python asv_benchmarks/run_coldstart.py [--only CASE ...] [--repeat N]
"""
import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

CASES = {
    "readme": """
import numpy as np
from hmnumba import HMatrix
from hmnumba.kernels import laplace
points = np.random.default_rng(0).random((20_000, 3))
H = HMatrix.from_kernel(laplace, points, tol=1e-6)
x = np.ones(len(points))
y = H @ x
print(H.compression_ratio, H.error_bound)
rng = np.random.default_rng(1)
W = rng.standard_normal((1024, 32)) @ rng.standard_normal((32, 512))
H2 = HMatrix.from_dense(W, tol=1e-4)
print(H2.summary())
""",
    "from_dense": """
import numpy as np
from hmnumba import HMatrix
x = np.sort(np.random.default_rng(0).random(256))
HMatrix.from_dense(1.0 / (1.0 + 10.0 * np.abs(x[:, None] - x[None, :])), tol=1e-4)
""",
    "from_kernel": """
import numpy as np
from hmnumba import HMatrix
from hmnumba.kernels import laplace
HMatrix.from_kernel(laplace, np.random.default_rng(0).random((1000, 3)), tol=1e-6)
""",
    "warmup": """
from hmnumba.warmup import warmup
warmup(out=False)
""",
}


def run(code, cache_dir):
    """Wall seconds and CPU seconds (user + system) of one fresh process."""
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=tuple(CASES), default=tuple(CASES))
    parser.add_argument("--repeat", type=int, default=1,
                        help="cold/warm pairs per case (medians are printed)")
    args = parser.parse_args(argv)
    print(f"| case | cold s | warm s | cold / warm | cold CPU s | warm CPU s |  "
          f"({args.repeat} run(s), median; load average {os.getloadavg()[0]:.1f})")
    print("|---|---|---|---|---|---|")
    for name in args.only:
        cold, warm = [], []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as cache:
                cold.append(run(CASES[name], cache))
                warm.append(run(CASES[name], cache))
        (c, c_cpu), (w, w_cpu) = ([statistics.median(x) for x in zip(*runs)]
                                  for runs in (cold, warm))
        print(f"| {name} | {c:.1f} | {w:.1f} | {c / w:.1f} | {c_cpu:.1f} | {w_cpu:.1f} |",
              flush=True)


if __name__ == "__main__":
    main()
