"""Run settings of ``hmnumba reproduce`` and the shared state of one run.

Every experiment works on the same trained PINN (:class:`Context` trains it
once) and compresses it through one memoized entry (:meth:`Context.compress`),
so a network compressed for the trade-off figure is not built again for the
generalisation figure, and every method is compared on the same work.
"""
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from hmnumba import _validation as val
from hmnumba._threads import limit_threads

PROBLEMS = ("poisson1d", "poisson2d", "helmholtz2d", "heat1d")
#: The accuracy the verdicts ask of a compressed network: relative L2 at most
#: this (accuracy >= 99 % on the paper's axis) or twice the dense network's,
#: whichever is larger.
TARGET_L2 = 1e-2


def target_l2(dense_l2):
    """The relative L2 a compressed network must keep to count as accurate."""
    return max(TARGET_L2, 2.0 * float(dense_l2))


def make_problem(name):
    """The PDE problem called ``name`` (one of :data:`PROBLEMS`).

    Examples
    --------
    >>> from hmnumba.experiments._context import make_problem
    >>> make_problem("poisson2d")
    Poisson2D()
    """
    from hmnumba.pinn import Heat1D, Helmholtz2D, Poisson1D, Poisson2D
    name = val.check_choice(name, "problem", PROBLEMS)
    return {"poisson1d": Poisson1D, "poisson2d": Poisson2D, "helmholtz2d": Helmholtz2D,
            "heat1d": Heat1D}[name]()


@dataclass
class Config:
    """Everything that decides what ``hmnumba reproduce`` computes.

    Use :meth:`quick` or :meth:`full`; both are plain data, written into
    ``results.json`` so a run can be repeated exactly.

    Attributes
    ----------
    profile : {"quick", "full"}
    problem : str
        One of :data:`PROBLEMS`.
    width, depth : int
        Hidden width and number of hidden layers of the PINN
        (``depth - 1`` hidden-to-hidden weight arrays, the ones compressed).
    init_rank : int or None
        Rank of the hidden-to-hidden weights at initialisation
        (:class:`hmnumba.pinn.PINN`); None is a full-rank Glorot start.
    epochs : int
        L-BFGS iterations of the dense training.
    n_collocation, n_boundary : int
        Training samples.
    leaf_size : int
        H-matrix leaf size.
    seed : int
        Seeds the initialisation, the samples, the clustering and the timings' batches.
    h_tols, svd_ranks, sparsities, bits : lists
        The sweeps of the trade-off experiment.
    propagation_tols : list of float
        Tolerances of the error-propagation and NTK experiments.
    dynamic_tol, dynamic_epochs, recompress_every, rank_reg : float, int, int, float
        Compression-aware training from the initialisation (experiment 3).
    speed_widths, speed_batch, speed_repeats, speed_tol, speed_rank : ...
        The inference-speed experiment (experiment 5).
    ntk_points : int
        Collocation points of the empirical NTK (plus a quarter as many
        boundary points).
    reg_rcond, perturbation_sizes : float, list of float
        Theorem 3's truncation regularisation (singular values below
        ``reg_rcond * s_max`` are discarded) and the relative sizes of the
        factor steps of Theorem 1 (d) (experiment 8).
    adversarial_tols, adversarial_radii, adversarial_points, adversarial_steps : ...
        The attack experiment (experiment 9, Theorem 1 (e)): tolerances,
        radii (fractions of the domain's width), test points, attack steps.
    refinement_steps, refinement_epochs : int
        Theorem 1 (f) (experiment 10): re-compression steps and the L-BFGS
        iterations before each.
    threads : int
        numba and BLAS threads during the run.
    study : {None, "tiny", "quick", "full"}
        The compression study's sizes (:class:`hmnumba.experiments.study.StudyConfig`):
        None follows ``profile``; ``"tiny"`` (toy sizes, seconds) is for tests.
    """

    profile: str = "quick"
    problem: str = "poisson1d"
    width: int = 64
    depth: int = 4
    init_rank: int = 8
    epochs: int = 250
    n_collocation: int = 128
    n_boundary: int = 2
    leaf_size: int = 16
    seed: int = 0
    h_tols: list = field(default_factory=lambda: [3e-1, 1e-1, 5e-2, 3e-2, 2e-2, 1e-2, 5e-3,
                                                  3e-3, 2e-3, 1e-3, 3e-4, 1e-4])
    svd_ranks: list = field(default_factory=lambda: list(range(2, 17)) + [20, 24, 32])
    sparsities: list = field(default_factory=lambda: [0.5, 0.7, 0.8, 0.9, 0.95])
    bits: list = field(default_factory=lambda: [2, 4, 8])
    propagation_tols: list = field(default_factory=lambda: [1e-1, 1e-2, 1e-3, 1e-4])
    dynamic_tol: float = 1e-2
    dynamic_epochs: int = 250
    recompress_every: int = 50
    rank_reg: float = 1e-5
    speed_widths: list = field(default_factory=lambda: [128, 512, 1024])
    speed_batch: int = 1024
    speed_repeats: int = 5
    speed_tol: float = 1e-2
    speed_rank: int = 16
    ntk_points: int = 64
    reg_rcond: float = 1e-3
    perturbation_sizes: list = field(default_factory=lambda: [1e-6, 1e-5, 1e-4])
    adversarial_tols: list = field(default_factory=lambda: [1e-1, 1e-2, 1e-3])
    adversarial_radii: list = field(default_factory=lambda: [1e-3, 1e-2, 1e-1])
    adversarial_points: int = 64
    adversarial_steps: int = 10
    refinement_steps: int = 3
    refinement_epochs: int = 25
    threads: int = 1
    study: str = None

    @classmethod
    def quick(cls, problem=None, seed=0):
        """The ``--quick`` settings (a few minutes on 2 cores; Poisson 1-D by default)."""
        cfg = cls(profile="quick", seed=seed)
        if problem is not None:
            cfg.problem = val.check_choice(problem, "problem", PROBLEMS)
            if cfg.problem != "poisson1d":
                cfg.n_collocation, cfg.n_boundary = 256, 64
        return cfg

    @classmethod
    def full(cls, problem=None, seed=0):
        """The full settings: Poisson 2-D by default, width 128, longer training,
        widths 256/1024/4096 for the timings."""
        cfg = cls(profile="full", problem="poisson2d", width=128, depth=5, epochs=2000,
                  n_collocation=1000, n_boundary=200, leaf_size=32, seed=seed,
                  svd_ranks=list(range(2, 33, 2)) + [40, 48, 64], dynamic_epochs=1000,
                  recompress_every=100, speed_widths=[256, 1024, 4096], speed_repeats=7,
                  ntk_points=128, adversarial_points=256, adversarial_steps=20,
                  refinement_steps=5, refinement_epochs=100)
        if problem is not None:
            cfg.problem = val.check_choice(problem, "problem", PROBLEMS)
        return cfg

    def to_dict(self):
        return asdict(self)


