"""Resources: an output folder that cannot be written fails before the work starts; a full
disk fails with one clear line and never leaves a corrupt or half-written report.

Read-only and full file systems are real: a tmpfs mounted for the test (root only; the
tests skip, saying why, where mounting is not allowed) and /proc, which nobody, root
included, can create folders in.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from planted import make_planted

from clusterclean import as_embeddings, run
from clusterclean.cli import main
from clusterclean.errors import ClustercleanError, InvalidInputError
from clusterclean.report import read_report


@contextlib.contextmanager
def _tmpfs(path: Path, options: str):
    """Mount a tmpfs at ``path`` with ``options`` (e.g. ``size=64k`` or ``ro``)."""
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'not root'})")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


needs_mount = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("mount") is None, reason="mounting a tmpfs needs root"
)


@pytest.fixture(scope="module")
def planted():
    return make_planted(n_groups=12, seed=4)


def _mismatched(planted):
    """Embeddings whose ids do not match the labels: the run fails as soon as it uses them."""
    vectors = planted.embeddings
    return as_embeddings([f"other{i}" for i in range(len(vectors))], vectors.vectors)


def _assert_fails_before_the_work(planted, out: Path, reason: str) -> None:
    # With the output checked first, the error is about the folder, not the embeddings.
    with pytest.raises(InvalidInputError) as error:
        run(labels=planted.dataset, embeddings=_mismatched(planted), out=out, progress=False)
    assert str(error.value) == (
        f"Cannot write into {out.parent} ({reason}); choose a writable --out folder."
    )
    assert not out.exists()


def test_proc_is_not_writable_even_for_root(planted):
    _assert_fails_before_the_work(
        planted, Path("/proc/self/report"), "permission denied or read-only file system"
    )


def test_a_file_where_the_parent_folder_should_be(planted, tmp_path):
    (tmp_path / "file").write_text("mine")
    _assert_fails_before_the_work(planted, tmp_path / "file" / "report", "File exists")
    assert (tmp_path / "file").read_text() == "mine"


@needs_mount
def test_read_only_file_system(planted, tmp_path):
    with _tmpfs(tmp_path / "ro", "ro,size=64k") as ro:
        _assert_fails_before_the_work(
            planted, ro / "report", "permission denied or read-only file system"
        )


@needs_mount
def test_cli_read_only_output_is_one_line_before_any_work(tmp_path, capsys):
    """The CLI says it in one line, before loading anything."""
    with _tmpfs(tmp_path / "ro", "ro,size=64k") as ro:
        (tmp_path / "l.csv").write_text("image_id,hat\na,1\n")
        np.save(tmp_path / "v.npy", np.ones((1, 4), dtype=np.float32))
        (tmp_path / "ids.txt").write_text("a\n")
        code = main(
            ["run", "--labels", str(tmp_path / "l.csv"), "--embeddings", str(tmp_path / "v.npy")]
            + ["--embedding-ids", str(tmp_path / "ids.txt"), "--out", str(ro / "report")]
        )
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 1 and err == [
            f"clusterclean: error: Cannot write into {ro} (permission denied or read-only file "
            "system); choose a writable --out folder."
        ]


@needs_mount
def test_full_disk_keeps_the_previous_report_and_leaves_nothing_behind(tmp_path, capsys):
    small = make_planted(n_groups=6, dim=8, seed=5)
    big = make_planted(n_groups=900, max_size=4, dim=96, seed=6)  # ~2,200 x 96 floats: > 512k
    with _tmpfs(tmp_path / "disk", "size=512k") as disk:
        out = disk / "report"
        run(labels=small.dataset, embeddings=small.embeddings, out=out, progress=False)
        before = {p.name: p.read_bytes() for p in out.iterdir()}
        with pytest.raises(ClustercleanError) as error:  # ENOSPC while the tables are written
            run(labels=big.dataset, embeddings=big.embeddings, out=out, progress=False)
        assert f"Could not write the report to {out}" in str(error.value)
        assert "No space left on device" in str(error.value)
        assert error.value.__cause__.errno == 28
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
        read_report(out)
        assert sorted(p.name for p in disk.iterdir()) == ["report"]  # no staging left
        # and through the CLI: one line, exit 1
        (tmp_path / "l.csv").write_text(
            "image_id,"
            + ",".join(big.dataset.attributes)
            + "\n"
            + "\n".join(
                f"{i}," + ",".join(str(int(v)) for v in row)
                for i, row in zip(big.dataset.ids, big.dataset.labels, strict=True)
            )
        )
        np.save(tmp_path / "v.npy", big.embeddings.vectors)
        (tmp_path / "ids.txt").write_text("\n".join(big.dataset.ids))
        code = main(
            ["run", "--labels", str(tmp_path / "l.csv"), "--embeddings", str(tmp_path / "v.npy")]
            + ["--embedding-ids", str(tmp_path / "ids.txt"), "--out", str(out), "--no-progress"]
        )
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 1 and len(err) == 1, err
        assert err[0].startswith("clusterclean: error: ") and "No space left" in err[0]
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
        assert sorted(p.name for p in disk.iterdir()) == ["report"]


#: The documented bound (README "Guarantees"): measured by scripts/measure_memory.py as
#: 302 MiB + 7.5 KiB x N for d = 256 (1.01 GiB at 100k); checked here with a margin.
BOUND_MIB, BOUND_KIB_PER_IMAGE = 400, 10


@pytest.mark.slow  # about a minute of CPU: run() on 20,000 vectors in a fresh process
def test_peak_memory_stays_within_the_documented_bound(tmp_path):
    import json
    import sys

    script = Path(__file__).resolve().parents[2] / "scripts" / "measure_memory.py"
    subprocess.run(
        [sys.executable, str(script), "--sizes", "20000", "--json", str(tmp_path / "m.json")],
        check=True,
        capture_output=True,
    )
    (row,) = json.loads((tmp_path / "m.json").read_text())["runs"]
    assert row["peak_rss_mib"] <= BOUND_MIB + BOUND_KIB_PER_IMAGE * row["n"] / 1024, row
