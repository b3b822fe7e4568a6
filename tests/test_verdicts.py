"""Every branch of every experiment's verdict, on small hand-made results
(no training): each test builds the numbers that should lead to one outcome
and checks that outcome, so a verdict that ignored a part of the paper's
claim would fail here. The contract: ``{"outcome": one of OUTCOMES,
"sentence": str}``."""
import numpy as np
import pytest

from hmnumba.experiments import (REGISTRY, adversarial, conditioning, dynamic, generalisation,
                                 heatmaps, ntk_preservation, propagation, refinement, speed,
                                 tradeoff)
from hmnumba.experiments._verdict import OUTCOMES, WORDS, combine, verdict


def outcome(module, result):
    v = module.verdict(result)
    assert set(v) == {"outcome", "sentence"} and v["outcome"] in OUTCOMES
    assert isinstance(v["sentence"], str) and v["sentence"]
    return v["outcome"]


def test_contract_is_one_type():
    assert set(WORDS) == set(OUTCOMES)
    assert verdict("untested", "s") == {"outcome": "untested", "sentence": "s"}
    for bad in (True, False, None, "partly supports"):
        with pytest.raises(ValueError, match="outcome must be one of"):
            verdict(bad, "s")
    assert combine([True]) == "supports" and combine([False, False]) == "contradicts"
    assert combine([False, True]) == "partly"
    with pytest.raises(ValueError):
        combine([])
    assert len(REGISTRY) == 11   # the study's branches: tests/test_study.py


# ------------------------------------------------------------------ tradeoff
def _tradeoff(h_best, svd_rows):
    def rows(*pairs):
        return [dict(compression_ratio=c, relative_l2=e, accuracy=1 - e) for c, e in pairs]
    return dict(dense=dict(relative_l2=1e-4),
                entries=dict(hmatrix=rows((2.0, 1e-3), (h_best, 5e-3), (9.0, 0.5)),
                             svd=rows(*svd_rows), pruning=rows((3.0, 0.9)),
                             quantization=rows((4.0, 0.02))))


def test_tradeoff_verdict_branches():
    steep_svd = [(2.0, 2e-3), (4.0, 0.2)]
    # H wins (5.0, SVD none under the target 1e-2) and SVD's accuracy stays
    # within 0.975-0.978: both parts
    r = _tradeoff(5.0, [(2.0, 0.022), (3.0, 0.025), (6.0, 0.024)])
    assert tradeoff.svd_flatness(r)[0] == pytest.approx(0.003)
    assert outcome(tradeoff, r) == "supports"
    # H wins, SVD not flat: Fig. 4b only
    r = _tradeoff(5.0, steep_svd)
    v = tradeoff.verdict(r)
    assert v["outcome"] == "partly" and "Fig. 4b part only" in v["sentence"]
    # SVD flat but compressing more at the target: Fig. 2a only
    r = _tradeoff(5.0, [(8.0, 1e-3), (9.0, 2e-3)])
    v = tradeoff.verdict(r)
    assert v["outcome"] == "partly" and "Fig. 2a part only" in v["sentence"]
    # neither
    r = _tradeoff(5.0, [(8.0, 1e-3), (9.0, 0.3)])
    assert outcome(tradeoff, r) == "contradicts"


# ------------------------------------------------------------------ heatmaps
def _heat(**kw):
    r = dict(tol=1e-2, layer=1, error_bound=5e-3, relative_error=5e-3, n_lowrank=3,
             n_dense=2, max_rank=4, compression_ratio=2.0, n_blocks=5)
    r.update(kw)
    return r


def test_heatmaps_verdict_branches():
    assert outcome(heatmaps, _heat()) == "supports"
    assert outcome(heatmaps, _heat(n_blocks=1, n_lowrank=1, n_dense=0)) == "partly"
    assert outcome(heatmaps, _heat(compression_ratio=0.9)) == "contradicts"
    v = heatmaps.verdict(_heat(relative_error=2e-2))
    assert v["outcome"] == "contradicts" and "exceeds the tolerance" in v["sentence"]


# ------------------------------------------------------------------- dynamic
def _dyn(final, dense=1e-4, ratios=(1.0, 3.0, 3.0, 3.1, 3.0), bounds=(5e-3, 6e-3)):
    return dict(relative_l2=[0.5, final], compression_ratio=list(ratios),
                epochs=list(range(0, 50 * len(ratios), 50)), dense_relative_l2=[0.5, dense],
                dense_eval_epochs=[0, 200], tol=1e-2,
                recompress=[dict(epoch=50, error_bounds=list(bounds), tol=[1e-2])])


