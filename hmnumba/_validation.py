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


def check_symmetric(symmetric, name="symmetric", allow_none=False):
    """``symmetric`` as a bool (or None, where ``allow_none`` lets it mean
    "decide from the input"); anything but a bool is a TypeError."""
    if symmetric is None and allow_none:
        return None
    if not isinstance(symmetric, (bool, np.bool_)):
        allowed = "True, False or None" if allow_none else "True or False"
        raise TypeError(f"{name} must be {allowed}, got {type(symmetric).__name__}")
    return bool(symmetric)


def check_symmetric_array(symmetric, A, name="A"):
    """``symmetric`` of a ``from_dense`` (a bool); True needs ``A`` square
    and exactly equal to its transpose."""
    symmetric = check_symmetric(symmetric)
    if symmetric and (A.shape[0] != A.shape[1] or not np.array_equal(A, A.T)):
        raise ValueError(f"symmetric=True needs {name} equal to its transpose, got a "
                         f"{A.shape[0]} x {A.shape[1]} array that is not")
    return symmetric


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


# ---------------------------------------------------------------------------
# H^2 arrays read from a file (hmnumba.io): every index a numba kernel reads
# ---------------------------------------------------------------------------


def _exclusive_cumsum(sizes):
    out = np.zeros(sizes.size + 1, np.int64)
    np.cumsum(sizes, out=out[1:])
    return out


def _check_pointer(ptr, length, total, name, where):
    """``ptr`` of shape ``(length,)`` rising from 0 (to ``total`` if given)."""
    if ptr.shape != (length,) or ptr[0] != 0 or np.any(np.diff(ptr) < 0) or (
            total is not None and ptr[-1] != total):
        end = "" if total is None else f" to {total}"
        raise ValueError(f"{where}: {name} must have shape ({length},) and rise from 0{end}")


def _check_in_range(idx, lo, hi, name, where):
    if idx.size and (idx.min() < lo or idx.max() >= hi):
        raise ValueError(f"{where}: {name} must lie in [{lo}, {hi})")


def _check_finite(arrays, names, where):
    for name in names:
        if not np.all(np.isfinite(arrays[name])):
            raise ValueError(f"{where}: {name} contains NaN or infinity")


def check_h2_tree(a, prefix, n, where):
    """A breadth-first cluster tree of ``n`` indices: ``{prefix}perm``,
    ``children``, ``start``, ``stop``, ``level_ptr`` (int64). Every inner
    node has two consecutive children after it that split its range, every
    node but the root has exactly one parent, and ``level_ptr`` are the
    node ranges of the levels. Returns the number of nodes."""
    perm, ch = a[prefix + "perm"], a[prefix + "children"]
    st, sp, lp = a[prefix + "start"], a[prefix + "stop"], a[prefix + "level_ptr"]
    if perm.shape != (n,) or not np.array_equal(np.sort(perm), np.arange(n)):
        raise ValueError(f"{where}: {prefix}perm must be a permutation of range({n})")
    nn = st.size
    if nn < 1 or st.shape != (nn,) or sp.shape != (nn,) or ch.shape != (nn, 2):
        raise ValueError(f"{where}: {prefix}start, {prefix}stop must have shape (n_nodes,) "
                         f"and {prefix}children (n_nodes, 2), n_nodes >= 1")
    if st[0] != 0 or sp[0] != n or np.any(st >= sp) or st.min() < 0 or sp.max() > n:
        raise ValueError(f"{where}: node ranges [{prefix}start, {prefix}stop) must be non-empty "
                         f"and inside [0, {n}), the root covering all of it")
    leaf = ch[:, 0] < 0
    t = np.flatnonzero(~leaf)
    c0, c1 = ch[t, 0], ch[t, 1]
    if (np.any(ch[leaf] != -1) or np.any(c0 <= t) or np.any(c1 != c0 + 1)
            or np.any(c1 >= nn)):
        raise ValueError(f"{where}: {prefix}children must be -1 (leaf) or two consecutive "
                         f"nodes after the parent, below {nn}")
    if np.any(st[c0] != st[t]) or np.any(sp[c0] != st[c1]) or np.any(sp[c1] != sp[t]):
        raise ValueError(f"{where}: the children of a node must split its range")
    counts = np.bincount(ch[t].ravel(), minlength=nn)
    if counts[0] != 0 or np.any(counts[1:] != 1):
        raise ValueError(f"{where}: every node but the root must have exactly one parent")
    depth = np.zeros(nn, np.int64)
    for u, v in zip(t.tolist(), c0.tolist()):      # parents come first
        depth[v] = depth[v + 1] = depth[u] + 1
    if np.any(np.diff(depth) < 0) or not np.array_equal(
            lp, np.searchsorted(depth, np.arange(depth.max() + 2))):
        raise ValueError(f"{where}: nodes must be breadth-first and {prefix}level_ptr their "
                         f"level ranges")
    return nn


