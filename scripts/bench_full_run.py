"""Benchmark the full default run (with its projection head) against the embed-only run.

On ``--n-images`` generated JPEGs (photo-like, see ``bench_embed.generate_jpegs``) with a
labels table of ``N_ATTRIBUTES`` random binary attributes, in one run, alternating so that
load on a shared machine hits every variant alike, each in a fresh subprocess (so its CPU
time, its workers' included, and its peak memory are its own):

- ``embed_only``: ``embed_images`` on the files, the embedding stage alone;
- ``run_no_head``: ``clusterclean.run`` with ``adapt="none"``: embedding, whitening, graph,
  components, scores, report folder;
- ``run_default``: ``clusterclean.run`` with the defaults: the same plus the projection
  head (``adapt="auto"``: 2 augmented views of up to 2,000 images, embedded and trained on);
- with ``--cache``, ``run_default_rerun``: the default run again with ``cache_dir`` filled
  by a first (unmeasured) run with the same files: what a user's second run costs;
- with ``--view-size N`` (or ``none``), ``run_view_size``: the default run with
  ``adapt_view_size=N``, the head's views at another input size.

Prints each run, the medians (seconds, images/s, user and system CPU seconds), the ratios
``run_default / embed_only`` and ``run_default / run_no_head``, and the default run's
stage seconds from ``run.json``; writes everything to JSON.

    python scripts/bench_full_run.py --n-images 5000 --repeats 2 --cache \
        --json docs/perf/bench_full_run_5000.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_embed import generate_jpegs, write_result  # noqa: E402

N_ATTRIBUTES = 10
VARIANTS = ("embed_only", "run_no_head", "run_default")


def write_labels(paths: list[str], folder: Path, seed: int = 0) -> Path:
    """A wide labels CSV: one row per image, ``N_ATTRIBUTES`` random 0/1 columns."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    table = pd.DataFrame(
        rng.integers(0, 2, size=(len(paths), N_ATTRIBUTES)),
        columns=[f"attr_{a}" for a in range(N_ATTRIBUTES)],
    )
    table.insert(0, "image", [Path(p).name for p in paths])
    path = folder / "labels.csv"
    table.to_csv(path, index=False)
    return path


def _child(variant: str, folder: Path, scratch: Path, view_size: int | None) -> None:
    import clusterclean as cc

    images, labels = folder / "jpegs", folder / "labels.csv"
    files = sorted(str(p) for p in images.glob("img_*.jpg"))
    out = scratch / "report"
    started = time.perf_counter()
    timings = None
    if variant == "embed_only":
        cc.embed_images(files, progress=False)
    else:
        options = {"adapt": "none"} if variant == "run_no_head" else {}
        if variant == "run_default_rerun":
            options["cache_dir"] = folder / "cache"
        if variant == "run_view_size":
            options["adapt_view_size"] = view_size
        report = cc.run(images, labels, out=out, progress=False, **options)
        timings = report.run_info.timings
        adaptation = report.run_info.adaptation
    seconds = time.perf_counter() - started
    own = resource.getrusage(resource.RUSAGE_SELF)
    workers = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = {
        "variant": variant,
        "seconds": seconds,
        "user_s": own.ru_utime + workers.ru_utime,
        "system_s": own.ru_stime + workers.ru_stime,
        "peak_rss_mib": own.ru_maxrss / 1024,
        "timings": timings,
    }
    if timings is not None:
        result["adaptation"] = None if adaptation is None else adaptation.get("method")
    print(json.dumps(result))


def _view_size(text: str) -> int | None:
    return None if text.lower() == "none" else int(text)


