"""PINN tests run with one numba thread and one BLAS thread.

Their products are tiny (widths 10-128, a few hundred samples): on the shared
2-core test machine, under load, a two-thread numba ``prange`` launch of such a
product waited ~25 ms for its threads, against ~1 ms on one thread (measured on
a [2, 48, 48, 48, 1] H-matrix network). Both settings are restored afterwards.
"""
import numba
import pytest
from threadpoolctl import threadpool_limits


@pytest.fixture(autouse=True)
def _single_threaded():
    n = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        numba.set_num_threads(n)
