"""Numba kernels of the PINN module: gradients with respect to the packed
H-matrix storage, and the nuclear-norm rank surrogate.

All kernels work on the flat arrays of an :class:`~hmnumba.HMatrix` (DESIGN
section 4) in cluster (permuted) index space. A low-rank block ``b`` of rank
``k`` stores ``U_b^T`` (``k x m_b``, row-major) then ``V_b^T`` (``k x n_b``)
at ``data[offset[b]:]``; a dense block stores ``m_b x n_b`` row-major. A
gradient has exactly the layout of ``data``, so an optimizer steps on
``data`` directly. Every block writes only its own slice of the output, so
the ``prange`` loops are race-free and deterministic.
"""
import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def data_grad(data, r0, r1, c0, c1, rank, offset, Sp, Gp):  # pragma: no cover - jit
    """Gradient of ``sum(G * (A S))`` with respect to ``data``.

    ``Sp (n, M)`` are the layer inputs with rows in column-cluster order and
    ``Gp (m, M)`` the adjoints of the layer outputs with rows in row-cluster
    order. For a low-rank block ``A_b = U V^T`` the gradient is
    ``dU^T = (V^T S_b) G_b^T`` and ``dV^T = (U^T G_b) S_b^T``; for a dense
    block it is ``G_b S_b^T``. Cost ``2 k M (m_b + n_b)`` per low-rank block,
    the same order as one product with ``M`` right-hand sides: the dense
    gradient ``G S^T`` is never formed.
    """
    grad = np.zeros_like(data)
    for b in prange(rank.shape[0]):
        # One call per block: a small parallel body keeps numba's parallel
        # lowering (most of a first compilation) cheap.
        _block_grad(data, r0[b], r1[b], c0[b], c1[b], rank[b], offset[b], Sp, Gp, grad)
    return grad


@njit(cache=True)
def _block_grad(data, r0, r1, c0, c1, k, off, Sp, Gp, grad):  # pragma: no cover - jit
    """Block ``[r0, r1) x [c0, c1)`` (rank ``k``, at ``data[off:]``) of
    :func:`data_grad`, written into its own slice of ``grad``."""
    m = r1 - r0
    n = c1 - c0
    Sb = Sp[c0:c1]
    Gb = Gp[r0:r1]
    if k < 0:
        _put(grad, off, np.dot(Gb, Sb.T))
    elif k > 0:
        UT = data[off:off + k * m].reshape((k, m))
        VT = data[off + k * m:off + k * (m + n)].reshape((k, n))
        _put(grad, off, np.dot(np.dot(VT, Sb), Gb.T))
        _put(grad, off + k * m, np.dot(np.dot(UT, Gb), Sb.T))


@njit(cache=True)
def _put(out, off, M):  # pragma: no cover - jit
    """``out[off:off + M.size] = M.ravel()`` as a loop (a slice assignment
    compiles its shape-mismatch message, see :mod:`hmnumba.kernels.factors`)."""
    rows, cols = M.shape
    for i in range(rows):
        for j in range(cols):
            out[off + i * cols + j] = M[i, j]


@njit(cache=True, parallel=True)
def data_grad_per_sample(data, r0, r1, c0, c1, rank, offset, Ss, Gs):  # pragma: no cover - jit
    """Per-sample gradients: row ``i`` of the result is :func:`data_grad`
    restricted to sample ``i``.

    ``Ss (N, C, n)`` and ``Gs (N, C, m)`` hold, per sample, the ``C``
    derivative channels of the layer input and output adjoint (in cluster
    order); the gradient of a sample sums over its channels.
    """
    n_samples = Ss.shape[0]
    n_chan = Ss.shape[1]
    J = np.zeros((n_samples, data.shape[0]))
    max_k = 0
    for b in range(rank.shape[0]):
        max_k = max(max_k, rank[b])
    for i in prange(n_samples):
        p = np.empty(max(max_k, 1))
        q = np.empty(max(max_k, 1))
        for b in range(rank.shape[0]):
            k = rank[b]
            m = r1[b] - r0[b]
            n = c1[b] - c0[b]
            off = offset[b]
            for c in range(n_chan):
                if k < 0:
                    for a in range(m):
                        g = Gs[i, c, r0[b] + a]
                        if g == 0.0:
                            continue
                        row = off + a * n
                        for j in range(n):
                            J[i, row + j] += g * Ss[i, c, c0[b] + j]
                elif k > 0:
                    u_off = off
                    v_off = off + k * m
                    for l in range(k):
                        sp = 0.0
                        for j in range(n):
                            sp += data[v_off + l * n + j] * Ss[i, c, c0[b] + j]
                        p[l] = sp
                        sq = 0.0
                        for a in range(m):
                            sq += data[u_off + l * m + a] * Gs[i, c, r0[b] + a]
                        q[l] = sq
                    for l in range(k):
                        pl = p[l]
                        row = u_off + l * m
                        for a in range(m):
                            J[i, row + a] += pl * Gs[i, c, r0[b] + a]
                        ql = q[l]
                        row = v_off + l * n
                        for j in range(n):
                            J[i, row + j] += ql * Ss[i, c, c0[b] + j]
    return J


