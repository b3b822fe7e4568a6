"""Every input check of the public API, with its error message, in one place.

Each helper names the argument it checks and raises ``TypeError`` for a wrong
kind of object and ``ValueError`` for a wrong value. Numba kernels do no bounds
checking, so nothing reaches them without passing through here.
"""
import numbers

import numpy as np

FLOAT_DTYPES = (np.float32, np.float64)


def _as_array(value, name):
    if hasattr(value, "toarray") and hasattr(value, "nnz"):
        raise TypeError(f"{name} must be a dense array; got a sparse matrix "
                        f"({type(value).__name__}), call .toarray() first")
    try:
        arr = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} must be array-like, got {type(value).__name__}: {exc}") from None
    return arr


def check_float_array(value, name, ndim=2, allow_empty=False):
    """A finite real float32/float64 array with ``ndim`` dimensions.

    float32 and float64 keep their dtype (C-contiguous copy only if needed);
    integer, boolean, complex and object arrays are refused.
    """
    arr = _as_array(value, name)
    if arr.dtype == object:
        raise TypeError(f"{name} must be a numeric float array, got dtype object")
    if np.iscomplexobj(arr):
        raise TypeError(f"{name} must be real, got complex dtype {arr.dtype}")
    if arr.dtype.kind in "biu":
        raise TypeError(f"{name} must be a float32 or float64 array, got dtype {arr.dtype}; "
                        f"convert it with .astype(float) if that is intended")
    if arr.dtype.kind != "f":
        raise TypeError(f"{name} must be a float32 or float64 array, got dtype {arr.dtype}")
    if arr.dtype not in FLOAT_DTYPES:  # float16, longdouble
        arr = arr.astype(np.float64)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got {arr.ndim}-D array of shape {arr.shape}")
    if not allow_empty and arr.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinity")
    return np.ascontiguousarray(arr)


def check_matrix(value, name="A"):
    """A non-empty, finite, real 2-D float array (float32 stays float32)."""
    return check_float_array(value, name, ndim=2)


def check_points(value, name="points"):
    """Point coordinates as float64 ``(n_points, dim)``; 1-D means dim 1."""
    arr = _as_array(value, name)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.dtype.kind in "iu":
        arr = arr.astype(np.float64)
    arr = check_float_array(arr, name, ndim=2)
    return np.ascontiguousarray(arr, dtype=np.float64)


def check_tol(tol, name="tol"):
    """A relative tolerance: a real number with ``0 < tol < 1``."""
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real):
        raise TypeError(f"{name} must be a real number in (0, 1), got {type(tol).__name__}")
    tol = float(tol)
    if not (0.0 < tol < 1.0):
        raise ValueError(f"{name} must satisfy 0 < {name} < 1, got {tol!r}")
    return tol


def check_positive_int(value, name, minimum=1, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_positive_float(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return value


def check_choice(value, name, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}; "
                         f"got {value!r}")
    return value


def check_backend(backend, name="backend"):
    """One of ``"cpu"``, ``"cuda"``, ``"auto"``."""
    return check_choice(backend, name, ("cpu", "cuda", "auto"))


def check_device(device, name="device"):
    """Where an HMatrix lives: ``"cpu"`` or ``"cuda"``."""
    return check_choice(device, name, ("cpu", "cuda"))


def check_kernel(kernel, name="kernel"):
    """A built-in :class:`KernelFunction` or a numba ``@njit`` function."""
    from hmnumba.kernels.functions import KernelFunction, UserKernel
    if isinstance(kernel, (KernelFunction, UserKernel)):
        return kernel
    try:
        from numba.core.registry import CPUDispatcher
    except ImportError:  # pragma: no cover - numba layout changed
        CPUDispatcher = ()
    if isinstance(kernel, CPUDispatcher):
        return UserKernel(kernel)
    if callable(kernel):
        raise TypeError(f"{name} must be a built-in kernel (hmnumba.kernels.laplace, ...) or a "
                        f"numba @njit function k(x, y) -> float; got a plain Python callable "
                        f"{getattr(kernel, '__name__', kernel)!r}: decorate it with @numba.njit")
    raise TypeError(f"{name} must be a built-in kernel or a numba @njit function, "
                    f"got {type(kernel).__name__}")


def check_random_state(random_state, name="random_state"):
    """An int seed in [0, 2**32) derived from ``random_state`` (None -> 0)."""
    if random_state is None:
        return 0
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(0, 2**31 - 1))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, 2**31 - 1))
    if isinstance(random_state, bool) or not isinstance(random_state, numbers.Integral):
        raise TypeError(f"{name} must be None, an int, a RandomState or a Generator, "
                        f"got {type(random_state).__name__}")
    if not (0 <= random_state < 2**32):
        raise ValueError(f"{name} must be in [0, 2**32), got {random_state}")
    return int(random_state)


