"""Tests of hmnumba.bounds: every bound against directly computed norms and
SVD quantities of H-matrices built from random and ill-conditioned matrices.
A bound holds in every case tried, or the function says it does not apply."""
from functools import lru_cache

import numpy as np
import pytest

from hmnumba import HMatrix
from hmnumba.bounds import (block_error_bound, condition_number_bound, fit_ntk_constant,
                            perturbation_bound, singular_value_bound)

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
