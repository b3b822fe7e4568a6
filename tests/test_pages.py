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

    threads = [threading.Thread(target=build, daemon=True) for _ in range(2)]
    try:
        for t in threads:
            t.start()
        inside.wait(timeout=60)         # both threads are inside their blocks
        hint_inside = _hint()
    finally:
        release.set()                   # the threads end even if a check fails
        for t in threads:
            t.join(timeout=60)
    try:
        assert hint_inside is False
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


@pytest.mark.parametrize("module,name,build", [
    ("construct", "_first_partition", lambda X: HMatrix.from_kernel(laplace, X, tol=1e-6)),
    ("h2build", "_build_kernel_h2", lambda X: H2Matrix.from_kernel(laplace, X, tol=1e-6)),
    ("h2dense", "_build_partition", lambda X: H2Matrix.from_dense(laplace(X), tol=1e-6)),
    ("h2dense", "_conversion_error",
     lambda X: H2Matrix.from_hmatrix(HMatrix.from_kernel(laplace, X, tol=1e-6))),
])
def test_builds_run_with_the_hint_off(monkeypatch, module, name, build):
    """A step inside each build sees numpy's huge-page hint off."""
    import importlib
    mod = importlib.import_module("hmnumba." + module)
    original, seen = getattr(mod, name), []

    def step(*args, **kwargs):
        seen.append(_hint())
        return original(*args, **kwargs)

    monkeypatch.setattr(mod, name, step)
    saved = _pages._set_madvise_hugepage(True)
    try:
        build(np.random.default_rng(1).random((300, 3)))
    finally:
        _pages._set_madvise_hugepage(saved)
    assert seen and not any(seen)
