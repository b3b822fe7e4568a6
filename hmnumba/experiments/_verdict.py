"""The one verdict type of ``hmnumba reproduce``.

Every experiment's ``verdict(result)`` returns ``{"outcome": OUTCOME,
"sentence": str}`` with ``OUTCOME`` one of four strings, decided from the
numbers:

- ``"supports"``: every part of the paper's claim that the run tests holds;
- ``"partly"``: some parts hold and some do not (the sentence says which);
- ``"contradicts"``: the claim fails here;
- ``"untested"``: the run cannot test the claim (e.g. too few inexact
  tolerances, or no network accurate enough to judge at).

>>> from hmnumba.experiments._verdict import OUTCOMES, verdict
>>> OUTCOMES
('supports', 'partly', 'contradicts', 'untested')
>>> verdict("partly", "holds for small tol only.")
{'outcome': 'partly', 'sentence': 'holds for small tol only.'}
>>> verdict(True, "x")                       # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: a verdict's outcome must be one of (...), got True
"""
SUPPORTS, PARTLY, CONTRADICTS, UNTESTED = "supports", "partly", "contradicts", "untested"
OUTCOMES = (SUPPORTS, PARTLY, CONTRADICTS, UNTESTED)
#: How report.md words each outcome.
WORDS = {SUPPORTS: "supports", PARTLY: "partly supports", CONTRADICTS: "contradicts",
         UNTESTED: "untested"}


def verdict(outcome, sentence):
    """The verdict dict, with ``outcome`` checked against :data:`OUTCOMES`."""
    if not isinstance(outcome, str) or outcome not in OUTCOMES:
        raise ValueError(f"a verdict's outcome must be one of {OUTCOMES}, got {outcome!r}")
    return {"outcome": outcome, "sentence": str(sentence)}


def combine(parts):
    """``supports`` if every part holds, ``contradicts`` if none does,
    ``partly`` otherwise (``parts``: booleans, at least one).

    >>> combine([True, True]), combine([True, False]), combine([False])
    ('supports', 'partly', 'contradicts')
    """
    parts = [bool(p) for p in parts]
    if not parts:
        raise ValueError("combine needs at least one part")
    return SUPPORTS if all(parts) else CONTRADICTS if not any(parts) else PARTLY
