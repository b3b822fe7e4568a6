"""The compression study (hmnumba.experiments.study): the families' networks
and their training losses, the bisection finds the cheapest setting at a
target, winners, fine-tuning, and every verdict branch is reachable from
synthetic numbers. That every family runs through the whole study (and the
median and spread over seeds) is checked on the tiny profile's run in
tests/test_reproduce.py."""
import math

import numpy as np
import pytest

from hmnumba.experiments import families, study


def test_operator_network_recovers_the_solution_operator():
    net = families.operator_network("poisson1d", 40, 3)
    assert net.dense_task_error < 1e-3
    # shuffled: the largest entry of a Green's function is on its diagonal,
    # which the permutation moves off it
    W = net.weights[0]
    assert not np.all(np.argmax(np.abs(W), axis=1) == np.arange(40))


def test_operator_mlp_trains_from_glorot_and_its_adjoints_are_the_gradient():
    net = families.operator_network("poisson1d", 24, 0, n_train=96, hidden=16, epochs=300)
    start = families.operator_network("poisson1d", 24, 0, n_train=96, hidden=16, epochs=0)
    assert [W.shape for W in net.weights] == [(16, 24), (24, 16)]
    # training from the Glorot start lowers the test error a lot
    assert net.dense_task_error < 0.5 * start.dense_task_error
    _assert_adjoints_are_the_gradient(net, eps=1e-5, rtol=1e-4, atol=1e-10)


def _assert_adjoints_are_the_gradient(net, eps, rtol, atol, seed=1):
    """The training loss's gradient at each weight is ``G S^T`` (central
    differences along a random direction); returns the adjoints."""
    weights = [W.astype(np.float64) for W in net.weights]
    value, adj = net.train_loss(weights)
    assert len(adj) == len(weights) and value > 0
    rng = np.random.default_rng(seed)
    for i, (S, G) in enumerate(adj):
        D = rng.standard_normal(weights[i].shape)
        plus = [W + eps * D if j == i else W for j, W in enumerate(weights)]
        minus = [W - eps * D if j == i else W for j, W in enumerate(weights)]
        fd = (net.train_loss(plus)[0] - net.train_loss(minus)[0]) / (2 * eps)
        assert np.isclose(fd, np.sum(D * (G @ S.T)), rtol=rtol, atol=atol), i
    return adj


def test_fd_matrices_match_their_continuous_operators():
    n = 63
    x = np.arange(1, n + 1) / (n + 1)
    u = np.sin(np.pi * x)
    for name, expected in (("poisson1d", np.pi ** 2 * u),
                           ("helmholtz1d", (np.pi ** 2 - 100.0) * u)):
        np.testing.assert_allclose(families.fd_matrix(name, n) @ u, expected, rtol=2e-3)
    A = families.fd_matrix("advdiff1d", n)      # upwind: first order, error ~ h pi^2 / 2
    np.testing.assert_allclose((A @ u)[1:], (0.02 * np.pi ** 2 * u
                                             + np.pi * np.cos(np.pi * x))[1:], atol=0.1)
    with pytest.raises(ValueError, match="square"):
        families.fd_matrix("poisson2d", 10)
    with pytest.raises(ValueError, match="operator"):
        families.fd_matrix("wave", 10)


def test_bisection_finds_the_cheapest_feasible_setting_with_equal_resolution():
    calls = []

    def evaluate(a):
        calls.append(a)
        return dict(nbytes=1000 * (1 - a) + 1, err=a ** 2)

    best = study.bisect(evaluate, 0.25, "err", 5)
    assert best["err"] <= 0.25 and 0.5 - 1 / 32 <= math.sqrt(best["err"]) <= 0.5
    assert len(calls) == 2 + 5
    assert study.bisect(lambda a: dict(nbytes=1, err=1.0), 0.5, "err", 5) is None
    assert study.bisect(lambda a: dict(nbytes=1, err=0.0), 0.5, "err", 5)["err"] == 0.0
    calls.clear()
    best = study.bisect(evaluate, 0.25, "err", 3, lo=0.25)
    assert calls[:2] == [0.25, 1.0] and best["err"] <= 0.25
    calls.clear()                    # a start that misses the target: from 0 again
    assert study.bisect(evaluate, 0.01, "err", 3, lo=0.5)["err"] <= 0.01
    assert calls[:2] == [0.5, 0.0]
    fixed = []
    study.bisect(lambda a: fixed.append(a) or dict(nbytes=1, err=0.0), 0.5, "err", 5,
                 fixed=True)
    assert fixed == [0.0]


def test_method_parameters_span_their_ranges():
    assert study.METHODS["svd"].param(0.0, (30, 20)) == 20
    assert study.METHODS["svd"].param(1.0, (30, 20)) == 1
    assert study.METHODS["hmatrix"].param(0.0, (4, 4)) == pytest.approx(1e-6)
    assert study.METHODS["hmatrix"].param(1.0, (4, 4)) == pytest.approx(0.9)
    assert study.METHODS["pruning"].param(0.5, (4, 4)) == pytest.approx(0.4995)
    assert study.METHODS["float16"].param(0.3, (4, 4)) is None
    assert {m.family for m in study.METHODS.values()} == {"hmatrix", "baseline"}


