"""Atomic file writes: the one place that writes a temporary file and renames it into place.

Every file clusterclean writes (report tables, ``run.json``, ``report.html``, the
fitted transforms, the embedding cache's files, synthetic benchmarks) goes through
:func:`atomic_write` or :func:`staged_writes`, so a reader never sees half a file
and a killed process leaves only dot-prefixed ``*.tmp`` files behind.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["atomic_write", "write_bytes", "staged_writes", "save_npz", "pid_alive", "file_stem"]


def file_stem(name: str) -> str:
    """A name as one file or folder name: ``open_clip:M/TAG`` -> ``open_clip_M_TAG``."""
    return re.sub(r"[^\w.-]", "_", name)


def _temporary(path: Path, tag: str | None) -> Path:
    return path.with_name(f".{path.name}.{tag or uuid.uuid4().hex[:8]}.tmp")


def atomic_write(path: str | Path, write: Callable[[Path], Any], *, tag: str | None = None) -> Path:
    """Write through ``write(tmp_path)`` then rename into place; returns ``path``.

    The temporary file ``.NAME.TAG.tmp`` sits in the destination's folder (one file
    system, so the rename is atomic); ``tag`` defaults to a random hex string (the
    embedding cache passes its process id, so that a dead writer's files can be told
    apart). The temporary file is removed when ``write`` fails.
    """
    path = Path(path)
    tmp = _temporary(path, tag)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_bytes(path: str | Path, data: bytes, *, tag: str | None = None) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data), tag=tag)


def staged_writes(writers: list[tuple[Path, Callable[[Path], Any]]]) -> list[Path]:
    """Write a set of files: every ``write(tmp)`` first, then all renamed into place.

    A failure while writing leaves every destination as it was (the temporary
    files are removed); only the renames, which cannot fail half-way on one
    file system, come after. Returns the destinations.
    """
    staged: list[tuple[Path, Path]] = []
    try:
        for path, write in writers:
            tmp = _temporary(path, None)
            staged.append((tmp, path))
            write(tmp)
        for tmp, path in staged:
            os.replace(tmp, path)
    finally:
        for tmp, _ in staged:
            if tmp.exists():
                tmp.unlink()
    return [path for _, path in staged]


def save_npz(path: str | Path, arrays: dict[str, Any]) -> Path:
    """Write ``arrays`` to an ``.npz`` file atomically (folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.savez would add ".npz" to a name
            np.savez(fh, **arrays)

    return atomic_write(path, write)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a dead writer's temporary files may be removed)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True