def test_dynamic_verdict_branches():
    assert outcome(dynamic, _dyn(1.5e-4)) == "supports"                  # within 2x dense
    v = dynamic.verdict(_dyn(3.7e-3))                                      # 37x dense
    assert v["outcome"] == "partly" and "37.0x" in v["sentence"]
    assert outcome(dynamic, _dyn(5e-2)) == "contradicts"                  # neither
    v = dynamic.verdict(_dyn(1e-4, ratios=(1.0, 0.9, 0.9, 0.9, 0.9)))
    assert v["outcome"] == "contradicts" and "did not stay compressed" in v["sentence"]
    v = dynamic.verdict(_dyn(1e-4, bounds=(2e-2,)))
    assert v["outcome"] == "contradicts" and "error bound" in v["sentence"]
    v = dynamic.verdict(_dyn(1e-4, ratios=(1.0, 3.0, 2.0, 3.0, 4.0)))
    assert v["outcome"] == "contradicts" and "does not settle" in v["sentence"]


# ------------------------------------------------------------ generalisation
def test_generalisation_verdict_branches():
    def res(rows):
        return dict(dense=dict(relative_l2=1e-3, relative_l2_train=1e-3),
                    entries=dict(hmatrix=[dict(compression_ratio=c, relative_l2=e,
                                               relative_l2_train=t) for c, e, t in rows]))
    assert outcome(generalisation, res([(2.0, 2e-3, 2e-3)])) == "supports"
    assert outcome(generalisation, res([(2.0, 5e-3, 1e-3)])) == "contradicts"
    assert outcome(generalisation, res([(2.0, 0.5, 0.5)])) == "untested"


# --------------------------------------------------------------------- speed
def _speed(ratios, h_times=(1.0, 1.0, 1.0, 1.0, 1.0)):
    """Per method a list of per-round times = ratio * the H-matrix's times."""
    h = np.asarray(h_times)
    def row(t):
        t = np.asarray(t, float)
        return dict(median=float(np.median(t)), q25=float(np.percentile(t, 25)),
                    q75=float(np.percentile(t, 75)), times=t.tolist())
    entries = {"hmatrix": [row(h)]}
    for m, r in ratios.items():
        entries[m] = [row(np.asarray(r) * h)]
    return dict(widths=[1024], repeats=len(h), entries=entries)


def test_speed_verdict_branches():
    fast = [1.5, 1.6, 1.4, 1.5, 1.7]
    tie = [0.9, 1.1, 1.0, 1.2, 0.95]
    slow = [0.5, 0.6, 0.55, 0.5, 0.6]
    all_fast = dict(dense=fast, svd=fast, pruning=fast, quantization=fast)
    assert outcome(speed, _speed(all_fast)) == "supports"
    # one tie: the interval covers 1, so not "faster"
    v = speed.verdict(_speed(dict(all_fast, svd=tie)))
    assert v["outcome"] == "partly" and "not faster than every method" in v["sentence"]
    # faster than all but noisy
    v = speed.verdict(_speed(all_fast, h_times=(1.0, 1.5, 1.0, 0.7, 1.2)))
    assert v["outcome"] == "partly" and "little variance" in v["sentence"]
    assert outcome(speed, _speed(dict(dense=slow, svd=tie, pruning=slow,
                                      quantization=tie))) == "contradicts"
    one = _speed(all_fast, h_times=(1.0,))
    assert outcome(speed, one) == "untested"
    np.testing.assert_allclose(speed.paired_ratios(_speed(all_fast), "svd"), fast)


# --------------------------------------------------------------- propagation
def _prop(h_out, s_out, h_first=1e-3, s_first=1e-3):
    def rows(outs, first):
        return [dict(tol=t, deviation=[0.0, first, 2 * first, o], compression_ratio=2.0)
                for t, o in zip((1e-2, 1e-3), outs)]
    return dict(layers=[1, 2, 3, 4], compressed=[2, 3],
                entries=dict(hmatrix=rows(h_out, h_first), svd=rows(s_out, s_first)))


