"""Low-rank approximation of one block (numba): ACA with partial pivoting,
recompression, truncated and randomized SVD, exact residuals.

Each function works on one block; :mod:`hmnumba.kernels.compress` runs them
over many blocks in parallel. Entries come from an entry source
(:mod:`hmnumba.kernels.sources`), dense blocks from plain arrays.
``hmnumba.lowrank`` is the Python side (validation, public functions).

Compile time: no array is assigned to a slice here or in the other kernel
files (``a[i:j] = b``): numba compiles its shape-mismatch error message
(string formatting) for that, about 10 s of a first run on 2 cores, so
copies are written as loops.
"""
import numpy as np
from numba import njit

from hmnumba.kernels.codes import FASTMATH
from hmnumba.kernels.sources import fetch_col, fetch_row




@njit(cache=True, inline="always")
def _next_random(state):
    """xorshift64: a tiny deterministic generator for pivot sampling."""
    state ^= (state << np.uint64(13))
    state ^= (state >> np.uint64(7))
    state ^= (state << np.uint64(17))
    return state


@njit(cache=True)
def _random_unused(used, state):
    """A pseudo-random index with ``used[i]`` False (-1 if none), new state."""
    n = used.shape[0]
    state = _next_random(state)
    start = np.int64(state % np.uint64(n))
    for q in range(n):
        i = (start + q) % n
        if not used[i]:
            return i, state
    return -1, state


@njit(cache=True, fastmath=FASTMATH)
def _residual_row(src, r0, c0, c1, i, k, U, V, row):
    fetch_row(src, r0 + i, c0, c1, row)
    n = c1 - c0
    for l in range(k):
        a = U[l, i]
        for j in range(n):
            row[j] -= a * V[l, j]


@njit(cache=True, fastmath=FASTMATH)
def _residual_col(src, r0, r1, c0, j, k, U, V, col):
    fetch_col(src, c0 + j, r0, r1, col)
    m = r1 - r0
    for l in range(k):
        b = V[l, j]
        for q in range(m):
            col[q] -= b * U[l, q]


@njit(cache=True)
def _finite(x):
    """No NaN or infinity in ``x``."""
    for q in range(x.shape[0]):
        if not np.isfinite(x[q]):
            return False
    return True


@njit(cache=True, fastmath=FASTMATH)
def _argmax_unused(x, used):
    best = 0.0
    arg = -1
    for q in range(x.shape[0]):
        if not used[q] and abs(x[q]) > best:
            best = abs(x[q])
            arg = q
    return arg


# A residual entry below this times the largest pivot is rounding noise (see
# aca_partial): ~100 eps, the cancellation error of a residual after a few
# dozen crosses.
ACA_NOISE_RTOL = 1e-13


