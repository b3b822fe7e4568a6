"""Tests of hmnumba.bounds: every bound against directly computed norms and
SVD quantities of H-matrices built from random and ill-conditioned matrices,
and of small networks. A bound holds in every case tried, or the function
says it does not apply; and each test also shows that the bound can fail:
the bound is attained (so a smaller constant is violated), or a wrong
constant or a dropped assumption is violated on a constructed case."""
from functools import lru_cache

import numpy as np
import pytest

from hmnumba import HMatrix
from hmnumba.bounds import (adaptive_training_error_bound, adversarial_bound,
                            block_error_bound, condition_number_bound,
                            effective_condition_number_bound, factor_perturbation_bound,
                            fit_ntk_constant, ntk_perturbation_bound, perturbation_bound,
                            perturbed_condition_number_bound, singular_value_bound)

TOLS = (3e-1, 1e-3, 1e-7)


@lru_cache(maxsize=None)
def _matrix(kind, seed, n=64):
    rng = np.random.default_rng(seed)
    if kind == "random":
        return rng.standard_normal((n, n))
    if kind == "rectangular":
        return rng.standard_normal((n, n // 2 + 7))
    if kind == "smooth":           # a kernel matrix: low-rank blocks, decaying spectrum
        t = np.sort(rng.random(n))
        return 1.0 / (1.0 + 8.0 * np.abs(t[:, None] - t[None, :]))
    # ill-conditioned: singular values from 1 down to 1e-12
    Q1, _ = np.linalg.qr(rng.standard_normal((n, n)))
    Q2, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return (Q1 * np.logspace(0, -12, n)) @ Q2.T


KINDS = ("random", "rectangular", "smooth", "illcond")
CASES = [(kind, seed, tol) for kind in KINDS for seed in (0, 1) for tol in TOLS]


@lru_cache(maxsize=None)
def _case(kind, seed, tol):
    """``A``, its H-matrix at ``tol`` and the singular values of both (cached:
    several tests check different bounds on the same builds)."""
    A = _matrix(kind, seed)
    H = HMatrix.from_dense(A, tol=tol, leaf_size=16, random_state=seed)
    Hd = H.to_dense()
    return (A, H, Hd, np.linalg.svd(A, compute_uv=False),
            np.linalg.svd(Hd, compute_uv=False))


def _build(A, tol, seed):
    return HMatrix.from_dense(A, tol=tol, leaf_size=16, random_state=seed).to_dense()


@pytest.mark.parametrize("kind,seed,tol", CASES)
def test_block_error_bound_is_the_exact_global_error(kind, seed, tol):
    A, H, Hd, _, _ = _case(kind, seed, tol)
    exact = np.linalg.norm(A - Hd)
    # Theorem 1a with exact block errors: equality, and below tol ||A||_F.
    assert block_error_bound(H.block_errors) == pytest.approx(exact, rel=1e-6, abs=1e-13)
    assert block_error_bound(H) == pytest.approx(exact / np.linalg.norm(A), rel=1e-6,
                                                 abs=1e-13)
    assert block_error_bound(H) <= tol
    # Looser block bounds give a looser, still valid, global bound.
    assert block_error_bound(2.0 * H.block_errors + 1e-9) >= exact


@pytest.mark.parametrize("kind,seed,tol", CASES)
def test_perturbation_bound_holds(kind, seed, tol):
    A = _matrix(kind, seed)
    rng = np.random.default_rng(100 + seed)
    for scale in (1e-6, 1.0):
        E = scale * np.linalg.norm(A) / np.sqrt(A.size) * rng.standard_normal(A.shape)
        H = _build(A + E, tol, seed)
        assert np.linalg.norm(A + E - H) <= perturbation_bound(A, E, tol)
        assert np.linalg.norm(A - H) <= perturbation_bound(A, E, tol, target="original")
        # Norms or matrices: the same bound.
        assert perturbation_bound(np.linalg.norm(A), np.linalg.norm(E), tol) == \
            pytest.approx(perturbation_bound(A, E, tol))


@pytest.mark.parametrize("kind,seed,tol", CASES)
def test_singular_value_bound_holds(kind, seed, tol):
    A, H, Hd, s, sh = _case(kind, seed, tol)
    eps = block_error_bound(H.block_errors)          # absolute ||A - H||_F
    lo, hi = singular_value_bound(s, eps)
    slack = 1e-12 * s[0]
    assert np.all(sh >= lo - slack) and np.all(sh <= hi + slack)            # Weyl
    assert np.linalg.norm(sh - s) <= eps + slack                            # Mirsky
    # The tight spectral-norm version holds as well.
    lo2, hi2 = singular_value_bound(s, np.linalg.norm(A - Hd, 2))
    assert np.all(sh >= lo2 - slack) and np.all(sh <= hi2 + slack)


@pytest.mark.parametrize("kind,seed,tol", CASES)
def test_condition_number_bound_holds_or_does_not_apply(kind, seed, tol):
    A, _, Hd, s, sh = _case(kind, seed, tol)
    eps = np.linalg.norm(A - Hd)
    try:
        bound = condition_number_bound(s[0], s[-1], eps)
    except ValueError as exc:
        assert "does not apply" in str(exc)
        assert eps >= s[-1]
        return
    assert sh[-1] > 0
    assert sh[0] / sh[-1] <= bound * (1 + 1e-10)


def test_condition_number_bound_both_branches_occur():
    applied = refused = 0
    for kind, seed, tol in CASES:
        A, _, Hd, s, _ = _case(kind, seed, tol)
        eps = np.linalg.norm(A - Hd)
        if eps < s[-1]:
            applied += 1
        else:
            refused += 1
    assert applied > 0 and refused > 0


def _worst_case(s, delta, r=None, seed=0):
    """``A`` with singular values ``s`` and the perturbation ``delta (u_1 v_1^T -
    u_r v_r^T)`` (spectral norm ``delta``) that attains the Weyl bounds on
    ``s_1`` and ``s_r``."""
    n = len(s)
    r = n if r is None else r
    rng = np.random.default_rng(seed)
    Q1, _ = np.linalg.qr(rng.standard_normal((n, n)))
    Q2, _ = np.linalg.qr(rng.standard_normal((n, n)))
    A = (Q1 * np.asarray(s)) @ Q2.T
    D = delta * (np.outer(Q1[:, 0], Q2[:, 0]) - np.outer(Q1[:, r - 1], Q2[:, r - 1]))
    return A, D


def _kappa(M, r=None):
    sv = np.linalg.svd(M, compute_uv=False)
    return sv[0] / sv[(len(sv) if r is None else r) - 1]


def test_condition_number_bound_is_attained_so_a_smaller_one_fails():
    s = np.logspace(0, -3, 12)
    eps = 1e-4
    A, D = _worst_case(s, eps)
    bound = condition_number_bound(s[0], s[-1], eps)
    assert _kappa(A + D) == pytest.approx(bound, rel=1e-8)
    assert _kappa(A + D) > condition_number_bound(s[0], s[-1], 0.99 * eps)
    # kappa(A) (1 + eps / s_min), a tempting first-order reading, is violated.
    assert _kappa(A + D) > (s[0] / s[-1]) * (1 + eps / s[-1])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_perturbed_condition_number_bound_for_factor_perturbations(seed):
    """Theorem 1 (d): a PINN layer's H-matrix, its factors perturbed (as a
    training step does): the perturbed condition number stays in the bound."""
    A = _matrix("smooth", seed) + 0.5 * np.eye(64)         # well conditioned
    H = HMatrix.from_dense(A, tol=1e-6, leaf_size=16, random_state=seed)
    assert (H.rank > 0).any()
    s = np.linalg.svd(H.to_dense(), compute_uv=False)
    before = H.to_dense()
    for scale in (1e-6, 1e-4, 1e-3):
        d = scale * np.random.default_rng(seed).standard_normal(H.data.size)
        delta = factor_perturbation_bound(H, d)
        H.data[:] += d
        try:
            exact = np.linalg.norm(H.to_dense() - before)
            assert exact <= delta * (1 + 1e-12)
            assert _kappa(H.to_dense()) <= perturbed_condition_number_bound(s, delta)
        finally:
            H.data[:] -= d
    # A delta above s_min: the theorem does not apply.
    with pytest.raises(ValueError, match=r"Theorem 1 \(d\) does not apply"):
        perturbed_condition_number_bound(s, 1.01 * s[-1])


def test_perturbed_condition_number_bound_is_attained_with_rank():
    s = np.r_[np.logspace(0, -2, 8), 1e-14, 1e-15]       # numerically rank 8
    delta = 1e-3
    A, D = _worst_case(s, delta, r=8)
    bound = perturbed_condition_number_bound(s, delta, rank=8)
    assert _kappa(A + D, r=8) == pytest.approx(bound, rel=1e-8)
    assert _kappa(A + D, r=8) > perturbed_condition_number_bound(s, 0.99 * delta, rank=8)
    with pytest.raises(ValueError, match="does not apply"):
        perturbed_condition_number_bound(s, delta)        # all 10: s_10 < delta


def test_factor_perturbation_bound_is_exact_for_scaled_rank_one_blocks():
    """dU = t U, dV = t V on rank-one blocks: the block moves by (2t + t^2) U V^T
    and the bound is an equality; leaving out the second-order term fails."""
    rng = np.random.default_rng(0)
    A = np.outer(rng.standard_normal(64), rng.standard_normal(48))
    H = HMatrix.from_dense(A, tol=1e-8, leaf_size=16, random_state=0)
    assert np.all(H.rank == 1)
    t = 0.3
    d = t * H.data
    bound = factor_perturbation_bound(H, d)
    exact = (2 * t + t * t) * np.linalg.norm(H.to_dense())
    assert bound == pytest.approx(exact, rel=1e-10)
    assert 2 * t * np.linalg.norm(H.to_dense()) < exact       # first order only: violated
    with pytest.raises(ValueError, match="shape of H.data"):
        factor_perturbation_bound(H, d[:-1])


def _mlp(sizes, seed, scale=1.0):
    """Weights and biases of a tanh MLP; the square (hidden) weights get
    singular values decaying from ``scale`` to ``1e-12 scale``, so an H-matrix
    compresses them (a Gaussian array would be stored exactly)."""
    rng = np.random.default_rng(seed)
    layers = []
    for n_in, n_out in zip(sizes, sizes[1:]):
        if n_in == n_out:
            Q1, _ = np.linalg.qr(rng.standard_normal((n_out, n_out)))
            Q2, _ = np.linalg.qr(rng.standard_normal((n_in, n_in)))
            W = (Q1 * (scale * np.logspace(0, -12, n_in))) @ Q2.T
        else:
            W = scale * rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)
        layers.append((W, 0.1 * rng.standard_normal(n_out)))
    return layers


def _forward(layers, X):
    """Outputs and the input of every layer, for X of shape (d, N)."""
    inputs = []
    for i, (W, b) in enumerate(layers):
        inputs.append(X)
        Z = W @ X + b[:, None]
        X = Z if i == len(layers) - 1 else np.tanh(Z)
    return X[0], inputs


def test_adversarial_bound_holds_under_gradient_attacks_and_is_tight_for_one_layer():
    layers = _mlp([2, 32, 32, 1], seed=0)
    W1 = layers[1][0]
    H1 = HMatrix.from_dense(W1, tol=0.1, leaf_size=8, random_state=0).to_dense()
    comp = [layers[0], (H1, layers[1][1]), layers[2]]
    assert np.linalg.norm(W1 - H1) > 0
    norms = [np.linalg.norm(W, 2) for W, _ in layers]
    eps = [0.0, np.linalg.norm(W1 - H1, 2), 0.0]
    rng = np.random.default_rng(1)
    X = rng.random((2, 50))
    for radius in (1e-3, 1e-1, 1.0):
        bound = adversarial_bound(norms, radius, eps=eps)
        assert bound == pytest.approx(adversarial_bound(
            [norms[0], norms[1] + eps[1], norms[2]], radius))
        u0, _ = _forward(comp, X)
        # normalised finite-difference gradient steps (the worst local direction)
        h = 1e-6
        g = np.stack([(_forward(comp, X + h * e[:, None])[0] - u0) / h
                      for e in np.eye(2)])
        step = radius * g / np.linalg.norm(g, axis=0)
        change = np.abs(_forward(comp, X + step)[0] - u0)
        assert np.all(change <= bound)
        assert np.all(change <= adversarial_bound([np.linalg.norm(W, 2) for W, _ in comp],
                                                  radius))
    # One linear layer: d = radius v_1 attains the bound; a compressed layer
    # whose error points along v_1 breaks the bound that ignores eps.
    W = rng.standard_normal((20, 20))
    U, sv, Vt = np.linalg.svd(W)
    Hc = W + 0.05 * sv[0] * np.outer(U[:, 0], Vt[0])
    change = np.linalg.norm(Hc @ (0.1 * Vt[0]))
    assert change == pytest.approx(adversarial_bound([sv[0]], 0.1, eps=[0.05 * sv[0]]))
    assert change > adversarial_bound([sv[0]], 0.1)
    with pytest.raises(ValueError, match="one value per layer"):
        adversarial_bound([1.0, 2.0], 0.1, eps=[0.1])


def _step_terms(layers, new_layers, X):
    """eps_l, ||a_{l-1}(x_i)|| before and prod_{l'>l} ||W'_l'||_2 after, for one step."""
    _, inputs = _forward(layers, X)
    L = len(layers)
    eps = [np.linalg.norm(new_layers[l][0] - layers[l][0], 2) for l in range(L)]
    a = [np.linalg.norm(inputs[l], axis=0) for l in range(L)]
    later = [np.prod([np.linalg.norm(new_layers[j][0], 2) for j in range(l + 1, L)])
             for l in range(L)]
    return eps, a, later


@pytest.mark.parametrize("tol", [0.3, 1e-2, 1e-4])
def test_adaptive_training_error_bound_over_refinement_steps(tol):
    """Theorem 1 (f) with real re-compressions of the hidden layers; between
    the steps the network is left alone (descent holds trivially)."""
    rng = np.random.default_rng(3)
    layers = _mlp([2, 48, 48, 48, 1], seed=2, scale=1.5)
    X = rng.random((2, 80))
    target = np.sin(X[0]) * np.cos(X[1])
    E0 = np.linalg.norm(_forward(layers, X)[0] - target)
    eps_all, a_all, later_all, errors = [], [], [], []
    for step in range(3):
        new = list(layers)
        for l in (1, 2):
            W = layers[l][0] + (step > 0) * 1e-3 * rng.standard_normal(layers[l][0].shape)
            H = HMatrix.from_dense(W, tol=tol, leaf_size=12, random_state=step)
            new[l] = (H.to_dense(), layers[l][1])
        eps, a, later = _step_terms(layers, new, X)
        eps_all.append(eps)
        a_all.append(a)
        later_all.append(later)
        layers = new
        errors.append(np.linalg.norm(_forward(layers, X)[0] - target))
    assert min(max(e) for e in eps_all) > 0                 # every step changed the net
    bound = adaptive_training_error_bound(E0, eps_all, a_all, later_all)
    assert np.all(np.asarray(errors) <= bound)
    # relative form
    rel = adaptive_training_error_bound(E0 / np.linalg.norm(target), eps_all, a_all,
                                        later_all, target_norm=np.linalg.norm(target))
    np.testing.assert_allclose(rel, bound / np.linalg.norm(target))


def test_adaptive_training_error_bound_fails_without_the_later_layers():
    """Per point, one step: the output change is within c_ij; with the product
    over the later layers dropped (a wrong constant) it is not."""
    rng = np.random.default_rng(0)
    layers = _mlp([2, 32, 32, 1], seed=4)
    layers[2] = (60.0 * layers[2][0], layers[2][1])         # an amplifying output layer
    X = rng.random((2, 40))
    new = list(layers)
    W1 = layers[1][0]
    new[1] = (HMatrix.from_dense(W1, tol=0.05, leaf_size=8, random_state=0).to_dense(),
              layers[1][1])
    u0, u1 = _forward(layers, X)[0], _forward(new, X)[0]
    eps, a, later = _step_terms(layers, new, X)
    assert eps[1] > 0
    for i in range(X.shape[1]):
        one = adaptive_training_error_bound(0.0, [eps], [[ai[i:i + 1] for ai in a]], [later])
        assert abs(u1[i] - u0[i]) <= one[0]
    total = adaptive_training_error_bound(0.0, [eps], [a], [later])[0]
    assert np.linalg.norm(u1 - u0) <= total
    wrong = adaptive_training_error_bound(0.0, [eps], [a], [np.ones(len(later))])[0]
    assert np.linalg.norm(u1 - u0) > wrong
    with pytest.raises(ValueError, match="must agree"):
        adaptive_training_error_bound(0.0, [eps], [a], [later[:2]])


def test_ntk_perturbation_bound_holds_and_is_attained():
    rng = np.random.default_rng(0)
    J = rng.standard_normal((12, 60))
    K = J @ J.T
    lam = np.linalg.eigvalsh(K)[::-1]
    for scale in (1e-6, 1e-3, 1e-1):
        J_H = J + scale * rng.standard_normal(J.shape)
        b = ntk_perturbation_bound(J, J_H, eigenvalues=lam)
        K_H = J_H @ J_H.T
        assert np.linalg.norm(K_H - K) <= b["delta"]
        lam_H = np.linalg.eigvalsh(K_H)[::-1]
        assert np.all((b["lower"] <= lam_H) & (lam_H <= b["upper"]))
        if b["positive_definite"]:
            assert lam_H[-1] > 0
        assert np.sum(lam_H > 0) >= b["n_positive"]
    # rank-one J, J_H = (1 + t) J: equality; the constant ||J||_2 alone fails.
    j = rng.standard_normal((1, 30))
    J1 = np.outer(rng.standard_normal(6), j)
    t = 0.01
    b = ntk_perturbation_bound(J1, (1 + t) * J1)
    dK = np.linalg.norm(((1 + t) ** 2 - 1) * (J1 @ J1.T))
    assert dK == pytest.approx(b["delta"], rel=1e-10)
    assert dK > np.linalg.norm(t * J1) * np.linalg.norm(J1, 2) * 2
    assert not b["positive_definite"]          # K has rank one: nothing is guaranteed
    # A compressed Jacobian that loses rank: the bound refuses to promise definiteness.
    J_lost = J.copy()
    J_lost[-1] = J_lost[-2]
    b = ntk_perturbation_bound(J, J_lost)
    assert not b["positive_definite"] and np.linalg.eigvalsh(J_lost @ J_lost.T)[0] < 1e-8
    with pytest.raises(ValueError, match="same shape"):
        ntk_perturbation_bound(J, J[:, :5])


@pytest.mark.parametrize("seed", [0, 1])
def test_effective_condition_number_bound_on_ill_conditioned_h_matrices(seed):
    A = _matrix("illcond", seed)                  # singular values 1 .. 1e-12
    s = np.linalg.svd(A, compute_uv=False)
    threshold = 1e-2
    r = int(np.sum(s >= threshold))
    applied = beyond_1c = 0
    for tol in (1e-1, 1e-2, 1e-3, 1e-5):
        Hd = _build(A, tol, seed)
        eps = np.linalg.norm(A - Hd, 2)
        try:
            bound = effective_condition_number_bound(s, eps, threshold=threshold)
        except ValueError as exc:
            assert "Theorem 3 does not apply" in str(exc) and eps >= s[r - 1]
            continue
        applied += 1
        assert _kappa(Hd, r) <= bound * (1 + 1e-10)
        if eps >= s[-1]:          # Theorem 1 (c) refuses where Theorem 3 bounds
            beyond_1c += 1
            with pytest.raises(ValueError, match=r"Theorem 1 \(c\) does not apply"):
                condition_number_bound(s[0], s[-1], eps)
        first = effective_condition_number_bound(s, eps, threshold=threshold, first_order=True)
        # first order: below the exact form by a second-order term
        gap = (s[0] / s[r - 1]) * (eps / s[r - 1]) * (eps / s[0] + eps / s[r - 1]) \
            / (1 - eps / s[r - 1])
        assert bound - first == pytest.approx(gap, rel=1e-8, abs=1e-12 * bound)
        assert effective_condition_number_bound(s, eps, rank=r) == bound
    assert applied >= 1 and beyond_1c >= 1


def test_effective_condition_number_first_order_is_not_a_bound():
    s = np.r_[np.logspace(0, -2, 6), 1e-13]
    eps = 2e-3
    A, D = _worst_case(s, eps, r=6)
    exact = effective_condition_number_bound(s, eps, threshold=1e-6)
    first = effective_condition_number_bound(s, eps, threshold=1e-6, first_order=True)
    assert _kappa(A + D, 6) == pytest.approx(exact, rel=1e-8)
    assert _kappa(A + D, 6) > first
    assert _kappa(A + D, 6) > effective_condition_number_bound(s, 0.99 * eps, threshold=1e-6)
    with pytest.raises(ValueError, match="not both"):
        effective_condition_number_bound(s, eps, threshold=1e-6, rank=3)
    with pytest.raises(ValueError, match="discards every"):
        effective_condition_number_bound(s, eps, threshold=10.0)


def test_fit_ntk_constant():
    fit = fit_ntk_constant([1e-1, 1e-2, 1e-3], [0.3, 0.01, 2e-3])
    assert fit["C"] == pytest.approx(3.0)
    np.testing.assert_allclose(fit["ratios"], [3.0, 1.0, 2.0])
    assert fit["C_lsq"] == pytest.approx((0.03 + 1e-4 + 2e-6) / (1e-2 + 1e-4 + 1e-6))
    assert np.isnan(fit_ntk_constant([1e-2], [1e-2])["exponent"])
    with pytest.raises(ValueError, match="same length"):
        fit_ntk_constant([1e-1, 1e-2], [0.1])
    with pytest.raises(ValueError, match="> 0 everywhere"):
        fit_ntk_constant([1e-1, 0.0], [0.1, 0.0])


@pytest.mark.parametrize("call,match", [
    (lambda: block_error_bound([1.0, -1.0]), ">= 0"),
    (lambda: block_error_bound([]), "empty"),
    (lambda: block_error_bound([1.0], norm=np.nan), "finite"),
    (lambda: perturbation_bound(1.0, 1.0, 1.5), "tol"),
    (lambda: perturbation_bound(1.0, 1.0, 0.1, target="both"), "target"),
    (lambda: perturbation_bound(-1.0, 1.0, 0.1), ">= 0"),
    (lambda: singular_value_bound([[1.0]], 0.1), "1-D"),
    (lambda: singular_value_bound([1.0], -0.1), ">= 0"),
    (lambda: condition_number_bound(1.0, 2.0, 0.1), "s_max must be >= s_min"),
    (lambda: condition_number_bound(1.0, 0.0, 0.0), "does not apply"),
    (lambda: condition_number_bound(1.0, 0.5, 0.5), "does not apply"),
    (lambda: perturbed_condition_number_bound([2.0, 1.0], 0.1, rank=3), "rank must be <= 2"),
    (lambda: perturbed_condition_number_bound([2.0, -1.0], 0.1), ">= 0"),
    (lambda: adversarial_bound([1.0], -0.1), "radius"),
    (lambda: adaptive_training_error_bound(0.0, [[-1.0]], [[[1.0]]], [[1.0]]), ">= 0"),
    (lambda: adaptive_training_error_bound(0.0, [[1.0]], [[[1.0]]], [[1.0]], target_norm=0.0),
     "target_norm"),
    (lambda: ntk_perturbation_bound(np.ones((2, 3)), np.ones((2, 3)), eigenvalues=[1.0]),
     "one value per sample"),
    (lambda: effective_condition_number_bound([1.0, 0.1], 0.2, threshold=0.05),
     "Theorem 3 does not apply"),
    (lambda: effective_condition_number_bound([1.0, 0.1], 0.2, rank=2, first_order=True),
     "Theorem 3 does not apply"),
])
def test_invalid_inputs_raise_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_invalid_types_raise_type_error():
    with pytest.raises(TypeError, match="eps"):
        singular_value_bound([1.0], "0.1")
    with pytest.raises(TypeError, match="s_max"):
        condition_number_bound(True, 1.0, 0.1)
    with pytest.raises(TypeError, match="block_errors"):
        block_error_bound(np.array([1, 2]))
