"""The network families of the compression study (:mod:`hmnumba.experiments.study`).

Each family builds trained networks of one kind and says how to judge them:

- ``"pinn"`` (a): PINNs as in the paper (Poisson 2-D, Helmholtz 2-D, heat),
  trained from a full-rank Glorot start with Adam then L-BFGS, plus the
  rank-8 start of ``hmnumba reproduce``'s other results as one labelled
  variant. Task error: relative L2 of the PDE solution on the test grid.
- ``"operator"`` (b): learned solution operators. A linear network ``u = W f``,
  or a one-hidden-layer tanh network trained from a Glorot start, fitted to
  ``(f, u)`` pairs of a finite-difference problem (Poisson 1-D and
  2-D, Helmholtz 1-D with ``k = 10``, advection-diffusion 1-D) with the grid
  order hidden: rows and columns of ``W`` are shuffled by a random
  permutation (for the one-hidden-layer network, the inputs and outputs), so
  a compressor has to find the structure itself. Task error: relative error
  of the network's output on test pairs.
- ``"digits"`` (c): scikit-learn's ``MLPClassifier`` with two hidden layers
  on the digits data set; the hidden-to-hidden weight is compressed. Task
  error: test error rate (``1 - accuracy``).
- ``"control"`` (d): Gaussian random weights, where no method should win.
  Task error: relative output error on Gaussian inputs.

A :class:`Network` holds the weights to compress (float32, the format the
bytes are counted in) and a function giving the task error with any of them
replaced, so the study treats every family with one code path.
"""
from dataclasses import dataclass, field

import numpy as np

FAMILIES = ("pinn", "operator", "digits", "control")
#: How the report names each family.
FAMILY_TITLES = {"pinn": "a. PINNs (paper's setting)",
                 "operator": "b. Learned solution operators (grid order shuffled)",
                 "digits": "c. Digits classifier (scikit-learn MLP)",
                 "control": "d. Negative control (Gaussian random weights)"}
#: The task metric of each family.
TASK_METRICS = {"pinn": "relative L2 of the PDE solution",
                "operator": "relative test error of u = W f (or the one-hidden-layer net)",
                "digits": "test error rate (1 - accuracy)",
                "control": "relative output error on Gaussian inputs"}


@dataclass
class Network:
    """One trained network of a family, ready to be compressed.

    Attributes
    ----------
    family, name : str
        ``name`` labels the network in tables (e.g. ``"poisson2d w64 glorot"``).
    seed : int
    weights : list of ndarray of float32
        The arrays the study compresses, each ``(n_out, n_in)``.
    task_error : callable
        ``task_error(list_of_arrays) -> float``: the task error with the
        weights replaced by these (lower is better).
    inputs : ndarray
        A batch ``(batch, n_in)`` of inputs of the largest weight, for timings.
    dense_task_error : float
        ``task_error(weights)``.
    train_loss : callable or None
        ``train_loss(list_of_arrays) -> (value, [(S, G), ...])``: the
        training loss with the weights replaced and, per weight, its inputs
        ``S (n_in, M)`` and output adjoints ``G (n_out, M)`` (the loss's
        gradient is ``G S^T``), for fine-tuning
        (:mod:`hmnumba.experiments.finetune`); None where the family has none.
    info : dict
        Training facts for the report (epochs, seconds, ...).
    """

    family: str
    name: str
    seed: int
    weights: list
    task_error: object
    inputs: np.ndarray
    dense_task_error: float = float("nan")
    train_loss: object = None
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        self.weights = [np.ascontiguousarray(W, dtype=np.float32) for W in self.weights]
        self.dense_task_error = float(self.task_error(self.weights))


# ---------------------------------------------------------------- a. PINNs

PINN_PROBLEMS = ("poisson2d", "helmholtz2d", "heat1d")


def pinn_problem(name):
    """The PDE of a PINN of the study: :class:`~hmnumba.pinn.Poisson2D`,
    :class:`~hmnumba.pinn.Helmholtz2D` with ``a1 = a2 = 1`` (the default
    ``a2 = 4`` is not learned by a width-64 PINN in the quick profile's
    iterations: relative L2 above 1) or :class:`~hmnumba.pinn.Heat1D`.

    >>> from hmnumba.experiments.families import pinn_problem
    >>> pinn_problem("helmholtz2d")
    Helmholtz2D(a1=1, a2=1, k=1)
    """
    from hmnumba.pinn import Heat1D, Helmholtz2D, Poisson2D
    if name not in PINN_PROBLEMS:
        raise ValueError(f"problem must be one of {PINN_PROBLEMS}, got {name!r}")
    return {"poisson2d": Poisson2D, "helmholtz2d": lambda: Helmholtz2D(a1=1.0, a2=1.0),
            "heat1d": Heat1D}[name]()