@njit(cache=True, fastmath=FASTMATH)
def aca_partial(src, r0, r1, c0, c1, rel_tol, abs_tol, kmax, U, V):
    """Adaptive cross approximation with partial pivoting (Bebendorf 2000).

    Builds ``A[r0:r1, c0:c1] ~= sum_l outer(U[l], V[l])`` one cross at a time
    from single rows and columns of ``src``. The standard stopping estimate is
    ``||u_k|| ||v_k|| <= tau = max(rel_tol * ||S_k||_F, abs_tol)`` (``S_k`` is
    the current approximation, its norm updated exactly).

    Partial pivoting is known to stop too early on blocks whose residual
    hides from the rows it visits (zero rows, compactly supported kernels).
    Two guards: a zero residual row sends the search to a pseudo-random unused
    row, and before accepting convergence the first and last rows and columns
    (in cluster order, the geometric extremes of the block) and one random row
    are checked; if one predicts a residual above ``4 tau`` (``sqrt(m)
    ||r_i||`` resp. ``sqrt(n) ||c_j||``), the iteration goes on from there.
    This is a heuristic, like every sampling stopping rule: dense input is
    verified exactly afterwards, kernel matrices by ``estimate_error``.

    A residual row (or column) whose largest entry is below
    ``ACA_NOISE_RTOL`` times the largest pivot so far is rounding noise, and
    counts as a zero row: taking its noise as a pivot gives a cross of
    negligible norm that looks like convergence. (This happened on duplicated
    points, where the next pivot row is the duplicate of the last one: a
    far-field block was accepted with an estimated error of 3e-17 and a true
    error of 8e-2.)

    Returns ``(k, norm2, last_update, converged)``; ``converged`` is False if
    ``kmax`` crosses were not enough. A fetched row or column holding NaN or
    infinity (a bad kernel) stops the iteration with ``norm2`` and
    ``last_update`` NaN, so that the block's error is NaN and the build
    reports the kernel (a NaN pivot would otherwise make the row look zero).
    """
    m = r1 - r0
    n = c1 - c0
    row_used = np.zeros(m, np.bool_)
    col_used = np.zeros(n, np.bool_)
    row = np.empty(n)
    col = np.empty(m)
    norm2 = 0.0
    last = 0.0
    # np.int64, not a literal 0: numba's type inference resolves the calls
    # below while ``k`` and ``i`` are still the literal 0, and compiled
    # _residual_row and _residual_col once more for each such signature.
    k = np.int64(0)
    i = np.int64(0)
    state = np.uint64(0x9E3779B97F4A7C15) ^ np.uint64(r0 * 1000003 + c0 * 7919 + m * 31 + n)
    n_rows_used = 0
    zero_rows = 0
    noise = 0.0   # ACA_NOISE_RTOL * the largest pivot so far
    while True:
        if k == kmax:
            return k, norm2, last, False
        if n_rows_used == m:   # every row is a pivot row or was zero: so is the residual
            return k, norm2, min(last, noise * np.sqrt(m * n)), True
        _residual_row(src, r0, c0, c1, i, k, U, V, row)
        if not _finite(row):
            return k, np.nan, np.nan, True
        row_used[i] = True
        n_rows_used += 1
        jp = _argmax_unused(row, col_used)
        if jp >= 0 and abs(row[jp]) <= noise:
            jp = -1
        if jp < 0:
            zero_rows += 1
            if zero_rows > 3 and k > 0:
                # Rows keep vanishing after some crosses (duplicated points
                # give a zero row per pivot): sweep the unused rows for one
                # that is not. A row that is zero (or noise) stays so under
                # later crosses, as does a pivot row, so if none is found
                # the whole residual is noise. (One random column, as below,
                # is not enough here: most columns are duplicates, too.)
                found = -1
                for q in range(m):
                    if not row_used[q]:
                        _residual_row(src, r0, c0, c1, q, k, U, V, row)
                        if not _finite(row):
                            return k, np.nan, np.nan, True
                        jq = _argmax_unused(row, col_used)
                        if jq >= 0 and abs(row[jq]) > noise:
                            found = q
                            break
                        row_used[q] = True
                        n_rows_used += 1
                if found < 0:
                    return k, norm2, min(last, noise * np.sqrt(m * n)), True
                i = found
                zero_rows = 0
                continue
            if zero_rows > 3:
                # Rows keep vanishing: look at a random column before giving up.
                jc, state = _random_unused(col_used, state)
                if jc < 0:   # every column a pivot column: the residual is zero
                    return k, norm2, min(last, noise * np.sqrt(m * n)), True
                _residual_col(src, r0, r1, c0, jc, k, U, V, col)
                if not _finite(col):
                    return k, np.nan, np.nan, True
                iq = _argmax_unused(col, row_used)
                if iq < 0 or abs(col[iq]) <= noise:
                    return k, norm2, last, True
                i = iq
                zero_rows = 0
                continue
            i, state = _random_unused(row_used, state)
            if i < 0:   # every row a pivot row or zero: so is the residual
                return k, norm2, min(last, noise * np.sqrt(m * n)), True
            continue
        zero_rows = 0
        pivot = row[jp]
        noise = max(noise, ACA_NOISE_RTOL * abs(pivot))
        col_used[jp] = True
        _residual_col(src, r0, r1, c0, jp, k, U, V, col)
        if not _finite(col):
            return k, np.nan, np.nan, True
        for j in range(n):
            V[k, j] = row[j] / pivot
        for q in range(m):
            U[k, q] = col[q]
        unorm2 = np.dot(U[k], U[k])
        vnorm2 = np.dot(V[k], V[k])
        cross = 0.0
        for l in range(k):
            cross += np.dot(U[l], U[k]) * np.dot(V[l], V[k])
        norm2 = max(norm2 + 2.0 * cross + unorm2 * vnorm2, 0.0)
        last = np.sqrt(unorm2 * vnorm2)
        k += 1
        tau = max(rel_tol * np.sqrt(norm2), abs_tol)
        i_next = _argmax_unused(U[k - 1], row_used)
        if last <= tau:
            if k == kmax:
                return k, norm2, last, True
            # Check the first and last rows and columns (in cluster order the
            # geometric extremes of the block) and one random row.
            restart = -1
            for t in range(3):
                i_chk = 0 if t == 0 else m - 1
                if t == 2:
                    i_chk, state = _random_unused(row_used, state)
                if i_chk >= 0 and not row_used[i_chk]:
                    _residual_row(src, r0, c0, c1, i_chk, k, U, V, row)
                    if np.sqrt(m * np.dot(row, row)) > 4.0 * tau:
                        restart = i_chk
                        break
            if restart < 0:
                for t in range(2):
                    j_chk = 0 if t == 0 else n - 1
                    if not col_used[j_chk]:
                        _residual_col(src, r0, r1, c0, j_chk, k, U, V, col)
                        if np.sqrt(n * np.dot(col, col)) > 4.0 * tau:
                            restart = _argmax_unused(col, row_used)
                            if restart >= 0:
                                break
            if restart >= 0:
                i = restart
                continue
            return k, norm2, last, True
        if i_next < 0:
            # The last column vanishes on the unused rows: no pivot row to
            # follow, so look at a random one (a zero row leads to the
            # sweep above).
            i_next, state = _random_unused(row_used, state)
            if i_next < 0:
                return k, norm2, min(last, noise * np.sqrt(m * n)), True
        i = i_next


