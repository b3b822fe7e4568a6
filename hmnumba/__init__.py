"""hmnumba: adaptive, error-bounded hierarchical matrices with Numba.

>>> from hmnumba import HMatrix
>>> from hmnumba.kernels import laplace
"""
from hmnumba import kernels
from hmnumba.compressor import HMatrixCompressor
from hmnumba.hmatrix import HMatrix

__version__ = "0.1.0"

__all__ = ["HMatrix", "HMatrixCompressor", "kernels", "__version__"]
