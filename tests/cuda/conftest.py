"""Setup of the CUDA tests.

They run on numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, set here and
in the root ``conftest.py`` before numba is imported), which executes every
CUDA thread as a Python thread: problems are a few hundred points and the
kernels use thread blocks of 8 (``hmnumba.kernels.cuda.THREADS_PER_BLOCK``
under the simulator). On a machine with a GPU, run them on it with
``NUMBA_ENABLE_CUDASIM=0 pytest tests/cuda``.

The simulator's block manager polls its threads while holding the GIL, so
every ``cuda.syncthreads()`` costs a few thread switches: a short switch
interval (restored afterwards) makes the reductions here about ten times
faster.
"""
import os
import sys

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import pytest  # noqa: E402

from hmnumba.backend import gpu_available, simulator_enabled  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if simulator_enabled() or gpu_available():
        return
    skip = pytest.mark.skip(reason="no CUDA GPU and NUMBA_ENABLE_CUDASIM is off")
    for item in items:
        if "tests/cuda" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def _fast_simulator_switching():
    before = sys.getswitchinterval()
    if simulator_enabled():
        sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(before)
