"""Numba kernels of the H^2 build: proxy-point interpolative decompositions
(the nested cluster bases) and the coupling / near-field entries.

A cluster basis is stored in interpolative form. Node ``t`` has a candidate
list (a leaf: its own points; a parent: the skeletons of its two children,
first child first) of length ``m``, a pivot order ``piv`` of the candidates
and a rank ``k``: the candidates ``piv[:k]`` are the skeleton, and the rows of
the basis are ``I`` on the skeleton and ``T^T`` on the rest, ``T`` of shape
``(k, m - k)``. Only ``piv`` and ``T`` are stored (H2Pack's interpolative
bases store the full ``m x k`` matrix).

The skeleton is chosen from the proxy matrix ``K(proxy, candidates)``: proxy
points on spheres around the node that stand in for its whole far field
(H2Pack's proxy-point method). For the 3-D Laplace kernel one sphere inside
the source-free region represents every harmonic far field (the interior
Dirichlet problem is solved by a single-layer potential); other kernels get
shells out to the far edge of the domain. Nothing here checks its inputs.
"""
import numpy as np
from numba import njit, prange

from hmnumba.kernels.codes import FASTMATH
from hmnumba.kernels.sources import kernel_of_distance2


@njit(cache=True, fastmath=FASTMATH)
def proxy_matrix(code, length_scale, proxy, C):
    """``At[p, i] = k(proxy[p], C[i])`` for proxy points ``(P, d)`` and candidates ``(m, d)``."""
    P, d = proxy.shape
    m = C.shape[0]
    At = np.empty((P, m))
    for p in range(P):
        for i in range(m):
            r2 = 0.0
            for a in range(d):
                t = proxy[p, a] - C[i, a]
                r2 += t * t
            At[p, i] = kernel_of_distance2(code, length_scale, r2)
    return At


@njit(cache=True)
def interpolative_decomposition(At, tol):
    """Column interpolative decomposition ``At[:, rest] ~= At[:, skel] T``.

    Pivoted modified Gram-Schmidt on the columns of the triangular factor of
    ``At`` (the same pivots as on ``At``, at ``m^2`` per step instead of
    ``P m``); stops when the residual's Frobenius norm is at most ``tol``
    times that of ``At``. Returns ``(k, piv, T)``: ``piv[:k]`` is the skeleton,
    ``T`` has shape ``(k, m - k)``.
    """
    P, m = At.shape
    if P > m:
        R = np.linalg.qr(At)[1]
    else:
        R = At.copy()
    q = R.shape[0]
    W = np.ascontiguousarray(R.T)          # row i = column i
    piv = np.arange(m)
    norms2 = np.empty(m)
    for i in range(m):
        s = 0.0
        for a in range(q):
            s += W[i, a] * W[i, a]
        norms2[i] = s
    # Relative Frobenius criterion: the residual of the whole proxy matrix
    # (the sum of the residual column norms squared) at most tol^2 ||At||_F^2.
    budget = tol * tol * norms2.sum()
    Rk = np.zeros((m, m))                  # Rk[j, i]: coefficient of q_j in column i
    k = 0
    kmax = min(m, q)
    while k < kmax:
        j = k
        rest = 0.0
        for i in range(k, m):
            rest += norms2[i]
            if norms2[i] > norms2[j]:
                j = i
        if not rest > budget:
            break
        if j != k:
            for a in range(q):
                W[k, a], W[j, a] = W[j, a], W[k, a]
            for a in range(k):
                Rk[a, k], Rk[a, j] = Rk[a, j], Rk[a, k]
            piv[k], piv[j] = piv[j], piv[k]
            norms2[k], norms2[j] = norms2[j], norms2[k]
        nrm = 0.0
        for a in range(q):
            nrm += W[k, a] * W[k, a]
        nrm = np.sqrt(nrm)
        if nrm == 0.0:
            break
        for a in range(q):
            W[k, a] /= nrm
        Rk[k, k] = nrm
        for i in range(k + 1, m):
            c = 0.0
            for a in range(q):
                c += W[k, a] * W[i, a]
            Rk[k, i] = c
            s = 0.0
            for a in range(q):
                W[i, a] -= c * W[k, a]
                s += W[i, a] * W[i, a]
            norms2[i] = s
        k += 1
    T = np.empty((k, m - k))
    for c in range(m - k):                 # back substitution R11 T = R12
        for r in range(k - 1, -1, -1):
            s = Rk[r, k + c]
            for a in range(r + 1, k):
                s -= Rk[r, a] * T[a, c]
            T[r, c] = s / Rk[r, r]
    return k, piv, T


