"""Model problems with exact solutions for the PINN.

Each problem is a linear PDE ``r(x) = L[u](x) - f(x) = 0`` in a box, with
Dirichlet data (and, for the heat equation, an initial condition) taken from
the exact solution. :meth:`Problem.residual` returns ``r`` and its partial
derivatives with respect to ``u``, ``grad u`` and the weighted Laplacian
``sum_j c_j d^2u/dx_j^2`` (``c`` = ``lap_weights``): that is all the reverse
pass of :class:`~hmnumba.pinn.PINN` needs, so a new (even nonlinear) problem
only has to provide these.
"""
import numpy as np

from hmnumba import _validation as val


class Problem:
    """Base class: a PDE on the box ``[lo, hi]`` with an exact solution.

    Subclasses set ``lo``, ``hi``, ``lap_weights`` and implement ``exact``,
    ``residual`` and (if the boundary is not all of the box's faces)
    ``sample_boundary``.

    Examples
    --------
    ``u'' = 2`` on ``[0, 1]`` with ``u = x^2`` (the residual ``r = lap - 2``
    and its partials with respect to ``u``, ``grad u`` and ``lap``):

    >>> import numpy as np
    >>> from hmnumba.pinn import PINN, Problem, train
    >>> class Parabola(Problem):
    ...     lo, hi = (0.0,), (1.0,)
    ...     lap_weights = np.ones(1)
    ...     def exact(self, x):
    ...         return x[:, 0] ** 2
    ...     def residual(self, x, u, du, lap):
    ...         n = x.shape[0]
    ...         return lap - 2.0, np.zeros(n), np.zeros((n, 1)), np.ones(n)
    >>> p = Parabola()
    >>> p.dim, p.sample_boundary(4, random_state=0)[1].shape
    (1, (4,))
    >>> net = PINN([1, 8, 1], random_state=0)
    >>> hist = train(net, p, epochs=20, optimizer="lbfgs", progress=False, random_state=0)
    >>> bool(hist["relative_l2"][-1] < hist["relative_l2"][0])
    True
    """

    #: points per axis of the fixed test grid of :meth:`relative_l2`
    grid_points = 101
    #: default numbers of collocation and boundary points for training
    n_collocation = 1000
    n_boundary = 200

    @property
    def dim(self):
        return len(self.lo)

    def exact(self, x):
        raise NotImplementedError

    def residual(self, x, u, du, lap):
        """PDE residual and its partials.

        Parameters
        ----------
        x : ndarray (N, d)
        u : ndarray (N,)
        du : ndarray (N, d)
        lap : ndarray (N,)
            Weighted Laplacian ``sum_j c_j u_jj``.

        Returns
        -------
        r, r_u, r_du, r_lap : ndarrays of shapes (N,), (N,), (N, d), (N,)
        """
        raise NotImplementedError

    def _rng(self, random_state):
        return np.random.default_rng(val.check_random_state(random_state))

    def sample_collocation(self, n=None, random_state=None):
        """``n`` points uniform in the box, shape ``(n, d)``.

        Examples
        --------
        >>> from hmnumba.pinn import Poisson2D
        >>> Poisson2D().sample_collocation(5, random_state=0).shape
        (5, 2)
        """
        n = self.n_collocation if n is None else val.check_positive_int(n, "n")
        lo, hi = np.asarray(self.lo), np.asarray(self.hi)
        return lo + (hi - lo) * self._rng(random_state).random((n, self.dim))

    def sample_boundary(self, n=None, random_state=None):
        """``n`` points spread over all faces of the box and the exact values there.

        Returns
        -------
        x_b : ndarray of shape (n, d)
        g_b : ndarray of shape (n,)

        Examples
        --------
        >>> from hmnumba.pinn import Poisson2D
        >>> x_b, g_b = Poisson2D().sample_boundary(8, random_state=0)
        >>> x_b.shape, bool(abs(g_b).max() < 1e-12)
        ((8, 2), True)
        """
        n = self.n_boundary if n is None else val.check_positive_int(n, "n")
        return self._faces(n, range(self.dim), random_state)

    def _faces(self, n, axes, random_state, sides=(0, 1)):
        """``n`` points on the faces ``x_a = lo_a`` / ``hi_a`` for ``a`` in
        ``axes`` and the given sides, cycled through evenly."""
        rng = self._rng(random_state)
        lo, hi = np.asarray(self.lo, float), np.asarray(self.hi, float)
        x = lo + (hi - lo) * rng.random((n, self.dim))
        faces = [(a, s) for a in axes for s in sides]
        which = np.arange(n) % len(faces)
        for f, (a, s) in enumerate(faces):
            x[which == f, a] = hi[a] if s else lo[a]
        return x, self.exact(x)

    def test_grid(self):
        """The fixed grid of :meth:`relative_l2`: ``grid_points`` per axis.

        Examples
        --------
        >>> from hmnumba.pinn import Poisson2D
        >>> Poisson2D().test_grid().shape
        (10201, 2)
        """
        axes = [np.linspace(l, h, self.grid_points) for l, h in zip(self.lo, self.hi)]
        mesh = np.meshgrid(*axes, indexing="ij")
        return np.column_stack([m.ravel() for m in mesh])

    def relative_l2(self, model):
        """``||u_model - u||_2 / ||u||_2`` on :meth:`test_grid`.

        Examples
        --------
        >>> from hmnumba.pinn import PINN, Poisson1D
        >>> err = Poisson1D().relative_l2(PINN([1, 8, 1], random_state=0))
        >>> bool(err > 0.1)
        True
        """
        x = self.test_grid()
        if not hasattr(self, "_u_test"):
            self._u_test = self.exact(x)
        u = self._u_test
        return float(np.linalg.norm(model.predict(x) - u) / np.linalg.norm(u))

    def __repr__(self):
        return f"{type(self).__name__}()"


