"""Built-in kernel functions ``k(x, y)`` for :meth:`HMatrix.from_kernel`.

Each built-in kernel is a :class:`KernelFunction`: a small Python object that
carries an integer ``code`` and a length scale. Numba code dispatches on the
code (:func:`kernel_of_distance2`), which keeps every compiled function cacheable on
disk; a user kernel (any ``@numba.njit`` function ``k(x, y) -> float``) is
compiled per process instead, the one place where a per-kernel specialisation
is expected.
"""
import numpy as np
from numba import njit

LAPLACE = 0
GAUSSIAN = 1
EXPONENTIAL = 2
MATERN32 = 3

_SQRT3 = np.sqrt(3.0)

# Restricted fastmath: no "nnan"/"ninf", so NaN checks stay meaningful.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}


@njit(cache=True, inline="always", fastmath=FASTMATH)
def kernel_of_distance2(code, length_scale, r2):
    """Value of built-in kernel ``code`` at squared distance ``r2``."""
    if code == LAPLACE:
        # 1/r with the singular diagonal set to zero (the standard convention
        # of the cube benchmark and of H2Lib/H2Pack).
        return 0.0 if r2 == 0.0 else 1.0 / np.sqrt(r2)
    if code == GAUSSIAN:
        return np.exp(-0.5 * r2 / (length_scale * length_scale))
    if code == EXPONENTIAL:
        return np.exp(-np.sqrt(r2) / length_scale)
    # MATERN32
    s = _SQRT3 * np.sqrt(r2) / length_scale
    return (1.0 + s) * np.exp(-s)


class KernelFunction:
    """A built-in kernel ``k(x, y)`` usable by :meth:`HMatrix.from_kernel`.

    Calling the object on two point sets returns the dense kernel matrix
    (assembled in parallel by numba), which is handy for checking results on
    small problems.

    Parameters
    ----------
    name : str
        One of ``"laplace"``, ``"gaussian"``, ``"exponential"``, ``"matern32"``.
    length_scale : float, default=1.0
        Length scale ``l`` (ignored by ``laplace``).

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.kernels import laplace, gaussian
    >>> X = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
    >>> laplace(X, X)
    array([[0. , 0.5],
           [0.5, 0. ]])
    >>> float(gaussian.with_length_scale(2.0)(X[:1], X[1:])[0, 0])  # exp(-1/2)
    0.6065306597126334
    """

    _codes = {"laplace": LAPLACE, "gaussian": GAUSSIAN,
              "exponential": EXPONENTIAL, "matern32": MATERN32}
    _formulas = {"laplace": "1/r (0 at r=0)",
                 "gaussian": "exp(-r^2 / (2 l^2))",
                 "exponential": "exp(-r / l)",
                 "matern32": "(1 + sqrt(3) r / l) exp(-sqrt(3) r / l)"}

    def __init__(self, name, length_scale=1.0):
        if name not in self._codes:
            raise ValueError(f"name must be one of {sorted(self._codes)}, got {name!r}")
        length_scale = float(length_scale)
        if not (np.isfinite(length_scale) and length_scale > 0):
            raise ValueError(f"length_scale must be a positive finite number, got {length_scale!r}")
        self.name = name
        self.code = self._codes[name]
        self.length_scale = length_scale

    def with_length_scale(self, length_scale):
        """Return the same kernel with another length scale."""
        return KernelFunction(self.name, length_scale)

    def __call__(self, X, Y=None):
        """Dense kernel matrix ``K[i, j] = k(X[i], Y[j])`` (``Y = X`` if omitted)."""
        from hmnumba.kernels.cpu import assemble_dense_builtin
        from hmnumba._validation import check_points
        X = check_points(X, "X")
        Y = X if Y is None else check_points(Y, "Y")
        if X.shape[1] != Y.shape[1]:
            raise ValueError(f"X and Y must have the same dimension, got {X.shape[1]} and {Y.shape[1]}")
        return assemble_dense_builtin(self.code, self.length_scale, X, Y)

    def source(self, X, Y):
        """The entry source the numba kernels read (see ``kernels.cpu``)."""
        return (np.int64(self.code), np.float64(self.length_scale),
                np.ascontiguousarray(X.T), np.ascontiguousarray(Y.T))

    def __repr__(self):
        if self.name == "laplace":
            return "KernelFunction('laplace')"
        return f"KernelFunction({self.name!r}, length_scale={self.length_scale!r})"

    def __eq__(self, other):
        return (isinstance(other, KernelFunction) and other.name == self.name
                and other.length_scale == self.length_scale)

    def __hash__(self):
        return hash((self.name, self.length_scale))

    def __reduce__(self):
        return (KernelFunction, (self.name, self.length_scale))

    @property
    def formula(self):
        """The kernel's formula as text."""
        return self._formulas[self.name]


laplace = KernelFunction("laplace")
gaussian = KernelFunction("gaussian")
exponential = KernelFunction("exponential")
matern32 = KernelFunction("matern32")


class UserKernel:
    """Wraps a user ``@numba.njit`` kernel ``k(x, y) -> float``.

    Kernels compiled with numba are specialised into the construction code
    once per process (the built-in kernels are cached on disk instead).
    """

    def __init__(self, function):
        self.function = function
        self.name = getattr(function, "__name__", "user kernel")

    def source(self, X, Y):
        return (self.function, X, Y)

    def __repr__(self):
        return f"UserKernel({self.name})"
