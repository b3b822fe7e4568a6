"""The compression study: where does an H-matrix win? (``hmnumba reproduce``).

Every method of :data:`METHODS` compresses the weights of every network of
the four families of :mod:`hmnumba.experiments.families`, for several seeds.
Each method's parameter is found by bisection (the same number of steps for
every method) to reach each target error at the fewest bytes, once for the
weight error ``||W - W_hat||_F / ||W||_F`` and once for the task error, so
bytes are compared at equal error. Bytes are those of float32 weights (every
network is cast to float32 first). Before compressing, each network's
singular-value decay and off-diagonal block ranks are recorded, so the
report can say why a method wins. The timings interleave the dense product
and every method's ``transform`` in each repeat; a method is "faster" only
when the bootstrap interval of its median speed-up excludes 1.

For the networks marked ``finetune`` (PINNs, operators and digits) each
method is also bisected on the task error after fine-tuning what it stores,
the same Adam epochs for every method, on the network's own training loss
(:mod:`hmnumba.experiments.finetune`; for a PINN the residual-plus-boundary
loss on its training samples, through the derivative channels). The
operator family has linear networks and a one-hidden-layer tanh network
trained from a Glorot start (both of its weights compressed at one
parameter).
"""
import math
import time
from dataclasses import dataclass

import numpy as np

from hmnumba.experiments._verdict import CONTRADICTS, PARTLY, SUPPORTS, UNTESTED, combine
from hmnumba.experiments._verdict import verdict as verdict_of
from hmnumba.experiments.families import FAMILIES, FAMILY_TITLES, TASK_METRICS, build

NAME = "study"
TITLE = "Where H-matrix compression wins: four network families, every method, several seeds"
FIGURE = "fig_study.png"
CLAIM = ("H-matrices store fewer bytes than SVD, pruning and quantization at the same "
         "accuracy (the paper's Fig. 4b, here for PINNs from a full-rank start, learned "
         "solution operators and a digits classifier, against a float16 cast too).")


# ---------------------------------------------------------------- methods

@dataclass(frozen=True)
class Method:
    """One compression method of the study.

    ``make(W, p, seed)`` returns a fitted compressor (the
    :class:`~hmnumba.compressor.BaseCompressor` protocol) at parameter ``p``.
    ``scale`` says how the bisection's unit ``a in [0, 1]`` (0: most
    accurate, 1: fewest bytes) maps to ``p``: ``"log"`` from ``lo`` to
    ``hi`` geometrically, ``"linear"`` likewise, ``"rank"`` from
    ``min(W.shape)`` down to 1, ``"fixed"`` has no parameter.
    """

    label: str
    family: str           # "hmatrix" or "baseline"
    scale: str
    make: object
    lo: float = 0.0
    hi: float = 1.0

    def param(self, a, shape):
        if self.scale == "fixed":
            return None
        if self.scale == "rank":
            top = min(shape)
            return int(max(1, round(top - a * (top - 1))))
        if self.scale == "log":
            return float(math.exp(math.log(self.lo) + a * (math.log(self.hi) - math.log(self.lo))))
        return float(self.lo + a * (self.hi - self.lo))


def _hmatrix(structure, **options):
    def make(W, p, seed, leaf_size=16):
        from hmnumba import HMatrixCompressor
        return HMatrixCompressor(tol=p, leaf_size=leaf_size, structure=structure,
                                 random_state=seed, **options).fit(W)
    return make


_SVD_CACHE = []


def _svd(W):
    """``numpy.linalg.svd(W)`` of the last two arrays asked for (the bisection
    asks for one array's SVD at many ranks; a 4096 x 4096 SVD takes a minute)."""
    for ref, factors in _SVD_CACHE:
        if ref is W:
            return factors
    factors = np.linalg.svd(W, full_matrices=False)
    _SVD_CACHE[:] = _SVD_CACHE[-1:] + [(W, factors)]
    return factors


def _svd_at_rank(W, p, seed, leaf_size=None):
    """``SVDCompressor(rank=p).fit(W)`` from the cached factorisation of ``W``
    (the same fitted state: ``fit`` validates and counts as usual)."""
    from hmnumba.baselines import SVDCompressor
    comp = SVDCompressor(rank=p)

    def compress(W_):
        U, s, Vt = _svd(W)
        k = min(int(p), s.size)
        comp.singular_values_, comp.rank_ = s, k
        comp.left_factor_ = np.ascontiguousarray(U[:, :k] * s[:k])
        comp.right_factor_ = np.ascontiguousarray(Vt[:k].T)
        return comp.left_factor_.nbytes + comp.right_factor_.nbytes

    comp._compress = compress
    return comp.fit(W)


