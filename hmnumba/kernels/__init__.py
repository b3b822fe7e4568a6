"""Numba kernels and built-in kernel functions.

Public names: the built-in kernels :data:`laplace`, :data:`gaussian`,
:data:`exponential`, :data:`matern32` (instances of :class:`KernelFunction`)
and :func:`assemble_dense`.
"""
from hmnumba.kernels.functions import (KernelFunction, exponential, gaussian, laplace,
                                       matern32)

__all__ = ["KernelFunction", "laplace", "gaussian", "exponential", "matern32",
           "assemble_dense"]


def assemble_dense(kernel, X, Y=None):
    """Assemble the dense kernel matrix ``K[i, j] = kernel(X[i], Y[j])`` with numba.

    This is the reference that H-matrix construction is timed against.

    Parameters
    ----------
    kernel : KernelFunction or numba ``@njit`` function ``k(x, y) -> float``
    X : ndarray of shape (m, d)
    Y : ndarray of shape (n, d), default=X

    Returns
    -------
    ndarray of shape (m, n), float64

    Raises
    ------
    ValueError
        The kernel gave NaN or infinity; the message names the first such
        pair ``(i, j)``. A user kernel that raised re-raises its exception
        (with a note naming the pair).

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba.kernels import assemble_dense, laplace
    >>> assemble_dense(laplace, np.array([[0.0], [4.0]]))
    array([[0.  , 0.25],
           [0.25, 0.  ]])
    """
    import numpy as np

    from hmnumba._validation import check_kernel, check_points
    from hmnumba.kernels import cpu
    X = check_points(X, "X")
    Y = X if Y is None else check_points(Y, "Y")
    if X.shape[1] != Y.shape[1]:
        raise ValueError(f"X and Y must have the same dimension, got {X.shape[1]} and {Y.shape[1]}")
    kern = check_kernel(kernel, "kernel")
    out = np.empty((X.shape[0], Y.shape[0]))
    K = cpu.assemble_dense(kern.source(X, Y), X.shape[0], Y.shape[0], out)
    bad = np.flatnonzero(~np.isfinite(K))
    if bad.size:   # NaN, infinity, or a user kernel that raised (see UserKernel)
        i, j = divmod(int(bad[0]), Y.shape[0])
        kern.raise_bad_value(X, Y, i, j, float(K[i, j]))
    return K