def check_h2_kernel_arrays(a, where):
    """The arrays of a symmetric kernel :class:`~hmnumba.H2Matrix` (int64
    indices, as :func:`hmnumba.io.load` makes them; scalars ``n``, ``dim``
    and ``mode`` already checked): tree, nested bases (pivots, transfer
    sizes), coupling and near-field lists with exactly the offsets their
    sizes give, point coordinates (on-the-fly). Raises ``ValueError``
    naming ``where`` and the array."""
    n, dim = a["n"], a["dim"]
    nn = check_h2_tree(a, "", n, where)
    vp, pp = a["vec_ptr"], a["piv_ptr"]
    _check_pointer(vp, nn + 1, None, "vec_ptr", where)
    _check_pointer(pp, nn + 1, a["piv"].size, "piv_ptr", where)
    rank, m = np.diff(vp), np.diff(pp)
    ch, size = a["children"], a["stop"] - a["start"]
    inner = ch[:, 0] >= 0
    operand = size.copy()
    operand[inner] = rank[ch[inner, 0]] + rank[ch[inner, 1]]
    if np.any(np.where(rank > 0, m != operand, m != 0)) or np.any(rank > m):
        raise ValueError(f"{where}: piv_ptr must give each node of rank k > 0 its leaf size or "
                         f"its children's ranks (>= k), and 0 to a node of rank 0")
    seg = np.repeat(np.arange(nn), m)
    local = np.arange(pp[-1]) - pp[:-1][seg]
    piv = a["piv"]
    if piv.size and (piv.min() < 0 or np.any(piv >= m[seg])
                     or not np.array_equal(piv[np.lexsort((piv, seg))], local)):
        raise ValueError(f"{where}: piv must hold a permutation of range(m) for each node")
    if not np.array_equal(a["T_ptr"], _exclusive_cumsum(np.where(rank > 0, rank * (m - rank), 0))) \
            or a["T"].size != a["T_ptr"][-1]:
        raise ValueError(f"{where}: T_ptr must be the offsets of the k x (m - k) transfer "
                         f"matrices and T hold them all")
    for t, s, upper in (("cb_t", "cb_s", True), ("nb_t", "nb_s", False),
                        ("lb_t", "lb_s", True)):
        if t not in a:
            continue
        bt, bs = a[t], a[s]
        if bt.shape != bs.shape or bt.ndim != 1:
            raise ValueError(f"{where}: {t} and {s} must be 1-D of equal length")
        _check_in_range(bt, 0, nn, t, where)
        _check_in_range(bs, 0, nn, s, where)
        if np.any(bt >= bs if upper else bt > bs):
            raise ValueError(f"{where}: symmetric storage needs {t} {'<' if upper else '<='} {s}")
    if np.any(inner[a["nb_t"]]) or np.any(inner[a["nb_s"]]):
        raise ValueError(f"{where}: near-field blocks must pair two leaves")
    floats = ["T"]
    if a["mode"] == "stored":
        for off, data, sizes in (
                ("c_off", "B", rank[a["cb_t"]] * rank[a["cb_s"]]),
                ("n_off", "D", size[a["nb_t"]] * size[a["nb_s"]])):
            ends = _exclusive_cumsum(sizes)
            if not np.array_equal(a[off], ends[:-1]) or a[data].size != ends[-1]:
                raise ValueError(f"{where}: {off} must be the offsets of the blocks in {data} "
                                 f"({ends[-1]} numbers)")
        lr = a["l_rank"]
        if lr.shape != a["lb_t"].shape or (lr.size and lr.min() < 0):
            raise ValueError(f"{where}: l_rank must hold one rank >= 0 per low-rank coupling")
        ends = _exclusive_cumsum(lr * (rank[a["lb_t"]] + rank[a["lb_s"]]))
        if not np.array_equal(a["l_off"], ends[:-1]) or a["L"].size != ends[-1]:
            raise ValueError(f"{where}: l_off must be the offsets of the factors in L "
                             f"({ends[-1]} numbers)")
        floats += ["B", "D", "L"]
    else:
        if a["xyz"].shape != (dim, n) or a["skel_xyz"].shape != (dim, vp[-1]):
            raise ValueError(f"{where}: xyz must have shape ({dim}, {n}) and skel_xyz "
                             f"({dim}, {vp[-1]})")
        floats += ["xyz", "skel_xyz"]
    _check_finite(a, floats, where)


def _same_blocks(first, second):
    """True when two lists of blocks ``(t, s, off)`` (three arrays each) hold
    the same blocks, in any order."""
    if first[0].size != second[0].size:
        return False
    o1, o2 = (np.lexsort((s, t, off)) for t, s, off in (first, second))
    return all(np.array_equal(x[o1], y[o2]) for x, y in zip(first, second))


