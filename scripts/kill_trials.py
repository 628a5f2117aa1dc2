"""Kill ``clusterclean run`` with SIGKILL at random moments and check nothing is lost.

Each trial starts a real ``python -m clusterclean.cli run ...`` subprocess on a
synthetic dataset big enough to take a few seconds, kills it after a random
delay, and then checks the report folder:

* it is the previous complete report, byte for byte (``old``), or
* it is a complete new report (the run finished before the kill: ``new``), or
* it is absent (``none``; only allowed when no report existed before, or in
  the instant between the two renames of the folder swap),

never a half-written one. Then the same command runs again, without a kill, and
must finish; the staging folders the killed run left next to the report must be
gone after it. The input files are hashed before and after every run.

    python scripts/kill_trials.py --trials 20 --json build/kill_trials.json

Prints one line per trial, the counts, and writes them to JSON.
``tests/reliability/test_interrupt.py`` runs a reduced number of trials in CI.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

DIM = 64
N_ATTRIBUTES = 12


def make_inputs(folder: Path, *, n_images: int, seed: int = 0) -> tuple[Path, Path]:
    """Write ``labels.csv`` and ``emb.parquet``: planted groups of 1-6 near-identical vectors.

    Returns the two paths.
    """
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 7, size=n_images)
    groups = np.repeat(np.arange(len(sizes)), sizes)[:n_images]
    centres = rng.normal(size=(groups.max() + 1, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    vectors = centres[groups] + 0.02 * rng.normal(size=(n_images, DIM)).astype(np.float32)
    labels = rng.integers(0, 2, size=(groups.max() + 1, N_ATTRIBUTES))[groups]
    flips = rng.random(labels.shape) < 0.02
    labels[flips] = 1 - labels[flips]
    ids = [f"img{i:07d}" for i in range(n_images)]
    table = pd.DataFrame(labels, columns=[f"attr_{a}" for a in range(N_ATTRIBUTES)])
    table.insert(0, "image_id", ids)
    table.insert(1, "split", rng.choice(["train", "val", "test"], size=n_images))
    labels_path = folder / "labels.csv"
    table.to_csv(labels_path, index=False)
    emb_path = folder / "emb.parquet"
    pd.DataFrame({"image_id": ids, "embedding": list(vectors)}).to_parquet(emb_path)
    return labels_path, emb_path


def run_command(labels: Path, embeddings: Path, out: Path) -> list[str]:
    """The CLI call every trial makes (and kills)."""
    return [
        sys.executable,
        "-m",
        "clusterclean.cli",
        "run",
        "--labels",
        str(labels),
        "--embeddings",
        str(embeddings),
        "--out",
        str(out),
        "--no-progress",
        "-q",
    ]


def file_hashes(folder: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``folder`` (empty when absent)."""
    if not folder.is_dir():
        return {}
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def leftovers(out: Path) -> list[str]:
    """Staging and old-copy folders beside ``out`` (``.NAME.partial-*``, ``.NAME.old-*``)."""
    return sorted(
        p.name
        for p in out.parent.iterdir()
        if p.name.startswith((f".{out.name}.partial-", f".{out.name}.old-"))
    )


def classify(out: Path, previous: dict[str, str], complete: dict[str, str]) -> str:
    """``old``, ``new``, ``none`` or ``corrupt: why`` for the report folder after a kill.

    ``previous`` is the hash map of the report before the killed run; ``complete``
    that of a finished run with the same inputs (its Parquet files are
    deterministic, only ``run.json`` timings and ``report.html`` may differ).
    """
    from clusterclean.errors import ClustercleanError
    from clusterclean.report import read_report

    now = file_hashes(out)
    if not out.exists():
        return "none"
    if now == previous:
        return "old"
    try:
        read_report(out)
    except (ClustercleanError, OSError, ValueError) as exc:
        return f"corrupt: read_report failed: {exc}"
    if set(now) != set(complete):
        return f"corrupt: files {sorted(set(now) ^ set(complete))} differ from a complete report"
    parquet = [name for name in complete if name.endswith(".parquet")]
    differing = [name for name in parquet if now[name] != complete[name]]
    if differing:
        return f"corrupt: {differing} differ from a complete run's"
    return "new"


@dataclass
class Trial:
    mode: str  # "anywhere": uniform delay over a whole run; "writing": once staging appears
    delay_s: float
    killed: bool  # False when the run had finished before the kill
    outcome: str
    leftovers_after_kill: int
    inputs_unchanged: bool


def _finish(command: list[str], env: dict[str, str]) -> None:
    # cwd: not the repository, whose clusterclean/ would shadow the frozen copy (python -m)
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=env["PYTHONPATH"])
    if done.returncode != 0:
        raise RuntimeError(f"the uninterrupted run failed: {done.stderr}")


