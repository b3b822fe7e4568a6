"""Fine-tuning of what each compression method keeps (the study's second pass).

After compression, every method trains the numbers it stores, and only
those, for the same number of Adam epochs on the network's training loss:

- H-matrix: every block's factors ``U_b, V_b`` and every dense block (the
  partition and ranks stay; gradient by
  :func:`hmnumba.pinn._kernels.data_grad`, block by block);
- SVD: the two factors;
- pruning: the surviving entries (the sparsity pattern stays);
- int8 / int4: the per-row scales (the integer codes stay: exact gradients,
  no straight-through estimate through the rounding);
- float16: the weights, rounded to float16 again at the end.

The loss is the network's own training loss (a PINN's residual plus
boundary terms included, through every derivative channel: see
:func:`hmnumba.experiments.families.pinn_network`). The stored bytes do not
change. The result with the lowest training loss
seen (the compressed start included) is kept, so fine-tuning never makes
the training loss worse.
"""
from dataclasses import dataclass

import numpy as np


@dataclass
class Trainable:
    """The stored numbers of one compressed weight as a flat vector.

    ``dense(theta)`` gives ``W_hat`` (float64), ``grad(theta, S, G, D)``
    the gradient of ``sum(G * (W_hat S))`` with respect to ``theta`` (``D =
    G S^T``, the dense gradient, for the methods that need it) and
    ``final(theta)`` the weight as stored (rounded to its format).
    """

    theta: np.ndarray
    dense: object
    grad: object
    final: object
    needs_dense_grad: bool = True
    segments: tuple = ()

    def scale(self):
        """Per entry, the RMS of its segment (a factor or dense block; the
        whole vector if no segments): Adam's steps are taken relative to it."""
        out = np.empty_like(self.theta)
        bounds = self.segments or ((0, self.theta.size),)
        for lo, hi in bounds:
            out[lo:hi] = np.sqrt(np.mean(self.theta[lo:hi] ** 2)) if hi > lo else 1.0
        return np.maximum(out, 1e-30)


def trainable(comp):
    """The :class:`Trainable` of a fitted compressor (H-matrix or baseline).

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.baselines import SVDCompressor
    >>> from hmnumba.experiments.finetune import trainable
    >>> W = np.random.default_rng(0).standard_normal((6, 5))
    >>> t = trainable(SVDCompressor(rank=2).fit(W))
    >>> t.theta.size, bool(np.allclose(t.dense(t.theta), SVDCompressor(rank=2).fit(W).reconstruct()))
    (22, True)
    """
    from hmnumba import HMatrixCompressor, baselines
    W_hat = comp.reconstruct()
    m, n = W_hat.shape
    dtype = W_hat.dtype
    if isinstance(comp, HMatrixCompressor):
        from hmnumba.kernels.products import hm_to_dense
        from hmnumba.pinn._kernels import data_grad
        H = comp.hmatrix_.full_storage()
        blocks = (H.row_start, H.row_stop, H.col_start, H.col_stop, H.rank, H.offset)
        rp, cp = H.row_perm, H.col_perm

        # Sparse outliers (W = S + H) stay fixed; only H's numbers are tuned.
        sparse = 0.0 if H.outliers is None else H.outliers.to_csr().toarray()

        def dense(theta):
            out = np.empty((m, n))
            out[np.ix_(rp, cp)] = hm_to_dense(theta, *blocks, m, n)
            return out + sparse

        permuted = {}

        def grad(theta, S, G, D):
            if permuted.get("S") is not S:     # the inputs stay; permute them once
                permuted.update(S=S, Sp=np.ascontiguousarray(S[cp]))
            return data_grad(theta, *blocks, permuted["Sp"], np.ascontiguousarray(G[rp]))

        segments = []
        for r0, r1, c0, c1, k, off in zip(*blocks):
            mb, nb = r1 - r0, c1 - c0
            segments += ([(off, off + mb * nb)] if k < 0 else
                         [(off, off + k * mb), (off + k * mb, off + k * (mb + nb))])
        if H.encoding is None:
            def stored(theta):
                return dense(theta.astype(dtype).astype(np.float64))
        else:   # low-precision factors: the tuned numbers are rounded the same way
            from hmnumba.storage import encode, run_lengths
            runs = run_lengths(*blocks[:5])

            def stored(theta):
                enc = encode(theta, runs, H.encoding.kind, dtype)
                if enc is None:
                    raise ValueError("fine-tuned numbers left the low-precision range")
                return dense(enc.decode(runs).astype(np.float64))
        return Trainable(H.data.astype(np.float64), dense, grad, stored,
                         needs_dense_grad=False, segments=tuple(segments))
    if isinstance(comp, baselines.SVDCompressor):
        L, R = comp.left_factor_, comp.right_factor_
        k = L.shape[1]

        def split(theta):
            return theta[:m * k].reshape(m, k), theta[m * k:].reshape(n, k)

        def dense(theta):
            A, B = split(theta)
            return A @ B.T

        def grad(theta, S, G, D):
            A, B = split(theta)
            return np.concatenate([(D @ B).ravel(), (D.T @ A).ravel()])

        theta = np.concatenate([L.ravel(), R.ravel()]).astype(np.float64)
        return Trainable(theta, dense, grad,
                         lambda theta: dense(theta.astype(dtype).astype(np.float64)),
                         segments=((0, m * k), (m * k, (m + n) * k)))
    if isinstance(comp, baselines.PruningCompressor):
        w = comp.weights_.tocoo()
        rows, cols = w.row, w.col

        def dense(theta):
            out = np.zeros((m, n))
            out[rows, cols] = theta
            return out

        return Trainable(w.data.astype(np.float64), dense,
                         lambda theta, S, G, D: D[rows, cols],
                         lambda theta: dense(theta.astype(dtype).astype(np.float64)))
    if isinstance(comp, baselines.QuantizationCompressor):
        Q = (comp.codes_ - comp.zero_point_).astype(np.float64)

        def dense(theta):
            return theta[:, None] * Q

        scale = np.broadcast_to(comp.scale_, (m, 1))[:, 0].astype(np.float64)
        return Trainable(scale.copy(), dense,
                         lambda theta, S, G, D: np.sum(D * Q, axis=1),
                         lambda theta: dense(theta.astype(comp.scale_.dtype)
                                             .astype(np.float64)))
    if isinstance(comp, baselines.Float16Compressor):
        return Trainable(comp.weights_.astype(np.float64).ravel(),
                         lambda theta: theta.reshape(m, n),
                         lambda theta, S, G, D: D.ravel(),
                         lambda theta: theta.astype(np.float16).astype(np.float64)
                         .reshape(m, n))
    raise TypeError(f"no fine-tuning for {type(comp).__name__}")


