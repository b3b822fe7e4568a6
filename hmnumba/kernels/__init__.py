"""Numba kernels, and the built-in kernel functions re-exported.

Public names: the built-in kernels :data:`laplace`, :data:`gaussian`,
:data:`exponential`, :data:`matern32` (instances of :class:`KernelFunction`),
:class:`KernelFunction` and :func:`assemble_dense`. They live on the Python
side, in :mod:`hmnumba.kernel_functions`, and are looked up from there on
first use (so importing a kernel file never imports the Python side).

Layout
------
The files of this package hold numba code and integer codes only, split
along the call chain (DESIGN section 1):

``codes``
    integer codes (kernels, block status, methods) and fast-math flags
``sources``
    entry sources (dense, built-in kernel, user kernel, Gram) and whole-source reads
``factors``
    one block: ACA, recompression, truncated and randomized SVD
``compress``
    a round of candidate blocks in parallel (and the host half of the device ACA)
``trees``
    geometric cluster tree, strong and weak partitions, the passes over the
    build's attempt tree
``products``
    matvec/matmat/rmatvec over the packed arrays, to_dense
``symmetric``
    the matvec of the symmetric storage
``lowprec``, ``h2_build``, ``h2_products``, ``h2_general``
    the block errors of low-precision factors; the H^2 build and products
``*_cuda``
    the ``@cuda.jit`` twins (``trees_cuda``, ``compress_cuda``,
    ``products_cuda``, ``h2_products_cuda``; ``common_cuda`` holds their
    host helpers)

Calls run one way: ``codes`` <- ``sources`` <- ``factors`` <- ``compress``.

The cache guard
---------------
numba checks a cached function against the time stamp of its own file only:
a cached ``compress.compress_blocks`` that inlined ``factors.aca_partial``
would keep running the old ACA after ``factors.py`` changed. So on import
this package hashes its ``*.py`` files; when the hash differs from the one
stamped in the numba cache directory of this package, the cached kernels of
the package (``*.nbi``/``*.nbc``) are deleted and the new hash stamped, and
numba recompiles what is called next (:func:`_guard_cache`).
"""
import hashlib
import os

__all__ = ["KernelFunction", "laplace", "gaussian", "exponential", "matern32",
           "assemble_dense"]

_STAMP = "hmnumba-kernels.sha256"


def _source_digest(directory):
    """SHA-256 of the names and contents of the ``*.py`` files in ``directory``."""
    digest = hashlib.sha256()
    for name in sorted(os.listdir(directory)):
        if name.endswith(".py"):
            digest.update(name.encode() + b"\0")
            with open(os.path.join(directory, name), "rb") as f:
                digest.update(f.read())
    return digest.hexdigest()


def _locator_probe():  # pragma: no cover - never called; locates the cache
    """A function of this directory: numba's cache locator takes a function."""


def _cache_directory():
    """Where numba caches the functions of this package's files, or None."""
    from numba.core import caching
    try:   # the locator numba's own cache of a function here would use
        return caching.CompileResultCacheImpl(_locator_probe)._locator.get_cache_path()
    except RuntimeError:   # no locator: nothing is cached
        return None


def _guard_cache():
    """Delete this package's numba cache when a kernel file changed.

    Returns the number of cache files deleted (0 when the stamp matched or
    the cache directory cannot be written).

    Examples
    --------
    >>> from hmnumba.kernels import _guard_cache
    >>> _guard_cache()   # stamped at import: nothing to delete
    0
    """
    here = os.path.dirname(os.path.abspath(__file__))
    digest = _source_digest(here)
    cache = _cache_directory()
    if cache is None:
        return 0
    stamp = os.path.join(cache, _STAMP)
    try:
        with open(stamp) as f:
            if f.read() == digest:
                return 0
    except OSError:
        pass
    modules = {name[:-3] for name in os.listdir(here) if name.endswith(".py")}
    removed = 0
    try:
        os.makedirs(cache, exist_ok=True)
        for name in os.listdir(cache):
            if name.endswith((".nbi", ".nbc")) and name.split(".", 1)[0] in modules:
                try:
                    os.remove(os.path.join(cache, name))
                    removed += 1
                except FileNotFoundError:   # another process removed it first
                    pass
        tmp = f"{stamp}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(digest)
        os.replace(tmp, stamp)
    except OSError:   # a read-only cache: numba will not write to it either
        pass
    return removed


_guard_cache()


def __getattr__(name):
    if name in __all__:
        from hmnumba import kernel_functions
        return getattr(kernel_functions, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
