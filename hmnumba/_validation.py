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
    """A kernel object (anything with the ``source`` and ``raise_bad_value``
    methods of :class:`hmnumba.kernel_functions.KernelFunction`) or a numba
    ``@njit`` function, returned as given;
    :func:`hmnumba.kernel_functions.as_kernel` wraps the latter."""
    if callable(getattr(kernel, "source", None)) and callable(getattr(kernel, "raise_bad_value",
                                                                         None)):
        return kernel
    try:
        from numba.core.registry import CPUDispatcher
    except ImportError:  # pragma: no cover - numba layout changed
        CPUDispatcher = ()
    if isinstance(kernel, CPUDispatcher):
        return kernel
    if callable(kernel):
        raise TypeError(f"{name} must be a built-in kernel (hmnumba.kernels.laplace, ...) or a "
                        f"numba @njit function k(x, y) -> float; got a plain Python callable "
                        f"{getattr(kernel, '__name__', kernel)!r}: decorate it with @numba.njit")
    raise TypeError(f"{name} must be a built-in kernel or a numba @njit function, "
                    f"got {type(kernel).__name__}")


def check_builtin_kernel(kernel, name="kernel"):
    """A built-in :class:`KernelFunction` (formats that dispatch on its code)."""
    from hmnumba.kernels.codes import KERNEL_CODES   # integer codes only: no cycle
    if not (callable(getattr(kernel, "source", None))
            and isinstance(getattr(kernel, "name", None), str)
            and KERNEL_CODES.get(kernel.name) == getattr(kernel, "code", None)):
        raise TypeError(f"{name} must be a built-in kernel (hmnumba.kernels.laplace, gaussian, "
                        f"exponential, matern32) for the H^2 format, got "
                        f"{getattr(kernel, '__name__', type(kernel).__name__)!r}")
    return kernel


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


def check_path(path, name="path"):
    """A file system path as ``str``: a ``str``, ``bytes`` (decoded with the
    file system encoding) or ``os.PathLike``; not empty, no NUL character."""
    import os
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"{name} must be a str, bytes or os.PathLike, got {type(path).__name__}")
    path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not isinstance(path, str):
        raise TypeError(f"{name} must name a file, got os.fspath() of type "
                        f"{type(path).__name__}")
    if path == "":
        raise ValueError(f"{name} must not be empty")
    if "\x00" in path:
        raise ValueError(f"{name} must not contain a NUL character, got {path!r}")
    return path


def check_member_name(name, what="archive member"):
    """A name that may become one file inside an output directory: not
    empty, no path separator, not ``.`` or ``..``, not absolute, no NUL or
    other control character. Returns it unchanged; raises ``ValueError``
    naming it otherwise (the CLI never turns it into a path outside ``-o``)."""
    import os
    if not isinstance(name, str):
        raise TypeError(f"{what} name must be a str, got {type(name).__name__}")
    seps = {"/", "\\", os.sep} | ({os.altsep} if os.altsep else set())
    reason = None
    if name in ("", ".", ".."):
        reason = "it is empty, '.' or '..'"
    elif any(s in name for s in seps) or os.path.isabs(name):
        reason = "it contains a path separator or is absolute"
    elif any(ord(c) < 32 or ord(c) == 127 for c in name):
        reason = "it contains a control character"
    elif ":" in name and os.name == "nt":   # pragma: no cover - drive letters, streams
        reason = "it contains ':'"
    if reason:
        raise ValueError(f"{what} name {name!r} cannot be used as a file name: {reason}; "
                         f"rename the array")
    return name


PACKED_INT_ARRAYS = ("row_perm", "col_perm", "row_start", "row_stop", "col_start", "col_stop",
                     "rank", "offset")
# |error_exp| of an HMatrix: 2**error_exp scales errors and norms of inputs from
# the smallest subnormal to the largest double (see HMatrix.from_dense).
MAX_ERROR_EXP = 1100


