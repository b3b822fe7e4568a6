"""The paper's numerical results, one module per figure, a registry and a
report writer (``hmnumba reproduce``).

Each experiment module defines ``NAME``, ``TITLE``, ``FIGURE`` (the PNG's
file name), ``CLAIM`` (the paper's claim it tests), ``run(ctx) -> dict``
(JSON-ready numbers; keys starting with ``_`` are for the figure only),
``verdict(result) -> {"supports": bool or None, "sentence": str}`` (decided
from the numbers) and ``plot(result, path)``. :data:`REGISTRY` lists them in
the paper's order; :func:`reproduce` runs them and writes the report.

>>> from hmnumba.experiments import REGISTRY
>>> list(REGISTRY)
['tradeoff', 'heatmaps', 'dynamic', 'generalisation', 'speed', 'propagation', 'ntk']
"""
from hmnumba.experiments import (dynamic, generalisation, heatmaps, ntk_preservation,
                                 propagation, speed, tradeoff)
from hmnumba.experiments._context import PROBLEMS, Config, Context
from hmnumba.experiments.runner import reproduce

REGISTRY = {m.NAME: m for m in (tradeoff, heatmaps, dynamic, generalisation, speed,
                                propagation, ntk_preservation)}

__all__ = ["REGISTRY", "reproduce"]
