"""Kernel functions ``k(x, y)`` for :meth:`HMatrix.from_kernel`: the Python
side of :mod:`hmnumba.kernels`.

Each built-in kernel is a :class:`KernelFunction`: a small Python object that
carries an integer ``code`` (:mod:`hmnumba.kernels.codes`) and a length
scale. Numba code dispatches on the code
(:func:`hmnumba.kernels.sources.kernel_of_distance2`), which keeps every
compiled function cacheable on disk; a user kernel (any ``@numba.njit``
function ``k(x, y) -> float``, wrapped in :class:`UserKernel`) is compiled
per process instead, the one place where a per-kernel specialisation is
expected. :func:`as_kernel` turns what a user passes into one of the two;
:func:`assemble_dense` is the dense reference assembly.

The public names are re-exported by :mod:`hmnumba.kernels` (``from
hmnumba.kernels import laplace``); ``kernels/`` itself holds numba code only.
"""
import numpy as np
from numba import njit

from hmnumba._validation import check_kernel, check_points
from hmnumba.kernels.codes import KERNEL_CODES
from hmnumba.kernels.sources import assemble_dense as _assemble_dense_numba
from hmnumba.kernels.sources import builtin_source

__all__ = ["KernelFunction", "UserKernel", "as_kernel", "assemble_dense", "laplace",
           "gaussian", "exponential", "matern32"]

# Length scales whose square (and inverse square) are normal float64 numbers.
MIN_LENGTH_SCALE = 1e-150
MAX_LENGTH_SCALE = 1e150


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

    _codes = KERNEL_CODES
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
        if not (MIN_LENGTH_SCALE <= length_scale <= MAX_LENGTH_SCALE):
            # l * l underflows (gaussian: 0 / 0 = NaN at r = 0) or overflows,
            # or r / l overflows (matern32: inf * 0 = NaN).
            raise ValueError(f"length_scale must lie in [{MIN_LENGTH_SCALE:g}, "
                             f"{MAX_LENGTH_SCALE:g}] (the kernel degenerates to NaN "
                             f"outside), got {length_scale!r}; rescale the points instead")
        self.name = name
        self.code = self._codes[name]
        self.length_scale = length_scale

    @classmethod
    def from_code(cls, code, length_scale=1.0):
        """The kernel whose integer code (``kernels.codes``) is ``code``, as
        stored in files and in the numba sources.

        Examples
        --------
        >>> from hmnumba.kernels import gaussian
        >>> from hmnumba.kernel_functions import KernelFunction
        >>> KernelFunction.from_code(gaussian.code, 2.0).name
        'gaussian'
        """
        for name, value in cls._codes.items():
            if value == int(code):
                return cls(name, length_scale)
        raise ValueError(f"code must be one of {sorted(cls._codes.values())}, got {code!r}")

    def with_length_scale(self, length_scale):
        """Return the same kernel with another length scale."""
        return KernelFunction(self.name, length_scale)

    def __call__(self, X, Y=None):
        """Dense kernel matrix ``K[i, j] = k(X[i], Y[j])`` (``Y = X`` if omitted)."""
        X = check_points(X, "X")
        Y = X if Y is None else check_points(Y, "Y")
        if X.shape[1] != Y.shape[1]:
            raise ValueError(f"X and Y must have the same dimension, got {X.shape[1]} and {Y.shape[1]}")
        return _assemble_dense_numba(self.source(X, Y), X.shape[0], Y.shape[0],
                                     np.empty((X.shape[0], Y.shape[0])))

    def source(self, X, Y):
        """The entry source the numba kernels read (see ``kernels.sources``)."""
        return builtin_source(self.code, self.length_scale, X, Y)

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

    def raise_bad_value(self, X, Y, i, j, value):
        """Raise ``ValueError`` for the non-finite ``value`` at pair ``(i, j)``."""
        raise ValueError(f"kernel {self!r} gave {value!r} at the pair (i, j) = ({i}, {j}) "
                         f"(points[{i}] = {X[i].tolist()}, col_points[{j}] = "
                         f"{Y[j].tolist()}): NaN or infinite entries cannot be compressed; "
                         f"check the length scale and the point coordinates")


laplace = KernelFunction("laplace")
gaussian = KernelFunction("gaussian")
exponential = KernelFunction("exponential")
matern32 = KernelFunction("matern32")


# One wrapper per user kernel function (a new wrapper would recompile the build).
_SAFE_WRAPPERS = {}


def _safe_wrapper(function):
    """``k(x, y)`` as a float, NaN where the user kernel raises.

    An exception raised inside numba's parallel loops is lost (with the OpenMP
    layer the loop goes on with garbage) or surfaces as ``SystemError``, so
    the build calls this wrapper instead; a NaN then makes the build look for
    the first bad pair and call the kernel there from Python, where its
    exception arrives intact (:meth:`UserKernel.raise_bad_value`).
    """
    safe = _SAFE_WRAPPERS.get(function)
    if safe is None:
        kern = function

        @njit
        def safe(x, y):
            try:
                return np.float64(kern(x, y))
            except Exception:  # noqa: BLE001 - reported from Python afterwards
                return np.nan

        _SAFE_WRAPPERS[function] = safe
    return safe