def _baseline(name, **fixed):
    def make(W, p, seed, leaf_size=None):
        from hmnumba import baselines
        cls = getattr(baselines, name)
        params = dict(fixed)
        if p is not None:
            params["sparsity"] = p
        return cls(**params).fit(W)
    return make


#: The methods compared, name -> :class:`Method`. To add an H-matrix option
#: (e.g. low-precision factors, sparse outliers), add one entry here.
METHODS = {
    "hmatrix": Method("H-matrix (auto)", "hmatrix", "log", _hmatrix("auto"), 1e-6, 0.9),
    "hmatrix-tree": Method("H-matrix (hierarchical)", "hmatrix", "log",
                           _hmatrix("hierarchical"), 1e-6, 0.9),
    "hmatrix-lowp": Method("H-matrix (auto, low-precision factors, outliers)", "hmatrix", "log",
                           _hmatrix("auto", factor_dtype="auto", outliers="auto"), 1e-6, 0.9),
    "svd": Method("SVD", "baseline", "rank", _svd_at_rank),
    "pruning": Method("pruning (CSR)", "baseline", "linear", _baseline("PruningCompressor"),
                      0.0, 0.999),
    "int8": Method("int8 per row", "baseline", "fixed",
                   _baseline("QuantizationCompressor", bits=8)),
    "int4": Method("int4 per row", "baseline", "fixed",
                   _baseline("QuantizationCompressor", bits=4)),
    "float16": Method("float16 cast", "baseline", "fixed", _baseline("Float16Compressor")),
}


# ---------------------------------------------------------------- settings

