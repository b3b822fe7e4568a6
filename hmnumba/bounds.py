"""The paper's error, perturbation and conditioning bounds as functions.

Each function states the result it implements and its assumptions, and
takes the quantities the statement is about (norms, block errors, singular
values, Jacobians, activations), so a user can evaluate a bound for their
own matrix or network and a test can check it against directly computed
quantities. Throughout, ``A`` is an ``m x n`` matrix and ``H`` an
approximation of it (an :class:`~hmnumba.HMatrix`); norms are Frobenius
(``_F``) or spectral (``_2``), and ``||X||_2 <= ||X||_F`` always. The
paper's formulas are stated in words here (the text they come from lost its
formulas); where the paper leaves a constant or an assumption open, the
docstring says which choice is made, so that every function returns a
bound that can be checked, and fails when it is wrong.

================  ================================================================
Theorem 1 (a)     :func:`block_error_bound`: global error from the block errors
Theorem 1 (b)     :func:`perturbation_bound`: compressing a perturbed matrix
Theorem 1 (c)     :func:`condition_number_bound`: ``kappa(H)`` from ``kappa(A)``,
                  ``s_min(A)`` and the error
Theorem 1 (d)     :func:`perturbed_condition_number_bound`: conditioning of a
                  perturbed H-matrix layer of a PINN (with
                  :func:`factor_perturbation_bound` for a perturbation of its factors)
Theorem 1 (e)     :func:`adversarial_bound`: output change of a compressed network
                  under a worst-case input perturbation
Theorem 1 (f)     :func:`adaptive_training_error_bound`: training error after ``k``
                  adaptive refinement (re-compression) steps
Theorem 2         :func:`ntk_perturbation_bound`: the NTK's change, its eigenvalues
                  and positive definiteness (:func:`fit_ntk_constant` measures the
                  constant ``C`` of ``||K_H - K||_F <= C eps`` over a sweep)
Theorem 3         :func:`effective_condition_number_bound`: condition number with
                  the effective smallest singular value, exact and first-order forms
(used by all)     :func:`singular_value_bound`: Weyl's and Mirsky's inequalities
================  ================================================================
"""
import numpy as np

from hmnumba import _validation as val


