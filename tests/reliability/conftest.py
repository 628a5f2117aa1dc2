"""Shared helpers of the reliability suite: ``tests/`` and ``scripts/`` on the import path."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for folder in (ROOT / "tests", ROOT / "scripts"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


def pytest_terminal_summary(terminalreporter) -> None:
    """Print how many inputs the fuzz tests tried, per target: the README's counts."""
    from _tally import COUNTS

    if not COUNTS:
        return
    terminalreporter.section("reliability: fuzzed inputs")
    for target in sorted({t for t, _ in COUNTS}):
        ok, rejected = COUNTS[target, "ok"], COUNTS[target, "rejected"]
        terminalreporter.line(f"{target}: {ok + rejected} ({ok} worked, {rejected} rejected)")
    terminalreporter.line(f"total: {sum(COUNTS.values())}")