@dataclass
class StudyConfig:
    """Sizes of the study; :meth:`tiny`, :meth:`quick` and :meth:`full`
    profiles. ``n_jobs`` processes study the (network, seed) pairs
    (:func:`study_networks`), with the results of a serial run."""

    networks: list
    seeds: tuple = (0, 1, 2)
    bisection_steps: int = 6
    weight_levels: tuple = (1e-1, 1e-2, 1e-3)
    leaf_size: int = 16
    timing_repeats: int = 7
    finetune_epochs: int = 10
    finetune_steps: int = 3
    n_jobs: int = 1

    @classmethod
    def quick(cls):
        pinn = dict(family="pinn", width=64, depth=3, adam_epochs=150, lbfgs_epochs=500,
                    n_collocation=256, n_boundary=64)
        return cls(networks=[
            dict(pinn, problem="poisson2d", finetune=True), dict(pinn, problem="helmholtz2d"),
            dict(pinn, problem="heat1d"), dict(pinn, problem="poisson2d", init_rank=8),
            dict(family="operator", problem="poisson1d", n=256, finetune=True),
            dict(family="operator", problem="poisson2d", n=256),
            dict(family="operator", problem="helmholtz1d", n=256),
            dict(family="operator", problem="advdiff1d", n=256),
            dict(family="operator", problem="poisson1d", n=128, hidden=128, epochs=600,
                 n_train=512, finetune=True),
            dict(family="digits", hidden=256, max_iter=60, finetune=True),
            dict(family="control", n=256)])

    @classmethod
    def tiny(cls):
        """Every family and code path (fine-tuning included) on toy sizes with
        two seeds, in seconds: for tests and smoke runs, not for conclusions.

        >>> cfg = StudyConfig.tiny()
        >>> sorted({spec["family"] for spec in cfg.networks}), cfg.seeds
        (['control', 'digits', 'operator', 'pinn'], (0, 1))
        """
        return cls(networks=[
            dict(family="pinn", problem="heat1d", width=16, depth=3, adam_epochs=20,
                 lbfgs_epochs=20, n_collocation=32, n_boundary=12, finetune=True),
            dict(family="pinn", problem="poisson2d", width=16, depth=3, adam_epochs=10,
                 lbfgs_epochs=10, n_collocation=32, n_boundary=12, init_rank=4),
            dict(family="operator", problem="helmholtz1d", n=48),
            dict(family="operator", problem="poisson2d", n=36),
            dict(family="operator", problem="advdiff1d", n=24, hidden=16, epochs=30,
                 n_train=64, finetune=True),
            dict(family="digits", hidden=24, max_iter=15, finetune=True),
            dict(family="control", n=24)],
            seeds=(0, 1), bisection_steps=2, leaf_size=8, timing_repeats=2,
            finetune_epochs=3, finetune_steps=2)

    @classmethod
    def full(cls):
        """The full profile. Measured per seed, CPU time on one thread
        (``families.build`` then :func:`study_network`, one network at a
        time, on the shared 2-core machine): PINN width 256 113 s (65 s of it
        training; 202 s with fine-tuning, 89 s of it fine-tuning), PINN width
        1024 on Poisson 2-D 503 s (231 s training, 272 s study; not
        fine-tuned), operator n=1024 with fine-tuning 166 s (at 30 epochs; 15
        here), operator n=2048 293 s, digits MLP 1024 97 s, control n=1024
        16 s. The one-hidden-layer operator (256 points, 256 units) trains in
        19 s per seed; its study, not measured at these settings, scales from
        the quick profile's 128-unit network (24 s per seed) to an estimated
        2-4 minutes per seed; the width-64 PINN, not measured at these
        settings, about 20 s. So about 108 CPU minutes for the study's 3
        seeds, run in 2 processes (``n_jobs=2``): about 55-60 minutes of wall
        time on 2 idle cores (estimated; the ten other results' full profile
        not included)."""
        pinn = dict(family="pinn", width=256, depth=3, adam_epochs=200, lbfgs_epochs=400,
                    n_collocation=512, n_boundary=128)
        ops = [dict(family="operator", problem=p, n=1024, finetune=True)
               for p in ("poisson1d", "poisson2d", "helmholtz1d", "advdiff1d")]
        # one larger grid: one seed of a 4096-point operator had not finished after
        # 6 CPU minutes (one thread), too slow for 3 seeds in the 90-minute budget
        ops += [dict(family="operator", problem="poisson1d", n=2048),
                dict(family="operator", problem="poisson1d", n=256, hidden=256, epochs=1000,
                     n_train=1024, finetune=True)]
        # widths 64 to 1024 on Poisson 2-D; the 1024-wide one trains on fewer
        # points and steps and is not fine-tuned (one loss-and-gradient
        # evaluation takes about a second on one thread)
        widths = [dict(pinn, problem="poisson2d", width=64),
                  dict(pinn, problem="poisson2d", width=1024, adam_epochs=100,
                       lbfgs_epochs=200, n_collocation=256, n_boundary=64)]
        return cls(networks=[
            dict(pinn, problem="poisson2d", finetune=True), dict(pinn, problem="helmholtz2d"),
            dict(pinn, problem="heat1d"), dict(pinn, problem="poisson2d", init_rank=8),
            *widths, *ops, dict(family="digits", hidden=256, max_iter=200, finetune=True),
            dict(family="digits", hidden=1024, max_iter=200, finetune=True),
            dict(family="control", n=1024)],
            bisection_steps=7, leaf_size=32, timing_repeats=15, finetune_epochs=15,
            finetune_steps=5, n_jobs=2)


def task_levels(family, dense):
    """The three task-error targets of a family (loose, medium, strict).

    Relative errors (PINN, operator, control): 1e-1, 1e-2, 1e-3, or 1.5 times
    the dense network's error when that is larger. Digits: the dense test
    error rate plus 5, 1 and 0 percentage points.

    >>> task_levels("digits", 0.02)
    [0.07, 0.03, 0.02]
    >>> task_levels("pinn", 0.004)
    [0.1, 0.01, 0.006]
    """
    if family == "digits":
        return [round(dense + d, 12) for d in (0.05, 0.01, 0.0)]
    return [max(a, round(1.5 * dense, 12)) for a in (1e-1, 1e-2, 1e-3)]


# ---------------------------------------------------------------- one network

