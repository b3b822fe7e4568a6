"""Warnings and errors of hmnumba (as :mod:`sklearn.exceptions` is for scikit-learn).

Filter them with the :mod:`warnings` module, e.g.
``warnings.simplefilter("ignore", hmnumba.CompressionWarning)``.
"""

__all__ = ["CompressionWarning"]


class CompressionWarning(UserWarning):
    """A compressed matrix stores more bytes than the dense array it replaces.

    Raised by :meth:`hmnumba.HMatrix.from_dense`,
    :meth:`hmnumba.HMatrix.from_kernel` and by the ``fit`` of every
    compressor (:class:`hmnumba.HMatrixCompressor` and the baselines of
    :mod:`hmnumba.baselines`) when ``compression_ratio < 1``: the error bound
    still holds, but keeping the dense array would save memory. A looser
    ``tol`` or a larger ``leaf_size`` usually helps; a random (incompressible)
    matrix cannot be compressed at all.

    Examples
    --------
    >>> import warnings
    >>> import numpy as np
    >>> from hmnumba import CompressionWarning, HMatrix
    >>> noise = np.random.default_rng(0).standard_normal((64, 64))
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     H = HMatrix.from_dense(noise, tol=1e-6)
    >>> H.compression_ratio < 1, [w.category.__name__ for w in caught]
    (True, ['CompressionWarning'])
    """