def check_operand(x, n_expected, dtype, name="x", dim="columns", last_axis=False):
    """Right-hand side of a product: 1-D ``(n,)`` or 2-D ``(n, k)``.

    ``dim`` names what ``n_expected`` counts in the message (``"rows"`` for
    ``H.T @ y`` and ``y @ H``); ``last_axis`` checks a 2-D operand's last
    dimension (``y @ H`` takes ``y`` of shape ``(k, m)``).
    A CUDA device array is checked for its shape and dtype only (its values
    stay on the device) and returned as it is.
    """
    if is_device_operand(x):
        return _check_device_operand(x, n_expected, name, dim)
    arr = _as_array(x, name)
    if arr.dtype == object or np.iscomplexobj(arr) or arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    _check_operand_shape(arr.shape, n_expected, name, dim, last_axis)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinity")
    return arr


def check_n_jobs(n_jobs, name="n_jobs"):
    """joblib's convention: None (no joblib), or a non-zero int (``-1`` = all
    workers of the active backend, ``-2`` = all but one, ...)."""
    if n_jobs is None:
        return None
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, numbers.Integral):
        raise TypeError(f"{name} must be None or a non-zero integer, got {type(n_jobs).__name__}")
    if n_jobs == 0:
        raise ValueError(f"{name} must be None or a non-zero integer (-1 for all workers), got 0")
    return int(n_jobs)


def is_device_operand(x):
    """True for a CUDA device array (numba's, CuPy's, or the simulator's)."""
    return hasattr(x, "__cuda_array_interface__") or type(x).__name__ == "FakeCUDAArray"


def _check_device_operand(x, n_expected, name, dim="columns"):
    dtype = np.dtype(x.dtype)
    if dtype.kind != "f" or dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a float32 or float64 device array, got dtype {dtype}")
    _check_operand_shape(tuple(x.shape), n_expected, name, dim)
    return x


def _check_operand_shape(shape, n_expected, name, dim="columns", last_axis=False):
    """A product's operand is ``(n,)`` or ``(n, k)`` with ``n == n_expected``
    (``(k, n)`` with ``last_axis``)."""
    if len(shape) not in (1, 2):
        raise ValueError(f"{name} must be 1-D or 2-D, got {len(shape)}-D array of shape {shape}")
    axis = len(shape) - 1 if last_axis else 0
    if shape[axis] != n_expected:
        which = "last" if axis else "first"
        raise ValueError(f"dimension mismatch: operator has {n_expected} {dim} but {name} has "
                         f"shape {shape} (expected {which} dimension {n_expected})")


def check_nonnegative_float(value, name):
    """A finite real number ``>= 0`` (a norm, an error)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not (np.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


def check_nonnegative_vector(value, name):
    """A non-empty 1-D float64 array of finite values ``>= 0``."""
    arr = check_float_array(value, name, ndim=1).astype(np.float64, copy=False)
    if np.any(arr < 0):
        raise ValueError(f"{name} must hold values >= 0, got minimum {arr.min()!r}")
    return arr


def check_dense_input(value, name="A"):
    """A matrix to compress: as :func:`check_matrix`, but integer and boolean
    arrays are converted to float64 first (as scikit-learn's ``validate_data``
    does for :class:`~hmnumba.HMatrixCompressor`, and ``hmnumba compress``)."""
    arr = _as_array(value, name)
    if arr.dtype.kind in "biu":
        arr = arr.astype(np.float64)
    return check_matrix(arr, name)