def limited_threads(n):
    """numba and BLAS threads set to ``n`` inside, restored after."""
    return limit_threads(numba_threads=n, blas_threads=n)


class Context:
    """The trained dense PINN of a run and the networks compressed from it.

    Parameters
    ----------
    config : Config
    progress : callable, optional
        ``progress(message)`` is called as work starts (the CLI prints it).
    bars : bool, default=False
        Show tqdm bars during training (:func:`hmnumba.pinn.train`).

    Attributes
    ----------
    problem : hmnumba.pinn.Problem
    model : hmnumba.pinn.PINN
        Trained by :meth:`train` (L-BFGS, ``config.epochs`` iterations).
    history : dict
        The training history (:func:`hmnumba.pinn.train`).
    x_train : ndarray
        The collocation points the model was trained on (same seed as
        :func:`hmnumba.pinn.train` uses).
    """

    def __init__(self, config, progress=None, bars=False):
        if not isinstance(config, Config):
            raise TypeError(f"config must be a Config, got {type(config).__name__}")
        self.config = config
        self.problem = make_problem(config.problem)
        self.progress = progress or (lambda message: None)
        self.bars = bool(bars)
        self.model = None
        self.history = None
        self._cache = {}

    def sizes(self, width=None):
        c = self.config
        return [self.problem.dim] + [width or c.width] * c.depth + [1]

    def train(self):
        """Train the dense PINN (once); returns it."""
        if self.model is not None:
            return self.model
        from hmnumba.pinn import PINN, train
        c = self.config
        self.progress(f"training the dense PINN {self.sizes()} on {self.problem!r} "
                      f"({c.epochs} L-BFGS iterations)")
        self.model = PINN(self.sizes(), init_rank=c.init_rank, random_state=c.seed)
        t = time.perf_counter()
        self.history = train(self.model, self.problem, epochs=c.epochs, optimizer="lbfgs",
                             n_collocation=c.n_collocation, n_boundary=c.n_boundary,
                             random_state=c.seed, progress=self.bars, blas_threads=c.threads,
                             n_jobs=c.threads, eval_every=max(1, c.epochs // 25))
        self.train_seconds = time.perf_counter() - t
        # train() draws the collocation points with the seed it is given.
        self.x_train = self.problem.sample_collocation(c.n_collocation, random_state=c.seed)
        return self.model

    def compress(self, method, **params):
        """The trained PINN with its hidden-to-hidden layers compressed (memoized).

        H-matrix builds get ``leaf_size`` and ``random_state`` from the config.
        """
        key = (method, tuple(sorted(params.items())))
        if key not in self._cache:
            if method == "hmatrix":
                params = dict(leaf_size=self.config.leaf_size,
                              random_state=self.config.seed, **params)
            self._cache[key] = self.train().compress(method, **params)
        return self._cache[key]

    def relative_l2_train(self, model):
        """Relative L2 error of ``model`` on the training collocation points."""
        u = self.problem.exact(self.x_train)
        return float(np.linalg.norm(model.predict(self.x_train) - u) / np.linalg.norm(u))

    def entry(self, method, model, **params):
        """One JSON row describing a compressed network: parameters, the
        compression ratio of the hidden weights, test and training relative
        L2 and, for H-matrices, each layer's error bound."""
        dense = self.train()
        row = dict(method=method, **params,
                   compression_ratio=dense.hidden_nbytes / model.hidden_nbytes,
                   relative_l2=self.problem.relative_l2(model),
                   relative_l2_train=self.relative_l2_train(model))
        row["accuracy"] = 1.0 - row["relative_l2"]
        errors = []
        for i in model.hidden_layers:
            W = dense.layers[i].to_dense()
            errors.append(float(np.linalg.norm(model.layers[i].to_dense() - W)
                                / np.linalg.norm(W)))
        row["weight_errors"] = errors
        if method == "hmatrix":
            row["error_bounds"] = [float(model.layers[i].H.error_bound)
                                   for i in model.hidden_layers]
        return row
