"""The paper's error, perturbation and conditioning bounds as functions.

Each function states the result it implements and its assumptions, and
takes the quantities the statement is about (norms, block errors, singular
values), so a user can evaluate a bound for their own matrix and a test can
check it against directly computed SVD quantities. Throughout, ``A`` is an
``m x n`` matrix and ``H`` an approximation of it (an
:class:`~hmnumba.HMatrix`); norms are Frobenius (``_F``) or spectral
(``_2``), and ``||X||_2 <= ||X||_F`` always.

=============  ==========================================================
Theorem 1a     :func:`block_error_bound`: global error from block errors
Theorem 1b     :func:`perturbation_bound`: compressing a perturbed matrix
Theorem 1c     :func:`singular_value_bound`: singular values are preserved
Theorem 2      :func:`fit_ntk_constant`: ``||K_H - K||_F <= C eps``, ``C`` fitted
Theorem 3      :func:`condition_number_bound`: ``kappa(H)``
=============  ==========================================================
"""
import numpy as np

from hmnumba import _validation as val


def block_error_bound(block_errors, norm=None):
    """Theorem 1a: the global Frobenius error from the block errors.

    Statement: if the blocks ``b`` of ``H`` partition the index set of ``A``
    and ``||A_b - H_b||_F <= eps_b``, then

        ||A - H||_F = sqrt(sum_b ||A_b - H_b||_F^2) <= sqrt(sum_b eps_b^2),

    with equality when ``eps_b`` are the exact block errors (the blocks are
    disjoint). In particular, ``eps_b <= tol ||A_b||_F`` for every block gives
    ``||A - H||_F <= tol ||A||_F``. Assumptions: the blocks are disjoint and
    cover ``A`` (true of every :class:`~hmnumba.HMatrix`); nothing about
    ranks or admissibility.

    Parameters
    ----------
    block_errors : array-like of shape (n_blocks,) or HMatrix
        Bounds ``eps_b >= ||A_b - H_b||_F``. An HMatrix gives its own
        ``block_errors`` (exact for ``from_dense``, ACA estimates for
        ``from_kernel``), each counted as often as its block occurs
        (``H.multiplicity``: twice for a strictly upper block of a symmetric
        matrix, which stands for its mirror too), and, unless ``norm`` is
        given, its ``norm``. :attr:`HMatrix.error_bound` is this value.
    norm : float, optional
        ``||A||_F``: the bound is then returned relative to it.

    Returns
    -------
    float
        ``sqrt(sum_b eps_b^2)``, divided by ``norm`` if given.

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba import HMatrix
    >>> from hmnumba.bounds import block_error_bound
    >>> A = np.random.default_rng(0).standard_normal((128, 128))
    >>> H = HMatrix.from_dense(A, tol=0.3)
    >>> bound = block_error_bound(H)      # relative to H.norm = ||A||_F
    >>> exact = np.linalg.norm(A - H.to_dense()) / np.linalg.norm(A)
    >>> bool(abs(bound - exact) < 1e-10), bool(bound <= 0.3)
    (True, True)
    >>> float(block_error_bound([3.0, 4.0]))
    5.0
    """
    if hasattr(block_errors, "block_errors") and hasattr(block_errors, "norm"):
        H = block_errors
        if norm is None:
            norm = H.norm
        block_errors = H.block_errors * np.sqrt(H.multiplicity)
    e = val.check_nonnegative_vector(block_errors, "block_errors")
    # Scaled sum of squares (as LAPACK's dnrm2): the squares of errors near
    # 1e-170 underflow and those near 1e170 overflow, their norm does not.
    scale = float(e.max())
    total = scale * float(np.sqrt(np.sum((e / scale) ** 2))) if scale > 0 else 0.0
    if norm is None:
        return total
    norm = val.check_nonnegative_float(norm, "norm")
    return total / norm if norm > 0 else total


