"""Generated blocks in Markdown pages: ``<!-- TAG: ARG -->`` ... ``<!-- /TAG -->``.

The README's option tables (``options``) and suite tables (``suite``) are such
blocks, filled from their one source by a script and checked by a test, so a
figure or a default is never typed twice.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["fill_blocks"]


def fill_blocks(text: str, tag: str, render: Callable[[str], str]) -> str:
    """``text`` with the body of every ``<!-- tag: ARG -->`` block replaced by ``render(ARG)``."""
    pattern = re.compile(
        rf"(<!-- {re.escape(tag)}: ([^>]*?) -->\n)(.*?)(<!-- /{re.escape(tag)} -->)", re.DOTALL
    )
    return pattern.sub(lambda m: m.group(1) + render(m.group(2)) + m.group(4), text)
