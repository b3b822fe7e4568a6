"""Training: Adam (written here) and L-BFGS (SciPy), with optional
learning-rate annealing of the loss weights (Wang, Teng & Perdikaris 2021)
and compression-aware options for networks with H-matrix layers.

Compression-aware training
--------------------------
The parameters of an :class:`~hmnumba.pinn.HMatrixLayer` are its packed
storage ``H.data``: the factors ``U_b, V_b`` of every low-rank block (and the
dense blocks), so training moves the factors and keeps the block structure.
``rank_reg = lambda`` adds ``lambda * sum_b ||U_b V_b^T||_*`` (the nuclear
norm, a convex surrogate of the paper's ``lambda * sum_b rank_b``), which
drives small singular values of each block to zero. ``recompress_every = k``
re-runs the adaptive, error-bounded compression of every H-matrix layer
every ``k`` epochs (``HMatrix.from_dense`` on the current operator at
``tol``): blocks whose singular values were pushed down get smaller ranks,
refined blocks may merge, and ``error_bound <= tol`` holds after each
re-compression (it is recorded in the history). Adam's moments are reset at
a re-compression, because the parameter vector changes.
"""
import time

import numpy as np
from scipy.optimize import minimize

from hmnumba import _validation as val
from hmnumba._threads import effective_n_jobs, limit_threads
from hmnumba.pinn.layers import HMatrixLayer

OPTIMIZERS = ("adam", "lbfgs")


class Adam:
    """The Adam optimizer (Kingma & Ba 2015) on a flat parameter vector.

    Parameters
    ----------
    lr : float, default=1e-3
    beta1, beta2 : float, default=0.9, 0.999
    eps : float, default=1e-8

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.pinn import Adam
    >>> opt, x = Adam(lr=0.1), np.array([3.0])
    >>> for _ in range(300):
    ...     x = opt.step(x, 2 * x)
    >>> bool(abs(x[0]) < 1e-2)
    True
    """

    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
        self.lr = val.check_positive_float(lr, "lr")
        self.beta1 = _check_unit(beta1, "beta1")
        self.beta2 = _check_unit(beta2, "beta2")
        self.eps = val.check_positive_float(eps, "eps")
        self.reset()

    def reset(self):
        """Forget the moments (e.g. after the parameter vector changed)."""
        self.m = self.v = None
        self.t = 0

    def step(self, theta, grad, lr=None):
        """One update; returns the new parameter vector."""
        if self.m is None or self.m.shape != theta.shape:
            self.m = np.zeros_like(theta)
            self.v = np.zeros_like(theta)
            self.t = 0
        self.t += 1
        self.m = self.beta1 * self.m + (1.0 - self.beta1) * grad
        self.v = self.beta2 * self.v + (1.0 - self.beta2) * grad * grad
        m_hat = self.m / (1.0 - self.beta1 ** self.t)
        v_hat = self.v / (1.0 - self.beta2 ** self.t)
        return theta - (self.lr if lr is None else lr) * m_hat / (np.sqrt(v_hat) + self.eps)


def _check_unit(value, name):
    value = val.check_positive_float(value, name)
    if value >= 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {value}")
    return value


def _progress(total, enabled):
    if enabled:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return None
        return tqdm(total=total, leave=False)
    return None


class _Objective:
    """Loss and gradient at a parameter vector, with the weights, the rank
    regulariser and the last evaluated values."""

    def __init__(self, model, problem, x_r, x_b, g_b, weights, rank_reg):
        self.model, self.problem = model, problem
        self.x_r, self.x_b, self.g_b = x_r, x_b, g_b
        self.weights = list(weights)
        self.rank_reg = rank_reg
        self.last = (np.nan, np.nan, np.nan, 0.0)

    def _reg(self):
        """``sum_b ||U_b V_b^T||_*`` over all H-matrix layers and its gradient."""
        total, parts = 0.0, []
        for layer in self.model.layers:
            if isinstance(layer, HMatrixLayer):
                value, g = layer.nuclear_norm()
                total += value
                parts += [g, np.zeros(layer.b.size)]
            else:
                parts += [np.zeros(p.size) for p in layer.params]
        return total, np.concatenate(parts)

    def __call__(self, theta, terms=False):
        self.model.set_params(theta)
        (Lr, gr), (Lb, gb) = self.model.loss_terms(self.problem, self.x_r, self.x_b, self.g_b)
        w_r, w_b = self.weights
        L = w_r * Lr + w_b * Lb
        g = w_r * gr + w_b * gb
        reg = 0.0
        if self.rank_reg > 0:
            reg, greg = self._reg()
            L += self.rank_reg * reg
            g += self.rank_reg * greg
        self.last = (L, Lr, Lb, reg)
        if terms:
            return L, g, gr, gb
        return L, g


