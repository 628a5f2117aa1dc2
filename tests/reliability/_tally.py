"""Counts of fuzzed inputs per target and outcome, printed at the end of the test session."""

from __future__ import annotations

from collections import Counter

COUNTS: Counter[str] = Counter()


def record(target: str, outcome: str) -> None:
    """Count one fuzzed input of ``target`` that ended in ``outcome`` (``ok`` or ``rejected``)."""
    COUNTS[target, outcome] += 1
