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
import contextlib
import threading

from threadpoolctl import ThreadpoolController

_CONTROLLER = []
# numba's "workqueue" threading layer aborts the process when two threads
# run parallel code at once; under it, products take turns (serial_if_unsafe).
_WORKQUEUE_LOCK = threading.RLock()


def _layer_is_unsafe():
    """True under numba's workqueue layer, and before numba has chosen a
    layer (its first parallel call picks workqueue when TBB and OpenMP are
    missing); ``tbb`` and ``omp`` take concurrent calls."""
    import numba
    try:
        return numba.threading_layer() == "workqueue"
    except ValueError:   # no parallel region has run yet
        return True


def serial_if_unsafe():
    """Context manager: a process-wide lock under numba's ``workqueue``
    threading layer (not thread-safe), nothing under ``tbb`` or ``omp``.

    The products of :class:`~hmnumba.HMatrix` run inside it, so concurrent
    products from several Python threads take turns instead of aborting
    the process (see the Safety page of the documentation). Builds are not
    serialised: callers that build from several threads need a thread-safe
    layer or their own lock.

    Examples
    --------
    >>> from hmnumba._threads import serial_if_unsafe
    >>> with serial_if_unsafe():
    ...     pass
    """
    return _WORKQUEUE_LOCK if _layer_is_unsafe() else contextlib.nullcontext()


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
