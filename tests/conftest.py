"""Shared pytest configuration.

``NUMBA_ENABLE_CUDASIM`` must be in the environment before numba is first
imported (numba reads its configuration once, at import), so it is set here,
at the very top of the first module pytest imports. ``setdefault`` lets a run
on a real GPU override it with ``NUMBA_ENABLE_CUDASIM=0``.

Hypothesis profiles (pick one with ``HYPOTHESIS_PROFILE=<name>``):

* ``default``: 25 examples per property, no deadline (JIT compilation makes the
  first example of a test slow, which is not a bug);
* ``ci``: the same budget, derandomized (a fixed sequence of examples, so CI is
  reproducible) and with no example database;
* ``thorough``: 200 examples, for a local soak before a release.
"""
import os

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

from hypothesis import HealthCheck, settings  # noqa: E402

_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])

settings.register_profile("default", max_examples=25, **_COMMON)
settings.register_profile("ci", max_examples=25, derandomize=True, database=None,
                          print_blob=True, **_COMMON)
settings.register_profile("thorough", max_examples=200, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
