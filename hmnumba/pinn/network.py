"""The PINN network: an MLP with exact input derivatives and a hand-written
reverse pass for the parameter gradient of a PDE loss.

Derivative channels
-------------------
For inputs ``x (N, d)`` every layer carries a stack ``S (width, C, N)`` of
channels: channel 0 is the activation ``a``, channels ``1..d`` its partial
derivatives ``da/dx_j`` and (for second order) channel ``d + 1`` the
weighted Laplacian ``sum_j c_j d^2 a/dx_j^2`` (``c`` = the problem's
``lap_weights``; all ones for the Laplacian, ``(1, 0)`` for ``u_xx`` of a
heat equation in ``(x, t)``). A linear layer maps every channel by the same
weight (bias on channel 0 only), so all channels go through **one** product
with ``C * N`` right-hand sides. The activation ``a = s(z)`` maps

    a = s(z),  a_j = s'(z) z_j,  lap a = s'(z) lap z + s''(z) sum_j c_j z_j^2.

Reverse pass
------------
Given adjoints ``(abar, abar_j, lbar)`` of a layer's output channels, the
adjoints of its pre-activations are

    lbar_z  = s' lbar
    zbar_j  = s' abar_j + 2 c_j s'' z_j lbar
    zbar    = s' abar + s'' sum_j z_j abar_j + s''' (sum_j c_j z_j^2) lbar + s'' (lap z) lbar

and a linear layer turns ``Zbar`` into ``W^T Zbar`` and the weight gradient
``Zbar S^T`` (summed over channels and samples). Samples never mix, so the
same pass with per-sample seeds gives per-sample Jacobians
(:meth:`PINN.jacobian`).
"""
import numpy as np

from hmnumba import _validation as val
from hmnumba.pinn import _kernels
from hmnumba.pinn.layers import CompressedLayer, DenseLayer, HMatrixLayer

# activation name -> kernel code; the activation and its reverse pass are one
# fused numba pass each (numpy needed ~10 passes over the channel array)
ACTIVATIONS = {"tanh": _kernels.ACT_TANH, "sin": _kernels.ACT_SIN}
COMPRESS_METHODS = ("hmatrix", "svd", "pruning", "quantization")