def _synthetic(h, best_baseline, control_h=1.0):
    """A study result whose H ratio is ``h[family][level]`` and whose best
    baseline stores ``best_baseline`` at every cell."""
    summary = {}
    for family in families.FAMILIES:
        hs = h.get(family, [control_h] * 3)
        ratios, winners = [], []
        for j in range(3):
            cell = {m: [0.0, 0.0, 0.0] for m in study.METHODS}
            cell["hmatrix"] = [hs[j]] * 3
            cell["svd"] = [best_baseline] * 3
            ratios.append(cell)
            winners.append(study.winner(cell))
        summary[family] = {f"{family} net": dict(ratios=dict(task=ratios),
                                                 winners=dict(task=winners))}
    return dict(summary=summary)


@pytest.mark.parametrize("h, expected", [
    (dict(pinn=[5, 5, 5], operator=[9, 9, 9], digits=[3, 3, 3]), "supports"),
    (dict(pinn=[1, 1, 1], operator=[9, 9, 9], digits=[1, 1, 1]), "partly"),
    (dict(pinn=[5, 1, 1], operator=[5, 5, 5], digits=[5, 5, 5]), "partly"),
    (dict(pinn=[1, 1, 1], operator=[1, 1, 1], digits=[1, 1, 1]), "contradicts"),
])
def test_every_verdict_branch_is_reachable(h, expected):
    ver = study.verdict(_synthetic(h, best_baseline=2.0))
    assert ver["outcome"] == expected
    assert "control" in ver["sentence"] and "operator" in ver["sentence"]


def test_verdict_untested_when_nothing_reaches_a_level():
    ver = study.verdict(_synthetic(dict(pinn=[0, 0, 0], operator=[0, 0, 0],
                                        digits=[0, 0, 0]), best_baseline=0.0, control_h=0.0))
    assert ver["outcome"] == "untested"


def test_winner_is_clear_only_when_its_spread_beats_every_other():
    cell = {m: [0.0, 0.0, 0.0] for m in study.METHODS}
    cell["hmatrix"], cell["svd"] = [5.0, 4.0, 6.0], [3.0, 2.0, 3.5]
    w = study.winner(cell)
    assert (w["method"], w["clear"], w["baseline"]) == ("hmatrix", True, "svd")
    cell["svd"] = [3.0, 2.0, 4.5]
    assert study.winner(cell)["clear"] is False


def test_task_levels_follow_the_dense_error():
    assert study.task_levels("operator", 1e-4) == [1e-1, 1e-2, 1e-3]
    assert study.task_levels("pinn", 0.02) == [0.1, 0.03, 0.03]
    assert study.task_levels("digits", 0.03) == [0.08, 0.04, 0.03]


# ------------------------------------------------------------------ fine-tuning
def _compressors(W):
    from hmnumba import HMatrixCompressor
    from hmnumba.baselines import (Float16Compressor, PruningCompressor,
                                   QuantizationCompressor, SVDCompressor)
    return [HMatrixCompressor(tol=1e-1, leaf_size=8, structure="hierarchical").fit(W),
            SVDCompressor(rank=3).fit(W), PruningCompressor(sparsity=0.7).fit(W),
            QuantizationCompressor(bits=4).fit(W), Float16Compressor().fit(W)]


def test_trainable_gradients_match_finite_differences():
    from hmnumba.experiments.finetune import trainable
    rng = np.random.default_rng(0)
    x = np.linspace(0, 1, 32)
    W = (1.0 / (1.0 + 30 * np.abs(x[:, None] - x[None, :])) + 0.01 * rng.standard_normal(
        (32, 32))).astype(np.float32)
    S, G = rng.standard_normal((32, 7)), rng.standard_normal((32, 7))
    for comp in _compressors(W):
        t = trainable(comp)
        np.testing.assert_allclose(t.dense(t.theta), comp.reconstruct(), rtol=1e-5, atol=1e-6)
        g = t.grad(t.theta, S, G, G @ S.T)
        E = rng.standard_normal(t.theta.shape)
        f = lambda th: float(np.sum(G * (t.dense(th) @ S)))  # noqa: E731
        fd = (f(t.theta + 1e-6 * E) - f(t.theta - 1e-6 * E)) / 2e-6
        assert abs(fd - g @ E) <= 1e-6 * max(1.0, abs(fd)), type(comp).__name__