def pinn_network(problem, width, depth, seed, adam_epochs, lbfgs_epochs, n_collocation,
                 n_boundary, init_rank=None, boundary_weight=100.0):
    """A PINN trained on ``problem`` from a Glorot start (``init_rank=None``)
    or a rank-``init_rank`` start: Adam, then L-BFGS, on the loss
    ``L_r + boundary_weight * L_b``.

    The boundary weight 100 (instead of 1) lowered the relative L2 error of
    the quick profile's width-64 networks (seed 0, 150 Adam + 500 L-BFGS
    steps) from 4.6e-2 to 5.4e-4 (Poisson 2-D) and from 6.4e-2 to 3.5e-3
    (Helmholtz 2-D) at the same cost; heat 1-D stays near 2e-3. The network's
    ``train_loss`` (for fine-tuning) is this same loss on the same samples.

    Examples
    --------
    >>> from hmnumba.experiments.families import pinn_network
    >>> net = pinn_network("poisson2d", 16, 3, 0, 5, 5, 32, 16)
    >>> [W.shape for W in net.weights], net.name
    ([(16, 16), (16, 16)], 'poisson2d w16 glorot')
    """
    import time

    from hmnumba.pinn import PINN, DenseLayer, train
    Recording = _recording_layer()
    prob = pinn_problem(problem)
    model = PINN([prob.dim] + [width] * depth + [1], init_rank=init_rank, random_state=seed)
    t = time.perf_counter()
    common = dict(n_collocation=n_collocation, n_boundary=n_boundary, random_state=seed,
                  progress=False, eval_every=max(1, adam_epochs, lbfgs_epochs),
                  weights=(1.0, boundary_weight))
    if adam_epochs:
        train(model, prob, epochs=adam_epochs, optimizer="adam", lr=2e-3, **common)
    if lbfgs_epochs:
        train(model, prob, epochs=lbfgs_epochs, optimizer="lbfgs", **common)
    seconds = time.perf_counter() - t
    hidden = list(model.hidden_layers)

    def task_error(weights):
        new = model.copy()
        for i, W in zip(hidden, weights):
            new.layers[i] = DenseLayer(W.astype(np.float64), model.layers[i].b)
        return float(prob.relative_l2(new))

    # the training samples of train() (same seeds), for fine-tuning
    x_r = prob.sample_collocation(n_collocation, random_state=seed)
    x_b, g_b = prob.sample_boundary(n_boundary, random_state=seed + 1)

    def train_loss(weights):
        """The training loss ``L_r + boundary_weight * L_b`` and, per hidden
        weight, its inputs and output adjoints over every derivative channel
        of both terms (the boundary term's adjoints scaled by the weight)."""
        new = model.copy()
        for i, W in zip(hidden, weights):
            new.layers[i] = Recording(np.asarray(W, dtype=np.float64), model.layers[i].b)
        (Lr, _), (Lb, _) = new.loss_terms(prob, x_r, x_b, g_b)   # residual pass first
        return (Lr + boundary_weight * Lb,
                [new.layers[i].adjoints((1.0, boundary_weight)) for i in hidden])

    start = "glorot" if init_rank is None else f"rank-{init_rank} start"
    rng = np.random.default_rng(seed)
    return Network("pinn", f"{problem} w{width} {start}", seed,
                   [model.layers[i].to_dense() for i in hidden], task_error,
                   np.tanh(rng.standard_normal((256, width))), train_loss=train_loss,
                   info=dict(adam_epochs=adam_epochs, lbfgs_epochs=lbfgs_epochs,
                             train_seconds=seconds, init_rank=init_rank))


def _recording_layer():
    from hmnumba.pinn import DenseLayer

    class RecordingLayer(DenseLayer):
        """A dense PINN layer that keeps the inputs ``S`` and output adjoints
        ``G`` of each reverse pass, flattened over the derivative channels, so
        the weight's gradient is ``G S^T`` with every pass side by side."""

        def __init__(self, W, b):
            super().__init__(W, b)
            self.seen = []

        def backward(self, S, G):
            n_in, C, N = S.shape
            self.seen.append((S.reshape(n_in, C * N), G.reshape(self.n_out, C * N)))
            return super().backward(S, G)

        def adjoints(self, weights):
            """``(S, G)`` of the passes so far, pass ``j``'s ``G`` times ``weights[j]``."""
            if len(weights) != len(self.seen):
                raise ValueError(f"{len(self.seen)} reverse passes, {len(weights)} weights")
            return (np.ascontiguousarray(np.hstack([s for s, _ in self.seen])),
                    np.ascontiguousarray(np.hstack([w * g for w, (_, g)
                                                    in zip(weights, self.seen)])))

    return RecordingLayer


