"""Backend selection: ``"cpu"``, ``"cuda"`` or ``"auto"``, decided in one place.

* ``"cpu"``: the numba ``@njit`` kernels (always available);
* ``"cuda"``: the numba ``@cuda.jit`` kernels of ``hmnumba.kernels.*_cuda``.
  It needs a CUDA GPU (``numba.cuda.is_available()``), or numba's CUDA
  simulator (environment variable ``NUMBA_ENABLE_CUDASIM=1`` set before numba
  is imported), which runs the same kernels on the CPU, slowly: that is how
  the test suite exercises them without a GPU;
* ``"auto"``: CUDA when a real GPU is present, the CPU otherwise. It never
  picks the simulator and never warns.
"""
from hmnumba._validation import check_backend

BACKENDS = ("cpu", "cuda", "auto")


def simulator_enabled():
    """True when numba's CUDA simulator is on (``NUMBA_ENABLE_CUDASIM=1``).

    Examples
    --------
    >>> import os
    >>> from hmnumba.backend import simulator_enabled
    >>> simulator_enabled() == (os.environ.get("NUMBA_ENABLE_CUDASIM") == "1")
    True
    """
    from numba.core import config
    return bool(config.ENABLE_CUDASIM)


def gpu_available():
    """True when a real CUDA GPU and driver are usable (never the simulator).

    Examples
    --------
    >>> from hmnumba.backend import gpu_available, resolve_backend
    >>> resolve_backend("auto") == ("cuda" if gpu_available() else "cpu")
    True
    """
    if simulator_enabled():
        return False
    try:
        from numba import cuda
        return bool(cuda.is_available())
    except Exception:  # pragma: no cover - broken CUDA installations
        return False


def resolve_backend(backend, name="backend"):
    """The backend that will run: ``"cpu"`` or ``"cuda"``.

    Parameters
    ----------
    backend : {"cpu", "cuda", "auto"}
    name : str, default="backend"
        Argument name used in error messages.

    Returns
    -------
    str
        ``"cpu"`` or ``"cuda"``.

    Raises
    ------
    ValueError
        ``backend`` is not one of the three names, or it is ``"cuda"`` and
        there is neither a GPU nor the simulator.

    Examples
    --------
    >>> from hmnumba.backend import resolve_backend
    >>> resolve_backend("cpu")
    'cpu'
    >>> resolve_backend("auto") in ("cpu", "cuda")
    True
    """
    backend = check_backend(backend, name)
    if backend == "cpu":
        return "cpu"
    if backend == "auto":
        return "cuda" if gpu_available() else "cpu"
    if simulator_enabled() or gpu_available():
        return "cuda"
    raise ValueError(f"{name}='cuda' but no CUDA GPU is available "
                     "(numba.cuda.is_available() is False); use backend='cpu' or "
                     "backend='auto', or set NUMBA_ENABLE_CUDASIM=1 before importing numba "
                     "to run the CUDA kernels on numba's (slow) simulator")