@njit(cache=True, fastmath=FASTMATH)
def gram_interpolative_decomposition(At, tol):
    """:func:`interpolative_decomposition` through the Gram matrix.

    Pivoted Cholesky of ``G = At^T At`` picks the same skeleton as pivoted
    QR of ``At`` (in exact arithmetic) at ``m k^2 / 2`` operations plus one
    BLAS product, instead of ``m min(P, m) k``. The Gram matrix squares the
    condition number: residuals are resolved down to about ``1e-8`` of
    ``||At||``, so the callers use it only for ``tol >= 1e-6`` and the QR
    path below that.
    """
    m = At.shape[1]
    G = np.ascontiguousarray(At.T) @ At
    d = np.empty(m)
    for i in range(m):
        d[i] = G[i, i]
    budget = tol * tol * d.sum()
    piv = np.arange(m)
    Rt = np.zeros((m, m))                   # Rt[i, a] = R[a, i]
    k = 0
    while k < m:
        j = k
        rest = 0.0
        for i in range(k, m):
            rest += max(d[i], 0.0)
            if d[i] > d[j]:
                j = i
        if not (rest > budget and d[j] > 0.0):
            break
        if j != k:
            piv[k], piv[j] = piv[j], piv[k]
            d[k], d[j] = d[j], d[k]
            for a in range(k):
                Rt[k, a], Rt[j, a] = Rt[j, a], Rt[k, a]
        rkk = np.sqrt(d[k])
        Rt[k, k] = rkk
        gk = piv[k]
        for i in range(k + 1, m):
            s = G[gk, piv[i]]
            for a in range(k):
                s -= Rt[k, a] * Rt[i, a]
            v = s / rkk
            Rt[i, k] = v
            d[i] -= v * v
        k += 1
    T = np.empty((k, m - k))
    for c in range(m - k):                 # back substitution R11 T = R12
        for r in range(k - 1, -1, -1):
            s = Rt[k + c, r]
            for a in range(r + 1, k):
                s -= Rt[a, r] * T[a, c]
            T[r, c] = s / Rt[r, r]
    return k, piv, T


# Below this tolerance the Gram matrix cannot resolve the residuals.
GRAM_MIN_TOL = 1e-6


@njit(cache=True, parallel=True)
def id_level(nodes, cand_ptr, cand_xyz, center, radius_ptr, radius, dirs, code, length_scale,
             tol, rank, piv_out, T_out, T_ptr):
    """Interpolative decompositions of the nodes of one level, in parallel.

    Node ``nodes[u]`` has candidates ``cand_xyz[cand_ptr[u]:cand_ptr[u + 1]]``
    and proxy shells of radii ``radius[radius_ptr[u]:radius_ptr[u + 1]]``
    around ``center[u]`` (points ``center + r * dirs``). Writes ``rank[u]``,
    the pivots into ``piv_out[cand_ptr[u]:...]`` and ``T`` (row-major) at
    ``T_out[T_ptr[u]:]`` (``T_ptr`` reserves ``m^2 / 4 + 1`` per node).
    """
    n_dirs, d = dirs.shape
    for u in prange(nodes.shape[0]):
        c0, c1 = cand_ptr[u], cand_ptr[u + 1]
        m = c1 - c0
        n_shell = radius_ptr[u + 1] - radius_ptr[u]
        if m == 0 or n_shell == 0:
            rank[u] = 0
            for i in range(m):
                piv_out[c0 + i] = i
            continue
        proxy = np.empty((n_shell * n_dirs, d))
        for sh in range(n_shell):
            r = radius[radius_ptr[u] + sh]
            for p in range(n_dirs):
                for a in range(d):
                    proxy[sh * n_dirs + p, a] = center[u, a] + r * dirs[p, a]
        At = proxy_matrix(code, length_scale, proxy, cand_xyz[c0:c1])
        if tol >= GRAM_MIN_TOL:
            k, piv, T = gram_interpolative_decomposition(At, tol)
        else:
            k, piv, T = interpolative_decomposition(At, tol)
        rank[u] = k
        for i in range(m):
            piv_out[c0 + i] = piv[i]
        o = T_ptr[u]
        for a in range(k):
            for b in range(m - k):
                T_out[o + a * (m - k) + b] = T[a, b]


@njit(cache=True, parallel=True, fastmath=FASTMATH)
def kernel_blocks(code, length_scale, xyz, row_pt, rlo, rhi, col_pt, clo, chi, bt, bs, offset,
                  out):
    """Entries of blocks ``K(points of bt, points of bs)``, row-major at ``out[offset[b]:]``.

    ``xyz`` is ``(d, n)`` (coordinates by axis); the points of row node ``t``
    are ``row_pt[rlo[t]:rhi[t]]`` (indices into ``xyz``'s columns), those of
    column node ``s`` are ``col_pt[clo[s]:chi[s]]``.
    """
    d = xyz.shape[0]
    for b in prange(bt.shape[0]):
        t, s = bt[b], bs[b]
        r0, r1 = rlo[t], rhi[t]
        q0, q1 = clo[s], chi[s]
        n = q1 - q0
        o = offset[b]
        for i in range(r1 - r0):
            pi = row_pt[r0 + i]
            for j in range(n):
                pj = col_pt[q0 + j]
                r2 = 0.0
                for a in range(d):
                    t_ = xyz[a, pi] - xyz[a, pj]
                    r2 += t_ * t_
                out[o + i * n + j] = kernel_of_distance2(code, length_scale, r2)
    return out
