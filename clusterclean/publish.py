"""Publish a run: its report folder (tables, :mod:`.report`) with its page (:mod:`.html`).

The layers point one way: :mod:`.report` reads and writes the tables and knows no
page; :mod:`.html` renders a :class:`~clusterclean.report.Report` and may read the
tables; this module, above both, writes the folder with ``report.html`` in it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .html import write_html
from .report import HTML_FILE, Report, write_report_folder

__all__ = ["write_report"]


def write_report(report: Report, out: str | Path, *, inputs: tuple[Any, ...] = ()) -> Path:
    """Write the report folder (tables, ``run.json``, ``report.html``) atomically.

    See :func:`clusterclean.report.write_report_folder` for the files, the
    manifest and when an existing ``out`` may be replaced; ``inputs`` are the
    run's input paths, which may not be, hold or lie inside ``out``.
    """
    return write_report_folder(report, out, inputs=inputs, pages={HTML_FILE: write_html})
