"""Every thread limit of hmnumba, in one place.

* :func:`limit_threads` sets numba's thread count and BLAS's, and restores
  both afterwards: the PINN training (``n_jobs``, ``blas_threads``), the
  Dask parts (numba's share of a host's cores) and the experiments use it;
* :func:`one_blas_thread`: BLAS at one thread around numba parallel regions
  (every product and build);
* :func:`effective_n_jobs`: the one meaning of ``n_jobs`` across the API,
  joblib's: ``None`` leaves the default (the build runs here, on all numba
  threads), ``k > 0`` is ``k`` workers, ``-1`` all cores, ``-2`` all but one;
* :func:`serial_if_unsafe`: products take turns under numba's ``workqueue``
  layer.

Why one BLAS thread
-------------------

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
import os
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


def _blas_limit(n):
    if not _CONTROLLER:
        _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0].limit(limits=n, user_api="blas")


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
    return _blas_limit(1)


def effective_n_jobs(n_jobs):
    """The number of workers ``n_jobs`` asks for (joblib's convention).

    ``None`` means numba's default thread count; ``k > 0`` means ``k``;
    ``-1`` all cores, ``-2`` all but one, and so on (at least one). Callers
    validate ``n_jobs`` first (:func:`hmnumba._validation.check_n_jobs`).

    Examples
    --------
    >>> import os
    >>> from hmnumba._threads import effective_n_jobs
    >>> effective_n_jobs(3), effective_n_jobs(-1) == (os.cpu_count() or 1)
    (3, True)
    """
    if n_jobs is None:
        import numba
        return int(numba.config.NUMBA_NUM_THREADS)
    if n_jobs < 0:
        return max((os.cpu_count() or 1) + 1 + int(n_jobs), 1)
    return int(n_jobs)


@contextlib.contextmanager
def limit_threads(numba_threads=None, blas_threads=None):
    """Context manager: numba's threads and BLAS's threads limited inside the
    ``with`` block, both restored afterwards; ``None`` leaves one alone.

    ``numba_threads`` is clipped to ``[1, NUMBA_NUM_THREADS]`` (numba cannot
    start more threads than it launched with). The numba setting is per
    Python thread, as numba keeps it.

    Examples
    --------
    >>> import numba
    >>> from hmnumba._threads import limit_threads
    >>> before = numba.get_num_threads()
    >>> with limit_threads(numba_threads=1, blas_threads=1):
    ...     numba.get_num_threads()
    1
    >>> numba.get_num_threads() == before
    True
    """
    import numba
    with contextlib.ExitStack() as stack:
        if blas_threads is not None:
            stack.enter_context(_blas_limit(int(blas_threads)))
        if numba_threads is not None:
            old = numba.get_num_threads()
            numba.set_num_threads(min(max(int(numba_threads), 1),
                                      numba.config.NUMBA_NUM_THREADS))
            stack.callback(numba.set_num_threads, old)
        yield