class PINN:
    """A multilayer perceptron ``R^d -> R`` for physics-informed training.

    Hidden layers use the activation, the last layer is affine. Weights are
    Glorot-normal, biases zero. Layers may be replaced by H-matrix or
    compressed layers (:meth:`compress`).

    Parameters
    ----------
    sizes : sequence of int
        ``[d, w_1, ..., w_L, 1]``: input dimension, hidden widths, output 1.
    activation : {"tanh", "sin"}, default="tanh"
    init_rank : int, optional
        If given, every hidden-to-hidden weight starts as a random matrix of
        this rank with the Glorot variance (``A B^T`` with Gaussian factors),
        instead of a full-rank Glorot matrix. Gradients of a PINN with
        low-dimensional inputs are numerically low rank, so such a network
        stays compressible as it trains; a full-rank Glorot start does not
        (its random part is incompressible at small ``tol``).
    random_state : int, RandomState, Generator or None
        Seeds the Glorot initialisation.

    Attributes
    ----------
    layers : list of DenseLayer, HMatrixLayer or CompressedLayer
    n_params : int
        Length of the parameter vector (:meth:`get_params`).

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.pinn import PINN
    >>> net = PINN([2, 16, 16, 1], random_state=0)
    >>> x = np.random.default_rng(0).random((5, 2))
    >>> u, du, lap = net.derivatives(x)
    >>> u.shape, du.shape, lap.shape
    ((5,), (5, 2), (5,))
    >>> net.n_params
    337
    """

    def __init__(self, sizes, activation="tanh", init_rank=None, random_state=None):
        sizes = _check_sizes(sizes)
        self.activation = val.check_choice(activation, "activation", tuple(ACTIVATIONS))
        init_rank = val.check_positive_int(init_rank, "init_rank", allow_none=True)
        rng = np.random.default_rng(val.check_random_state(random_state))
        self.layers = []
        last = len(sizes) - 2
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            scale = np.sqrt(2.0 / (n_in + n_out))
            if init_rank is not None and 0 < i < last and init_rank < min(n_in, n_out):
                A = rng.standard_normal((n_out, init_rank))
                B = rng.standard_normal((n_in, init_rank))
                W = (A @ B.T) * (scale / np.sqrt(init_rank))
            else:
                W = rng.standard_normal((n_out, n_in)) * scale
            self.layers.append(DenseLayer(W, np.zeros(n_out)))

    @classmethod
    def from_layers(cls, layers, activation="tanh"):
        """A network made of the given layers (consecutive sizes must match).

        Examples
        --------
        >>> import numpy as np
        >>> from hmnumba.pinn import PINN, DenseLayer
        >>> net = PINN.from_layers([DenseLayer(np.ones((3, 1)), np.zeros(3)),
        ...                         DenseLayer(np.ones((1, 3)), np.zeros(1))])
        >>> net.sizes
        [1, 3, 1]
        """
        net = cls.__new__(cls)
        net.activation = val.check_choice(activation, "activation", tuple(ACTIVATIONS))
        layers = list(layers)
        if not layers:
            raise ValueError("layers must not be empty")
        for i, layer in enumerate(layers):
            if not isinstance(layer, (DenseLayer, HMatrixLayer, CompressedLayer)):
                raise TypeError(f"layers[{i}] must be a DenseLayer, HMatrixLayer or "
                                f"CompressedLayer, got {type(layer).__name__}")
            if i and layer.n_in != layers[i - 1].n_out:
                raise ValueError(f"layers[{i}] takes {layer.n_in} inputs but layers[{i - 1}] "
                                 f"gives {layers[i - 1].n_out}")
        if layers[-1].n_out != 1:
            raise ValueError(f"the last layer must have 1 output, got {layers[-1].n_out}")
        net.layers = layers
        return net

    # ------------------------------------------------------------ structure
    @property
    def sizes(self):
        return [self.layers[0].n_in] + [layer.n_out for layer in self.layers]

    @property
    def dim(self):
        return self.layers[0].n_in

    @property
    def n_params(self):
        return int(sum(layer.n_params for layer in self.layers))

    @property
    def hidden_layers(self):
        """Indices of the hidden-to-hidden layers (all but the first and last)."""
        return list(range(1, len(self.layers) - 1))

    @property
    def hidden_nbytes(self):
        """Bytes of the hidden-to-hidden weights (what compression shrinks)."""
        return int(sum(self.layers[i].weight_nbytes for i in self.hidden_layers))

    @property
    def nbytes(self):
        """Bytes of all weights and biases."""
        return int(sum(layer.weight_nbytes + layer.b.nbytes for layer in self.layers))

    def copy(self):
        """A deep copy (compressors of frozen layers are shared, they are read-only)."""
        return PINN.from_layers([layer.copy() for layer in self.layers], self.activation)

    def get_params(self):
        """The trainable parameters as one flat float64 vector (a copy).

        Order: layer by layer, each layer's ``params`` in order (``W`` row-major
        then ``b`` for a dense layer; ``H.data`` then ``b`` for an H-matrix
        layer; ``b`` only for a frozen compressed layer). :meth:`jacobian` and
        :meth:`loss` use the same order.
        """
        return np.concatenate([p.ravel() for layer in self.layers for p in layer.params])

    def set_params(self, theta):
        """Write the flat vector ``theta`` (length :attr:`n_params`) into the
        layers, in place (an H-matrix layer's ``H.data`` included); see
        :meth:`get_params`."""
        theta = val.check_float_array(theta, "theta", ndim=1)
        if theta.shape[0] != self.n_params:
            raise ValueError(f"theta must have length {self.n_params}, got {theta.shape[0]}")
        pos = 0
        for layer in self.layers:
            for p in layer.params:
                np.copyto(p, theta[pos:pos + p.size].reshape(p.shape))
                pos += p.size

    def __repr__(self):
        inner = ", ".join(repr(layer) for layer in self.layers)
        return f"PINN({self.sizes}, activation={self.activation!r}, layers=[{inner}])"

    # -------------------------------------------------------------- forward
    def _check_x(self, x, name="x"):
        x = val.check_points(x, name)
        if x.shape[1] != self.dim:
            raise ValueError(f"{name} must have {self.dim} columns (the input dimension), "
                             f"got shape {x.shape}")
        return x

    def _forward(self, x, order, lap_weights, keep=True):
        """Channels through all layers; returns the output channels and the
        per-layer caches ``(S, Z, D)`` for the reverse pass (``D`` holds the
        first three derivatives of the activation at ``Z``). With
        ``keep=False`` and ``order=0`` (inference) nothing is cached."""
        N, d = x.shape
        c = np.ones(d) if lap_weights is None else lap_weights
        act = ACTIVATIONS[self.activation]
        C = 1 + (d if order >= 1 else 0) + (1 if order >= 2 else 0)
        S = np.zeros((d, C, N))
        S[:, 0, :] = x.T
        if order >= 1:
            S[np.arange(d), 1 + np.arange(d), :] = 1.0
        caches = []
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            Z = layer.forward(S)
            if i == last:
                caches.append((S, None, None))
                return Z[0], caches
            z0 = Z[:, 0, :]
            s = np.tanh(z0) if act == _kernels.ACT_TANH else np.sin(z0)
            if not keep:   # values only (inference): no derivative caches
                S = s[:, None, :]
                continue
            cz = np.cos(z0) if act == _kernels.ACT_SIN else s
            A, D = _kernels.activation_forward(Z, s, cz, c, order, act)
            caches.append((S, Z, D))
            S = A

    def _backward(self, caches, G, order, lap_weights, per_sample=False):
        """Reverse pass from output-channel adjoints ``G (C, N)``; returns the
        per-layer parameter gradients (summed, or per sample)."""
        c = np.ones(self.dim) if lap_weights is None else lap_weights
        G = G[None, :, :]
        grads = [None] * len(self.layers)
        for i in range(len(self.layers) - 1, -1, -1):
            S = caches[i][0]
            layer = self.layers[i]
            if per_sample:
                grads[i] = layer.grad_per_sample(S, G)
                if i == 0:
                    break
                Sbar = layer.backward_input(G)
            else:
                Sbar, grads[i] = layer.backward(S, G)
                if i == 0:
                    break
            _, Z, D = caches[i - 1]
            G = _kernels.activation_backward(np.ascontiguousarray(Sbar), Z, D, c, order)
        return grads

    def _lap_weights(self, lap_weights):
        if lap_weights is None:
            return np.ones(self.dim)
        c = val.check_float_array(np.atleast_1d(np.asarray(lap_weights, dtype=float)),
                                  "lap_weights", ndim=1)
        if c.shape[0] != self.dim:
            raise ValueError(f"lap_weights must have length {self.dim}, got {c.shape[0]}")
        return c

    def predict(self, x):
        """``u(x)`` for ``x (N, d)``; returns shape ``(N,)``.

        Examples
        --------
        >>> import numpy as np
        >>> from hmnumba.pinn import PINN
        >>> PINN([1, 8, 1], random_state=0).predict(np.zeros((3, 1))).shape
        (3,)
        """
        x = self._check_x(x)
        out, _ = self._forward(x, 0, None, keep=False)
        return out[0].copy()

    def derivatives(self, x, order=2, lap_weights=None):
        """``u``, its gradient and its (weighted) Laplacian at ``x``, exactly.

        Parameters
        ----------
        x : array-like of shape (N, d)
        order : {1, 2}, default=2
            2 also returns the Laplacian.
        lap_weights : array-like of shape (d,), optional
            ``c`` in ``sum_j c_j d^2u/dx_j^2``; all ones (the Laplacian) by default.

        Returns
        -------
        u : ndarray of shape (N,)
        grad : ndarray of shape (N, d)
        lap : ndarray of shape (N,)
            Only for ``order=2``.

        Examples
        --------
        >>> import numpy as np
        >>> from hmnumba.pinn import PINN
        >>> net = PINN([1, 8, 1], random_state=0)
        >>> x, h = np.array([[0.3]]), 1e-4
        >>> u, du, lap = net.derivatives(x)
        >>> fd = (net.predict(x + h) - 2 * u + net.predict(x - h)) / h**2
        >>> bool(abs(fd[0] - lap[0]) < 1e-5)
        True
        """
        x = self._check_x(x)
        if order not in (1, 2):
            raise ValueError(f"order must be 1 or 2, got {order!r}")
        c = self._lap_weights(lap_weights)
        out, _ = self._forward(x, order, c)
        d = self.dim
        u, grad = out[0].copy(), out[1:d + 1].T.copy()
        return (u, grad, out[d + 1].copy()) if order == 2 else (u, grad)

    # -------------------------------------------------------------- losses
    def _term(self, x, seed_fn, order, c, per_sample=False):
        out, caches = self._forward(x, order, c)
        value, G = seed_fn(out)
        grads = self._backward(caches, G, order, c, per_sample=per_sample)
        if per_sample:
            return value, np.hstack([g for g in grads])
        return value, np.concatenate([g.ravel() for layer_g in grads for g in layer_g])

    def loss_terms(self, problem, x_r, x_b, g_b, grad=True):
        """The residual and boundary losses and their parameter gradients.

        ``L_r = mean(r(x_r)^2)`` with ``r`` the problem's PDE residual and
        ``L_b = mean((u(x_b) - g_b)^2)``.

        Inputs are not validated here (:meth:`loss` does it); :func:`train`
        calls this on fixed, checked samples.

        Returns
        -------
        (L_r, grad_r), (L_b, grad_b)
            Gradients are flat vectors in :meth:`get_params` order (``None`` if
            ``grad=False``).

        Examples
        --------
        >>> import numpy as np
        >>> from hmnumba.pinn import PINN, Heat1D
        >>> prob, net = Heat1D(), PINN([2, 8, 1], random_state=0)
        >>> x_b, g_b = prob.sample_boundary(30, random_state=0)
        >>> (Lr, gr), (Lb, gb) = net.loss_terms(prob, prob.sample_collocation(50), x_b, g_b)
        >>> gr.shape == gb.shape == (net.n_params,)
        True
        """
        d = self.dim
        c = problem.lap_weights
        n_r, n_b = x_r.shape[0], x_b.shape[0]

        def residual_seed(out):
            r, r_u, r_du, r_lap = problem.residual(x_r, out[0], out[1:d + 1].T, out[d + 1])
            G = np.empty_like(out)
            w = 2.0 * r / n_r
            G[0] = w * r_u
            G[1:d + 1] = w * np.asarray(r_du).T
            G[d + 1] = w * r_lap
            return float(np.mean(r * r)), G

        def boundary_seed(out):
            e = out[0] - g_b
            return float(np.mean(e * e)), (2.0 / n_b) * e[None, :]

        if not grad:
            out, _ = self._forward(x_r, 2, c)
            r = problem.residual(x_r, out[0], out[1:d + 1].T, out[d + 1])[0]
            ub, _ = self._forward(x_b, 0, None, keep=False)
            return (float(np.mean(r * r)), None), (float(np.mean((ub[0] - g_b) ** 2)), None)
        return (self._term(x_r, residual_seed, 2, c),
                self._term(x_b, boundary_seed, 0, None))

    def loss(self, problem, x_r, x_b, g_b, weights=(1.0, 1.0), grad=True):
        """``w_r L_r + w_b L_b`` (see :meth:`loss_terms`) and its gradient.

        Parameters
        ----------
        problem : Problem
            From :mod:`hmnumba.pinn.problems`.
        x_r : array-like of shape (N_r, d)
            Collocation points.
        x_b : array-like of shape (N_b, d)
            Boundary (and initial) points.
        g_b : array-like of shape (N_b,)
            Prescribed values at ``x_b``.
        weights : (float, float), default=(1, 1)
        grad : bool, default=True

        Returns
        -------
        loss : float
        grad : ndarray of shape (n_params,)
            Only if ``grad=True``.

        Examples
        --------
        >>> import numpy as np
        >>> from hmnumba.pinn import PINN, Poisson1D
        >>> prob = Poisson1D()
        >>> net = PINN([1, 8, 1], random_state=0)
        >>> x_r = prob.sample_collocation(32, random_state=0)
        >>> x_b, g_b = prob.sample_boundary(2, random_state=0)
        >>> L, g = net.loss(prob, x_r, x_b, g_b)
        >>> g.shape == (net.n_params,)
        True
        """
        x_r = self._check_x(x_r, "x_r")
        x_b = self._check_x(x_b, "x_b")
        g_b = val.check_float_array(g_b, "g_b", ndim=1)
        if g_b.shape[0] != x_b.shape[0]:
            raise ValueError(f"g_b must have one value per boundary point ({x_b.shape[0]}), "
                             f"got {g_b.shape[0]}")
        (Lr, gr), (Lb, gb) = self.loss_terms(problem, x_r, x_b, g_b, grad=grad)
        w_r, w_b = weights
        L = w_r * Lr + w_b * Lb
        return (L, w_r * gr + w_b * gb) if grad else L

    # ------------------------------------------------------------ jacobians
    def jacobian(self, x, output="u", problem=None):
        """Per-sample Jacobians with respect to the parameter vector.

        Parameters
        ----------
        x : array-like of shape (N, d)
        output : {"u", "residual"}, default="u"
            ``"u"``: rows ``d u(x_i) / d theta``. ``"residual"``: rows
            ``d r(x_i) / d theta`` of the problem's PDE residual (the operator
            part; the forcing does not depend on ``theta``).
        problem : Problem, optional
            Needed for ``output="residual"``.

        Returns
        -------
        J : ndarray of shape (N, n_params)
            Columns in :meth:`get_params` order. The empirical NTK blocks are
            ``J_u J_u^T`` (``K_uu``), ``J_u J_r^T`` (``K_ur``), ``J_r J_r^T`` (``K_rr``).

        Examples
        --------
        >>> import numpy as np
        >>> from hmnumba.pinn import PINN
        >>> net = PINN([1, 4, 1], random_state=0)
        >>> x = np.array([[0.1], [0.5]])
        >>> J = net.jacobian(x)
        >>> theta, h = net.get_params(), 1e-6
        >>> e = np.zeros(net.n_params); e[0] = h
        >>> net.set_params(theta + e); up = net.predict(x)
        >>> net.set_params(theta - e); um = net.predict(x); net.set_params(theta)
        >>> bool(np.allclose(J[:, 0], (up - um) / (2 * h), atol=1e-8))
        True
        """
        x = self._check_x(x)
        output = val.check_choice(output, "output", ("u", "residual"))
        d = self.dim
        if output == "u":
            def seed(out):
                return None, np.ones_like(out)
            return self._term(x, seed, 0, None, per_sample=True)[1]
        if problem is None:
            raise ValueError("output='residual' needs the problem")
        c = problem.lap_weights

        def seed(out):
            _, r_u, r_du, r_lap = problem.residual(x, out[0], out[1:d + 1].T, out[d + 1])
            G = np.empty_like(out)
            G[0] = r_u
            G[1:d + 1] = np.asarray(r_du).T
            G[d + 1] = r_lap
            return None, G
        return self._term(x, seed, 2, c, per_sample=True)[1]

    # ---------------------------------------------------------- compression
    def compress(self, method="hmatrix", layers=None, **params):
        """A new network whose chosen layers are compressed.

        Parameters
        ----------
        method : {"hmatrix", "svd", "pruning", "quantization"}, default="hmatrix"
            ``"hmatrix"`` gives trainable :class:`HMatrixLayer` s (built by
            ``HMatrixCompressor``); the others give frozen
            :class:`CompressedLayer` s (``SVDCompressor``, ``PruningCompressor``,
            ``QuantizationCompressor``) whose biases still train.
        layers : list of int, optional
            Layer indices; default :attr:`hidden_layers` (all hidden-to-hidden
            layers).
        **params
            Passed to the compressor (e.g. ``tol=1e-4``, ``random_state=0``;
            ``rank=8`` for SVD; ``sparsity=0.5``; ``bits=8``).

        Returns
        -------
        PINN

        Examples
        --------
        >>> import numpy as np
        >>> from hmnumba.pinn import PINN
        >>> net = PINN([2, 64, 64, 1], random_state=0)
        >>> small = net.compress("hmatrix", tol=1e-6)
        >>> x = np.random.default_rng(1).random((10, 2))
        >>> bool(np.allclose(small.predict(x), net.predict(x), atol=1e-5))
        True
        """
        method = val.check_choice(method, "method", COMPRESS_METHODS)
        idx = self.hidden_layers if layers is None else list(layers)
        for i in idx:
            if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or \
                    not 0 <= i < len(self.layers):
                raise ValueError(f"layers must hold indices in [0, {len(self.layers)}), got {i!r}")
        new = self.copy()
        for i in idx:
            W = self.layers[i].to_dense()
            b = self.layers[i].b
            if method == "hmatrix":
                from hmnumba.compressor import HMatrixCompressor
                new.layers[i] = HMatrixLayer(HMatrixCompressor(**params).fit(W).hmatrix_, b)
            else:
                from hmnumba import baselines
                cls = {"svd": baselines.SVDCompressor, "pruning": baselines.PruningCompressor,
                       "quantization": baselines.QuantizationCompressor}[method]
                new.layers[i] = CompressedLayer(cls(**params).fit(W), b)
        return new


def _check_sizes(sizes):
    try:
        sizes = [s for s in sizes]
    except TypeError:
        raise TypeError(f"sizes must be a sequence of int, got {type(sizes).__name__}") from None
    if len(sizes) < 2:
        raise ValueError(f"sizes must have at least 2 entries ([d, ..., 1]), got {sizes}")
    sizes = [val.check_positive_int(s, f"sizes[{i}]") for i, s in enumerate(sizes)]
    if sizes[-1] != 1:
        raise ValueError(f"sizes must end with 1 (scalar output), got {sizes[-1]}")
    return sizes
