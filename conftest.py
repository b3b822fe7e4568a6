"""Root pytest configuration.

* The docstring examples of the package run as doctests
  (``--doctest-modules`` over ``hmnumba/``); the ``python -m hmnumba`` entry
  point is not a module to import.
* numba's CUDA simulator is switched on before numba is first imported, so
  CUDA kernels run (on the CPU) in the test suite without a GPU.
"""
import os

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
# pytest has imported numba already (setup.cfg's filterwarnings names a numba
# warning class), so numba must re-read the environment; numba.cuda, which
# decides simulator or driver at its own import, comes later.
from numba.core import config  # noqa: E402

config.reload_config()

collect_ignore = ["hmnumba/__main__.py"]