def check_packed_arrays(shape, arrays, symmetric, error_exp):
    """The packed arrays of an H-matrix given from outside (the storage
    value of :mod:`hmnumba.storage`, ``HMatrix.from_arrays``).

    Coerces the index arrays to C-contiguous int64, ``data`` to a 1-D
    float32/float64 array, ``block_err2`` and ``block_norm2`` to float64,
    and checks the scalars. Returns ``(shape, arrays, symmetric,
    error_exp)``; raises ``TypeError``/``ValueError`` naming the argument
    otherwise. The caller then runs the structural checks of
    :func:`hmnumba.load` (:func:`hmnumba.blocks.check_structure`): nothing a
    numba kernel reads escapes them.
    """
    if (not isinstance(shape, (tuple, list)) or len(shape) != 2
            or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool)
                       for s in shape)):
        raise TypeError(f"shape must be a pair of integers (m, n), got {shape!r}")
    m, n = int(shape[0]), int(shape[1])
    if not (1 <= m <= 2**30 and 1 <= n <= 2**30):
        raise ValueError(f"shape must have 1 <= m, n <= 2**30, got {(m, n)}")
    out = {}
    for key in PACKED_INT_ARRAYS:
        arr = _as_array(arrays[key], key)
        if arr.ndim != 1:
            raise ValueError(f"{key} must be 1-D, got shape {arr.shape}")
        if arr.size and arr.dtype.kind not in "iu":
            raise TypeError(f"{key} must be an integer array, got dtype {arr.dtype}")
        if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
            raise ValueError(f"{key} has entries beyond the int64 range")
        out[key] = np.ascontiguousarray(arr, dtype=np.int64)
    out["data"] = check_float_array(arrays["data"], "data", ndim=1, allow_empty=True)
    for key in ("block_err2", "block_norm2"):
        out[key] = np.ascontiguousarray(
            check_float_array(arrays[key], key, ndim=1, allow_empty=True), dtype=np.float64)
    if not isinstance(symmetric, (bool, np.bool_)):
        raise TypeError(f"symmetric must be True or False, got {type(symmetric).__name__}")
    if isinstance(error_exp, bool) or not isinstance(error_exp, numbers.Integral):
        raise TypeError(f"error_exp must be an integer, got {type(error_exp).__name__}")
    if abs(int(error_exp)) > MAX_ERROR_EXP:
        raise ValueError(f"error_exp must satisfy |error_exp| <= {MAX_ERROR_EXP}, got {error_exp}")
    return (m, n), out, bool(symmetric), int(error_exp)


def check_client(client, name="client"):
    """A ``dask.distributed.Client`` (the object that runs the parts)."""
    try:
        from distributed import Client
    except ImportError:  # pragma: no cover - checked by the caller first
        Client = ()
    if not isinstance(client, Client):
        raise TypeError(f"{name} must be a dask.distributed.Client (e.g. Client(LocalCluster())), "
                        f"got {type(client).__name__}")
    return client


# Coordinates of kernel points: squared distances of points within this
# magnitude stay finite (1e150**2 * dim is far below 1.8e308).
MAX_COORDINATE = 1e150
# ... and a point set spanning less than this would have all its squared
# distances underflow (1/r of points 1e-200 apart would read 0).
MIN_EXTENT = 1e-140


def check_point_range(points, name="points"):
    """Kernel points whose squared distances are representable: every
    coordinate of magnitude at most ``MAX_COORDINATE`` (beyond, ``|x - y|**2``
    overflows and the kernels return 0 or NaN instead of their value), and
    a set of distinct points spanning at least ``MIN_EXTENT`` (below, every
    ``|x - y|**2`` underflows). Two points closer than about 1e-154 within a
    larger set still count as coincident."""
    amax = float(np.max(np.abs(points))) if points.size else 0.0
    if amax > MAX_COORDINATE:
        raise ValueError(f"{name} has coordinates up to {amax:.3g} in magnitude; squared "
                         f"distances would overflow float64 (at most {MAX_COORDINATE:g}): "
                         f"rescale the points (and the kernel's length scale)")
    extent = float(np.max(np.ptp(points, axis=0))) if points.size else 0.0
    if 0.0 < extent < MIN_EXTENT:
        raise ValueError(f"{name} span only {extent:.3g}; squared distances would underflow "
                         f"float64 (the points must span at least {MIN_EXTENT:g}): rescale "
                         f"the points (and the kernel's length scale)")
    return points
