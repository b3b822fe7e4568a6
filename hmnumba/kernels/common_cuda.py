"""What the CUDA kernel files share on the host: thread-block sizes, the
device-array test and the grid arithmetic.

The CUDA files mirror the CPU ones job by job (DESIGN section 5):
:mod:`~hmnumba.kernels.trees_cuda` (geometric cluster tree),
:mod:`~hmnumba.kernels.compress_cuda` (batched ACA of built-in kernel blocks),
:mod:`~hmnumba.kernels.products_cuda` (the two-phase products) and
:mod:`~hmnumba.kernels.h2_products_cuda` (the H^2 products); their host
wrappers own the grid arithmetic and the transfers. Nothing here checks
its inputs. Device code is compiled per process (numba does not cache CUDA
kernels on disk), so calls across these files cannot read a stale cache.

A kernel's device functions (the block-wide reductions and scans) live in
the kernel's own file: numba's CUDA simulator swaps the ``cuda`` module into
the globals of the function it runs, one module at a time, and a device
function of another file would see the real module again whenever one of
its simulated threads returned first.
Thread blocks have :data:`THREADS_PER_BLOCK` threads (a power of two, also the
size of the shared-memory scratch).
"""
from numba import cuda
from numba.core import config

# Threads of the blocks that cooperate through shared memory (a power of two)
# and of the element-wise kernels (gather, scatter, phase two). Numba's
# simulator runs every CUDA thread as a Python thread, so it gets small blocks.
THREADS_PER_BLOCK = 8 if config.ENABLE_CUDASIM else 128
THREADS_ELEMENTWISE = 8 if config.ENABLE_CUDASIM else 64


def is_device_array(x):
    """True for a CUDA device array (the simulator's fake arrays included).

    Examples
    --------
    >>> import numpy as np
    >>> from numba import cuda
    >>> from hmnumba.kernels.common_cuda import is_device_array
    >>> is_device_array(np.ones(3)), is_device_array(cuda.to_device(np.ones(3)))
    (False, True)
    """
    check = getattr(cuda, "is_cuda_array", None)
    if check is not None:
        return bool(check(x))
    fake = getattr(getattr(cuda, "devicearray", None), "FakeCUDAArray", None)
    return fake is not None and isinstance(x, fake)


def grid(n_items, threads):
    """Thread blocks of ``threads`` that cover ``n_items`` (at least one)."""
    return max((n_items + threads - 1) // threads, 1)
