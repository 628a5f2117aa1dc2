"""System time against user time of the demo: is the CPU spent on work or on the kernel?

Runs ``clusterclean demo`` (the README's first command: 254 images and the default
head's 508 views) ``--repeats`` times for each variant, alternating so that load on a
shared machine hits both alike, each in a fresh process, and reads the process's CPU
time from ``resource.getrusage(RUSAGE_CHILDREN)`` (the demo's decoding workers
included). Variants:

- ``default``: the demo as a user runs it;
- each ``--workers N`` given (e.g. 2): the demo with ``--workers N``, e.g. the worker
  processes that the default starts only above 256 inputs.

Prints each run and, per variant, the medians of wall, user and system seconds and of
``system / user``; writes everything to JSON.

    python scripts/bench_demo_time.py --repeats 5 --workers 2 --json docs/perf/demo_time_s26.json
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_embed import write_result  # noqa: E402


def run_demo(workers: int | None) -> dict:
    """One demo in a fresh process: wall, user and system seconds (its children's)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory() as scratch:
        command = [sys.executable, "-m", "clusterclean.cli", "demo", "--out", "demo-out"]
        command += ["--no-progress"] + ([] if workers is None else ["--workers", str(workers)])
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, cwd=scratch)
        wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    return {"wall_s": wall, "user_s": user, "system_s": system, "system_per_user": system / user}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--workers", type=int, action="append", default=[], help="also this --workers value"
    )
    parser.add_argument("--json", type=Path, default=Path("demo_time.json"))
    args = parser.parse_args(argv)
    variants = {"default": None, **{f"workers_{n}": n for n in args.workers}}
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    load_before = os.getloadavg()
    for repeat in range(args.repeats):
        for name, workers in variants.items():
            result = run_demo(workers)
            runs[name].append(result)
            print(
                f"{name:10s} run {repeat + 1}: wall {result['wall_s']:.2f} s, user "
                f"{result['user_s']:.2f} s, system {result['system_s']:.2f} s "
                f"({100 * result['system_per_user']:.1f} %)",
                flush=True,
            )
    medians = {
        name: {key: statistics.median(r[key] for r in rows) for key in rows[0]}
        for name, rows in runs.items()
    }
    for name, m in medians.items():
        print(
            f"median {name:10s}: wall {m['wall_s']:.2f} s, user {m['user_s']:.2f} s, system "
            f"{m['system_s']:.2f} s, system / user {100 * m['system_per_user']:.1f} %"
        )
    write_result(
        args.json,
        {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "load_average_before_after": [load_before[0], os.getloadavg()[0]],
            "repeats": args.repeats,
            "runs": runs,
            "medians": medians,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
