"""The paper's numerical results, one module per figure, a registry and a
report writer (``hmnumba reproduce``).

Each experiment module defines ``NAME``, ``TITLE``, ``FIGURE`` (the PNG's
file name), ``CLAIM`` (the paper's claim it tests), ``run(ctx) -> dict``
(JSON-ready numbers; keys starting with ``_`` are for the figure only),
``verdict(result) -> {"outcome": str, "sentence": str}`` (decided from the
numbers; ``outcome`` is one of ``"supports"``, ``"partly"``,
``"contradicts"``, ``"untested"``, see :mod:`hmnumba.experiments._verdict`)
and ``plot(result, path)``. :data:`REGISTRY` lists them in
the paper's order; :func:`reproduce` runs them and writes the report.

The first six are the paper's figures (2a/4b, 2b, 3, 4a, 5, 6), ``ntk`` checks
Theorem 2's NTK claim, and the last three measure Theorem 1 (c), (d), (e),
(f) and Theorem 3 against their bounds (:mod:`hmnumba.bounds`); ``study``
(:mod:`hmnumba.experiments.study`) compares every method on four network
families (PINNs, learned operators, a digits classifier, a random control):

>>> from hmnumba.experiments import REGISTRY
>>> list(REGISTRY)                                    # doctest: +NORMALIZE_WHITESPACE
['tradeoff', 'heatmaps', 'dynamic', 'generalisation', 'speed', 'propagation', 'ntk',
 'conditioning', 'adversarial', 'refinement', 'study']
"""
from hmnumba.experiments._context import PROBLEMS, Config, Context
from hmnumba.experiments.registry import REGISTRY
from hmnumba.experiments.runner import reproduce

__all__ = ["REGISTRY", "reproduce"]
