"""Integer codes and compile flags shared by the numba kernel files.

Nothing here is compiled: these are the constants that numba code and the
Python side agree on (a compiled function freezes them, which is why the
cache guard of :mod:`hmnumba.kernels` hashes this file with the others).

* built-in kernel codes (:data:`LAPLACE` ...), dispatched on by
  :func:`hmnumba.kernels.sources.kernel_of_distance2` and its CUDA twin,
  and the two other kinds of entry source (:data:`DENSE`, :data:`GRAM`):
  the first element of a source tuple (:mod:`hmnumba.kernels.sources`);
* block status codes of a compression round (:data:`STATUS_ACCEPTED`,
  :data:`STATUS_REFINE`, :data:`STATUS_RETRY`);
* low-rank method codes (:data:`METHOD_ACA`, :data:`METHOD_SVD`,
  :data:`METHOD_RSVD`);
* :data:`FASTMATH`, the restricted fast-math flags of the products and the
  entry reads.
"""
import numpy as np

# Built-in kernels k(x, y) = f(|x - y|^2) (hmnumba.kernel_functions).
LAPLACE = 0
GAUSSIAN = 1
EXPONENTIAL = 2
MATERN32 = 3
KERNEL_CODES = {"laplace": LAPLACE, "gaussian": GAUSSIAN, "exponential": EXPONENTIAL,
                "matern32": MATERN32}
SQRT3 = np.sqrt(3.0)

# Entry sources that are not built-in kernels (negative, so no kernel code
# added above can collide): a dense matrix and a Gram matrix of features.
DENSE = -1
GRAM = -2

# What a compression round says about each candidate block.
STATUS_ACCEPTED = 0   # factors stored, error within the block's budget
STATUS_REFINE = 1     # the rank would not save storage (or exceeds max_rank): split
STATUS_RETRY = 2      # the rank exceeds the room reserved this round: try with more

# Low-rank methods of a dense block (construct.METHODS maps the names).
METHOD_ACA = 0
METHOD_SVD = 1
METHOD_RSVD = 2

# Restricted fastmath: no "nnan"/"ninf", so NaN checks stay meaningful.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

#: The storage modes of a kernel H^2 matrix (``H2Matrix.from_kernel(mode=)``).
H2_MODES = ("stored", "on-the-fly")
