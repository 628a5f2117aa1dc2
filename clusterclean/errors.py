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
