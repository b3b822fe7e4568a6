"""Numba kernels of the low-precision storage (:mod:`hmnumba.storage`).

Only what the encoding needs that numpy does slowly: the exact squared
error of every packed block against the matrix it approximates, so that
the rounding of factors and dense blocks is counted in each block's error
(the bound ``||A - H||_F <= tol ||A||_F`` stays exact). Products do not
live here: a low-precision matrix multiplies with its decoded working copy
through the ordinary product kernels, so its products have the bits that
kernels decoding the codes on the fly would have.

This file calls no cached function of another file (see the design's
section 5 on numba's cache and cross-file calls).
"""
import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def packed_block_errors2(A, data, r0, r1, c0, c1, rank, offset):
    """``err2[b] = ||A[r0:r1, c0:c1] - H_b||_F**2`` for every packed block.

    ``A`` is the matrix in the blocks' (cluster) order; ``data`` holds the
    blocks as :mod:`hmnumba.hmatrix` packs them (dense ``m_b x n_b``
    row-major, low-rank ``U^T`` then ``V^T``). Accumulates in float64, one
    block per task and a fixed order inside it, so the result does not
    depend on the thread count.
    """
    nb = rank.shape[0]
    err2 = np.zeros(nb)
    for b in prange(nb):
        m = r1[b] - r0[b]
        n = c1[b] - c0[b]
        k = rank[b]
        o = offset[b]
        s = 0.0
        row = np.empty(n)
        for i in range(m):
            if k < 0:
                for j in range(n):
                    row[j] = data[o + i * n + j]
            else:
                row[:] = 0.0
                for l in range(k):
                    u = np.float64(data[o + l * m + i])
                    v0 = o + k * m + l * n
                    for j in range(n):
                        row[j] += u * data[v0 + j]
            for j in range(n):
                d = np.float64(A[r0[b] + i, c0[b] + j]) - row[j]
                s += d * d
        err2[b] = s
    return err2
