"""Setup of the CUDA tests.

They run on numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, set here and
in the root ``conftest.py`` before numba is imported), which executes every
CUDA thread as a Python thread: problems are a few hundred points and the
kernels use thread blocks of 8 (``hmnumba.kernels.common_cuda.THREADS_PER_BLOCK``
under the simulator). On a machine with a GPU, run them on it with
``NUMBA_ENABLE_CUDASIM=0 pytest tests/cuda``.

The simulator's block manager polls its threads while holding the GIL, so
every ``cuda.syncthreads()`` costs a few thread switches: a short switch
interval (restored afterwards) makes the reductions here about ten times
faster.

The short interval also exposes a race in the simulator itself:
``FakeCUDAShared.array`` looks up a block's shared array by call site and
creates it if missing, without a lock, so two threads of a block starting
together could each get their own "shared" array and a reduction silently
sums the wrong numbers (seen as rare wrong products). The fixture below
makes that look-up atomic (same semantics otherwise).
"""
import os
import sys
import threading

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


def _atomic_shared_arrays():
    """Patch the simulator's shared-array look-up to be thread-safe."""
    import numpy as np
    from numba.core import types
    from numba.cuda.simulator import kernelapi
    from numba.np import numpy_support

    original = kernelapi.FakeCUDAShared.array
    lock = threading.Lock()

    def array(self, shape, dtype):
        if shape == 0:                       # dynamic shared memory: no look-up
            return original(self, shape, dtype)
        if isinstance(dtype, types.Type):
            dtype = numpy_support.as_dtype(dtype)
        frame = sys._getframe(1)             # the kernel line, as the original keys it
        caller = (frame.f_code.co_filename, frame.f_lineno)
        with lock:
            res = self._allocations.get(caller)
            if res is None:
                res = np.empty(shape, dtype)
                self._allocations[caller] = res
        return res

    kernelapi.FakeCUDAShared.array = array
    return original


@pytest.fixture(autouse=True, scope="session")
def _fast_simulator_switching():
    before = sys.getswitchinterval()
    original = None
    if simulator_enabled():
        original = _atomic_shared_arrays()
        sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(before)
    if original is not None:
        from numba.cuda.simulator import kernelapi
        kernelapi.FakeCUDAShared.array = original