def _measure(variant: str, folder: Path, view_size: str | None = None) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        command = [sys.executable, __file__, "--child", variant, "--folder", str(folder)]
        if view_size is not None:
            command += ["--view-size", view_size]
        done = subprocess.run(
            [*command, "--scratch", scratch], check=True, capture_output=True, text=True
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-images", type=int, default=5000)
    parser.add_argument("--image-size", default="500x375", help="WIDTHxHEIGHT of the JPEGs")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cache", action="store_true", help="also measure a cached rerun")
    parser.add_argument("--folder", type=Path, default=None, help="keep/reuse the JPEGs here")
    parser.add_argument("--json", type=Path, default=Path("bench_full_run.json"))
    parser.add_argument(
        "--view-size", help="also the default run with adapt_view_size=VALUE (an int or none)"
    )
    parser.add_argument(
        "--child",
        choices=[*VARIANTS, "run_default_rerun", "run_view_size"],
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        view_size = None if args.view_size is None else _view_size(args.view_size)
        _child(args.child, args.folder, args.scratch, view_size)
        return 0

    import clusterclean

    width, height = (int(v) for v in args.image_size.lower().split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        paths = generate_jpegs(folder / "jpegs", args.n_images, (width, height))
        for extra in sorted((folder / "jpegs").glob("img_*.jpg"))[args.n_images :]:
            extra.unlink()  # a kept folder of more images: the run reads the whole folder
        write_labels(paths, folder)
        variants = [*VARIANTS, "run_default_rerun"] if args.cache else list(VARIANTS)
        if args.view_size is not None:
            _view_size(args.view_size)  # a bad value fails here, not in a child
            variants.append("run_view_size")
        if args.cache:  # fill the cache once, with the images' and the views' vectors
            shutil.rmtree(folder / "cache", ignore_errors=True)
            _measure("run_default_rerun", folder)
        load_before = os.getloadavg()
        runs: dict[str, list[dict]] = {v: [] for v in variants}
        for repeat in range(args.repeats):
            for variant in variants:
                result = _measure(variant, folder, args.view_size)
                runs[variant].append(result)
                print(
                    f"run {repeat + 1}/{args.repeats} {variant}: {result['seconds']:.1f} s "
                    f"({args.n_images / result['seconds']:.1f} img/s; user "
                    f"{result['user_s']:.1f} s, sys {result['system_s']:.1f} s)",
                    flush=True,
                )
        load_after = os.getloadavg()

    def median(variant: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[variant])

    medians = {
        v: {
            "seconds": median(v, "seconds"),
            "images_per_s": args.n_images / median(v, "seconds"),
            "user_s": median(v, "user_s"),
            "system_s": median(v, "system_s"),
        }
        for v in variants
    }

    def median_stages(variant: str) -> dict[str, float]:
        """Each stage's median seconds over the variant's runs (run.json timings)."""
        return {
            stage: statistics.median(r["timings"][stage] for r in runs[variant])
            for stage in runs[variant][0]["timings"]
        }

    default = medians["run_default"]["seconds"]
    stages = median_stages("run_default")
    result = {
        "n_images": args.n_images,
        "image_size": [width, height],
        "n_attributes": N_ATTRIBUTES,
        "cpu_count": os.cpu_count(),
        "load_average_before_after": [load_before[0], load_after[0]],
        "runs": runs,
        "medians": medians,
        "run_default_over_embed_only": default / medians["embed_only"]["seconds"],
        "run_default_over_run_no_head": default / medians["run_no_head"]["seconds"],
        "median_stage_seconds_run_default": stages,
        "versions": {"clusterclean": clusterclean.__version__, "python": platform.python_version()},
        "command": " ".join(
            ["scripts/bench_full_run.py", *(argv if argv is not None else sys.argv[1:])]
        ),
    }
    if args.cache:
        result["run_default_rerun_over_embed_only"] = (
            medians["run_default_rerun"]["seconds"] / medians["embed_only"]["seconds"]
        )
    for v, m in medians.items():
        print(
            f"{v}: {m['seconds']:.1f} s = {m['images_per_s']:.1f} img/s (user {m['user_s']:.1f} "
            f"s, sys {m['system_s']:.1f} s)"
        )
    print(
        f"run_default / embed_only = {result['run_default_over_embed_only']:.2f}; "
        f"run_default / run_no_head = {result['run_default_over_run_no_head']:.2f}; "
        f"stages of run_default (s): " + ", ".join(f"{k} {v:.1f}" for k, v in stages.items())
    )
    if args.view_size is not None:
        view_stages = median_stages("run_view_size")
        result["view_size"] = args.view_size
        result["run_view_size_over_embed_only"] = (
            medians["run_view_size"]["seconds"] / medians["embed_only"]["seconds"]
        )
        result["median_stage_seconds_run_view_size"] = view_stages
        print(
            f"run_view_size (adapt_view_size={args.view_size}) / embed_only = "
            f"{result['run_view_size_over_embed_only']:.2f}; its stages (s): "
            + ", ".join(f"{k} {v:.1f}" for k, v in view_stages.items())
        )
    write_result(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