# ---------------------------------------------------------------- b. operators

OPERATORS = ("poisson1d", "poisson2d", "helmholtz1d", "advdiff1d")


def _second_difference(n):
    """The 1-D ``-u''`` matrix on ``n`` interior points of (0, 1), Dirichlet."""
    h = 1.0 / (n + 1)
    return (2.0 * np.eye(n) - np.eye(n, k=1) - np.eye(n, k=-1)) / h ** 2


def fd_matrix(name, n):
    """The finite-difference matrix ``A`` of ``A u = f`` for ``name`` (one of
    :data:`OPERATORS`) on ``n`` unknowns (``n`` a square for ``poisson2d``).

    Examples
    --------
    >>> from hmnumba.experiments.families import fd_matrix
    >>> fd_matrix("poisson2d", 16).shape
    (16, 16)
    """
    if name == "poisson1d":
        return _second_difference(n)
    if name == "poisson2d":
        m = int(round(np.sqrt(n)))
        if m * m != n:
            raise ValueError(f"poisson2d needs a square number of unknowns, got {n}")
        T, eye = _second_difference(m), np.eye(m)
        return np.kron(T, eye) + np.kron(eye, T)
    if name == "helmholtz1d":
        # -u'' - k^2 u with k = 10: no eigenvalue (pi j)^2 of -u'' is near 100.
        return _second_difference(n) - 100.0 * np.eye(n)
    if name == "advdiff1d":
        # -eps u'' + u' with eps = 0.02, upwind first difference.
        h = 1.0 / (n + 1)
        return 0.02 * _second_difference(n) + (np.eye(n) - np.eye(n, k=-1)) / h
    raise ValueError(f"operator must be one of {OPERATORS}, got {name!r}")


def _smooth_fields(rng, count, n, dim):
    """``count`` random right-hand sides: white noise plus a smooth part, so
    the fitted operator is determined on the whole space."""
    white = rng.standard_normal((count, n))
    m = int(round(np.sqrt(n))) if dim == 2 else n
    x = np.linspace(0.0, 1.0, m)
    modes = rng.standard_normal((count, 8)) / np.arange(1, 9)
    smooth = modes @ np.sin(np.pi * np.outer(np.arange(1, 9), x))
    if dim == 2:
        smooth = (smooth[:, :, None] * smooth[:, None, :]).reshape(count, n)
    return white + 4.0 * smooth / (np.std(smooth) + 1e-300)


def _glorot(rng, n_out, n_in):
    """A Glorot-uniform ``(n_out, n_in)`` weight (a full-rank start)."""
    limit = np.sqrt(6.0 / (n_in + n_out))
    return rng.uniform(-limit, limit, (n_out, n_in))


def _mlp_forward(W1, b1, W2, b2, X):
    """``u = W2 tanh(W1 f + b1) + b2`` on the rows of ``X``: ``(H, U)``."""
    H = np.tanh(X @ W1.T + b1)
    return H, H @ W2.T + b2


def _train_operator_mlp(X, Y, hidden, rng, epochs, lr=2e-3):
    """Full-batch Adam on the mean squared error of a one-hidden-layer tanh
    network from a Glorot start: ``[W1, b1, W2, b2]`` (float64)."""
    n_in, n_out = X.shape[1], Y.shape[1]
    params = [_glorot(rng, hidden, n_in), np.zeros(hidden),
              _glorot(rng, n_out, hidden), np.zeros(n_out)]
    m = [np.zeros_like(q) for q in params]
    v = [np.zeros_like(q) for q in params]
    for t in range(1, epochs + 1):
        W1, b1, W2, b2 = params
        H, U = _mlp_forward(W1, b1, W2, b2, X)
        dU = 2.0 * (U - Y) / Y.size
        dpre = (dU @ W2) * (1.0 - H ** 2)
        grads = [dpre.T @ X, dpre.sum(axis=0), dU.T @ H, dU.sum(axis=0)]
        for q, g, mq, vq in zip(params, grads, m, v):
            mq *= 0.9
            mq += 0.1 * g
            vq *= 0.999
            vq += 0.001 * g * g
            q -= lr * (mq / (1 - 0.9 ** t)) / (np.sqrt(vq / (1 - 0.999 ** t)) + 1e-8)
    return params