def perturbation_bound(A_norm, E_norm, tol, target="perturbed"):
    """Theorem 1b: compressing a perturbed matrix ``A + E``.

    Statement: let ``H = H(A + E)`` satisfy the guarantee of the build,
    ``||A + E - H||_F <= tol ||A + E||_F`` (every
    ``HMatrix.from_dense(A + E, tol)``). Then

        ||A + E - H||_F <= tol (||A||_F + ||E||_F)                (target="perturbed")
        ||A - H||_F     <= ||E||_F + tol (||A||_F + ||E||_F)      (target="original")

    by the triangle inequality ``||A + E||_F <= ||A||_F + ||E||_F``. So the
    compression error stays proportional to ``tol`` under perturbations (noise,
    training updates), and the distance to the unperturbed ``A`` grows by at
    most ``(1 + tol) ||E||_F``. Assumptions: only the build guarantee; ``E``
    arbitrary, of the shape of ``A``.

    Parameters
    ----------
    A_norm, E_norm : float or array-like
        ``||A||_F`` and ``||E||_F``, or the matrices themselves (their
        Frobenius norms are taken).
    tol : float
        The relative tolerance ``H`` was built with, ``0 < tol < 1``.
    target : {"perturbed", "original"}, default="perturbed"
        Bound ``||A + E - H||_F`` or ``||A - H||_F``.

    Returns
    -------
    float
        The absolute bound.

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba import HMatrix
    >>> from hmnumba.bounds import perturbation_bound
    >>> rng = np.random.default_rng(0)
    >>> A = np.outer(np.arange(1.0, 65.0), np.ones(64))
    >>> E = 1e-3 * rng.standard_normal((64, 64))
    >>> H = HMatrix.from_dense(A + E, tol=1e-2).to_dense()
    >>> bool(np.linalg.norm(A + E - H) <= perturbation_bound(A, E, 1e-2))
    True
    >>> bool(np.linalg.norm(A - H) <= perturbation_bound(A, E, 1e-2, target="original"))
    True
    """
    a = _norm_of(A_norm, "A_norm")
    e = _norm_of(E_norm, "E_norm")
    tol = val.check_tol(tol, "tol")
    target = val.check_choice(target, "target", ("perturbed", "original"))
    bound = tol * (a + e)
    return bound if target == "perturbed" else e + bound


def singular_value_bound(s, eps):
    """Theorem 1c: the singular values of ``H`` are those of ``A`` up to ``eps``.

    Statement: if ``||A - H||_2 <= eps`` (in particular if
    ``||A - H||_F <= eps``), then for every ``i <= min(m, n)``, with singular
    values sorted decreasingly,

        max(s_i(A) - eps, 0) <= s_i(H) <= s_i(A) + eps       (Weyl)

    and, for the Frobenius error, ``||s(H) - s(A)||_2 <= ||A - H||_F``
    (Mirsky). Assumptions: none beyond the error bound; with an H-matrix,
    ``eps = H.error_bound * H.norm`` (Theorem 1a).

    Parameters
    ----------
    s : array-like of shape (k,)
        Singular values of ``A`` (any order; returned sorted decreasingly).
    eps : float
        Bound on ``||A - H||_2``.

    Returns
    -------
    lower, upper : ndarray of shape (k,)
        The interval for each ``s_i(H)``, ``i`` in decreasing order.

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.bounds import singular_value_bound
    >>> lo, hi = singular_value_bound([3.0, 1.0, 0.05], 0.1)
    >>> lo.tolist(), hi.tolist()
    ([2.9, 0.9, 0.0], [3.1, 1.1, 0.15000000000000002])
    """
    s = np.sort(val.check_nonnegative_vector(s, "s"))[::-1]
    eps = val.check_nonnegative_float(eps, "eps")
    return np.maximum(s - eps, 0.0), s + eps


