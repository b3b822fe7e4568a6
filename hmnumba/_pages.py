"""Small pages for the arrays a build writes.

numpy asks the kernel for transparent huge pages (``madvise(MADV_HUGEPAGE)``)
on every allocation of 4 MB or more. Where the kernel's THP ``defrag`` policy
is ``madvise`` (a common default), a page fault in such a region compacts
memory synchronously until a free 2 MB page exists, and on a VM that stall
costs far more than the zeroing of the page. A build writes each stored
number to fresh memory once, so it pays that stall for every 2 MB it stores.

Measured on this project's 2-core VM (``defrag = madvise``): the first touch
of a fresh 264 MB array took 1.0-1.6 s with huge pages and 0.10 s without.
The 40k cube problem (``python ../shared/anchors/drivers/hmnumba_h2_cube.py
40000``, builds with and without this module's switch alternating, two runs
each) built as an H^2 matrix in 2.75-2.95 s against 3.97-4.24 s; its
product took 34-35 ms against 33 ms (the stored arrays on small pages). As an
H-matrix (``hmnumba_cube.py``) it built in 4.69-4.73 s against 4.71-6.09 s.
C libraries such as H2Pack allocate with ``malloc``, which asks for no huge
pages.

So the builds run inside :func:`small_pages`: numpy's hint is switched off
while at least one build runs, and put back as it was after the last one.
The hint is process-wide, so another thread's allocations during a build get
small pages too; that changes their speed, never their contents.
"""
import contextlib
import functools
import threading

try:                                   # numpy >= 2
    from numpy._core.multiarray import _set_madvise_hugepage
except ImportError:                    # numpy 1.x (the function exists since 1.20)
    try:
        from numpy.core.multiarray import _set_madvise_hugepage
    except ImportError:                # pragma: no cover - a numpy without the hint
        _set_madvise_hugepage = None

_LOCK = threading.Lock()
_state = {"depth": 0, "saved": None}


@contextlib.contextmanager
def small_pages():
    """Context manager: numpy's huge-page hint off inside the ``with`` block
    (nested and concurrent blocks restore it once, after the last one).

    Examples
    --------
    >>> import numpy as np
    >>> from hmnumba._pages import small_pages
    >>> with small_pages():
    ...     a = np.ones(1 << 20)
    >>> float(a.sum())
    1048576.0
    """
    if _set_madvise_hugepage is None:    # pragma: no cover
        yield
        return
    with _LOCK:
        if _state["depth"] == 0:
            _state["saved"] = _set_madvise_hugepage(False)
        _state["depth"] += 1
    try:
        yield
    finally:
        with _LOCK:
            _state["depth"] -= 1
            if _state["depth"] == 0:
                _set_madvise_hugepage(_state["saved"])


def with_small_pages(func):
    """Decorator: ``func`` runs inside :func:`small_pages` (the builds)."""
    @functools.wraps(func)
    def run(*args, **kwargs):
        with small_pages():
            return func(*args, **kwargs)
    return run