class UserKernel:
    """Wraps a user ``@numba.njit`` kernel ``k(x, y) -> float``.

    Kernels compiled with numba are specialised into the construction code
    once per process (the built-in kernels are cached on disk instead).
    :meth:`probe` checks the kernel on one pair of points before a build;
    the build evaluates it through a wrapper that turns an exception into
    NaN, and a non-finite entry is reported by :meth:`raise_bad_value` with
    the pair ``(i, j)`` (the kernel's own exception, if it raised, with a
    note naming the pair).
    """

    def __init__(self, function):
        self.function = function
        self.name = getattr(function, "__name__", "user kernel")

    def source(self, X, Y):
        return (_safe_wrapper(self.function), X, Y)

    def probe(self, X, Y):
        """Evaluate the kernel at ``(X[0], Y[0])`` from Python: a kernel that
        numba cannot compile for two float64 1-D arrays gives ``TypeError``,
        one that returns no real number ``TypeError``, one that raises its
        own exception, one that returns NaN or infinity ``ValueError``."""
        from numba.core.errors import TypingError
        if self.function is None:   # a subclass with its own entry source (ntk.GramKernel)
            return
        try:
            value = self.function(X[0], Y[0])
        except TypingError as exc:
            lines = [ln for ln in str(exc).splitlines() if ln.strip()][:3]
            raise TypeError(f"kernel {self.name!r} must compile as k(x, y) -> float for two "
                            f"float64 1-D arrays x, y (rows of the points); numba says: "
                            + " / ".join(lines)) from exc
        except Exception as exc:
            self._annotate(exc, X, Y, 0, 0)
            raise
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
            raise TypeError(f"kernel {self.name!r} must return a real number, returned "
                            f"{type(value).__name__} at the pair (0, 0)")
        if not np.isfinite(value):
            self.raise_bad_value(X, Y, 0, 0, value)

    def raise_bad_value(self, X, Y, i, j, value):
        """Report the non-finite entry at ``(i, j)``: the kernel is called
        there from Python; its exception is re-raised as itself (with a note
        naming the pair), else ``ValueError`` names the value and the pair."""
        try:
            if self.function is not None:
                value = self.function(X[i], Y[j])
        except Exception as exc:
            self._annotate(exc, X, Y, i, j)
            raise
        raise ValueError(f"kernel {self.name!r} returned {value!r} at the pair (i, j) = "
                         f"({i}, {j}) (points[{i}] = {X[i].tolist()}, col_points[{j}] = "
                         f"{Y[j].tolist()}): NaN or infinite entries cannot be compressed")

    def _annotate(self, exc, X, Y, i, j):
        if hasattr(exc, "add_note"):
            exc.add_note(f"raised by kernel {self.name!r} at the pair (i, j) = ({i}, {j}): "
                         f"points[{i}] = {X[i].tolist()}, col_points[{j}] = {Y[j].tolist()}")

    def __repr__(self):
        return f"UserKernel({self.name})"


def as_kernel(kernel, name="kernel"):
    """The kernel object a build reads: a :class:`KernelFunction` or a
    :class:`UserKernel` (or subclass) as given, a numba ``@njit`` function
    wrapped in a :class:`UserKernel`; anything else raises ``TypeError``
    (:func:`hmnumba._validation.check_kernel`).

    Examples
    --------
    >>> import numba
    >>> from hmnumba.kernel_functions import as_kernel, laplace
    >>> as_kernel(laplace) is laplace
    True
    >>> as_kernel(numba.njit(lambda x, y: 1.0)).__class__.__name__
    'UserKernel'
    """
    kernel = check_kernel(kernel, name)
    if isinstance(kernel, (KernelFunction, UserKernel)):
        return kernel
    return UserKernel(kernel)


def assemble_dense(kernel, X, Y=None):
    """Assemble the dense kernel matrix ``K[i, j] = kernel(X[i], Y[j])`` with numba.

    This is the reference that H-matrix construction is timed against.

    Parameters
    ----------
    kernel : KernelFunction or numba ``@njit`` function ``k(x, y) -> float``
    X : ndarray of shape (m, d)
    Y : ndarray of shape (n, d), default=X

    Returns
    -------
    ndarray of shape (m, n), float64

    Raises
    ------
    ValueError
        The kernel gave NaN or infinity; the message names the first such
        pair ``(i, j)``. A user kernel that raised re-raises its exception
        (with a note naming the pair).

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.kernels import assemble_dense, laplace
    >>> assemble_dense(laplace, np.array([[0.0], [4.0]]))
    array([[0.  , 0.25],
           [0.25, 0.  ]])
    """
    X = check_points(X, "X")
    Y = X if Y is None else check_points(Y, "Y")
    if X.shape[1] != Y.shape[1]:
        raise ValueError(f"X and Y must have the same dimension, got {X.shape[1]} and {Y.shape[1]}")
    kern = as_kernel(kernel, "kernel")
    out = np.empty((X.shape[0], Y.shape[0]))
    K = _assemble_dense_numba(kern.source(X, Y), X.shape[0], Y.shape[0], out)
    bad = np.flatnonzero(~np.isfinite(K))
    if bad.size:   # NaN, infinity, or a user kernel that raised (see UserKernel)
        i, j = divmod(int(bad[0]), Y.shape[0])
        kern.raise_bad_value(X, Y, i, j, float(K[i, j]))
    return K