def condition_number_bound(s_max, s_min, eps):
    """Theorem 3: the condition number of the compressed matrix.

    Statement: let ``s_max`` and ``s_min > 0`` be the largest and smallest
    (the ``min(m, n)``-th) singular values of ``A`` and ``||A - H||_2 <= eps``
    with ``eps < s_min``. Then ``H`` has full rank and

        kappa_2(H) = s_max(H) / s_min(H) <= (s_max + eps) / (s_min - eps),

    from Weyl's inequalities (Theorem 1c). Assumptions: ``eps < s_min``; for
    ``eps >= s_min`` the compressed matrix may be singular and no bound
    exists, which is an error here, never a silently meaningless number.

    Parameters
    ----------
    s_max, s_min : float
        Extreme singular values of ``A``, ``s_max >= s_min >= 0``.
    eps : float
        Bound on ``||A - H||_2`` (``||A - H||_F`` will do).

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If ``eps >= s_min`` (the theorem does not apply), or ``s_max < s_min``.

    Examples
    --------
    >>> from hmnumba.bounds import condition_number_bound
    >>> condition_number_bound(10.0, 1.0, 0.5)
    21.0
    >>> condition_number_bound(10.0, 1.0, 1.0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: Theorem 3 does not apply: eps = 1 >= s_min = 1, so H may be singular...
    """
    s_max = val.check_nonnegative_float(s_max, "s_max")
    s_min = val.check_nonnegative_float(s_min, "s_min")
    eps = val.check_nonnegative_float(eps, "eps")
    if s_max < s_min:
        raise ValueError(f"s_max must be >= s_min, got s_max = {s_max:g} < s_min = {s_min:g}")
    if eps >= s_min:
        raise ValueError(f"Theorem 3 does not apply: eps = {eps:g} >= s_min = {s_min:g}, so H "
                         f"may be singular and its condition number is not bounded; compress "
                         f"with a smaller tol (eps < s_min)")
    return (s_max + eps) / (s_min - eps)


def fit_ntk_constant(eps, ntk_errors):
    """Theorem 2's NTK-sensitivity constant ``C``, fitted over a sweep of ``tol``.

    Statement (the paper's Theorem 2): compressing the weights of a smooth
    network with error ``eps`` moves its NTK by ``||K_H - K||_F <= C eps``,
    with ``C`` depending on the network, the data and the activation (through
    Lipschitz constants of the Jacobian) but not on ``eps``, for ``eps``
    small. ``C`` is not computable a priori; this function measures it from
    pairs ``(eps_t, ||K_H - K||_F)`` of a sweep (e.g.
    :func:`hmnumba.ntk.ntk_tol_sweep`). Use consistent scales: relative
    weight errors with relative NTK errors (what the sweep returns), or
    absolute with absolute. Assumptions: the linear regime; ``exponent``
    (the log-log slope) near 1 confirms it, a smaller one means the sweep
    left it.

    Parameters
    ----------
    eps : array-like of shape (n,)
        Weight errors (or the ``tol`` values), all ``> 0``.
    ntk_errors : array-like of shape (n,)
        The matching NTK errors ``||K_H - K||_F``.

    Returns
    -------
    dict
        ``C``: ``max_t err_t / eps_t``, the smallest constant for which the
        bound holds at every point of the sweep; ``C_lsq``: the least-squares
        slope through the origin; ``exponent``: the least-squares slope of
        ``log err`` against ``log eps`` (``nan`` with fewer than two points or
        zero errors); ``ratios``: ``err_t / eps_t``.

    Examples
    --------
    >>> from hmnumba.bounds import fit_ntk_constant
    >>> fit = fit_ntk_constant([1e-1, 1e-2, 1e-3], [0.2, 0.02, 0.002])
    >>> round(fit["C"], 6), round(fit["exponent"], 6)
    (2.0, 1.0)
    """
    eps = val.check_nonnegative_vector(eps, "eps")
    err = val.check_nonnegative_vector(ntk_errors, "ntk_errors")
    if eps.shape != err.shape:
        raise ValueError(f"eps and ntk_errors must have the same length, got {eps.size} "
                         f"and {err.size}")
    if np.any(eps == 0):
        raise ValueError("eps must be > 0 everywhere (a zero weight error fits no constant)")
    ratios = err / eps
    exponent = float("nan")
    if eps.size >= 2 and np.all(err > 0) and np.ptp(np.log(eps)) > 0:
        exponent = float(np.polyfit(np.log(eps), np.log(err), 1)[0])
    return {"C": float(ratios.max()), "C_lsq": float(eps @ err / (eps @ eps)),
            "exponent": exponent, "ratios": ratios}


def _norm_of(value, name):
    if isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool):
        return val.check_nonnegative_float(value, name)
    arr = val.check_float_array(value, name, ndim=np.ndim(value))
    return float(np.linalg.norm(arr.astype(np.float64, copy=False)))