def finetune(comps, loss, epochs, lr=1e-2):
    """Train what ``comps`` (one fitted compressor per weight) store.

    Parameters
    ----------
    comps : list of fitted compressors
    loss : callable
        ``loss(list_of_W) -> (value, [(S, G), ...])``: the training loss and,
        per weight, its inputs ``S (n_in, M)`` and output adjoints
        ``G (n_out, M)``, so that ``d value / d W = G S^T``.
    epochs : int
        Adam steps (full batch).
    lr : float, default=1e-2
        Adam's step relative to the RMS of each stored array (each factor
        and dense block of an H-matrix, each SVD factor, each weight).

    Returns
    -------
    list of ndarray
        The fine-tuned weights, rounded to each method's stored format.

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.baselines import SVDCompressor
    >>> from hmnumba.experiments.finetune import finetune
    >>> rng = np.random.default_rng(0)
    >>> W, F = rng.standard_normal((8, 8)), rng.standard_normal((8, 50))
    >>> U = W @ F
    >>> def loss(Ws):
    ...     R = Ws[0] @ F - U
    ...     return 0.5 * np.sum(R ** 2) / 50, [(F, R / 50)]
    >>> comp = SVDCompressor(rank=3).fit(W)
    >>> tuned = finetune([comp], loss, epochs=30)
    >>> bool(loss(tuned)[0] <= loss([comp.reconstruct()])[0])
    True
    """
    from hmnumba.pinn import Adam
    params = [trainable(c) for c in comps]
    sizes = np.cumsum([0] + [p.theta.size for p in params])
    theta = np.concatenate([p.theta for p in params])
    scale = np.concatenate([p.scale() for p in params])
    parts = lambda th: [th[sizes[i]:sizes[i + 1]] for i in range(len(params))]  # noqa: E731
    opt = Adam(lr=lr)
    best_value, best_theta = np.inf, theta
    for _ in range(epochs + 1):
        Ws = [p.dense(th) for p, th in zip(params, parts(theta))]
        value, adjoints = loss(Ws)
        if value < best_value:
            best_value, best_theta = value, theta
        if _ == epochs:
            break
        grads = [p.grad(th, S, G, G @ S.T if p.needs_dense_grad else None)
                 for p, th, (S, G) in zip(params, parts(theta), adjoints)]
        # Adam on theta / scale: every weight moves by about lr of its size.
        theta = scale * opt.step(theta / scale, np.concatenate(grads) * scale)
    return [p.final(th) for p, th in zip(params, parts(best_theta))]
