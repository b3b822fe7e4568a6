"""hmnumba._pages: builds switch numpy's huge-page hint off and put it back."""
import threading

import numpy as np
import pytest

from hmnumba import H2Matrix, HMatrix, _pages
from hmnumba.kernels import laplace

pytestmark = pytest.mark.skipif(_pages._set_madvise_hugepage is None,
                                reason="this numpy has no huge-page hint")


def _hint():
    """numpy's current hint (reading it means setting it: set it back)."""
    value = _pages._set_madvise_hugepage(True)
    _pages._set_madvise_hugepage(value)
    return value


@pytest.mark.parametrize("before", [True, False])
def test_small_pages_restores_the_hint_after_nested_blocks(before):
    saved = _pages._set_madvise_hugepage(before)
    try:
        with _pages.small_pages():
            assert _hint() is False
            with _pages.small_pages():
                assert _hint() is False
            assert _hint() is False      # the outer block still runs
        assert _hint() is before
    finally:
        _pages._set_madvise_hugepage(saved)


def test_small_pages_restores_the_hint_after_an_error():
    saved = _pages._set_madvise_hugepage(True)
    try:
        with pytest.raises(RuntimeError):
            with _pages.small_pages():
                raise RuntimeError("build failed")
        assert _hint() is True
    finally:
        _pages._set_madvise_hugepage(saved)


def test_overlapping_blocks_in_threads_restore_once():
    saved = _pages._set_madvise_hugepage(True)
    inside, release = threading.Barrier(3), threading.Event()

    def build():
        with _pages.small_pages():
            inside.wait()
            release.wait()

    try:
        threads = [threading.Thread(target=build) for _ in range(2)]
        for t in threads:
            t.start()
        inside.wait()                   # both threads are inside their blocks
        assert _hint() is False
        release.set()
        for t in threads:
            t.join()
        assert _hint() is True
    finally:
        _pages._set_madvise_hugepage(saved)


def test_builds_leave_the_hint_as_they_found_it():
    X = np.random.default_rng(0).random((300, 3))
    saved = _pages._set_madvise_hugepage(True)
    try:
        HMatrix.from_kernel(laplace, X, tol=1e-6)
        H2Matrix.from_kernel(laplace, X, tol=1e-6)
        H2Matrix.from_dense(laplace(X), tol=1e-6)
        assert _hint() is True
    finally:
        _pages._set_madvise_hugepage(saved)
