"""H^2 kernels: the same bits whether numba compiles them in this process
or loads them from its cache.

The H^2 products and builds use restricted fastmath with ``reassoc`` inside
``prange`` loops, which lets LLVM pick a summation order when it compiles;
the PINN kernels once gave different bits cold and warm for exactly this
reason. A subprocess with an empty ``NUMBA_CACHE_DIR`` compiles every H^2
kernel it calls, a second one loads them from the cache the first left;
both print a SHA-256 of the built arrays and of every product (kernel
H^2 stored and on-the-fly, general H^2 from a dense array and from an
H-matrix, vector and matrix right-hand sides, rmatvec): the digests must
agree.
"""
import textwrap

import pytest

import test_cold_warm

SCRIPT = textwrap.dedent("""
    import hashlib
    import numpy as np
    from hmnumba import H2Matrix, HMatrix
    from hmnumba.kernels import gaussian, laplace

    out = []
    rng = np.random.default_rng(0)
    X = rng.random((900, 3))
    for H in (H2Matrix.from_kernel(laplace, X, tol=1e-6),
              H2Matrix.from_kernel(laplace, X, tol=1e-4),
              H2Matrix.from_kernel(laplace, X, tol=1e-6, mode="on-the-fly"),
              H2Matrix.from_kernel(gaussian.with_length_scale(0.3), X[:, :2], tol=1e-6,
                                   mode="on-the-fly")):
        out += [v for v in H._a.values() if isinstance(v, np.ndarray)]
        out += [H @ np.linspace(-1, 1, 900), H @ rng.standard_normal((900, 5))]
    x = np.sort(rng.random(300))
    W = 1.0 / (1.0 + 10.0 * np.abs(x[:, None] - x[None, :])) + 1e-5 * rng.random((300, 300))
    for G in (H2Matrix.from_dense(W, tol=1e-5, leaf_size=16, random_state=0),
              H2Matrix.from_hmatrix(HMatrix.from_dense(W, tol=1e-6, leaf_size=16)),
              H2Matrix.from_hmatrix(HMatrix.from_dense(W + W.T, tol=1e-6, leaf_size=16,
                                                       symmetric=True))):
        v = rng.standard_normal(300)
        out += [G @ v, G.rmatvec(v), G @ rng.standard_normal((300, 4)), np.array([G.error])]
    digest = hashlib.sha256()
    for a in out:
        digest.update(np.ascontiguousarray(a).tobytes())
    print(digest.hexdigest())
""")


@pytest.mark.slow
def test_h2_cold_and_warm_cache_give_the_same_bits(tmp_path, monkeypatch):
    # the runner of tests/test_cold_warm.py (cold subprocess, then warm) on this script
    monkeypatch.setattr(test_cold_warm, "SCRIPT", SCRIPT)
    test_cold_warm.test_cold_and_warm_cache_give_the_same_bits(tmp_path)