class Poisson1D(Problem):
    """``-u'' = pi^2 sin(pi x)`` on ``[0, 1]``, ``u(0) = u(1) = 0``; ``u = sin(pi x)``.

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.pinn import Poisson1D
    >>> p = Poisson1D()
    >>> x = np.array([[0.5]])
    >>> u = p.exact(x); lap = np.array([-np.pi**2])
    >>> float(p.residual(x, u, np.zeros((1, 1)), lap)[0][0])
    0.0
    """

    lo, hi = (0.0,), (1.0,)
    lap_weights = np.ones(1)
    n_collocation = 128
    n_boundary = 2
    grid_points = 1001

    def exact(self, x):
        return np.sin(np.pi * x[:, 0])

    def residual(self, x, u, du, lap):
        f = np.pi ** 2 * np.sin(np.pi * x[:, 0])
        n = x.shape[0]
        return -lap - f, np.zeros(n), np.zeros((n, 1)), -np.ones(n)


class Poisson2D(Problem):
    """``-Laplace u = 2 pi^2 sin(pi x) sin(pi y)`` on the unit square, ``u = 0``
    on the boundary; ``u = sin(pi x) sin(pi y)``.

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.pinn import Poisson2D
    >>> p = Poisson2D()
    >>> x = np.array([[0.5, 0.5]])
    >>> lap = np.array([-2 * np.pi**2])          # exact Laplacian at the centre
    >>> float(p.residual(x, p.exact(x), np.zeros((1, 2)), lap)[0][0])
    0.0
    """

    lo, hi = (0.0, 0.0), (1.0, 1.0)
    lap_weights = np.ones(2)
    n_collocation = 1000
    n_boundary = 200

    def exact(self, x):
        return np.sin(np.pi * x[:, 0]) * np.sin(np.pi * x[:, 1])

    def residual(self, x, u, du, lap):
        f = 2.0 * np.pi ** 2 * self.exact(x)
        n = x.shape[0]
        return -lap - f, np.zeros(n), np.zeros((n, 2)), -np.ones(n)