def train(model, problem, epochs=1000, optimizer="adam", lr=1e-3, n_collocation=None,
          n_boundary=None, weights=(1.0, 1.0), anneal=False, anneal_alpha=0.9,
          anneal_every=10, decay_rate=None, decay_steps=1000, rank_reg=0.0,
          recompress_every=None, tol=None, eval_every=None, progress=True,
          blas_threads=1, n_jobs=None, random_state=None, callback=None):
    """Train a :class:`~hmnumba.pinn.PINN` on a problem, in place.

    The loss is ``w_r mean(r^2) + w_b mean((u - g)^2)`` on fixed collocation
    and boundary samples, plus ``rank_reg * sum_b ||U_b V_b^T||_*`` over the
    blocks of H-matrix layers.

    Parameters
    ----------
    model : PINN
    problem : Problem
    epochs : int, default=1000
        Adam steps, or L-BFGS iterations.
    optimizer : {"adam", "lbfgs"}, default="adam"
        ``"lbfgs"`` runs ``scipy.optimize.minimize(method="L-BFGS-B", jac=True)``.
    lr : float, default=1e-3
        Adam's learning rate (ignored by L-BFGS).
    n_collocation, n_boundary : int, optional
        Sample sizes; the problem's defaults if None.
    weights : (float, float), default=(1, 1)
        Initial ``(w_r, w_b)``.
    anneal : bool, default=False
        Learning-rate annealing of Wang, Teng & Perdikaris (2021, Alg. 1), Adam
        only: every ``anneal_every`` steps ``w_b <- (1 - alpha) w_b + alpha *
        max|grad L_r| / mean|grad L_b|`` with ``alpha = anneal_alpha``.
    anneal_alpha : float, default=0.9
    anneal_every : int, default=10
    decay_rate : float, optional
        Adam's learning rate is ``lr * decay_rate ** (step / decay_steps)``.
    decay_steps : int, default=1000
    rank_reg : float, default=0
        ``lambda`` of the nuclear-norm rank penalty (H-matrix layers only).
    recompress_every : int, optional
        Re-run the adaptive compression of every H-matrix layer every so many
        epochs (L-BFGS restarts after each), keeping ``error_bound <= tol``.
    tol : float, optional
        Tolerance of the re-compression; default each layer's own ``H.tol``.
    eval_every : int, optional
        Record the problem's relative L2 error every so many epochs (default:
        about 20 times per run, and always at the end).
    progress : bool, default=True
        Show a tqdm bar if tqdm is installed (silent otherwise).
    blas_threads : int or None, default=1
        BLAS threads during training (None leaves the setting alone). PINN
        products are small (width x a few thousand columns): on the shared
        2-core test machine one thread made a loss-and-gradient evaluation
        of a ``[2, 32, 32, 1]`` network on 500 points 9x faster (6.2 vs
        58 ms) than OpenBLAS's default threading under load.
    n_jobs : int, optional
        numba threads for the H-matrix kernels during training (restored
        afterwards), joblib's convention as everywhere in hmnumba (``-1`` all
        cores, ``-2`` all but one); None leaves numba's setting. For small
        widths one thread avoids the launch latency of parallel regions on a
        busy machine.
    random_state : int, RandomState, Generator or None
        Seeds the collocation and boundary samples.
    callback : callable, optional
        ``callback(epoch, model, history)`` after each epoch.

    Returns
    -------
    history : dict
        ``loss``, ``loss_r``, ``loss_b``, ``reg`` (one per epoch), ``weights``
        (``(w_r, w_b)`` per epoch), ``eval_epochs`` and ``relative_l2``,
        ``recompress`` (one dict per re-compression: ``epoch``,
        ``error_bounds``, ``tol``, ``ranks`` (sum of block ranks per layer),
        ``hidden_nbytes``), ``epochs``, ``wall_time``.

    Examples
    --------
    >>> from hmnumba.pinn import PINN, Poisson1D, train
    >>> net = PINN([1, 16, 1], random_state=0)
    >>> hist = train(net, Poisson1D(), epochs=30, optimizer="lbfgs", random_state=0)
    >>> bool(hist["relative_l2"][-1] < hist["relative_l2"][0])
    True
    """
    epochs = val.check_positive_int(epochs, "epochs")
    optimizer = val.check_choice(optimizer, "optimizer", OPTIMIZERS)
    lr = val.check_positive_float(lr, "lr")
    if len(weights) != 2:
        raise ValueError(f"weights must be a pair (w_r, w_b), got {weights!r}")
    weights = [val.check_positive_float(w, "weights") for w in weights]
    anneal_alpha = _check_unit(anneal_alpha, "anneal_alpha")
    anneal_every = val.check_positive_int(anneal_every, "anneal_every")
    decay_steps = val.check_positive_int(decay_steps, "decay_steps")
    if decay_rate is not None:
        decay_rate = val.check_positive_float(decay_rate, "decay_rate")
    rank_reg = 0.0 if isinstance(rank_reg, (int, float)) and rank_reg == 0 else \
        val.check_positive_float(rank_reg, "rank_reg")
    recompress_every = val.check_positive_int(recompress_every, "recompress_every",
                                              allow_none=True)
    if tol is not None:
        tol = val.check_tol(tol, "tol")
    eval_every = val.check_positive_int(eval_every, "eval_every", allow_none=True) \
        or max(1, epochs // 20)
    seed = val.check_random_state(random_state)
    x_r = problem.sample_collocation(n_collocation, random_state=seed)
    x_b, g_b = problem.sample_boundary(n_boundary, random_state=seed + 1)
    obj = _Objective(model, problem, x_r, x_b, g_b, weights, float(rank_reg))

    history = dict(loss=[], loss_r=[], loss_b=[], reg=[], weights=[], eval_epochs=[0],
                   relative_l2=[problem.relative_l2(model)], recompress=[], epochs=0,
                   wall_time=0.0)
    blas_threads = val.check_positive_int(blas_threads, "blas_threads", allow_none=True)
    n_jobs = val.check_n_jobs(n_jobs, "n_jobs")
    bar = _progress(epochs, progress)
    t0 = time.perf_counter()

    def record(epoch, recompress=True):
        L, Lr, Lb, reg = obj.last
        history["loss"].append(float(L))
        history["loss_r"].append(float(Lr))
        history["loss_b"].append(float(Lb))
        history["reg"].append(float(reg))
        history["weights"].append(tuple(obj.weights))
        history["epochs"] = epoch
        if epoch % eval_every == 0 or epoch == epochs:
            history["eval_epochs"].append(epoch)
            history["relative_l2"].append(problem.relative_l2(model))
        if recompress and recompress_every and epoch % recompress_every == 0 and \
                epoch < epochs:
            _recompress(model, tol, epoch, history)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{L:.3e}")
        if callback is not None:
            callback(epoch, model, history)

    with limit_threads(None if n_jobs is None else effective_n_jobs(n_jobs), blas_threads):
        _run(model, problem, obj, optimizer, epochs, lr, anneal, anneal_alpha,
             anneal_every, decay_rate, decay_steps, recompress_every, tol, history, record,
             bar)
    history["wall_time"] = time.perf_counter() - t0
    return history


def _run(model, problem, obj, optimizer, epochs, lr, anneal, anneal_alpha, anneal_every,
         decay_rate, decay_steps, recompress_every, tol, history, record, bar):
    """The optimisation loop of :func:`train`."""
    try:
        if optimizer == "adam":
            opt = Adam(lr=lr)
            theta = model.get_params()
            for epoch in range(1, epochs + 1):
                if anneal and (epoch - 1) % anneal_every == 0:
                    _, g, gr, gb = obj(theta, terms=True)
                    mean_b = np.mean(np.abs(gb))
                    if mean_b > 0:
                        hat = np.max(np.abs(gr)) / mean_b
                        obj.weights[1] = (1 - anneal_alpha) * obj.weights[1] + anneal_alpha * hat
                _, g = obj(theta)
                step_lr = lr if decay_rate is None else lr * decay_rate ** (epoch / decay_steps)
                theta = opt.step(theta, g, lr=step_lr)
                model.set_params(theta)
                n_before = model.n_params
                record(epoch)
                if model.n_params != n_before or recompress_every and \
                        epoch % recompress_every == 0:
                    theta = model.get_params()
                    opt.reset()
        else:
            done = 0
            while done < epochs:
                chunk = epochs - done
                if recompress_every:
                    chunk = min(chunk, recompress_every - done % recompress_every)
                start = done
                state = {"it": start}

                def cb(xk):
                    state["it"] += 1
                    model.set_params(xk)
                    # the parameter vector must not change inside minimize:
                    # re-compression waits for the end of the chunk
                    record(state["it"], recompress=False)

                res = minimize(obj, model.get_params(), jac=True, method="L-BFGS-B",
                               callback=cb, options=dict(maxiter=chunk, maxfun=4 * chunk,
                                                         maxcor=50, ftol=1e-15, gtol=1e-12))
                model.set_params(res.x)
                done = state["it"]
                if done == start:   # converged or stalled: no accepted step
                    break
                if recompress_every and done % recompress_every == 0 and done < epochs:
                    _recompress(model, tol, done, history)
            if history["eval_epochs"][-1] != history["epochs"]:
                history["eval_epochs"].append(history["epochs"])
                history["relative_l2"].append(problem.relative_l2(model))
    finally:
        if bar is not None:
            bar.close()


def _recompress(model, tol, epoch, history):
    """Re-compress every H-matrix layer; record the achieved error bounds."""
    bounds, ranks, tols = [], [], []
    for layer in model.layers:
        if isinstance(layer, HMatrixLayer):
            H = layer.recompress(tol)
            bounds.append(float(H.error_bound))
            tols.append(float(H.tol))
            ranks.append(int(np.maximum(H.rank, 0).sum()))
    if bounds:
        history["recompress"].append(dict(epoch=epoch, error_bounds=bounds, tol=tols,
                                          ranks=ranks, hidden_nbytes=model.hidden_nbytes))