def block_error_bound(block_errors, norm=None):
    """Theorem 1 (a): the global Frobenius error from the block errors.

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
    """Theorem 1 (b): compressing a perturbed matrix ``A + E``.

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
    """Weyl's and Mirsky's inequalities: ``s(H)`` is ``s(A)`` up to ``eps``.

    Not a part of the paper's theorems but the step the proofs of Theorem 1
    (c), (d), (e) and Theorem 3 rest on.

    Statement: if ``||A - H||_2 <= eps`` (in particular if
    ``||A - H||_F <= eps``), then for every ``i <= min(m, n)``, with singular
    values sorted decreasingly,

        max(s_i(A) - eps, 0) <= s_i(H) <= s_i(A) + eps       (Weyl)

    and, for the Frobenius error, ``||s(H) - s(A)||_2 <= ||A - H||_F``
    (Mirsky). Assumptions: none beyond the error bound; with an H-matrix,
    ``eps = H.error_bound * H.norm`` (Theorem 1 (a)).

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
    """Theorem 1 (c): the condition number of the compressed matrix.

    Statement: let ``s_max`` and ``s_min > 0`` be the largest and smallest
    (the ``min(m, n)``-th) singular values of ``A``, ``kappa(A) = s_max /
    s_min``, and ``||A - H||_2 <= eps`` with ``eps < s_min``. Then ``H`` has
    full rank and

        kappa_2(H) <= (s_max + eps) / (s_min - eps)
                    = kappa(A) (1 + eps / s_max) / (1 - eps / s_min),

    from Weyl's inequalities (:func:`singular_value_bound`): the bound grows
    with ``eps / s_min``, so an ill-conditioned ``A`` needs a small ``tol``.
    The bound is attained (``H = A + eps (u_1 v_1^T - u_n v_n^T)``), so no
    smaller constant holds. Assumptions: ``eps < s_min``; for ``eps >=
    s_min`` the compressed matrix may be singular and no bound exists, which
    is an error here, never a silently meaningless number. Theorem 3
    (:func:`effective_condition_number_bound`) replaces ``s_min`` by the
    smallest singular value kept after regularisation.

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
    ValueError: Theorem 1 (c) does not apply: the perturbation 1 >= s_min = 1, so the matrix...
    """
    s_max = val.check_nonnegative_float(s_max, "s_max")
    s_min = val.check_nonnegative_float(s_min, "s_min")
    eps = val.check_nonnegative_float(eps, "eps")
    return _weyl_kappa(s_max, s_min, eps, "Theorem 1 (c)")


def _weyl_kappa(s_max, s_r, delta, part, what="s_min"):
    """``(s_max + delta) / (s_r - delta)``, or the error saying why it does not apply."""
    if s_max < s_r:
        raise ValueError(f"s_max must be >= {what}, got s_max = {s_max:g} < {what} = {s_r:g}")
    if delta >= s_r:
        raise ValueError(f"{part} does not apply: the perturbation {delta:g} >= {what} = "
                         f"{s_r:g}, so the matrix may be singular (or lose rank) and its "
                         f"condition number is not bounded; compress with a smaller tol")
    return (s_max + delta) / (s_r - delta)


def _sorted_singular_values(s, name="s"):
    return np.sort(val.check_nonnegative_vector(s, name))[::-1]


def _check_rank(rank, size):
    if rank is None:
        return size
    rank = val.check_positive_int(rank, "rank")
    if rank > size:
        raise ValueError(f"rank must be <= {size} (the number of singular values), got {rank}")
    return rank


def perturbed_condition_number_bound(s, delta, rank=None):
    """Theorem 1 (d): conditioning of a perturbed H-matrix inside a PINN.

    Statement: let ``H`` be the H-matrix weight of a PINN layer, with
    singular values ``s_1 >= ... >= s_p``, and ``H~ = H + D`` a perturbed
    version of it (a training step on its factors, noise, a re-compression)
    with ``||D||_2 <= delta``. Then ``|s_i(H~) - s_i(H)| <= delta`` for every
    ``i`` (Weyl) and, for ``delta < s_r``,

        kappa_r(H~) = s_1(H~) / s_r(H~) <= (s_1 + delta) / (s_r - delta),

    where ``r = rank`` (default ``p = min(m, n)``, the ordinary condition
    number). A trained layer is often numerically low-rank, so its ordinary
    condition number is infinite; ``rank = r`` bounds the condition number
    of its leading ``r`` singular values instead (the same inequality).
    The bound is attained by ``D = delta (u_1 v_1^T - u_r v_r^T)``.
    Assumptions: ``||D||_2 <= delta`` (``||D||_F`` will do;
    :func:`factor_perturbation_bound` gives one for a perturbation of the
    block factors, what compression-aware training moves) and ``delta <
    s_r``; otherwise :class:`ValueError`.

    Parameters
    ----------
    s : array-like of shape (p,)
        Singular values of ``H`` (any order).
    delta : float
        Bound on ``||D||_2``.
    rank : int, optional
        ``r``: bound ``s_1 / s_r`` of the perturbed matrix; default ``p``.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If ``delta >= s_r`` (the theorem does not apply).

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.bounds import perturbed_condition_number_bound
    >>> rng = np.random.default_rng(0)
    >>> H = rng.standard_normal((40, 40))
    >>> D = 1e-3 * rng.standard_normal((40, 40))
    >>> s = np.linalg.svd(H, compute_uv=False)
    >>> bound = perturbed_condition_number_bound(s, np.linalg.norm(D, 2))
    >>> bool(np.linalg.cond(H + D) <= bound)
    True
    >>> perturbed_condition_number_bound([4.0, 2.0, 1e-9], 0.5, rank=2)
    3.0
    """
    s = _sorted_singular_values(s)
    delta = val.check_nonnegative_float(delta, "delta")
    r = _check_rank(rank, s.size)
    return _weyl_kappa(float(s[0]), float(s[r - 1]), delta, "Theorem 1 (d)", f"s_{r}")


def factor_perturbation_bound(H, d_data):
    """A bound on ``||H(data + d) - H(data)||_F`` for a change of the stored numbers.

    The trainable parameters of an :class:`~hmnumba.pinn.HMatrixLayer` are
    ``H.data``: per low-rank block the factors ``U_b (m_b x k)`` and ``V_b
    (n_b x k)``, per dense block its entries. A change ``(dU_b, dV_b)`` moves
    the block by ``dU V^T + U dV^T + dU dV^T``, so

        ||D_b||_F <= ||dU||_F ||V||_2 + ||U||_2 ||dV||_F + ||dU||_F ||dV||_F

    and ``||D||_F <= sqrt(sum_b ||D_b||_F^2)`` (blocks are disjoint; a
    symmetric H-matrix counts a strictly upper block twice). This is the
    ``delta`` of Theorem 1 (d) for a perturbation of the factors.

    Parameters
    ----------
    H : HMatrix
    d_data : array-like of shape (H.data.size,)
        The change of ``H.data``.

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba import HMatrix
    >>> from hmnumba.bounds import factor_perturbation_bound
    >>> t = np.linspace(0, 1, 64)
    >>> H = HMatrix.from_dense(1 / (1 + 10 * np.abs(t[:, None] - t)), tol=1e-4, leaf_size=16)
    >>> d = 1e-3 * np.random.default_rng(0).standard_normal(H.data.size)
    >>> bound, before = factor_perturbation_bound(H, d), H.to_dense()
    >>> H.data[:] += d                       # the perturbed layer
    >>> bool(np.linalg.norm(H.to_dense() - before) <= bound)
    True
    """
    data = np.asarray(H.data, dtype=np.float64)
    d = val.check_float_array(d_data, "d_data", ndim=1).astype(np.float64, copy=False)
    if d.shape != data.shape:
        raise ValueError(f"d_data must have the shape of H.data {data.shape}, got {d.shape}")
    mult = np.asarray(getattr(H, "multiplicity", np.ones(H.rank.size)), dtype=np.float64)
    total = 0.0
    for b in range(H.rank.size):
        m = int(H.row_stop[b] - H.row_start[b])
        n = int(H.col_stop[b] - H.col_start[b])
        k, o = int(H.rank[b]), int(H.offset[b])
        if k < 0:
            e = float(np.linalg.norm(d[o:o + m * n]))
        elif k == 0:
            continue
        else:
            U, V = data[o:o + k * m].reshape(k, m), data[o + k * m:o + k * (m + n)].reshape(k, n)
            dU = float(np.linalg.norm(d[o:o + k * m]))
            dV = float(np.linalg.norm(d[o + k * m:o + k * (m + n)]))
            e = dU * np.linalg.norm(V, 2) + np.linalg.norm(U, 2) * dV + dU * dV
        total += mult[b] * e * e
    return float(np.sqrt(total))


def adversarial_bound(layer_norms, radius, eps=None):
    """Theorem 1 (e): stability of a compressed network under adversarial perturbations.

    Statement: let ``u(x) = W_L s(W_{L-1} s(... s(W_1 x + b_1) ...) + b_{L-1}) + b_L``
    be a network with a 1-Lipschitz activation ``s`` (``tanh``, ``sin``) in
    which some weights are H-matrices ``H_l`` with ``||W_l - H_l||_2 <=
    eps_l``. For every input perturbation ``d`` with ``||d||_2 <= radius``,
    chosen by an adversary (the worst case),

        ||u_H(x + d) - u_H(x)||_2 <= radius prod_l ||H_l||_2
                                  <= radius prod_l (||W_l||_2 + eps_l).

    So compression raises this worst-case bound by at most the factor
    ``prod_l (1 + eps_l / ||W_l||_2)``, i.e. ``1 + O(tol)`` per compressed
    layer (the bound, not the measured sensitivity, which
    :mod:`hmnumba.experiments.adversarial` measures by attacks). For one linear layer the bound is attained
    (``d = radius v_1``). At the level of one matrix, an adversarial
    perturbation of norm ``radius`` of ``H`` itself changes its condition
    number as Theorem 1 (d) says with ``delta = radius`` (the worst case
    attains it). Assumptions: a 1-Lipschitz activation; ``layer_norms``
    spectral norms (Frobenius norms give a looser valid bound).

    Parameters
    ----------
    layer_norms : array-like of shape (L,)
        ``||W_l||_2`` of every layer, first to last (with ``eps=None``: the
        norms of the compressed layers ``||H_l||_2`` themselves).
    radius : float
        ``||d||_2 <= radius``.
    eps : array-like of shape (L,), optional
        ``||W_l - H_l||_2`` bounds (0 for uncompressed layers).

    Returns
    -------
    float
        The bound on the output change.

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.bounds import adversarial_bound
    >>> rng = np.random.default_rng(0)
    >>> W = rng.standard_normal((30, 30))
    >>> H = W + 1e-2 * rng.standard_normal((30, 30))        # a compressed layer
    >>> eps = np.linalg.norm(W - H, 2)
    >>> v = np.linalg.svd(H)[2][0]                         # the worst direction
    >>> change = np.linalg.norm(H @ (0.1 * v))
    >>> bool(change <= adversarial_bound([np.linalg.norm(W, 2)], 0.1, eps=[eps]))
    True
    >>> adversarial_bound([2.0, 3.0], 0.5)
    3.0
    """
    norms = val.check_nonnegative_vector(layer_norms, "layer_norms")
    radius = val.check_nonnegative_float(radius, "radius")
    if eps is not None:
        e = val.check_nonnegative_vector(eps, "eps")
        if e.shape != norms.shape:
            raise ValueError(f"eps must have one value per layer ({norms.size}), got {e.size}")
        norms = norms + e
    return float(radius * np.prod(norms))


def adaptive_training_error_bound(error0, eps, input_norms, later_norms, target_norm=None):
    """Theorem 1 (f): the training error after ``k`` adaptive refinement steps.

    Setting: compression-aware training of a PINN (1-Lipschitz activation)
    alternates optimisation with adaptive refinement steps: at step ``j``
    every H-matrix layer ``l`` is rebuilt (re-compressed) from its current
    operator, changing it by ``D_jl`` with ``||D_jl||_2 <= eps_jl`` (the
    build's guarantee, Theorem 1 (a): ``eps_jl = H.error_bound * H.norm``).

    Statement: at a training point ``x_i`` the output moves at step ``j`` by
    at most

        c_ij = sum_l eps_jl ||a_{l-1}(x_i)||_2 prod_{l' > l} ||W_l'||_2,

    where ``a_{l-1}(x_i)`` is the input of layer ``l`` just before the step
    and the product runs over the layers after ``l`` just after it (a
    telescoping sum over the layers). With ``E`` the training error
    ``||u - u*||_2`` over the training points, one step adds at most
    ``c_j = ||(c_ij)_i||_2``, and if the optimisation between steps does not
    increase ``E`` (descent), after ``k`` steps

        E_k <= E_0 + sum_{j <= k} c_j.

    The per-step inequality needs no assumption beyond the error bounds; the
    sum needs the descent assumption (L-BFGS decreases the loss, not
    necessarily the error). Dropping the product over the later layers (a
    wrong constant) fails as soon as they amplify.

    Parameters
    ----------
    error0 : float
        ``E_0``: the training error before the first step (absolute; or
        relative if ``target_norm`` is given).
    eps : array-like of shape (k, L)
        ``eps_jl`` (0 for a layer a step leaves alone).
    input_norms : array-like of shape (k, L, N)
        ``||a_{l-1}(x_i)||_2`` before step ``j``, per training point.
    later_norms : array-like of shape (k, L)
        ``prod_{l' > l} ||W_l'||_2`` after step ``j`` (including the output layer).
    target_norm : float, optional
        ``||u*||_2`` over the training points: everything is then relative.

    Returns
    -------
    ndarray of shape (k,)
        The bound on ``E_j`` after each step ``j = 1..k`` (cumulative); the
        per-step increments are ``np.diff(np.r_[error0, bound])``.

    Examples
    --------
    One hidden layer compressed with error 0.01 and an output layer of norm 2,
    at two points whose hidden inputs have norm 1 and 3; two steps:

    >>> from hmnumba.bounds import adaptive_training_error_bound
    >>> b = adaptive_training_error_bound(0.0, [[0.01], [0.01]], [[[1.0, 3.0]], [[1.0, 3.0]]],
    ...                                   [[2.0], [2.0]])
    >>> [round(float(v), 6) for v in b]     # 0.01 * 2 * ||(1, 3)||_2 per step
    [0.063246, 0.126491]
    """
    error0 = val.check_nonnegative_float(error0, "error0")
    e = np.asarray(val.check_float_array(eps, "eps", ndim=2), dtype=np.float64)
    a = np.asarray(val.check_float_array(input_norms, "input_norms", ndim=3), dtype=np.float64)
    p = np.asarray(val.check_float_array(later_norms, "later_norms", ndim=2), dtype=np.float64)
    if e.shape != p.shape or a.shape[:2] != e.shape:
        raise ValueError(f"eps (k, L), input_norms (k, L, N) and later_norms (k, L) must "
                         f"agree, got {e.shape}, {a.shape} and {p.shape}")
    for name, arr in (("eps", e), ("input_norms", a), ("later_norms", p)):
        if np.any(arr < 0):
            raise ValueError(f"{name} must hold values >= 0")
    per_point = np.einsum("jl,jli,jl->ji", e, a, p)           # c_ij
    steps = np.linalg.norm(per_point, axis=1)                  # c_j
    if target_norm is not None:
        target_norm = val.check_positive_float(target_norm, "target_norm")
        steps = steps / target_norm
    return error0 + np.cumsum(steps)


def ntk_perturbation_bound(J, J_H, eigenvalues=None):
    """Theorem 2: how far the NTK of the compressed network is from the original.

    Statement: let ``K = J J^T`` be the empirical NTK of a network (``J``:
    per-sample Jacobian rows) and ``K_H = J_H J_H^T`` that of its
    compressed version, with Jacobians in the same parameter space (the
    dense weights; with respect to the H-matrix's own factors the kernel is
    ``J_W M M^T J_W^T`` with ``M`` the Jacobian of the weights in the
    factors, a different kernel whose properties
    :mod:`hmnumba.experiments.ntk_preservation` judges). Since
    ``K_H - K = (J_H - J) J_H^T + J (J_H - J)^T``,

        ||K_H - K||_F <= ||J_H - J||_F (||J||_2 + ||J_H||_2) =: delta,

    which is the paper's ``C eps`` with ``C = (||J||_2 + ||J_H||_2)
    ||J_H - J||_F / eps``: ``J`` is smooth in the weights, so ``||J_H -
    J||_F = O(eps)``. Consequently (Weyl) every eigenvalue moves by at most
    ``delta``: ``|lambda_i(K_H) - lambda_i(K)| <= delta``; ``K_H`` keeps at
    least ``#{i: lambda_i(K) > delta}`` positive eigenvalues, and it is
    positive definite whenever ``lambda_min(K) > delta``. The bound is
    attained for a rank-one ``J`` and ``J_H = (1 + t) J``; a constant below
    ``2`` in place of ``||J||_2 + ||J_H||_2`` fails there. Assumptions: the
    Jacobians are of the same parametrisation and the same samples.

    Parameters
    ----------
    J, J_H : array-like of shape (N, P)
        Jacobians of the original and the compressed network.
    eigenvalues : array-like of shape (N,), optional
        Eigenvalues of ``K`` (computed if None).

    Returns
    -------
    dict
        ``delta`` (the bound on ``||K_H - K||_F``), ``lower`` and ``upper``
        (interval for each eigenvalue of ``K_H``, largest first),
        ``n_positive`` (eigenvalues of ``K_H`` guaranteed ``> 0``) and
        ``positive_definite`` (guaranteed).

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.bounds import ntk_perturbation_bound
    >>> rng = np.random.default_rng(0)
    >>> J = rng.standard_normal((5, 40))
    >>> J_H = J + 1e-3 * rng.standard_normal((5, 40))
    >>> b = ntk_perturbation_bound(J, J_H)
    >>> bool(np.linalg.norm(J_H @ J_H.T - J @ J.T) <= b["delta"]), b["positive_definite"]
    (True, True)
    """
    J = np.asarray(val.check_float_array(J, "J", ndim=2), dtype=np.float64)
    J_H = np.asarray(val.check_float_array(J_H, "J_H", ndim=2), dtype=np.float64)
    if J.shape != J_H.shape:
        raise ValueError(f"J and J_H must have the same shape, got {J.shape} and {J_H.shape}")
    delta = float(np.linalg.norm(J_H - J) * (np.linalg.norm(J, 2) + np.linalg.norm(J_H, 2)))
    if eigenvalues is None:
        lam = np.linalg.eigvalsh(J @ J.T)[::-1]
    else:
        lam = np.sort(val.check_float_array(eigenvalues, "eigenvalues", ndim=1))[::-1]
        if lam.size != J.shape[0]:
            raise ValueError(f"eigenvalues must have one value per sample ({J.shape[0]}), "
                             f"got {lam.size}")
    n_pos = int(np.sum(lam > delta))
    return dict(delta=delta, lower=lam - delta, upper=lam + delta, n_positive=n_pos,
                positive_definite=bool(n_pos == lam.size))


def effective_condition_number_bound(s, eps, threshold=None, rank=None, first_order=False):
    """Theorem 3: the condition number with the effective smallest singular value.

    Statement: let ``s_1 >= s_2 >= ...`` be the singular values of an
    ill-conditioned ``A``, regularised by truncation: the singular values
    below ``threshold`` are discarded (truncated-SVD or pseudo-inverse
    regularisation), so ``r = #{i: s_i >= threshold}`` remain and ``s_eff =
    s_r`` is the smallest effective singular value, ``kappa_eff(A) = s_1 /
    s_eff``. Let ``H`` be its H-matrix with ``||A - H||_2 <= eps < s_eff``.
    Then ``H`` keeps ``r`` singular values above ``s_eff - eps`` and

        kappa_eff(H) = s_1(H) / s_r(H) <= (s_1 + eps) / (s_eff - eps)
                     = kappa_eff(A) (1 + eps / s_1) / (1 - eps / s_eff).

    For small ``eps`` its first-order Taylor form is

        kappa_eff(A) (1 + eps / s_1 + eps / s_eff),

    which is *not* a bound: it is below the exact form by
    ``kappa_eff(A) (eps / s_eff) (eps / s_1 + eps / s_eff) / (1 - eps / s_eff)``,
    second order in ``eps``, and a worst-case ``H`` exceeds it.
    Assumptions: ``eps < s_eff`` (else :class:`ValueError`, for both forms:
    beyond it ``H`` may lose rank and no form means anything).

    Parameters
    ----------
    s : array-like
        Singular values of ``A`` (any order).
    eps : float
        Bound on ``||A - H||_2`` (``||A - H||_F`` will do).
    threshold : float, optional
        Regularisation cut-off; ``s_eff`` is the smallest ``s_i >= threshold``.
    rank : int, optional
        Alternatively the number ``r`` of singular values kept. With neither,
        all are kept (``s_eff = s_min``, Theorem 1 (c)).
    first_order : bool, default=False
        Return the first-order form instead of the exact bound.

    Returns
    -------
    float

    Examples
    --------
    >>> from hmnumba.bounds import effective_condition_number_bound
    >>> s = [10.0, 1.0, 1e-12]                   # numerically rank 2
    >>> effective_condition_number_bound(s, 0.5, threshold=1e-6)
    21.0
    >>> round(effective_condition_number_bound(s, 0.01, threshold=1e-6, first_order=True), 6)
    10.11
    """
    s = _sorted_singular_values(s)
    eps = val.check_nonnegative_float(eps, "eps")
    if threshold is not None and rank is not None:
        raise ValueError("give threshold or rank, not both")
    if threshold is not None:
        threshold = val.check_positive_float(threshold, "threshold")
        r = int(np.sum(s >= threshold))
        if r == 0:
            raise ValueError(f"threshold {threshold:g} discards every singular value "
                             f"(the largest is {s[0]:g})")
    else:
        r = _check_rank(rank, s.size)
    s1, se = float(s[0]), float(s[r - 1])
    exact = _weyl_kappa(s1, se, eps, "Theorem 3", "s_eff")
    return (s1 / se) * (1.0 + eps / s1 + eps / se) if first_order else exact


def fit_ntk_constant(eps, ntk_errors):
    """Theorem 2's NTK-sensitivity constant ``C``, fitted over a sweep of ``tol``.

    Statement (the paper's Theorem 2): compressing the weights of a smooth
    network with error ``eps`` moves its NTK by ``||K_H - K||_F <= C eps``,
    with ``C`` depending on the network, the data and the activation (through
    Lipschitz constants of the Jacobian) but not on ``eps``, for ``eps``
    small. :func:`ntk_perturbation_bound` bounds the change a posteriori
    from the Jacobians; this function measures ``C`` from pairs
    ``(eps_t, ||K_H - K||_F)`` of a sweep (e.g.
    :func:`hmnumba.ntk.ntk_tol_sweep`). A fitted ``C`` holds at the points
    it was fitted on by construction: it says something only where it
    *predicts* points it was not fitted on (fit on the larger tolerances,
    check the smaller ones, as ``tests/test_ntk.py`` does). Use consistent
    scales: relative weight errors with relative NTK errors (what the sweep
    returns), or absolute with absolute. Assumptions: the linear regime;
    ``exponent`` (the log-log slope) near 1 confirms it, a smaller one means
    the sweep left it.

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
