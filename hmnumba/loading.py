"""``hmnumba.load``: open any ``.hmz`` file, an H-matrix or an H^2 matrix.

It sits above :mod:`hmnumba.hmatrix` and :mod:`hmnumba.h2matrix`, which
wrap the storage value that :func:`hmnumba.io.read` returns; ``io`` knows
neither class (imports run one way, downward).
"""
from __future__ import annotations

import os

from hmnumba.h2matrix import H2Matrix
from hmnumba.h2matrix import from_file as h2_from_file
from hmnumba.hmatrix import HMatrix
from hmnumba.io import read

__all__ = ["load"]


def load(path: str | os.PathLike) -> HMatrix | H2Matrix:
    """Read a matrix written by :meth:`HMatrix.save` or :meth:`H2Matrix.save`
    (or :func:`hmnumba.io.save` / :func:`hmnumba.io.save_h2`):
    :func:`hmnumba.io.read` validates the file and gives its storage value,
    which this wraps in an :class:`~hmnumba.HMatrix` or an
    :class:`~hmnumba.H2Matrix`, whichever the file holds.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    HMatrix or H2Matrix
        With the saved ``tol``, ``norm`` and ``params`` (not the kernel of a
        :meth:`~HMatrix.from_kernel` matrix: ``estimate_error`` then needs ``A``).

    Raises
    ------
    FileNotFoundError, ValueError
        As :func:`hmnumba.io.read`: a missing, truncated, corrupted or
        inconsistent file.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from hmnumba import HMatrix, load
    >>> H = HMatrix.from_dense(np.add.outer(np.arange(50.0), np.arange(40.0)), tol=1e-8)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     H.save(os.path.join(tmp, "a.hmz"))
    ...     G = load(os.path.join(tmp, "a.hmz"))
    >>> type(G).__name__, G.shape, bool(np.array_equal(G.to_dense(), H.to_dense()))
    ('HMatrix', (50, 40), True)
    """
    storage, meta = read(path)
    if meta.get("format") == "h2":
        return h2_from_file(storage, meta)
    return HMatrix(storage, **meta)