class Helmholtz2D(Problem):
    """``Laplace u + k^2 u = q`` on ``[-1, 1]^2`` with
    ``u = sin(a1 pi x) sin(a2 pi y)`` (Wang, Teng & Perdikaris 2021: ``a1 = 1,
    a2 = 4, k = 1``) and ``q = (k^2 - (a1 pi)^2 - (a2 pi)^2) u``; ``u = 0`` on
    the boundary.

    Parameters
    ----------
    a1, a2 : float, default=1, 4
    k : float, default=1

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.pinn import Helmholtz2D
    >>> p = Helmholtz2D()
    >>> x = np.array([[0.3, -0.2]])
    >>> u = p.exact(x)
    >>> lap = -(np.pi**2 + (4 * np.pi)**2) * u
    >>> bool(abs(p.residual(x, u, np.zeros((1, 2)), lap)[0][0]) < 1e-12)
    True
    """

    lo, hi = (-1.0, -1.0), (1.0, 1.0)
    lap_weights = np.ones(2)
    n_collocation = 2000
    n_boundary = 400

    def __init__(self, a1=1.0, a2=4.0, k=1.0):
        self.a1 = val.check_positive_float(a1, "a1")
        self.a2 = val.check_positive_float(a2, "a2")
        self.k = val.check_positive_float(k, "k")

    def exact(self, x):
        return np.sin(self.a1 * np.pi * x[:, 0]) * np.sin(self.a2 * np.pi * x[:, 1])

    def residual(self, x, u, du, lap):
        k2 = self.k ** 2
        q = (k2 - (self.a1 * np.pi) ** 2 - (self.a2 * np.pi) ** 2) * self.exact(x)
        n = x.shape[0]
        return lap + k2 * u - q, np.full(n, k2), np.zeros((n, 2)), np.ones(n)

    def __repr__(self):
        return f"Helmholtz2D(a1={self.a1:g}, a2={self.a2:g}, k={self.k:g})"


class Heat1D(Problem):
    """``u_t = kappa u_xx`` for ``(x, t)`` in ``[0, 1] x [0, 1]``, ``u = 0`` at
    ``x = 0, 1``, ``u(x, 0) = sin(pi x)``; ``u = exp(-kappa pi^2 t) sin(pi x)``.

    Inputs are ``(x, t)``; the weighted Laplacian is ``u_xx``
    (``lap_weights = (1, 0)``). The boundary set holds both walls and the
    initial line ``t = 0``.

    Parameters
    ----------
    kappa : float, default=0.1

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.pinn import Heat1D
    >>> p = Heat1D(kappa=0.1)
    >>> x = np.array([[0.25, 0.5]])
    >>> u = p.exact(x)
    >>> du = np.array([[np.nan, -0.1 * np.pi**2 * u[0]]])   # only u_t enters
    >>> uxx = -np.pi**2 * u
    >>> bool(abs(p.residual(x, u, du, uxx)[0][0]) < 1e-12)
    True
    """

    lo, hi = (0.0, 0.0), (1.0, 1.0)
    lap_weights = np.array([1.0, 0.0])
    n_collocation = 1000
    n_boundary = 300

    def __init__(self, kappa=0.1):
        self.kappa = val.check_positive_float(kappa, "kappa")

    def exact(self, x):
        return np.exp(-self.kappa * np.pi ** 2 * x[:, 1]) * np.sin(np.pi * x[:, 0])

    def residual(self, x, u, du, lap):
        n = x.shape[0]
        r_du = np.zeros((n, 2))
        r_du[:, 1] = 1.0
        return du[:, 1] - self.kappa * lap, np.zeros(n), r_du, np.full(n, -self.kappa)

    def sample_boundary(self, n=None, random_state=None):
        """``n`` points on the walls ``x = 0``, ``x = 1`` and the initial line
        ``t = 0`` (a third each), with the exact values there."""
        n = self.n_boundary if n is None else val.check_positive_int(n, "n")
        rng = self._rng(random_state)
        x = rng.random((n, 2))
        which = np.arange(n) % 3
        x[which == 0, 0] = 0.0
        x[which == 1, 0] = 1.0
        x[which == 2, 1] = 0.0
        return x, self.exact(x)

    def __repr__(self):
        return f"Heat1D(kappa={self.kappa:g})"
