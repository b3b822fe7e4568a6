"""Cold and warm first use: seconds with an empty and with a filled numba cache.

Each case runs in a fresh ``python`` subprocess, first with an empty
``NUMBA_CACHE_DIR`` (numba compiles what the case calls), then again with
the cache the first run left (numba loads it):

* ``readme``: the README's example (``from_kernel`` on 20,000 points, a
  matvec, ``from_dense`` of a rank-32 1024 x 512 array, ``summary()``),
  plus one small PINN loss gradient through an H-matrix layer;
* ``from_dense``: a first ``HMatrix.from_dense`` on a 256 x 256 array;
* ``from_kernel``: a first ``HMatrix.from_kernel`` on 1,000 points;
* ``warmup``: ``hmnumba warmup`` (every kernel group).

Each case gets its own empty cache, so the cold figures do not share
compilations. The reference is the same script with the cache filled.
Beside the wall seconds it prints the CPU seconds of the process (user +
system): on a shared machine the wall time of a compilation follows the
load, its CPU time much less (compilation runs on one thread).

``--profile`` runs each case once more with an empty cache and lists what
numba compiled: per function its compile CPU seconds (exclusive of the callees
it compiled meanwhile, and inclusive), the number of specialisations and
their signatures, then the seconds per compiler pass (a ``parfor`` pass
high in that list means parallel lowering). Compile events are numba's own
(``numba.core.event``, kind ``"numba:compile"`` and ``"numba:run_pass"``).

Run from the repository root (several minutes on 2 cores)::

    python asv_benchmarks/run_coldstart.py [--only CASE ...] [--repeat N] [--profile [N]]
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

# Prepended to a case under --profile: records the CPU seconds of every
# compilation, with those of compilations nested inside it subtracted
# (exclusive). CPU seconds, since the machine may be shared.
PROFILER = """
import atexit, json, sys, time
from numba.core import event as _ev

_stack, _records = [], []

class _Rec(_ev.Listener):
    def __init__(self, kind):
        self.kind = kind
    def on_start(self, e):
        _stack.append([self.kind, e.data, time.process_time(), 0.0])
    def on_end(self, e):
        kind, data, t0, nested = _stack.pop()
        total = time.process_time() - t0
        if kind == "fn":   # not the enclosing pass's nor function's own time
            for outer in reversed(_stack):
                outer[3] += total
                if outer[0] == "fn":
                    break
        if kind == "pass":
            _records.append(["pass", data["name"], "", total - nested, total])
        else:
            d = data["dispatcher"]
            name = getattr(d, "py_func", d)
            name = f"{getattr(name, '__module__', '?')}.{getattr(name, '__qualname__', name)}"
            sig = ", ".join(str(a) for a in data["args"])
            _records.append(["fn", name, sig, total - nested, total])

_ev.register("numba:compile", _Rec("fn"))
_ev.register("numba:run_pass", _Rec("pass"))
atexit.register(lambda: json.dump(_records, open(sys.argv[1], "w")))
"""

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
from hmnumba.pinn import PINN, HMatrixLayer, Poisson2D
net = PINN([2, 32, 32, 1], random_state=0)
problem = Poisson2D()
x_r = problem.sample_collocation(64, random_state=0)
x_b, g_b = problem.sample_boundary(32, random_state=0)
hidden = net.layers[1]
net.layers[1] = HMatrixLayer(HMatrix.from_dense(hidden.W, tol=1e-3, leaf_size=8), hidden.b)
loss, grads = net.loss(problem, x_r, x_b, g_b)
print(loss)
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


def profile(name, top):
    """Run case ``name`` once with an empty cache under :data:`PROFILER` and
    print the ``top`` functions and compiler passes by exclusive seconds."""
    with tempfile.TemporaryDirectory() as cache:
        out = os.path.join(cache, "profile.json")
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        subprocess.run([sys.executable, "-c", PROFILER + CASES[name], out], env=env,
                       check=True, stdout=subprocess.DEVNULL)
        with open(out) as f:
            records = json.load(f)
    fns, passes = {}, {}
    for kind, fname, sig, excl, incl in records:
        if kind == "pass":
            passes[fname] = passes.get(fname, 0.0) + excl
            continue
        entry = fns.setdefault(fname, [0.0, 0.0, []])
        entry[0] += excl
        entry[1] += incl
        entry[2].append((excl, sig))
    total = sum(e[0] for e in fns.values())
    print(f"\n### {name}: {total:.1f} CPU s compiling, {len(records) - sum(1 for r in records if r[0] == 'pass')} "
          f"specialisations of {len(fns)} functions\n")
    print("| function | excl. CPU s | incl. CPU s | specs | signatures (excl. s) |")
    print("|---|---|---|---|---|")
    for fname, (excl, incl, sigs) in sorted(fns.items(), key=lambda kv: -kv[1][0])[:top]:
        shown = "; ".join(f"({sig}) {t:.1f}" for t, sig in sorted(sigs, reverse=True)[:3])
        print(f"| {fname} | {excl:.1f} | {incl:.1f} | {len(sigs)} | "
              f"{shown if len(sigs) > 1 else ''} |")
    print("\n| compiler pass | excl. CPU s |\n|---|---|")
    for pname, t in sorted(passes.items(), key=lambda kv: -kv[1])[:8]:
        print(f"| {pname} | {t:.1f} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=tuple(CASES), default=tuple(CASES))
    parser.add_argument("--repeat", type=int, default=1,
                        help="cold/warm pairs per case (medians are printed)")
    parser.add_argument("--profile", type=int, nargs="?", const=25, default=0, metavar="N",
                        help="list the N functions that took longest to compile, per case")
    args = parser.parse_args(argv)
    if args.profile:
        for name in args.only:
            profile(name, args.profile)
        return
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