def _kill_once(command, env, out: Path, mode: str, rng, full_s: float, write_s: float):
    """Start the run, SIGKILL it; return ``(killed, delay)``, delay counted from the start
    (``anywhere``) or from the moment a staging folder appeared (``writing``)."""
    before = set(leftovers(out))
    child = subprocess.Popen(
        command,
        env=env,
        cwd=env["PYTHONPATH"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if mode == "writing":
        while child.poll() is None and not set(leftovers(out)) - before:
            time.sleep(0.002)
        delay = float(rng.uniform(0.0, 1.2 * write_s))
    else:
        delay = float(rng.uniform(0.0, 1.1 * full_s))
    time.sleep(delay)
    killed = child.poll() is None
    if killed:
        child.send_signal(signal.SIGKILL)
    child.wait()
    return killed, delay


def run_trials(
    n_trials: int,
    *,
    n_images: int,
    work: Path,
    seed: int = 0,
    rerun_each: bool = True,
    from_head: bool = True,
    log=print,
) -> dict[str, object]:
    """Run the trials in ``work``; return the counts and every trial.

    With ``rerun_each`` the command runs to completion after every kill (each
    kill starts from a complete report); without it the kills follow each other
    (each starts from whatever the last one left) and one rerun ends the series.
    Either way the final rerun must succeed and leave no staging folder behind.
    Odd trials kill anywhere in a run, even ones while the report is being written.
    """
    # The children run a frozen copy of the package -- the committed one (git HEAD)
    # unless ``from_head`` is false -- so that edits made to the working tree while
    # the series runs cannot change the reference report.
    code = work / "code"
    repo = Path(__file__).resolve().parents[1]
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()
    if from_head:
        code.mkdir()
        archive = subprocess.run(
            ["git", "archive", commit, "clusterclean"], cwd=repo, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(code)], input=archive, check=True)
    else:
        commit += " + working tree"
        shutil.copytree(
            repo / "clusterclean",
            code / "clusterclean",
            ignore=shutil.ignore_patterns("__pycache__"),
        )
    check = [sys.executable, "-c", "import clusterclean; print(clusterclean.__file__)"]
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=str(code))
    used = subprocess.run(check, env=env, cwd=code, capture_output=True, text=True).stdout
    if not used.startswith(str(code)):
        raise RuntimeError(f"the children would import {used.strip()}, not the frozen copy")
    labels, embeddings = make_inputs(work, n_images=n_images, seed=seed)
    inputs = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (labels, embeddings)}
    out = work / "report"
    command = run_command(labels, embeddings, out)

    started = time.perf_counter()
    _finish(command, env)
    full_s = time.perf_counter() - started
    write_s = json.loads((out / "run.json").read_text())["timings"]["write"]
    complete = file_hashes(out)
    log(f"{n_images} images; an uninterrupted run takes {full_s:.2f} s, {write_s:.2f} s writing")

    rng = np.random.default_rng(seed)
    trials: list[Trial] = []
    reruns = 0
    for number in range(n_trials):
        mode = "writing" if number % 2 else "anywhere"
        previous = file_hashes(out)
        killed, delay = _kill_once(command, env, out, mode, rng, full_s, write_s)
        trial = Trial(
            mode=mode,
            delay_s=round(delay, 3),
            killed=killed,
            outcome=classify(out, previous, complete),
            leftovers_after_kill=len(leftovers(out)),
            inputs_unchanged=all(
                hashlib.sha256(p.read_bytes()).hexdigest() == h for p, h in inputs.items()
            ),
        )
        trials.append(trial)
        log(
            f"trial {number + 1:2d} ({mode:8s}): kill after {delay:5.2f} s -> {trial.outcome}"
            f" (staging folders left: {trial.leftovers_after_kill})"
            f"{'' if killed else ' [had finished]'}"
            f"{'' if trial.inputs_unchanged else ' INPUTS CHANGED'}"
        )
        if rerun_each or number == n_trials - 1:
            _finish(command, env)  # raises when a leftover breaks the next run
            reruns += 1
            if classify(out, {}, complete) != "new" or leftovers(out):
                raise RuntimeError(f"the rerun after trial {number + 1} left {leftovers(out)}")
    ok = [t for t in trials if not t.outcome.startswith("corrupt") and t.inputs_unchanged]
    counts = {
        "trials": len(trials),
        "killed": sum(t.killed for t in trials),
        "survived": len(ok),
        "outcome_old": sum(t.outcome == "old" for t in trials),
        "outcome_new": sum(t.outcome == "new" for t in trials),
        "outcome_none": sum(t.outcome == "none" for t in trials),
        "corrupt": sum(t.outcome.startswith("corrupt") for t in trials),
        "killed_while_writing": sum(t.leftovers_after_kill > 0 for t in trials),
        "reruns_finished_clean": reruns,
    }
    return {
        "commit": commit,
        "n_images": n_images,
        "full_run_seconds": round(full_s, 3),
        "write_seconds": write_s,
        "counts": counts,
        "trials": [asdict(t) for t in trials],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--n-images", type=int, default=40_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=Path("build/kill_trials.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = run_trials(args.trials, n_images=args.n_images, seed=args.seed, work=Path(tmp))
    counts = result["counts"]
    print(" ".join(f"{k}={v}" for k, v in counts.items()))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.json}")
    return 0 if counts["survived"] == counts["trials"] else 1


if __name__ == "__main__":
    sys.exit(main())
