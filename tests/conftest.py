"""Shared pytest configuration.

``NUMBA_ENABLE_CUDASIM`` must be in the environment before numba is first
imported (numba reads its configuration once, at import), so it is set here,
at the very top of the first module pytest imports. ``setdefault`` lets a run
on a real GPU override it with ``NUMBA_ENABLE_CUDASIM=0``.

Hypothesis profiles (pick one with ``HYPOTHESIS_PROFILE=<name>``):

* ``default``: 25 examples per property, no deadline (JIT compilation makes the
  first example of a test slow, which is not a bug);
* ``ci``: the same budget, derandomized (a fixed sequence of examples, so CI is
  reproducible) and with no example database;
* ``thorough``: 200 examples, for a local soak before a release.
"""
import os

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import numba  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])

settings.register_profile("default", max_examples=25, **_COMMON)
settings.register_profile("ci", max_examples=25, derandomize=True, database=None,
                          print_blob=True, **_COMMON)
settings.register_profile("thorough", max_examples=200, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture
def single_threaded():
    """One numba thread and one BLAS thread for the test, both restored after.

    For tests of many tiny products (PINN layers, finite differences): on the
    shared 2-core test machine, under load, a two-thread numba ``prange``
    launch of such a product waited ~25 ms for its threads, against ~1 ms on
    one thread (measured on a [2, 48, 48, 48, 1] H-matrix network).
    """
    n = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        numba.set_num_threads(n)