def _check_packed(data, off, size, name, where):
    """Blocks of ``size`` numbers at ``off`` lie inside ``{name}_data``
    without overlap (sorted by offset, an empty block before a non-empty one
    at the same offset: it overlaps nothing)."""
    order = np.lexsort((size, off))
    off, size = off[order], size[order]
    if off.size and (off[0] < 0 or off[-1] + size[-1] > data.size
                     or np.any(off[:-1] + size[:-1] > off[1:])):
        raise ValueError(f"{where}: the blocks of {name}_data must lie inside it "
                         f"({data.size} numbers) without overlap")


def _check_h2_lists(a, name, sizes, n_out, n_in, where):
    """The CSR lists of one block kind of a general H^2 matrix, forward
    (``{name}_ptr, _other, _off``) and transposed (``_tptr, _tother,
    _toff``): the same blocks, each inside ``{name}_data`` without overlap.
    ``sizes(t, s)`` gives the number of entries of block ``(t, s)``."""
    data = a[name + "_data"]
    n_blocks = a[name + "_other"].size
    triples = []
    for ptr, other, off, n_key, n_other in (("_ptr", "_other", "_off", n_out, n_in),
                                            ("_tptr", "_tother", "_toff", n_in, n_out)):
        p, o, f = a[name + ptr], a[name + other], a[name + off]
        if o.shape != (n_blocks,) or f.shape != (n_blocks,):
            raise ValueError(f"{where}: {name}{other} and {name}{off} must hold {n_blocks} blocks")
        _check_pointer(p, n_key + 1, n_blocks, name + ptr, where)
        _check_in_range(o, 0, n_other, name + other, where)
        key = np.repeat(np.arange(n_key), np.diff(p))
        triples.append((key, o, f) if ptr == "_ptr" else (o, key, f))
    if not _same_blocks(*triples):
        raise ValueError(f"{where}: {name}_ptr and {name}_tptr must list the same blocks")
    t, s, off = triples[0]
    _check_packed(data, off, sizes(t, s), name, where)


def _check_h2_bases(a, p, size, where):
    """The cluster tree ``{p}...`` of ``size`` indices and its nested bases
    (each node's matrix at exactly the offset its size gives). Returns
    ``(n_nodes, ranks)``."""
    nn = check_h2_tree(a, p, size, where)
    vp = a[p + "vp"]
    _check_pointer(vp, nn + 1, None, p + "vp", where)
    k = np.diff(vp)
    ch = a[p + "children"]
    inner = ch[:, 0] >= 0
    rows = a[p + "stop"] - a[p + "start"]
    rows[inner] = k[ch[inner, 0]] + k[ch[inner, 1]]
    ends = _exclusive_cumsum(rows * k)
    if not np.array_equal(a[p + "boff"], ends[:-1]) or a[p + "basis"].size != ends[-1]:
        raise ValueError(f"{where}: {p}boff must be the offsets of the leaf bases and "
                         f"transfer matrices in {p}basis ({ends[-1]} numbers)")
    return nn, k


def check_h2_general_arrays(a, where):
    """The arrays of a general H^2 matrix (:func:`hmnumba.h2dense`), int64
    indices, ``shape`` already checked: both trees, the nested bases (each
    node's matrix at exactly the offset its size gives), couplings and near
    field. Raises ``ValueError`` naming ``where`` and the array."""
    m, n = a["shape"]
    nodes, ranks = {}, {}
    for side, size in (("row", m), ("col", n)):
        nodes[side], ranks[side] = _check_h2_bases(a, side + "_", size, where)
    _check_h2_lists(a, "c", lambda t, s: ranks["row"][t] * ranks["col"][s],
                    nodes["row"], nodes["col"], where)
    rows = a["row_stop"] - a["row_start"]
    cols = a["col_stop"] - a["col_start"]
    _check_h2_lists(a, "n", lambda t, s: rows[t] * cols[s], nodes["row"], nodes["col"], where)
    t = np.repeat(np.arange(nodes["row"]), np.diff(a["n_ptr"]))
    if np.any(a["row_children"][t, 0] >= 0) or np.any(a["col_children"][a["n_other"], 0] >= 0):
        raise ValueError(f"{where}: near-field blocks must pair two leaves (each leaf's rows "
                         f"are written by one thread)")
    _check_finite(a, ("row_basis", "col_basis", "c_data", "n_data"), where)