def test_propagation_verdict_branches():
    assert outcome(propagation, _prop((2e-3, 2e-4), (5e-3, 5e-4))) == "supports"
    assert outcome(propagation, _prop((2e-3, 9e-4), (5e-3, 5e-4))) == "partly"
    assert outcome(propagation, _prop((6e-3, 9e-4), (5e-3, 5e-4))) == "contradicts"
    # lower output error but faster growth than SVD is no win
    assert outcome(propagation, _prop((2e-3, 2e-4), (5e-3, 5e-4), h_first=1e-5)) \
        == "contradicts"
    assert outcome(propagation, _prop((0.0, 0.0), (5e-3, 5e-4))) == "untested"


# ----------------------------------------------------------------------- ntk
def _ntk(diffs, spec_err=0.01, fspec_err=0.01, pd=True, dense_pd=True, rank=10):
    rows = []
    for tol, d in zip((1e-1, 1e-2, 1e-3, 1e-4), diffs):
        rows.append(dict(tol=tol, weight_error=tol / 2, relative_difference=d,
                         spectrum_error=spec_err, pd=pd, rank=rank,
                         factors=dict(spectrum_error=fspec_err, pd=pd, rank=rank)))
    fit = ntk_preservation.predictive_fit(rows)
    return dict(dense_pd=dense_pd, dense_rank=10, dense_spectrum=[1.0] * 12, n_leading=5,
                entries=dict(hmatrix=rows), fit=dict(hmatrix=fit))


def test_ntk_predictive_fit_can_fail():
    good = _ntk((5e-2, 5e-3, 5e-4, 5e-5))["fit"]["hmatrix"]
    assert good["predicted"] is True and good["C"] == pytest.approx(1.0)
    # the NTK error stops falling: the C fitted on the largest tolerances
    # does not bound the smaller ones
    bad = _ntk((5e-2, 5e-3, 4e-3, 4e-3))["fit"]["hmatrix"]
    assert bad["predicted"] is False


def test_ntk_verdict_branches():
    assert outcome(ntk_preservation, _ntk((5e-2, 5e-3, 5e-4, 5e-5))) == "supports"
    # a 120 % change at tol 0.1 is not "close"
    v = ntk_preservation.verdict(_ntk((1.2, 1.2e-2, 1.2e-3, 1.2e-4)))
    assert v["outcome"] == "partly" and "close (<= 0.1) at tol 0.01" in v["sentence"]
    assert outcome(ntk_preservation, _ntk((5e-2, 5e-3, 5e-4, 5e-5), fspec_err=0.5)) == "partly"
    assert outcome(ntk_preservation, _ntk((5e-2, 5e-3, 5e-4, 5e-5), pd=False)) == "partly"
    # singular dense NTK: definiteness untested, the rank is judged, and the
    # claim cannot be fully supported
    v = ntk_preservation.verdict(_ntk((5e-2, 5e-3, 5e-4, 5e-5), pd=False, dense_pd=False))
    assert v["outcome"] == "partly" and "could not be tested" in v["sentence"]
    assert outcome(ntk_preservation, _ntk((5e-2, 5e-3, 5e-4, 5e-5), pd=False, dense_pd=False,
                                          rank=7)) == "partly"
    assert outcome(ntk_preservation, _ntk((2.0, 1.9, 1.9, 1.9), spec_err=0.5, fspec_err=0.5,
                                          pd=False)) == "contradicts"
    r = _ntk((5e-2, 5e-3, 5e-4, 5e-5))
    for row in r["entries"]["hmatrix"][1:]:
        row["weight_error"] = 0.0                    # stored exactly: nothing to fit
    r["fit"]["hmatrix"] = ntk_preservation.predictive_fit(r["entries"]["hmatrix"])
    assert outcome(ntk_preservation, r) == "untested"


def test_ntk_spectrum_error_and_definiteness():
    lam0 = np.array([10.0, 1.0, 1e-3, 1e-9])
    assert ntk_preservation.spectrum_error(lam0, 2 * lam0, normalise=True) == 0.0
    assert ntk_preservation.spectrum_error(lam0, 2 * lam0, normalise=False) == 1.0
    # only the leading eigenvalues (>= 1e-4 of the largest) count
    assert ntk_preservation.spectrum_error(lam0, lam0 * [1, 1, 1.05, 5], False) \
        == pytest.approx(0.05)
    assert ntk_preservation.positive_definite(lam0)
    assert not ntk_preservation.positive_definite(np.array([1.0, 1e-15]))
    assert ntk_preservation.numerical_rank(np.array([1.0, 1e-3, 1e-15])) == 2


