"""PINN tests run with one numba thread and one BLAS thread (the
``single_threaded`` fixture of ``tests/conftest.py``, which says why)."""
import pytest


@pytest.fixture(autouse=True)
def _single_threaded(single_threaded):
    yield
