"""The experiments in the paper's order, by name (:data:`REGISTRY`).

A module of its own so that the runner and the report writer read it
without importing the package that re-exports them (no import cycle).

>>> from hmnumba.experiments.registry import REGISTRY
>>> list(REGISTRY)[:2]
['tradeoff', 'heatmaps']
"""
from hmnumba.experiments import (adversarial, conditioning, dynamic, generalisation, heatmaps,
                                 ntk_preservation, propagation, refinement, speed, study,
                                 tradeoff)

REGISTRY = {m.NAME: m for m in (tradeoff, heatmaps, dynamic, generalisation, speed,
                                propagation, ntk_preservation, conditioning, adversarial,
                                refinement, study)}
