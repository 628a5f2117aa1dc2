"""Shared test setup."""

import logging
import os

import pytest
from hypothesis import settings

# CI draws the same examples on every run, so a red build is reproducible and a green
# one does not turn red by chance; HYPOTHESIS_PROFILE=explore draws new ones (and keeps
# the failures it finds in .hypothesis/ for replay).
settings.register_profile("ci", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _restore_root_logging():
    """The CLI configures the root logger (as a program should); undo it after each test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