class _Evaluator:
    """Compress every weight of a network by one method at ``a`` (memoized):
    bytes, weight error, task error; with ``finetune_epochs``, the task
    error after fine-tuning what the method stores
    (:func:`hmnumba.experiments.finetune.finetune`)."""

    def __init__(self, net, name, leaf_size, finetune_epochs=0):
        self.net, self.name, self.method = net, name, METHODS[name]
        self.leaf_size, self.memo = leaf_size, {}
        self.finetune_epochs = finetune_epochs

    def __call__(self, a):
        if a in self.memo:
            return self.memo[a]
        net, m = self.net, self.method
        nbytes, num, den, recon, params, comps = 0, 0.0, 0.0, [], [], []
        for W in net.weights:
            p = m.param(a, W.shape)
            comp = m.make(W, p, net.seed, leaf_size=self.leaf_size)
            comps.append(comp)
            nbytes += comp.nbytes_
            R = comp.reconstruct().astype(np.float32)
            num += float(np.linalg.norm((R - W).astype(np.float64)) ** 2)
            den += float(np.linalg.norm(W.astype(np.float64)) ** 2)
            recon.append(R)
            params.append(p)
        dense = sum(W.nbytes for W in net.weights)
        row = dict(a=a, param=params[0], nbytes=int(nbytes), ratio=dense / max(nbytes, 1),
                   weight_error=math.sqrt(num / den) if den > 0 else 0.0,
                   task_error=float(net.task_error(recon)))
        if self.finetune_epochs:
            from hmnumba.experiments.finetune import finetune
            tuned = finetune(comps, net.train_loss, self.finetune_epochs)
            row["task_error_ft"] = float(net.task_error([W.astype(np.float32) for W in tuned]))
        self.memo[a] = row
        return row


def bisect(evaluate, target, key, steps, fixed=False, lo=0.0):
    """The evaluated row with the fewest bytes whose ``row[key] <= target``
    (None if even the most accurate setting misses it).

    ``evaluate(a)`` compresses at ``a in [0, 1]`` (more bytes, less error at
    0). Both ends are tried, then ``steps`` bisection steps for the largest
    feasible ``a``, so every method gets the same resolution. ``lo`` starts
    the search above 0 (fine-tuning starts where the untuned search ended:
    fine-tuning keeps the best training loss, so what met the target before
    it is expected to meet it after).

    >>> rows = lambda a: dict(nbytes=100 * (1 - a), err=a)
    >>> bisect(rows, 0.3, "err", 6)["err"]
    0.296875
    """
    evaluated = [evaluate(lo)]
    if lo > 0 and evaluated[0][key] > target:
        return bisect(evaluate, target, key, steps, fixed)
    if not fixed:
        if evaluated[0][key] <= target:
            hi = 1.0
            top = evaluate(1.0)
            evaluated.append(top)
            if top[key] > target:
                for _ in range(steps):
                    mid = 0.5 * (lo + hi)
                    row = evaluate(mid)
                    evaluated.append(row)
                    lo, hi = (mid, hi) if row[key] <= target else (lo, mid)
    ok = [r for r in evaluated if r[key] <= target]
    return min(ok, key=lambda r: r["nbytes"]) if ok else None


