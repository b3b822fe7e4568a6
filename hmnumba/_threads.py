"""One BLAS thread around numba parallel regions, cheaply.

numba's ``prange`` threads call BLAS (``np.dot``, LAPACK) inside parallel
loops; an OpenBLAS that also spawns its own threads there oversubscribes the
cores, and numpy's BLAS run right after a numba parallel region was measured
~20x slower. So every product and build runs under a limit of one BLAS thread.

``threadpoolctl.threadpool_limits()`` re-scans the loaded libraries on every
call (~3 ms measured), which costs more than a small product; one
``ThreadpoolController``, created on first use (when numpy's and SciPy's BLAS
are loaded), is reused instead.
"""
from threadpoolctl import ThreadpoolController

_CONTROLLER = []


def one_blas_thread():
    """Context manager: BLAS limited to one thread inside the ``with`` block.

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba._threads import one_blas_thread
    >>> with one_blas_thread():
    ...     float(np.ones(3) @ np.ones(3))
    3.0
    """
    if not _CONTROLLER:
        _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0].limit(limits=1, user_api="blas")
