"""Compare one run on the same files at two checkouts: stage seconds and report bytes.

Each run is ``clusterclean.run`` on ``--folder``'s ``jpegs/`` and ``labels.csv`` (as
written by ``bench_full_run.py --folder``) in a fresh subprocess whose ``PYTHONPATH`` is
the checkout, with an embedding cache filled once beforehand, so that what differs
between the checkouts is what runs after the embedding. The checkouts alternate (A, B,
A, B, ...) so that load on a shared machine hits both alike. Prints each run, the
median seconds of every stage (``run.json`` timings) and of the whole run, the ratio
B / A, and whether the two checkouts wrote the same bytes in every Parquet table;
writes everything to JSON.

    python scripts/bench_stage_ab.py --folder /tmp/exp/bench5k --a /tmp/old-checkout \\
        --b . --option adapt=none --repeats 3 --json docs/perf/duplicates_ab_s27.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_embed import write_result  # noqa: E402

CHILD = """
import json, sys, time
import clusterclean as cc
folder, out, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
started = time.perf_counter()
report = cc.run(folder + "/jpegs", folder + "/labels.csv", out=out, progress=False,
                cache_dir=folder + "/cache_ab", **options)
print(json.dumps({"seconds": time.perf_counter() - started,
                  "timings": report.run_info.timings, "module": cc.__file__}))
"""


def _option(text: str) -> tuple[str, object]:
    name, _, value = text.partition("=")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


def _tables(out: Path) -> dict[str, str]:
    """BLAKE2b of each Parquet table the run wrote."""
    return {
        p.name: hashlib.blake2b(p.read_bytes(), digest_size=16).hexdigest()
        for p in sorted(out.glob("*.parquet"))
    }


def _commit(checkout: Path) -> str:
    """The checkout's commit, with ``+changes`` when its tracked files differ from it."""

    def git(*arguments: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(checkout), *arguments], capture_output=True, text=True
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "HEAD") or "not a git checkout"
    return commit + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def _run(checkout: Path, folder: Path, options: dict) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "report"
        environment = dict(os.environ, PYTHONPATH=str(checkout.resolve()))
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(folder.resolve()), str(out), json.dumps(options)],
            check=True,
            capture_output=True,
            text=True,
            env=environment,
            cwd=scratch,  # not the current folder: it may hold another checkout
        )
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result["tables"] = _tables(out)
    expected = (checkout.resolve() / "clusterclean").resolve()
    if Path(result["module"]).resolve().parent != expected:
        raise SystemExit(f"the run imported {result['module']}, not the checkout {checkout}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, required=True, help="jpegs/ and labels.csv")
    parser.add_argument("--a", type=Path, required=True, help="the reference checkout")
    parser.add_argument("--b", type=Path, required=True, help="the checkout compared")
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=Path("bench_stage_ab.json"))
    args = parser.parse_args(argv)
    options = dict(_option(o) for o in args.option)
    checkouts = {"a": args.a, "b": args.b}
    _run(args.b, args.folder, options)  # fills the embedding cache; not measured
    runs: dict[str, list[dict]] = {"a": [], "b": []}
    for repeat in range(args.repeats):
        for name, checkout in checkouts.items():
            result = _run(checkout, args.folder, options)
            runs[name].append(result)
            stages = ", ".join(f"{k} {v:.2f}" for k, v in result["timings"].items())
            print(f"run {repeat + 1}/{args.repeats} {name}: {result['seconds']:.2f} s ({stages})")
    medians = {
        name: {
            "seconds": statistics.median(r["seconds"] for r in results),
            **{
                stage: statistics.median(r["timings"][stage] for r in results)
                for stage in results[0]["timings"]
            },
        }
        for name, results in runs.items()
    }
    ratios = {
        key: (medians["b"][key] / medians["a"][key] if medians["a"][key] else None)
        for key in medians["a"]
        if key in medians["b"]
    }
    same_tables = all(r["tables"] == runs["a"][0]["tables"] for r in runs["a"] + runs["b"])
    for key, ratio in ratios.items():
        shown = "n/a" if ratio is None else f"{ratio:.2f}"
        print(f"{key}: A {medians['a'][key]:.2f} s, B {medians['b'][key]:.2f} s, B/A {shown}")
    print(f"same Parquet bytes at both checkouts: {same_tables}")
    write_result(
        args.json,
        {
            "folder": str(args.folder),
            "checkouts": {k: str(v) for k, v in checkouts.items()},
            "commits": {k: _commit(v) for k, v in checkouts.items()},
            "options": options,
            "load_average": os.getloadavg()[0],
            "runs": runs,
            "medians": medians,
            "b_over_a": ratios,
            "same_parquet_bytes": same_tables,
            "command": " ".join(["scripts/bench_stage_ab.py", *(argv or sys.argv[1:])]),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
