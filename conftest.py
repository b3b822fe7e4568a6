"""Root pytest configuration.

* The docstring examples of the package run as doctests
  (``--doctest-modules`` over ``hmnumba/``); the ``python -m hmnumba`` entry
  point is not a module to import.
* numba's CUDA simulator is switched on before numba is first imported, so
  CUDA kernels run (on the CPU) in the test suite without a GPU.
"""
import os

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

collect_ignore = ["hmnumba/__main__.py"]