@njit(cache=True)
def truncation_rank(s, abs_tol):
    """Smallest ``r`` with ``sqrt(sum(s[r:]**2)) <= abs_tol``; returns ``(r, tail2)``."""
    tail2 = 0.0
    r = s.shape[0]
    while r > 0:
        t = tail2 + s[r - 1] * s[r - 1]
        if t > abs_tol * abs_tol:
            break
        tail2 = t
        r -= 1
    return r, tail2


@njit(cache=True, fastmath=FASTMATH)
def orthonormalize_rows(W, k):
    """Classical Gram-Schmidt with one re-orthogonalisation (CGS2) on the
    rows of ``W[:k]``: returns ``Q (k, len)`` with orthonormal (or zero) rows
    and upper-triangular ``R (k, k)`` such that ``W[:k].T = Q.T @ R``.

    CGS2 is as accurate as Householder QR in practice (Giraud, Langou &
    Rozloznik 2005), works on the contiguous factor rows that ACA produces and
    costs about half as much as LAPACK's QR plus forming Q -- provided the
    rows are not nearly dependent. Returns ``(Q, R, ok)``; ``ok`` is False
    when a kept row lost more than a factor ``CGS_MIN_RATIO`` of its norm to
    the projections (then ``Q`` may be far from orthonormal, and the caller
    uses Householder QR, :func:`_householder_rows`).
    """
    length = W.shape[1]
    Q = np.zeros((k, length))
    R = np.zeros((k, k))
    w = np.empty(length)
    ok = True
    for l in range(k):
        for i in range(length):
            w[i] = W[l, i]
        norm0 = np.sqrt(np.dot(w, w))
        for _ in range(2):
            for p in range(l):
                c = 0.0
                for i in range(length):
                    c += Q[p, i] * w[i]
                R[p, l] += c
                for i in range(length):
                    w[i] -= c * Q[p, i]
        nrm = np.sqrt(np.dot(w, w))
        # A row in the span of the previous ones (relative to its own size) is
        # dropped: its part of the product is carried by R[:l, l].
        if nrm > 1e-14 * norm0 and nrm > 0.0:
            if nrm < CGS_MIN_RATIO * norm0:
                ok = False
            R[l, l] = nrm
            for i in range(length):
                Q[l, i] = w[i] / nrm
    return Q, R, ok


# CGS2 keeps orthogonality to about eps * cond; below this ratio of a row's
# norm after and before its projections, Householder QR is used instead.
CGS_MIN_RATIO = 1e-6
# Cholesky-QR loses orthogonality like eps * cond(W)^2: with the rows scaled
# to unit norm, a diagonal entry of the Cholesky factor below this (the sine
# of the angle between a row and the span of the previous ones) sends the
# recompression to the Householder path.
GRAM_MIN_DIAG = 1e-4


