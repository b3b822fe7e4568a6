"""Low-precision numbers and sparse outliers on the device (simulator).

``to("cuda")`` copies the decoded working copy (:mod:`hmnumba.storage`);
the sparse part of ``W = S + H`` is applied on the host.
"""
import numpy as np
import pytest
from numba import cuda

from hmnumba import HMatrix


@pytest.mark.parametrize("kind", ["float16", "int8"])
def test_low_precision_on_the_device_matches_the_host(kind):
    rng = np.random.default_rng(3)
    x = np.sort(rng.random(72))
    W = 1.0 / (1.0 + 10 * np.abs(x[:, None] - x[None, :]))
    W.ravel()[rng.choice(W.size, 20, replace=False)] += 5.0
    H = HMatrix.from_dense(W, tol=5e-2, leaf_size=16, factor_dtype=kind, outliers="auto",
                           structure="hierarchical")
    assert H.encoding is not None and H.outliers is not None
    v = rng.standard_normal((72, 2))
    host = H @ v
    nbytes = H.nbytes
    H.to("cuda")
    assert H.nbytes == nbytes
    assert np.allclose(H @ v, host, rtol=1e-10, atol=1e-10)
    assert np.allclose(H.T @ v, H.to("cpu").T @ v, rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="outliers"):
        H.to("cuda") @ cuda.to_device(v)
