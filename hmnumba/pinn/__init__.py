"""Minimal physics-informed neural networks that consume compressed operators.

An MLP (:class:`PINN`) whose layers are dense, H-matrix
(:class:`HMatrixLayer`, products through ``HMatrix.matmat``/``rmatmat``) or
frozen baseline-compressed (:class:`CompressedLayer`); exact input
derivatives by forward propagation, exact parameter gradients by a
hand-written reverse pass; model problems with exact solutions; Adam and
L-BFGS training with compression-aware options (:func:`train`).

>>> from hmnumba.pinn import PINN, Poisson1D, train
"""
from hmnumba.pinn.layers import CompressedLayer, DenseLayer, HMatrixLayer
from hmnumba.pinn.network import PINN
from hmnumba.pinn.problems import Heat1D, Helmholtz2D, Poisson1D, Poisson2D, Problem
from hmnumba.pinn.train import Adam, train

__all__ = ["PINN", "DenseLayer", "HMatrixLayer", "CompressedLayer", "Problem", "Poisson1D",
           "Poisson2D", "Helmholtz2D", "Heat1D", "Adam", "train"]
