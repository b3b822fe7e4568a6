"""The same bits whether numba compiles a kernel in this process or loads it
from its cache.

A subprocess with an empty ``NUMBA_CACHE_DIR`` compiles everything it calls;
a second one with the cache the first left loads it. Both compute a dense
build, a kernel build, products and a PINN loss gradient through a dense and
an H-matrix layer, and print a SHA-256 of every result's bytes: the digests
must agree. (A fastmath ``reassoc`` kernel may legally compile to a
different summation order each time; this test is what says it does not.)
"""
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import hashlib
    import numpy as np
    from hmnumba import HMatrix
    from hmnumba.kernels import laplace
    from hmnumba.pinn import PINN, HMatrixLayer, Poisson2D

    out = []
    rng = np.random.default_rng(0)
    x = np.sort(rng.random(300))
    A = 1.0 / (1.0 + 10.0 * np.abs(x[:, None] - x[None, :])) + 1e-5 * rng.random((300, 300))
    H = HMatrix.from_dense(A, tol=1e-5, leaf_size=16, structure="hierarchical")
    v = rng.standard_normal(300)
    out += [H.data, H @ v, H.T @ v, H @ rng.standard_normal((300, 20))]
    K = HMatrix.from_kernel(laplace, rng.random((800, 3)), tol=1e-6, leaf_size=16)
    out += [K.data, K @ np.ones(800)]
    net = PINN([2, 48, 48, 1], random_state=0)
    problem = Poisson2D()
    x_r = problem.sample_collocation(64, random_state=0)
    x_b, g_b = problem.sample_boundary(32, random_state=0)
    hidden = net.layers[1]
    net.layers[1] = HMatrixLayer(HMatrix.from_dense(hidden.W, tol=1e-3, leaf_size=8,
                                                    structure="hierarchical"), hidden.b)
    loss, grads = net.loss(problem, x_r, x_b, g_b)
    out += [np.array([loss])] + [np.asarray(g) for g in grads]
    digest = hashlib.sha256()
    for a in out:
        digest.update(np.ascontiguousarray(a).tobytes())
    print(digest.hexdigest())
""")


@pytest.mark.slow
def test_cold_and_warm_cache_give_the_same_bits(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def run():
        proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=root,
                              capture_output=True, text=True, timeout=1800)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout.strip().splitlines()[-1]

    cold = run()
    assert any((tmp_path / "cache").rglob("*.nbi"))   # the first run filled the cache
    warm = run()
    assert cold == warm