def spectra(W, leaf_size, seed, rtol=1e-2):
    """Singular-value decay and off-diagonal block ranks of ``W``.

    Returns ``sv_ratio`` (``s_k / s_1`` at ``k = n/8, n/4, n/2``),
    ``global_rank`` (the SVD rank for relative Frobenius error ``rtol``,
    and as a fraction of ``min(W.shape)``) and, for the top-level
    off-diagonal blocks, their ``rtol``-rank as a fraction of their size in
    the given order and after hmnumba's PCA clustering.

    >>> import numpy as np
    >>> from hmnumba.experiments.study import spectra
    >>> s = spectra(np.eye(64), 16, 0)
    >>> s["global_rank"], s["offdiag_rank_given_order"]
    (64, 0.0)
    """
    from hmnumba.baselines import svd_rank_for_tol
    W = np.asarray(W, dtype=np.float64)
    s = np.linalg.svd(W, compute_uv=False)
    n = s.size
    k = svd_rank_for_tol(s, rtol)

    def offdiag(M):
        m0, n0 = M.shape[0] // 2, M.shape[1] // 2
        total = np.linalg.norm(M)
        fr = []
        for B in (M[:m0, n0:], M[m0:, :n0]):
            nb = np.linalg.norm(B)
            if nb <= 1e-12 * max(total, 1e-300):
                fr.append(0.0)
                continue
            sb = np.linalg.svd(B, compute_uv=False)
            fr.append(svd_rank_for_tol(sb, rtol) / min(B.shape))
        return float(np.mean(fr))

    rows, cols = _pca_order(W, seed)
    return dict(sv_ratio=[float(s[max(1, n * j // 8) - 1] / s[0]) if s[0] > 0 else 0.0
                          for j in (1, 2, 4)],
                global_rank=int(k), global_rank_fraction=k / n,
                offdiag_rank_given_order=offdiag(W),
                offdiag_rank_clustered=offdiag(W[np.ix_(rows, cols)]))


def _pca_order(W, seed):
    """Rows and columns of ``W`` ordered the way the H-matrix build clusters them."""
    from hmnumba import HMatrix
    H = HMatrix.from_dense(W, tol=0.5, structure="hierarchical", random_state=seed)
    return np.asarray(H.row_perm), np.asarray(H.col_perm)


def time_methods(net, settings, repeats, seed):
    """Median speed-up of each method's ``transform`` over the dense product
    on ``net.inputs`` and a 95 % bootstrap interval of that median.

    ``settings`` maps a method name to its fitted compressors (one per
    weight; the largest weight is timed). The dense product and every
    method run in turn inside each repeat (interleaved), so load on the
    machine hits all of them alike.
    """
    big = int(np.argmax([W.size for W in net.weights]))
    W, X = net.weights[big], net.inputs
    calls = {"dense": lambda: X @ W.T}
    for name, comps in settings.items():
        calls[name] = comps[big].transform
    times = {k: [] for k in calls}
    for fn in calls.values():   # warm-up (compilation, caches)
        fn(X) if fn is not calls["dense"] else fn()
    for _ in range(repeats):
        for name, fn in calls.items():
            t = time.perf_counter()
            fn() if name == "dense" else fn(X)
            times[name].append(time.perf_counter() - t)
    rng = np.random.default_rng(seed)
    dense = np.array(times["dense"])
    out = {}
    for name in settings:
        ratio = dense / np.maximum(np.array(times[name]), 1e-12)
        boot = np.median(rng.choice(ratio, size=(400, ratio.size)), axis=1)
        lo, hi = np.percentile(boot, [2.5, 97.5])
        out[name] = dict(speedup=float(np.median(ratio)), low=float(lo), high=float(hi),
                         faster=bool(lo > 1.0), slower=bool(hi < 1.0))
    return out


def study_network(net, cfg, finetune=False):
    """Every method at every target on one network: a JSON-ready dict.

    With ``finetune`` (and a network that has a training loss), each method
    is also bisected on the task error after ``cfg.finetune_epochs`` epochs
    of fine-tuning what it stores (metric ``"task_ft"``)."""
    finetune = bool(finetune and net.train_loss is not None and cfg.finetune_epochs)
    levels = dict(weight=list(cfg.weight_levels),
                  task=task_levels(net.family, net.dense_task_error))
    W0 = max(net.weights, key=lambda W: W.size)
    res = dict(family=net.family, name=net.name, seed=net.seed, finetuned=finetune,
               shapes=[list(W.shape) for W in net.weights],
               dense_nbytes=int(sum(W.nbytes for W in net.weights)),
               dense_task_error=net.dense_task_error, info=net.info, levels=levels,
               spectra=spectra(W0, cfg.leaf_size, net.seed), methods={})
    timed = {}
    for name, method in METHODS.items():
        ev = _Evaluator(net, name, cfg.leaf_size)
        best = {}
        for metric, key in (("weight", "weight_error"), ("task", "task_error")):
            best[metric] = [bisect(ev, t, key, cfg.bisection_steps,
                                   fixed=method.scale == "fixed") for t in levels[metric]]
        res["methods"][name] = dict(best=best, curve=sorted(ev.memo.values(),
                                                            key=lambda r: r["nbytes"]))
        if finetune:
            ft = _Evaluator(net, name, cfg.leaf_size, cfg.finetune_epochs)
            best["task_ft"] = [bisect(ft, t, "task_error_ft", cfg.finetune_steps,
                                      fixed=method.scale == "fixed",
                                      lo=row["a"] if row is not None else 0.0)
                               for t, row in zip(levels["task"], best["task"])]
            res["methods"][name]["curve_ft"] = sorted(ft.memo.values(),
                                                      key=lambda r: r["nbytes"])
        # timed at the medium task level (or its most accurate setting)
        row = best["task"][1] or ev(0.0)
        timed[name] = [method.make(W, method.param(row["a"], W.shape), net.seed,
                                   leaf_size=cfg.leaf_size) for W in net.weights]
    res["timing"] = time_methods(net, timed, cfg.timing_repeats, net.seed)
    return res


# ---------------------------------------------------------------- aggregation

def _ratio(row):
    return row["ratio"] if row is not None else 0.0


def summarise(networks):
    """Median and spread over seeds: per family, network name, metric, level
    and method, the compression ratio at that target (0 when missed) as
    ``[median, min, max]``; and per family/network/level the winner."""
    groups = {}
    for res in networks:
        groups.setdefault((res["family"], res["name"]), []).append(res)
    out = {}
    for (family, name), runs in groups.items():
        entry = dict(seeds=[r["seed"] for r in runs], levels=runs[0]["levels"],
                     dense_task_error=float(np.median([r["dense_task_error"] for r in runs])),
                     spectra={k: float(np.median([np.mean(r["spectra"][k]) for r in runs]))
                              for k in runs[0]["spectra"]},
                     ratios={}, winners={}, speed={})
        metrics = ("weight", "task") + (("task_ft",) if runs[0]["finetuned"] else ())
        for metric in metrics:
            entry["ratios"][metric] = []
            entry["winners"][metric] = []
            for j in range(3):
                cell = {}
                for method in METHODS:
                    v = [_ratio(r["methods"][method]["best"][metric][j]) for r in runs]
                    cell[method] = [float(np.median(v)), float(min(v)), float(max(v))]
                entry["ratios"][metric].append(cell)
                entry["winners"][metric].append(winner(cell))
        for method in METHODS:
            sp = [r["timing"][method]["speedup"] for r in runs]
            entry["speed"][method] = dict(
                median=float(np.median(sp)), min=float(min(sp)), max=float(max(sp)),
                faster_all_seeds=all(r["timing"][method]["faster"] for r in runs),
                slower_all_seeds=all(r["timing"][method]["slower"] for r in runs))
        out.setdefault(family, {})[name] = entry
    return out


def winner(cell):
    """The method with the largest median ratio in ``cell`` (method ->
    ``[median, min, max]``), whether it is clear (its minimum over seeds
    beats every other method's maximum), and the best H-matrix and baseline.

    >>> winner({"hmatrix": [5, 4, 6], "svd": [3, 2, 3.5], "int8": [4, 4, 4]})["method"]
    'hmatrix'
    """
    best = max(cell, key=lambda m: cell[m][0])
    if cell[best][0] <= 0:
        best = None
    h = max((m for m in cell if METHODS[m].family == "hmatrix"), key=lambda m: cell[m][0])
    b = max((m for m in cell if METHODS[m].family == "baseline"), key=lambda m: cell[m][0])
    clear = best is not None and all(cell[best][1] > cell[m][2] for m in cell if m != best)
    return dict(method=best, clear=bool(clear), hmatrix=h, hmatrix_ratio=cell[h][0],
                baseline=b, baseline_ratio=cell[b][0])


def family_outcome(family_summary):
    """Per family, did the H-matrix store least at equal task error?
    ``(outcome, wins, cells)``: ``wins`` counts the (network, level) cells
    where the best H-matrix option's median ratio beats every baseline's,
    among the ``cells`` where some method reached the level."""
    wins = cells = 0
    for entry in family_summary.values():
        for w in entry["winners"]["task"]:
            if w["method"] is None:
                continue
            cells += 1
            wins += w["hmatrix_ratio"] > w["baseline_ratio"]
    if cells == 0:
        return UNTESTED, 0, 0
    return combine([True] * wins + [False] * (cells - wins)), wins, cells


def _study_one(spec, seed, cfg):
    """Build the network of ``spec`` for ``seed`` and study it (one task of
    :func:`study_networks`, on one numba and BLAS thread)."""
    import warnings

    from hmnumba._threads import limit_threads
    from hmnumba.exceptions import CompressionWarning
    spec = dict(spec)
    tune = spec.pop("finetune", False)
    with limit_threads(1, 1), warnings.catch_warnings():
        warnings.simplefilter("ignore", CompressionWarning)
        t = time.perf_counter()
        res = study_network(build(spec, seed), cfg, finetune=tune)
        res["seconds"] = time.perf_counter() - t
    return res


def study_networks(cfg, base_seed=0, progress=None):
    """:func:`study_network` of every network of ``cfg`` for every seed
    (``seed + base_seed``), in ``cfg.n_jobs`` processes (joblib).

    Every task builds its network from its own seed on one thread, so the
    results are those of a serial run (the timings aside, which measure the
    machine); they come back in spec-then-seed order. ``progress(message)``
    is called as each network's seeds are done.

    Examples
    --------
    >>> from hmnumba.experiments.study import StudyConfig, study_networks
    >>> cfg = StudyConfig(networks=[dict(family="control", n=16)], seeds=(0,),
    ...                   bisection_steps=1, timing_repeats=2)
    >>> [r["name"] for r in study_networks(cfg)]
    ['gaussian n16']
    """
    tasks = [(spec, seed + base_seed) for spec in cfg.networks for seed in cfg.seeds]
    if cfg.n_jobs == 1:
        results = (_study_one(spec, seed, cfg) for spec, seed in tasks)
    else:
        from joblib import Parallel, delayed
        results = Parallel(n_jobs=cfg.n_jobs, return_as="generator")(
            delayed(_study_one)(spec, seed, cfg) for spec, seed in tasks)
    out = []
    for res in results:
        out.append(res)
        if progress is not None and len(out) % len(cfg.seeds) == 0:
            progress(f"  {res['name']}: {len(cfg.seeds)} seeds")
    return out


def run(ctx):
    """Build every network of the profile for every seed and study it."""
    from hmnumba import _validation as val
    profile = val.check_choice(ctx.config.study or ctx.config.profile, "study",
                               ("tiny", "quick", "full"))
    cfg = getattr(StudyConfig, profile)()
    networks = study_networks(cfg, ctx.config.seed, progress=ctx.progress)
    seconds = {}
    for res in networks:
        seconds[res["family"]] = seconds.get(res["family"], 0.0) + res["seconds"]
    return dict(config=dict(profile=profile, seeds=list(cfg.seeds),
                            bisection_steps=cfg.bisection_steps,
                            finetune_epochs=cfg.finetune_epochs,
                            finetune_steps=cfg.finetune_steps, n_jobs=cfg.n_jobs,
                            weight_levels=list(cfg.weight_levels), leaf_size=cfg.leaf_size,
                            timing_repeats=cfg.timing_repeats, networks=cfg.networks),
                methods={k: m.label for k, m in METHODS.items()},
                family_seconds=seconds, networks=networks, summary=summarise(networks))


def verdict(result):
    """Supports if the H-matrix stores least at equal task error in every
    cell of families a-c, contradicts if in none, partly otherwise; the
    sentence names each family's count and the negative control's winner."""
    summary = result["summary"]
    parts, words = [], []
    for family in FAMILIES:
        if family not in summary:
            continue
        outcome, wins, cells = family_outcome(summary[family])
        if family == "control":
            ratios = [w["hmatrix_ratio"] for e in summary[family].values()
                      for w in e["winners"]["task"]]
            words.append(f"control: the H-matrix wins {wins} of {cells} cells "
                         f"(best H ratio {max(ratios, default=0):.2f})")
            continue
        if outcome != UNTESTED:
            parts.append(wins == cells)
            parts.append(wins > 0)
        words.append(f"{family}: H-matrix stores least in {wins} of {cells} "
                     "(network, level) cells")
    if not parts:
        return verdict_of(UNTESTED, "No family reached any accuracy level; "
                          + "; ".join(words) + ".")
    outcome = combine(parts)
    tail = {SUPPORTS: "supports the claim in every family.",
            PARTLY: "supports the claim in some families or levels only.",
            CONTRADICTS: "contradicts the claim: a baseline stores less everywhere."}[outcome]
    return verdict_of(outcome, "At equal task error (median over seeds), "
                      + "; ".join(words) + ": " + tail)


# ---------------------------------------------------------------- report

LEVEL_WORDS = ("loose", "medium", "strict")


def _cell(w, cell, labels):
    if w["method"] is None:
        return "none reaches it"
    m = w["method"]
    lo, hi = cell[m][1], cell[m][2]
    text = f"{labels[m]} {cell[m][0]:.2f} ({lo:.2f}-{hi:.2f})" + ("" if w["clear"] else " ~")
    return text + f"; H {w['hmatrix_ratio']:.2f} vs {labels[w['baseline']]} " \
                  f"{w['baseline_ratio']:.2f}"


def winner_table(result, metric="task"):
    """Markdown rows: per family and network, the winner at each level."""
    labels = result["methods"]
    lines = ["| family | network | " + " | ".join(f"{w} level" for w in LEVEL_WORDS) + " |",
             "| --- | --- | --- | --- | --- |"]
    for family, nets in result["summary"].items():
        for name, e in nets.items():
            cells = [_cell(w, cell, labels)
                     for w, cell in zip(e["winners"][metric], e["ratios"][metric])]
            lv = ", ".join(f"{x:.3g}" for x in e["levels"][metric.replace("_ft", "")])
            lines.append(f"| {family} | {name} (targets {lv}) | " + " | ".join(cells) + " |")
    return lines


def table(result):
    """The report's rows: the winner tables, spectra and timings."""
    labels = result["methods"]
    lines = ["Compression ratio (float32 dense bytes / stored bytes) at equal **task** "
             "error, median over seeds (min-max); `~` marks a winner whose range overlaps "
             "another method's. Families: " + "; ".join(
                 f"{FAMILY_TITLES[f]} ({TASK_METRICS[f]})" for f in result["summary"])
             + f". Methods: {', '.join(labels.values())}. The PINNs start from a "
             "full-rank Glorot initialisation; `rank-8 start` is the labelled variant "
             "the other results use.", ""]
    lines += winner_table(result, "task")
    if any("task_ft" in e["ratios"] for nets in result["summary"].values()
           for e in nets.values()):
        keep = {f: {k: e for k, e in nets.items() if "task_ft" in e["ratios"]}
                for f, nets in result["summary"].items()}
        lines += ["", f"At equal task error **after fine-tuning** what each method stores "
                  f"({result['config']['finetune_epochs']} Adam epochs for every method, "
                  "full batch, on the training set; the networks marked for it):", ""]
        lines += winner_table(dict(result, summary={f: v for f, v in keep.items() if v}),
                              "task_ft")
    lines += ["", "At equal **weight** error (targets "
              + ", ".join(f"{x:g}" for x in result["config"]["weight_levels"]) + "):", ""]
    lines += winner_table(result, "weight")
    lines += ["", "Why: singular values and off-diagonal ranks before compressing (median "
              "over seeds; ranks at relative error 1e-2, as fractions of full rank).", "",
              "| family | network | s_{n/8}/s_1 | global rank fraction | off-diag. rank "
              "(given order) | off-diag. rank (PCA-clustered) | dense task error |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for family, nets in result["summary"].items():
        for name, e in nets.items():
            s = e["spectra"]
            lines.append(f"| {family} | {name} | {s['sv_ratio']:.2e} | "
                         f"{s['global_rank_fraction']:.2f} | {s['offdiag_rank_given_order']:.2f}"
                         f" | {s['offdiag_rank_clustered']:.2f} | {e['dense_task_error']:.2e} |")
    lines += ["", "Inference: median speed-up of `transform` over the dense float32 product "
              "at the medium task level (median over seeds, min-max); `faster`/`slower` only "
              "where every seed's 95 % bootstrap interval excludes 1.", "",
              "| network | " + " | ".join(labels.values()) + " |",
              "| --- | " + " | ".join("---:" for _ in labels) + " |"]
    for family, nets in result["summary"].items():
        for name, e in nets.items():
            cells = []
            for m in labels:
                sp = e["speed"][m]
                tag = " faster" if sp["faster_all_seeds"] else (
                    " slower" if sp["slower_all_seeds"] else "")
                cells.append(f"{sp['median']:.2f} ({sp['min']:.2f}-{sp['max']:.2f}){tag}")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def plot(result, path):
    """One trade-off panel per family: task error against compression ratio
    for every method (the first seed of each family's first network)."""
    from hmnumba.experiments._plot import pyplot, save
    plt = pyplot()
    fams = list(result["summary"])
    fig, axes = plt.subplots(1, len(fams), figsize=(4.2 * len(fams), 3.8), squeeze=False)
    colors = plt.get_cmap("tab10")
    for ax, family in zip(axes[0], fams):
        net = next(n for n in result["networks"] if n["family"] == family)
        for k, (m, label) in enumerate(result["methods"].items()):
            rows = sorted(net["methods"][m]["curve"], key=lambda r: r["ratio"])
            ax.plot([r["ratio"] for r in rows], [max(r["task_error"], 1e-8) for r in rows],
                    marker="o", ms=3, color=colors(k), label=label)
        ax.axhline(max(net["dense_task_error"], 1e-8), color="black", ls="--", lw=1,
                   label="dense")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{FAMILY_TITLES[family].split(' (')[0]}\n{net['name']} (seed {net['seed']})",
                     fontsize=9)
        ax.set_xlabel("compression ratio")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("task error")
    axes[0][-1].legend(fontsize=7)
    save(fig, path)