def test_finetuning_never_worsens_the_training_loss_and_keeps_the_format():
    from hmnumba.experiments.finetune import finetune
    net = families.digits_network(24, 0, max_iter=15)
    W = net.weights[0]
    for comp in _compressors(W):
        before = net.train_loss([comp.reconstruct().astype(np.float64)])[0]
        tuned = finetune([comp], net.train_loss, epochs=5)[0]
        assert tuned.shape == W.shape
        assert net.train_loss([tuned])[0] <= before
        if type(comp).__name__ == "PruningCompressor":       # the pattern stays
            assert np.count_nonzero(tuned) <= comp.weights_.nnz
        if type(comp).__name__ == "Float16Compressor":       # still float16 numbers
            np.testing.assert_array_equal(tuned, tuned.astype(np.float16).astype(np.float64))


@pytest.fixture(scope="module")
def small_pinn():
    return families.pinn_network("poisson2d", 16, 3, 0, 20, 20, 32, 12)


def test_pinn_train_loss_adjoints_are_the_gradient(small_pinn):
    # the PINN loss goes through u, its gradient and its Laplacian: the
    # adjoints of every derivative channel, side by side, give dL/dW = G S^T
    adj = _assert_adjoints_are_the_gradient(small_pinn, eps=1e-6, rtol=1e-5, atol=1e-9, seed=2)
    for S, G in adj:    # residual (4 channels x 32 points) and boundary (12) passes
        assert S.shape == G.shape == (16, 4 * 32 + 12)


def test_pinn_finetuning_lowers_the_training_loss_of_every_method(small_pinn):
    from hmnumba.experiments.finetune import finetune
    net = small_pinn
    for name in ("hmatrix-tree", "svd", "pruning", "int4", "float16"):
        method = study.METHODS[name]
        comps = [method.make(W, method.param(0.5, W.shape), 0, leaf_size=8)
                 for W in net.weights]
        before = net.train_loss([c.reconstruct().astype(np.float64) for c in comps])[0]
        tuned = finetune(comps, net.train_loss, epochs=8)
        after = net.train_loss(tuned)[0]
        assert after <= before, name
        if name in ("svd", "pruning", "hmatrix-tree"):     # exact gradients: it moves
            assert after < before, name


@pytest.mark.slow
def test_parallel_study_gives_the_serial_results():
    import dataclasses
    cfg = study.StudyConfig(
        networks=[dict(family="control", n=24),
                  dict(family="operator", problem="poisson1d", n=24, finetune=True)],
        seeds=(0, 1), bisection_steps=2, leaf_size=8, timing_repeats=2,
        finetune_epochs=2, finetune_steps=1)
    seen = []
    serial = study.study_networks(cfg, base_seed=3, progress=seen.append)
    parallel = study.study_networks(dataclasses.replace(cfg, n_jobs=2), base_seed=3)
    assert [r["seed"] for r in serial] == [3, 4, 3, 4] and len(seen) == 2

    def numbers(results):     # everything but the timings, which measure the machine
        return [{k: v for k, v in r.items() if k not in ("timing", "seconds")}
                for r in results]

    assert numbers(parallel) == numbers(serial)
    assert all(r["finetuned"] for r in serial[2:])


def test_svd_from_the_cached_factorisation_equals_a_fresh_fit():
    from hmnumba.baselines import SVDCompressor
    W = np.random.default_rng(0).standard_normal((30, 20)).astype(np.float32)
    for k in (1, 5, 20):
        a, b = study.METHODS["svd"].make(W, k, 0), SVDCompressor(rank=k).fit(W)
        assert (a.rank_, a.nbytes_) == (b.rank_, b.nbytes_)
        np.testing.assert_allclose(a.reconstruct(), b.reconstruct(), rtol=1e-5, atol=1e-5)
        assert a.relative_error_ == pytest.approx(b.relative_error_, rel=1e-5)


@pytest.mark.parametrize("factor_dtype", ["float16", "int8"])
def test_trainable_keeps_low_precision_and_outliers(factor_dtype):
    # W = S + H with H's factors rounded: fine-tuning tunes H's numbers, keeps S,
    # and rounds what it stores to the same format.
    from hmnumba import HMatrixCompressor
    from hmnumba.experiments.finetune import trainable
    rng = np.random.default_rng(1)
    W = rng.standard_normal((96, 4)) @ rng.standard_normal((4, 80))
    spikes = rng.choice(W.size, W.size // 100, replace=False)
    W.flat[spikes] += 50.0 * np.sign(rng.standard_normal(spikes.size))
    comp = HMatrixCompressor(tol=1e-2, leaf_size=16, factor_dtype=factor_dtype,
                             outliers=spikes.size).fit(W)
    H = comp.hmatrix_
    assert H.outliers is not None and H.encoding is not None
    t = trainable(comp)
    np.testing.assert_allclose(t.dense(t.theta), comp.reconstruct(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(t.final(t.theta), comp.reconstruct(), rtol=0, atol=1e-6)
    moved = t.theta + 1e-3 * rng.standard_normal(t.theta.shape)
    rounding = t.final(moved) - t.dense(moved)   # the tuned numbers are rounded again
    assert 0 < np.abs(rounding).max() <= 1e-2 * np.abs(W).max()
