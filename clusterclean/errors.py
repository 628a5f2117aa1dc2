"""The exceptions clusterclean raises on bad input or a failed stage.

Every error a user can cause is a :class:`ClustercleanError`; the CLI turns it
into a one-line message and exit code 1. The subclasses also derive from the
matching builtin so that ``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "ClustercleanError",
    "InvalidInputError",
    "InvalidTypeError",
    "MissingDependencyError",
    "WeightsUnavailableError",
    "ReportSchemaError",
    "EngineError",
    "printable",
    "first_line",
]


class ClustercleanError(Exception):
    """Base class of every error clusterclean raises on purpose."""


class InvalidInputError(ClustercleanError, ValueError):
    """A value, file, row or column is wrong; the message says where and how to fix it."""


class InvalidTypeError(ClustercleanError, TypeError):
    """An argument has the wrong type."""


class MissingDependencyError(ClustercleanError, ImportError):
    """An optional dependency is not installed; the message names the extra."""


class WeightsUnavailableError(ClustercleanError, RuntimeError):
    """Model weights could be neither found locally nor downloaded."""


class ReportSchemaError(ClustercleanError, ValueError):
    """A report folder was written by an unknown schema version or is incomplete."""


class EngineError(ClustercleanError, RuntimeError):
    """An inference engine could not be built (e.g. a model that does not export to ONNX)."""


def _is_bidi_control(char: str) -> bool:
    """The marks, embeddings, overrides and isolates that reorder the text around them."""
    return (
        char in "\u200e\u200f\u061c"
        or "\u202a" <= char <= "\u202e"
        or ("\u2066" <= char <= "\u2069")
    )


def printable(text: object, *, bidi_only: bool = False) -> str:
    """``text`` with control and bidi characters written as escapes (``\\x1b``, ``\\u202e``).

    A file or column name is the user's text: printed raw, an escape character
    can rewrite the terminal and U+202E can reverse what a reader sees. With
    ``bidi_only`` only the bidi characters are escaped (for HTML, where other
    control characters cannot act).
    """
    text = str(text)
    if text.isascii() and text.isprintable():  # the usual id or name: nothing to escape
        return text
    return "".join(
        c.encode("unicode_escape").decode("ascii")
        if _is_bidi_control(c) or (not bidi_only and not c.isprintable())
        else c
        for c in text
    )


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message (empty when it has none), for one-line errors."""
    text = str(exc)
    return text.splitlines()[0] if text else ""