@njit(cache=True)
def _householder_rows(W):
    """Householder QR of ``W.T``: ``(Q (p, len), R (p, k))`` with orthonormal
    rows of ``Q`` and ``W.T = Q.T @ R`` (``p = min(len, k)``); backward
    stable whatever the conditioning of ``W``."""
    Q, R = np.linalg.qr(np.ascontiguousarray(W.T))
    return np.ascontiguousarray(Q.T), np.ascontiguousarray(R)


@njit(cache=True)
def _cholesky_r(W):
    """Upper-triangular ``R`` with ``W.T = Q @ R``, ``Q`` orthonormal, from a
    Cholesky factorisation of the Gram matrix of the row-scaled ``W``
    (Cholesky-QR; one BLAS-3 product and a k x k factorisation).

    Scaling each row to unit norm first keeps the Gram matrix well
    conditioned for ACA factors, whose rows decay geometrically. Returns
    ``(R, ok)``; ``ok`` is False when the Gram matrix is numerically singular.
    """
    k = W.shape[0]
    d = np.empty(k)
    for l in range(k):
        d[l] = np.sqrt(np.dot(W[l], W[l]))
        if d[l] == 0.0:
            return np.zeros((k, k)), False
    Ws = W / d.reshape((k, 1))
    G = Ws @ Ws.T
    try:
        L = np.linalg.cholesky(G)
    except Exception:  # not positive definite in floating point
        return np.zeros((k, k)), False
    for l in range(k):
        if not L[l, l] >= GRAM_MIN_DIAG:   # ill-conditioned (or NaN): not accurate
            return np.zeros((k, k)), False
    R = np.ascontiguousarray(L.T) * d.reshape((1, k))
    return R, True


@njit(cache=True)
def _solve_upper(R, B):
    """``R^{-1} B`` for upper-triangular ``R (k, k)`` and ``B (k, r)``."""
    k, r = B.shape
    X = B.copy()
    for c in range(r):
        for i in range(k - 1, -1, -1):
            acc = X[i, c]
            for j in range(i + 1, k):
                acc -= R[i, j] * X[j, c]
            X[i, c] = acc / R[i, i]
    return X


@njit(cache=True)
def recompress(U, V, k, abs_tol, rel_tol_floor, aca_norm):
    """Recompress ``sum_{l<k} outer(U[l], V[l])`` to the smallest rank whose
    truncation error is at most ``abs_tol``, via the SVD of a small core.

    When ``abs_tol >= rel_tol_floor * aca_norm`` (``aca_norm``: the norm of the
    approximation) the triangular factors come from Cholesky-QR and the core's
    SVD from the eigendecomposition of ``C @ C.T``: two cheap factorisations
    and one small LAPACK call instead of three, with singular values accurate
    to about ``1e-8 * sigma_max``, ample for such tolerances. Tighter
    tolerances, or a Gram matrix that is ill-conditioned (see
    ``GRAM_MIN_DIAG``), orthonormalise the factor rows with CGS2 and use a
    full SVD; rows too close to dependent for CGS2 (see ``CGS_MIN_RATIO``)
    are orthonormalised by Householder QR.

    Returns ``(Ut (r, m), Vt (r, n), tail2)``: ``Ut.T @ Vt`` is the truncated
    approximation and ``tail2`` the squared Frobenius norm of what was cut.
    """
    m = U.shape[1]
    n = V.shape[1]
    if k == 0:
        return np.zeros((0, m)), np.zeros((0, n)), 0.0
    Uk = np.ascontiguousarray(U[:k])
    Vk = np.ascontiguousarray(V[:k])
    if abs_tol >= rel_tol_floor * aca_norm:
        Ru, ok_u = _cholesky_r(Uk)
        Rv, ok_v = _cholesky_r(Vk)
        if ok_u and ok_v:
            C = Ru @ Rv.T
            lam, E = np.linalg.eigh(C @ C.T)   # ascending
            s = np.sqrt(np.maximum(lam[::-1], 0.0))
            r, tail2 = truncation_rank(s, abs_tol)
            W = np.ascontiguousarray(E[:, ::-1][:, :r])
            # U_new = U^T Ru^{-1} W S,  V_new = V^T Rv^{-1} C^T W S^{-1}
            Mu = _solve_upper(Ru, W * s[:r].reshape((1, r)))
            Mv = _solve_upper(Rv, (C.T @ W) / s[:r].reshape((1, r)))
            Ut = np.ascontiguousarray(Mu.T) @ Uk
            Vt = np.ascontiguousarray(Mv.T) @ Vk
            return Ut, Vt, tail2
    Qu, Ru, ok_u = orthonormalize_rows(U, k)
    Qv, Rv, ok_v = orthonormalize_rows(V, k)
    if not (ok_u and ok_v):
        Qu, Ru = _householder_rows(Uk)
        Qv, Rv = _householder_rows(Vk)
    w, s, zt = np.linalg.svd(Ru @ Rv.T)
    r, tail2 = truncation_rank(s, abs_tol)
    Ut = np.ascontiguousarray((w[:, :r] * s[:r]).T) @ Qu
    Vt = np.ascontiguousarray(zt[:r]) @ Qv
    return Ut, Vt, tail2