def _operator_mlp(problem, n, seed, hidden, epochs, Ftr, Utr, Fte_p, Ute_p, rows, cols,
                  finetune_pairs, rng):
    """The one-hidden-layer variant of :func:`operator_network` (shuffled
    pairs in, both weights out)."""
    import time
    # unit-RMS inputs and outputs, so tanh works in its active range
    fs, us = float(np.std(Ftr)), float(np.std(Utr))
    X, Y = Ftr[:, cols] / fs, Utr[:, rows] / us
    t = time.perf_counter()
    W1, b1, W2, b2 = _train_operator_mlp(X, Y, hidden, rng, epochs)
    seconds = time.perf_counter() - t
    Xte, Yte = Fte_p / fs, Ute_p / us
    norm = np.linalg.norm(Yte)

    def task_error(weights):
        U = _mlp_forward(weights[0].astype(np.float64), b1, weights[1].astype(np.float64),
                         b2, Xte)[1]
        return float(np.linalg.norm(U - Yte) / norm)

    k = min(len(X), finetune_pairs)
    Xk, Yk = X[:k], Y[:k]
    S1 = np.ascontiguousarray(Xk.T)

    def train_loss(weights):
        """Mean squared error on the training pairs, and its adjoints at both weights."""
        V1, V2 = (np.asarray(w, dtype=np.float64) for w in weights)
        H, U = _mlp_forward(V1, b1, V2, b2, Xk)
        dU = 2.0 * (U - Yk) / Yk.size
        dpre = (dU @ V2) * (1.0 - H ** 2)
        return (float(np.mean((U - Yk) ** 2)),
                [(S1, np.ascontiguousarray(dpre.T)),
                 (np.ascontiguousarray(H.T), np.ascontiguousarray(dU.T))])

    return Network("operator", f"{problem} n{n} mlp{hidden}", seed, [W1, W2], task_error,
                   np.ascontiguousarray(Xte[:256], dtype=np.float32), train_loss=train_loss,
                   info=dict(n_train=len(X), hidden=hidden, epochs=epochs,
                             train_seconds=seconds))


def operator_network(problem, n, seed, n_train=None, noise=1e-4, finetune_pairs=512,
                     hidden=None, epochs=300):
    """A linear solution operator ``u = W f`` fitted (least squares, the
    minimiser that training from any start converges to) to ``n_train``
    pairs ``(f, A^{-1} f + noise)`` (default ``2 n``), rows and columns
    shuffled. Fine-tuning (``train_loss``) uses the first
    ``finetune_pairs`` of them.

    With ``hidden``, the network is instead ``u = W2 tanh(W1 f + b1) + b2``
    with ``hidden`` tanh units, trained from a full-rank Glorot start by
    ``epochs`` full-batch Adam steps on the same shuffled pairs (inputs and
    outputs scaled to unit RMS); both weights are compressed, and the task
    error is the relative test error of its output.

    Examples
    --------
    >>> from hmnumba.experiments.families import operator_network
    >>> net = operator_network("poisson1d", 64, 0)
    >>> net.weights[0].shape, bool(net.dense_task_error < 1e-2)
    ((64, 64), True)
    >>> mlp = operator_network("poisson1d", 32, 0, hidden=16, epochs=20)
    >>> [W.shape for W in mlp.weights], mlp.name
    ([(16, 32), (32, 16)], 'poisson1d n32 mlp16')
    """
    rng = np.random.default_rng(seed)
    A = fd_matrix(problem, n)
    dim = 2 if problem.endswith("2d") else 1
    n_train = 2 * n if n_train is None else n_train
    F = _smooth_fields(rng, n_train + 256, n, dim)
    U = np.linalg.solve(A, F.T).T
    U += noise * np.std(U) * rng.standard_normal(U.shape)
    Ftr, Utr, Fte, Ute = F[:n_train], U[:n_train], F[n_train:], U[n_train:]
    if hidden:
        rows, cols = rng.permutation(n), rng.permutation(n)
        return _operator_mlp(problem, n, seed, int(hidden), int(epochs), Ftr, Utr,
                             Fte[:, cols], Ute[:, rows], rows, cols, finetune_pairs, rng)
    W = np.linalg.lstsq(Ftr, Utr, rcond=None)[0].T
    rows, cols = rng.permutation(n), rng.permutation(n)
    Wp = W[np.ix_(rows, cols)]
    Fte_p, Ute_p = Fte[:, cols], Ute[:, rows]
    norm = np.linalg.norm(Ute_p)

    def task_error(weights):
        return float(np.linalg.norm(Fte_p @ weights[0].astype(np.float64).T - Ute_p) / norm)

    k = min(n_train, finetune_pairs)
    S, Ut = np.ascontiguousarray(Ftr[:k, cols].T), np.ascontiguousarray(Utr[:k, rows].T)
    scale = 1.0 / np.mean(Ut ** 2)

    def train_loss(weights):
        R = weights[0] @ S - Ut
        return 0.5 * scale * float(np.mean(R ** 2)) * R.shape[0], [(S, scale * R / R.shape[1])]

    return Network("operator", f"{problem} n{n}", seed, [Wp], task_error,
                   np.ascontiguousarray(Fte_p[:256], dtype=np.float32), train_loss=train_loss,
                   info=dict(n_train=n_train, noise=noise))


