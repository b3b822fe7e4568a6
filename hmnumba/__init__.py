"""hmnumba: adaptive, error-bounded hierarchical matrices with Numba.

Builds log their start and end (block counts, seconds) to the ``"hmnumba"``
logger; ``logging.basicConfig(level=logging.INFO)`` shows them.

>>> from hmnumba import HMatrix
>>> from hmnumba.kernels import laplace
"""
import logging

from hmnumba import kernels
from hmnumba._version import __version__
from hmnumba.compressor import HMatrixCompressor
from hmnumba.exceptions import CompressionWarning
from hmnumba.h2matrix import H2Matrix
from hmnumba.hmatrix import HMatrix
from hmnumba.loading import load

__all__ = ["CompressionWarning", "H2Matrix", "HMatrix", "HMatrixCompressor", "kernels", "load",
           "__version__"]

# A library leaves the logging configuration to the application.
logging.getLogger(__name__).addHandler(logging.NullHandler())