@njit(cache=True, parallel=True)
def nuclear_norms(data, r0, r1, c0, c1, rank, offset):  # pragma: no cover - jit
    """``||U_b V_b^T||_*`` of every low-rank block and the gradient of their
    sum with respect to ``data`` (zero on dense blocks).

    With thin QR factorisations ``U = Q_u R_u``, ``V = Q_v R_v`` and the SVD
    ``R_u R_v^T = P diag(s) Q^T`` (k x k), the norm is ``sum(s)`` and its
    gradient is ``dU = Q_u P Q^T R_v``, ``dV = Q_v Q P^T R_u`` (the
    subgradient ``Q_u P Q^T Q_v^T`` of the nuclear norm, pulled back to the
    factors; unique where all ``s > 0``).
    """
    n_blocks = rank.shape[0]
    norms = np.zeros(n_blocks)
    grad = np.zeros_like(data)
    for b in prange(n_blocks):
        k = rank[b]
        if k <= 0:
            continue
        m = r1[b] - r0[b]
        n = c1[b] - c0[b]
        off = offset[b]
        U = np.ascontiguousarray(data[off:off + k * m].reshape((k, m)).T)
        V = np.ascontiguousarray(data[off + k * m:off + k * (m + n)].reshape((k, n)).T)
        Qu, Ru = np.linalg.qr(U)
        Qv, Rv = np.linalg.qr(V)
        Qu, Ru = np.ascontiguousarray(Qu), np.ascontiguousarray(Ru)
        Qv, Rv = np.ascontiguousarray(Qv), np.ascontiguousarray(Rv)
        P, s, QT = np.linalg.svd(np.dot(Ru, Rv.T))
        norms[b] = s.sum()
        PQ = np.dot(P, QT)
        dU = np.dot(Qu, np.dot(PQ, Rv))
        dV = np.dot(Qv, np.dot(PQ.T, Ru))
        grad[off:off + k * m] = np.ascontiguousarray(dU.T).ravel()
        grad[off + k * m:off + k * (m + n)] = np.ascontiguousarray(dV.T).ravel()
    return norms, grad


ACT_TANH = 0
ACT_SIN = 1


# No fastmath here: with "reassoc"/"contract" these two kernels gave
# different bits when numba compiled them in the process than when it loaded
# them from its cache (issue 19 measured 1,569 of 12,673 gradient entries of
# a PINN differing, by up to 8e-17 relative, which L-BFGS magnified into
# another trained network); tests/test_cold_warm.py reproduces and checks it. They are elementwise, so
# fastmath bought little.
@njit(cache=True, parallel=True)
def activation_forward(Z, s, cz, lap_weights, order, act):  # pragma: no cover - jit
    """Derivative channels through the activation, one pass over ``Z``.

    ``Z (w, C, N)`` holds the pre-activation channels (value, ``d`` first
    derivatives if ``order >= 1``, the weighted Laplacian if ``order == 2``);
    ``s = act(Z[:, 0])`` and, for ``act = ACT_SIN``, ``cz = cos(Z[:, 0])``
    come from numpy (its SIMD ``tanh`` is ~5x faster than a scalar loop).
    Returns ``A`` (the same channels after ``a = s(z)``: ``a_j = s' z_j``,
    ``lap a = s' lap z + s'' sum_j c_j z_j^2``) and ``D (3, w, N)`` holding
    the first three derivatives of the activation for the reverse pass.
    """
    w, C, N = Z.shape
    A = np.empty_like(Z)
    D = np.empty((3, w, N))
    for o in prange(w):
        # np.int64: the parallel loop's index may be typed uint64 in one
        # compilation pass and int64 in another (two specialisations)
        _forward_row(Z, s, cz, lap_weights, order, act, np.int64(o), A, D)
    return A, D


@njit(cache=True)
def _forward_row(Z, s, cz, lap_weights, order, act, o, A, D):  # pragma: no cover - jit
    """Row ``o`` (one output unit) of :func:`activation_forward`."""
    N = Z.shape[2]
    d = lap_weights.shape[0]
    for n in range(N):
        t = s[o, n]
        if act == ACT_TANH:
            d1 = 1.0 - t * t
            d2 = -2.0 * t * d1
            d3 = d1 * (6.0 * t * t - 2.0)
        else:
            d1 = cz[o, n]
            d2 = -t
            d3 = -d1
        A[o, 0, n] = t
        D[0, o, n] = d1
        D[1, o, n] = d2
        D[2, o, n] = d3
        if order >= 1:
            q = 0.0
            for j in range(d):
                zj = Z[o, 1 + j, n]
                A[o, 1 + j, n] = d1 * zj
                q += lap_weights[j] * zj * zj
            if order >= 2:
                A[o, d + 1, n] = d1 * Z[o, d + 1, n] + d2 * q


@njit(cache=True, parallel=True)
def activation_backward(Sbar, Z, D, lap_weights, order):  # pragma: no cover - jit
    """Adjoints of the pre-activation channels from those of the activation
    channels (see :mod:`hmnumba.pinn.network` for the formulas)."""
    w = Z.shape[0]
    G = np.empty_like(Sbar)
    for o in prange(w):
        _backward_row(Sbar, Z, D, lap_weights, order, np.int64(o), G)
    return G


@njit(cache=True)
def _backward_row(Sbar, Z, D, lap_weights, order, o, G):  # pragma: no cover - jit
    """Row ``o`` of :func:`activation_backward`."""
    N = Z.shape[2]
    d = lap_weights.shape[0]
    for n in range(N):
        d1 = D[0, o, n]
        d2 = D[1, o, n]
        g0 = d1 * Sbar[o, 0, n]
        if order >= 1:
            lbar = Sbar[o, d + 1, n] if order >= 2 else 0.0
            q = 0.0
            for j in range(d):
                zj = Z[o, 1 + j, n]
                aj = Sbar[o, 1 + j, n]
                g0 += d2 * zj * aj
                G[o, 1 + j, n] = d1 * aj + 2.0 * lap_weights[j] * d2 * zj * lbar
                q += lap_weights[j] * zj * zj
            if order >= 2:
                G[o, d + 1, n] = d1 * lbar
                g0 += (D[2, o, n] * q + d2 * Z[o, d + 1, n]) * lbar
        G[o, 0, n] = g0