# ---------------------------------------------------------------- c. digits

def digits_network(hidden, seed, max_iter=200):
    """``MLPClassifier(hidden_layer_sizes=(hidden, hidden))`` trained on 80 %
    of scikit-learn's digits (standardised); the hidden-to-hidden weight is
    the one compressed, the test error rate the task error.

    Examples
    --------
    >>> from hmnumba.experiments.families import digits_network
    >>> net = digits_network(32, 0, max_iter=30)
    >>> net.weights[0].shape
    (32, 32)
    """
    import time
    import warnings

    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler
    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.2, random_state=seed, stratify=y)
    scaler = StandardScaler().fit(Xtr)
    Xtr, Xte = scaler.transform(Xtr), scaler.transform(Xte)
    clf = MLPClassifier(hidden_layer_sizes=(hidden, hidden), max_iter=max_iter,
                        random_state=seed)
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(Xtr, ytr)
    seconds = time.perf_counter() - t
    W0, W1, W2 = clf.coefs_
    b0, b1, b2 = clf.intercepts_
    H0 = np.maximum(Xte @ W0 + b0, 0.0)
    H0tr = np.maximum(Xtr @ W0 + b0, 0.0)
    Y = (ytr[:, None] == clf.classes_[None, :]).astype(np.float64)
    S = np.ascontiguousarray(H0tr.T)

    def train_loss(weights):
        """Mean cross-entropy on the training set, and its adjoint at W1."""
        pre = H0tr @ weights[0].T + b1
        logits = np.maximum(pre, 0.0) @ W2 + b2
        logits -= logits.max(axis=1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        dlogits = (np.exp(logp) - Y) / len(Y)
        dpre = (dlogits @ W2.T) * (pre > 0)
        return float(-np.sum(Y * logp) / len(Y)), [(S, np.ascontiguousarray(dpre.T))]

    def task_error(weights):
        H1 = np.maximum(H0 @ weights[0].astype(np.float64).T + b1, 0.0)
        pred = np.argmax(H1 @ W2 + b2, axis=1)
        return float(np.mean(clf.classes_[pred] != yte))

    return Network("digits", f"digits MLP {hidden}x{hidden}", seed, [W1.T], task_error,
                   np.ascontiguousarray(H0[:256], dtype=np.float32), train_loss=train_loss,
                   info=dict(train_seconds=seconds, iterations=int(clf.n_iter_),
                             test_accuracy=float(clf.score(Xte, yte))))


# ---------------------------------------------------------------- d. control

def control_network(n, seed):
    """Gaussian random ``n x n`` weights; task error = relative output error
    on Gaussian inputs.

    Examples
    --------
    >>> from hmnumba.experiments.families import control_network
    >>> net = control_network(32, 0)
    >>> net.dense_task_error
    0.0
    """
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((n, n)) / np.sqrt(n)
    X = rng.standard_normal((256, n))
    Y = X @ W.astype(np.float32).astype(np.float64).T
    norm = np.linalg.norm(Y)

    def task_error(weights):
        return float(np.linalg.norm(X @ weights[0].astype(np.float64).T - Y) / norm)

    return Network("control", f"gaussian n{n}", seed, [W], task_error,
                   np.ascontiguousarray(X, dtype=np.float32))


def build(spec, seed):
    """The network of one spec (a dict with ``family`` and the builder's
    keyword arguments) for one seed."""
    spec = dict(spec)
    family = spec.pop("family")
    maker = {"pinn": pinn_network, "operator": operator_network, "digits": digits_network,
             "control": control_network}[family]
    return maker(seed=seed, **spec)
