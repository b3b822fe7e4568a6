"""hmnumba: adaptive, error-bounded hierarchical matrices with Numba.

>>> from hmnumba import HMatrix
>>> from hmnumba.kernels import laplace
"""
from hmnumba import kernels
from hmnumba.compressor import HMatrixCompressor
from hmnumba.hmatrix import HMatrix
from hmnumba.io import load

__version__ = "0.1.0"

__all__ = ["HMatrix", "HMatrixCompressor", "kernels", "load", "__version__"]
