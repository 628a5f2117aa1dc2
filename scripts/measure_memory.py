"""Measure the peak memory of ``clusterclean.run`` on N given vectors, for several N.

Each size runs in a fresh subprocess (so ``ru_maxrss`` is its own): the data are
``scripts/bench_pipeline.py``'s planted groups (d = 256, 20 attributes), and the
run goes through every stage after embedding -- kNN graph, components, scores,
pairs, duplicates, report folder written. Prints, per N, the resident set after
the imports, the peak, and the peak per image, then a least-squares line
``peak = a + b * N`` as the documented bound, and writes everything to JSON.

    python scripts/measure_memory.py --sizes 25000 50000 100000 --json build/memory.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import DIM, N_ATTRIBUTES, make_data  # noqa: E402


def _rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _child(folder: Path) -> None:
    import pandas as pd

    import clusterclean as cc

    cc.run  # noqa: B018  (resolve the lazy import before the baseline)
    import faiss  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    vectors = np.load(folder / "vectors.npy")
    labels = np.load(folder / "labels.npy")
    baseline = _rss_mib()
    ids = [f"img{i:07d}" for i in range(len(vectors))]
    dataset = cc.Dataset(
        table=pd.DataFrame({"image_id": ids}),
        labels=labels,
        attributes=[f"attr_{a}" for a in range(labels.shape[1])],
    )
    started = time.perf_counter()
    cc.run(
        labels=dataset,
        embeddings=cc.as_embeddings(ids, vectors),
        out=folder / "report",
        progress=False,
    )
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"baseline_rss_mib": baseline, "peak_rss_mib": peak, "seconds": seconds}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[25_000, 50_000, 100_000])
    parser.add_argument("--json", type=Path, default=Path("build/memory.json"))
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child)
        return 0
    rows = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            make_data(n, Path(tmp))
            done = subprocess.run(
                [sys.executable, __file__, "--child", tmp],
                capture_output=True,
                text=True,
                check=True,
            )
        row = {"n": n, **json.loads(done.stdout.strip().splitlines()[-1])}
        row["peak_bytes_per_image"] = row["peak_rss_mib"] * 2**20 / n
        rows.append(row)
        print(
            f"N={n:7d}: after imports {row['baseline_rss_mib']:6.0f} MiB, peak "
            f"{row['peak_rss_mib']:6.0f} MiB ({row['peak_bytes_per_image'] / 1024:.1f} KiB/image),"
            f" {row['seconds']:.1f} s",
            flush=True,
        )
    summary = {"dim": DIM, "n_attributes": N_ATTRIBUTES, "runs": rows}
    if len(rows) >= 2:
        n = np.array([r["n"] for r in rows], dtype=float)
        peak = np.array([r["peak_rss_mib"] for r in rows])
        slope, intercept = np.polyfit(n, peak, 1)
        summary["fit"] = {"intercept_mib": intercept, "kib_per_image": slope * 1024}
        print(f"peak RSS ~ {intercept:.0f} MiB + {slope * 1024:.2f} KiB x N (d = {DIM})")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