# -------------------------------------------------------------- conditioning
def _cond(kappa_holds=True, eff_holds=True, d_holds=True, delta_exact=1e-3):
    row = dict(layer=1, tol=1e-3, eps=1e-3, kappa_holds=kappa_holds, kappa_eff_holds=eff_holds,
               kappa_eff_bound=None if eff_holds is None else 12.0, kappa_eff=10.0,
               kappa_eff_A=10.0, rank_eff=5, kappa_eff_first_order=11.0,
               perturbed=[dict(delta=2e-3, delta_exact=delta_exact, holds=d_holds)])
    exact = dict(row, eps=0.0, kappa_holds=True, kappa_eff_holds=True)
    return dict(rows=[row, exact])


def test_conditioning_verdict_branches():
    assert outcome(conditioning, _cond()) == "supports"
    assert outcome(conditioning, _cond(kappa_holds=False)) == "contradicts"
    assert outcome(conditioning, _cond(d_holds=False)) == "contradicts"
    assert outcome(conditioning, _cond(delta_exact=3e-3)) == "contradicts"
    # 1 (c) applies only to the exactly stored layer: not counted, partly
    v = conditioning.verdict(_cond(kappa_holds=None))
    assert v["outcome"] == "partly" and "1 (c) never applies" in v["sentence"]
    assert outcome(conditioning, _cond(kappa_holds=None, eff_holds=None, d_holds=None)) \
        == "untested"


# --------------------------------------------------------------- adversarial
def _adv(amps, holds=True):
    return dict(radii=[1e-3, 1e-2], tols=[1e-2], dense=[dict(max=1.0), dict(max=1.0)],
                entries=[dict(tol=1e-2, radii=[dict(amplification=a, holds=holds, max=a,
                                                    bound=10.0) for a in amps])])


def test_adversarial_verdict_branches():
    assert outcome(adversarial, _adv((1.01, 1.05))) == "supports"
    assert outcome(adversarial, _adv((1.01, 1.5))) == "partly"
    assert outcome(adversarial, _adv((1.3, 1.5))) == "contradicts"
    v = adversarial.verdict(_adv((1.0, 1.0), holds=False))
    assert v["outcome"] == "contradicts" and "FAILS" in v["sentence"]


def test_attack_finds_the_worst_change_of_a_linear_network():
    """For u(x) = w . x the worst box perturbation is radius * sum|w|, which
    the gradient-sign attack reaches in one step."""
    from hmnumba.pinn import PINN, DenseLayer
    w = np.array([[0.5, -2.0]])
    net = PINN.from_layers([DenseLayer(np.eye(2) * 1e-4, np.zeros(2)),
                            DenseLayer(w * 1e4, np.zeros(1))])
    x = np.random.default_rng(0).random((5, 2)) * 1e-2
    change, d = adversarial.attack(net, x, 1e-3, steps=3)
    np.testing.assert_allclose(change, 1e-3 * 2.5, rtol=1e-4)
    assert np.all(np.abs(d) <= 1e-3 + 1e-15)


# ---------------------------------------------------------------- refinement
def _ref(afters, befores, incs=(0.1, 0.1), descent=True):
    steps, cum = [], befores[0]
    for k, (b, a, inc) in enumerate(zip(befores, afters, incs), 1):
        cum += inc
        steps.append(dict(step=k, before=b, after=a, increase_bound=inc,
                          holds=bool(a <= b + inc), cumulative_bound=cum))
    return dict(tol=1e-2, steps=steps, descent=descent, final=afters[-1], bound=cum)


def test_refinement_verdict_branches():
    assert outcome(refinement, _ref((0.05, 0.02), (0.01, 0.01))) == "supports"
    assert outcome(refinement, _ref((0.5, 0.02), (0.01, 0.01))) == "contradicts"
    v = refinement.verdict(_ref((0.05, 0.02), (0.01, 0.01), descent=False))
    assert v["outcome"] == "partly" and "descent" in v["sentence"]
    # per step within bound, descent held, yet above the cumulative bound
    r = _ref((0.05, 0.02), (0.01, 0.01))
    r["steps"][1]["cumulative_bound"] = 0.015
    assert outcome(refinement, r) == "contradicts"