# Below this relative truncation tolerance recompression uses CGS2 + SVD
# instead of Cholesky-QR + eigh (whose accuracy is ~1e-8 sigma_max).
GRAM_REL_TOL_FLOOR = 1e-7


@njit(cache=True)
def svd_factors(block, abs_tol):
    """Truncated SVD of a dense block: ``(Ut (r, m), Vt (r, n), tail2)``."""
    w, s, zt = np.linalg.svd(block, full_matrices=False)
    r, tail2 = truncation_rank(s, abs_tol)
    return np.ascontiguousarray((w[:, :r] * s[:r]).T), np.ascontiguousarray(zt[:r]), tail2


@njit(cache=True)
def randomized_factors(block, abs_tol, kmax, seed):
    """Adaptive randomized range finder (Halko, Martinsson & Tropp 2011, alg.
    4.2 in blocks of 8 columns, with one re-orthogonalisation), then SVD of
    the projected block. Stops once the projection residual is below
    ``abs_tol / 2`` or the basis has ``kmax`` columns; the final truncation
    uses the remaining budget. Returns ``(Ut, Vt, resid2, converged)``.
    """
    m, n = block.shape
    np.random.seed(seed)
    total2 = np.sum(block * block)
    Q = np.zeros((m, 0))
    resid2 = total2
    step = 8
    limit = min(kmax, m, n)
    while resid2 > 0.25 * abs_tol * abs_tol and Q.shape[1] < limit:
        b = min(step, limit - Q.shape[1])
        Y = block @ np.random.standard_normal((n, b))
        y_norm = np.sqrt(np.sum(Y * Y))
        for _ in range(2):  # project out the current basis twice (stability)
            Y = Y - Q @ (Q.T @ Y)
        if np.sqrt(np.sum(Y * Y)) <= 1e-12 * y_norm:
            break  # the sample lies in span(Q): the range is captured
        q = np.ascontiguousarray(np.linalg.qr(Y)[0])
        q = q - Q @ (Q.T @ q)  # QR of a nearly-dependent Y leaks back into Q
        q = np.ascontiguousarray(np.linalg.qr(q)[0])
        grown = np.empty((m, Q.shape[1] + q.shape[1]))
        for i in range(m):   # loops, not slice assignment (see the module docstring)
            for j in range(Q.shape[1]):
                grown[i, j] = Q[i, j]
            for j in range(q.shape[1]):
                grown[i, Q.shape[1] + j] = q[i, j]
        Q = grown
        # the residual itself, not total2 - ||Q^T A||^2, which cancels
        R = block - Q @ (Q.T @ block)
        resid2 = np.sum(R * R)
    R = block - Q @ (Q.T @ block)
    resid2 = np.sum(R * R)
    converged = resid2 <= 0.25 * abs_tol * abs_tol or Q.shape[1] >= min(m, n)
    B = Q.T @ block
    w, s, zt = np.linalg.svd(B, full_matrices=False)
    budget = abs_tol - np.sqrt(resid2)
    r, tail2 = truncation_rank(s, max(budget, 0.0))
    Ut = np.ascontiguousarray((Q @ (w[:, :r] * s[:r])).T)
    return Ut, np.ascontiguousarray(zt[:r]), resid2, converged


@njit(cache=True, fastmath=FASTMATH)
def block_residual2(block, Ut, Vt):
    """Exact ``||block - Ut.T @ Vt||_F**2`` (float64 accumulation)."""
    R = block - Ut.T @ Vt
    return np.sum(R * R)

