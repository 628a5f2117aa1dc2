"""Nothing is lost when a run is killed: SIGKILL at random moments, then rerun.

The full series (>= 20 trials) is ``scripts/kill_trials.py``; CI runs a reduced
one here with the same code. Each kill leaves the previous complete report,
byte for byte, or a complete new one, or none -- never a half-written one; the
staging folders a kill leaves do not break the next run, which removes them.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from kill_trials import leftovers, run_trials
from planted import make_planted

from clusterclean import run
from clusterclean.report import read_report

N_CI_TRIALS = 5


def test_random_sigkills_never_leave_a_half_written_report(tmp_path):
    result = run_trials(
        N_CI_TRIALS, n_images=1500, work=tmp_path, rerun_each=False, from_head=False, log=print
    )
    counts = result["counts"]
    outcomes = [t["outcome"] for t in result["trials"]]
    assert counts["corrupt"] == 0, outcomes
    assert counts["survived"] == N_CI_TRIALS, result["trials"]
    assert counts["reruns_finished_clean"] == 1  # the final rerun removed every staging folder
    assert set(outcomes) <= {"old", "new", "none"}


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture(scope="module")
def planted():
    return make_planted(n_groups=10, seed=3)


def _run(planted, out):
    return run(labels=planted.dataset, embeddings=planted.embeddings, out=out, progress=False)


def test_stale_staging_of_a_dead_run_is_removed_and_others_are_kept(planted, tmp_path):
    out = tmp_path / "report"
    pid = _dead_pid()
    stale = tmp_path / f".report.partial-{pid}-0123abcd"
    stale.mkdir()
    (stale / "images.parquet").write_bytes(b"half a file")
    alive = tmp_path / f".report.partial-{os.getpid()}-0123abcd"  # a live process
    alive.mkdir()
    foreign = tmp_path / f".report.partial-{pid}-mine"  # not our naming pattern: not ours
    foreign.mkdir()
    _run(planted, out)
    assert not stale.exists()
    assert alive.exists() and foreign.exists()
    assert leftovers(out) == sorted([alive.name, foreign.name])
    read_report(out)


def test_report_moved_aside_by_a_kill_between_the_renames_is_put_back(planted, tmp_path, caplog):
    out = tmp_path / "report"
    _run(planted, out)
    aside = tmp_path / f".report.old-{_dead_pid()}-89abcdef"
    out.rename(aside)  # as a kill between the two renames of the swap leaves it
    with caplog.at_level("WARNING", logger="clusterclean.report"):
        _run(planted, out)
    assert f"Restored the report {out} that an interrupted run had moved aside" in caplog.text
    assert not aside.exists() and leftovers(out) == []
    read_report(out)
