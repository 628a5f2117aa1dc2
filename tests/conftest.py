"""Shared test setup."""

import logging

import pytest


@pytest.fixture(autouse=True)
def _restore_root_logging():
    """The CLI configures the root logger (as a program should); undo it after each test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