def _check_h2_flip_lists(a, name, sizes, n_nodes, where):
    """The CSR list of one block kind of a symmetric H^2 matrix
    (``{name}_ptr, _other, _off, _flip``, keyed by output node): every
    flipped entry ``(s, t, off)`` mirrors exactly one unflipped entry ``(t,
    s, off)`` with ``t != s``, every unflipped entry has ``start[t] <=
    start[s]``, and the unflipped blocks lie inside ``{name}_data`` without
    overlap (a flipped entry reads its mirror's numbers). ``sizes(t, s)``
    gives the number of entries of block ``(t, s)``. Returns the keys of
    the entries."""
    data = a[name + "_data"]
    p, o, f, fl = (a[name + k] for k in ("_ptr", "_other", "_off", "_flip"))
    n_entries = o.size
    if o.shape != (n_entries,) or f.shape != (n_entries,) or fl.shape != (n_entries,):
        raise ValueError(f"{where}: {name}_other, {name}_off and {name}_flip must be 1-D and "
                         f"hold one value per entry ({n_entries})")
    _check_pointer(p, n_nodes + 1, n_entries, name + "_ptr", where)
    _check_in_range(o, 0, n_nodes, name + "_other", where)
    if np.any((fl != 0) & (fl != 1)):
        raise ValueError(f"{where}: {name}_flip must hold 0 or 1")
    key = np.repeat(np.arange(n_nodes), np.diff(p))
    up = fl == 0
    t, s, off = key[up], o[up], f[up]
    start = a["row_start"]
    if np.any(start[t] > start[s]):
        raise ValueError(f"{where}: an unflipped entry of {name}_ptr must have row_start[key] "
                         f"<= row_start[{name}_other] (the mirrored block is flipped)")
    # mirrors: the off-diagonal unflipped entries and the flipped ones read
    # back as (t, s, off), the same multiset
    mirror = t != s
    if not _same_blocks((t[mirror], s[mirror], off[mirror]), (o[~up], key[~up], f[~up])):
        raise ValueError(f"{where}: every flipped entry of {name}_flip must mirror exactly one "
                         f"unflipped entry (other node, same {name}_off) off the diagonal, "
                         f"and every such entry must have its flipped mirror")
    _check_packed(data, off, sizes(t, s), name, where)
    return key


def check_h2_symmetric_arrays(a, where):
    """The arrays of a symmetric general H^2 matrix (:func:`hmnumba.h2dense`,
    one tree and one set of bases, ``row_*``; each mirrored pair of blocks
    stored once and listed under both nodes, the second entry flipped),
    int64 indices, ``shape`` already checked as a pair of sizes. Raises
    ``ValueError`` naming ``where`` and the array.

    Examples
    --------
    >>> import numpy as np
    >>> a = {"shape": (2, 2), "row_perm": np.arange(2), "row_level_ptr": np.array([0, 1]),
    ...      "row_children": -np.ones((1, 2), np.int64), "row_start": np.array([0]),
    ...      "row_stop": np.array([2]), "row_vp": np.array([0, 0]),
    ...      "row_boff": np.array([0]), "row_basis": np.zeros(0)}
    >>> for b in ("c", "n"):
    ...     a.update({b + "_ptr": np.array([0, 0]), b + "_other": np.zeros(0, np.int64),
    ...               b + "_off": np.zeros(0, np.int64), b + "_flip": np.zeros(0, np.int64),
    ...               b + "_data": np.zeros(0)})
    >>> a.update(n_ptr=np.array([0, 1]), n_other=np.array([0]), n_off=np.array([0]),
    ...          n_flip=np.array([0]), n_data=np.ones(4))
    >>> check_h2_symmetric_arrays(a, "demo")
    >>> a["n_flip"][0] = 1              # the diagonal block has no mirror
    >>> try:
    ...     check_h2_symmetric_arrays(a, "demo")
    ... except ValueError as exc:
    ...     print(str(exc).split(" (")[0])
    demo: every flipped entry of n_flip must mirror exactly one unflipped entry
    """
    m, n = a["shape"]
    if m != n:
        raise ValueError(f"{where}: a symmetric H^2 matrix must be square, got shape {(m, n)}")
    nn, k = _check_h2_bases(a, "row_", m, where)
    _check_h2_flip_lists(a, "c", lambda t, s: k[t] * k[s], nn, where)
    size = a["row_stop"] - a["row_start"]
    key = _check_h2_flip_lists(a, "n", lambda t, s: size[t] * size[s], nn, where)
    leaf = a["row_children"][:, 0] < 0
    if not (np.all(leaf[key]) and np.all(leaf[a["n_other"]])):
        raise ValueError(f"{where}: near-field blocks must pair two leaves (each leaf's rows "
                         f"are written by one thread)")
    _check_finite(a, ("row_basis", "c_data", "n_data"), where)


def check_h2_compressor_options(factor_dtype, outliers):
    """Options of ``HMatrixCompressor(format="h2")``: no low-precision
    factors, no sparse outliers."""
    if factor_dtype is not None:
        raise ValueError(f"factor_dtype must be None with format='h2', got {factor_dtype!r}")
    if outliers is not None:
        raise ValueError(f"outliers must be None with format='h2', got {outliers!r}")
