"""Benchmark the post-embedding pipeline against a bare FAISS + scipy reference.

Synthetic data: N embeddings (d = 256) in planted near-duplicate groups of 1-8
with 20 binary attributes (a few flipped). In one run, alternating, each in a
fresh subprocess (so peak RSS is its own):

* reference: faiss.IndexFlatIP search (k = 10 + self) + scipy connected_components
  over the edges above the cut;
* pipeline: clusterclean.run(...) with the vectors given and default options
  (whitening, kNN graph, re-ranking, components, scores, pairs, duplicates,
  report folder written to disk).

Prints each run, the medians, the ratio pipeline / reference (target <= 1.5),
and writes everything to JSON. The last line is ``ratio: X.XX``.

    python scripts/bench_pipeline.py --n 100000 --repeats 3 --json build/bench_pipeline.json
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

N_ATTRIBUTES = 20
DIM = 256
N_NEIGHBORS = 10
MIN_SIMILARITY = 0.9


def make_data(n: int, folder: Path, seed: int = 0) -> None:
    """Planted groups of 1-8 near-identical unit vectors; per-group labels with flips."""
    rng = np.random.default_rng(seed)
    sizes = []
    while sum(sizes) < n:
        sizes.append(int(rng.integers(1, 9)))
    sizes[-1] -= sum(sizes) - n
    groups = np.repeat(np.arange(len(sizes)), sizes)
    centres = rng.normal(size=(len(sizes), DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    vectors = centres[groups] + 0.02 * rng.normal(size=(n, DIM)).astype(np.float32)
    labels = rng.integers(0, 2, size=(len(sizes), N_ATTRIBUTES)).astype(np.float32)[groups]
    flips = rng.random(labels.shape) < 0.01
    labels[flips] = 1 - labels[flips]
    np.save(folder / "vectors.npy", vectors.astype(np.float32))
    np.save(folder / "labels.npy", labels)


def _reference(folder: Path) -> None:
    import faiss
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    vectors = np.load(folder / "vectors.npy")
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    sims, idx = index.search(vectors, N_NEIGHBORS + 1)
    src = np.repeat(np.arange(len(vectors)), N_NEIGHBORS + 1)
    keep = (sims.ravel() >= MIN_SIMILARITY) & (idx.ravel() != src)
    n = len(vectors)
    graph = coo_matrix((np.ones(keep.sum()), (src[keep], idx.ravel()[keep])), shape=(n, n))
    connected_components(graph, directed=False)


def load_data(folder: Path):
    """The Dataset and Embeddings that :func:`make_data` wrote into ``folder``."""
    import pandas as pd

    import clusterclean as cc

    vectors = np.load(folder / "vectors.npy")
    labels = np.load(folder / "labels.npy")
    ids = [f"img{i:07d}" for i in range(len(vectors))]
    dataset = cc.Dataset(
        table=pd.DataFrame({"image_id": ids}),
        labels=labels,
        attributes=[f"attr_{a}" for a in range(labels.shape[1])],
    )
    return dataset, cc.as_embeddings(ids, vectors)


def _pipeline(folder: Path) -> None:
    import clusterclean as cc

    dataset, embeddings = load_data(folder)
    # the default pipeline (whitening + re-ranking + its own cut), as a user runs it
    cc.run(
        labels=dataset,
        embeddings=embeddings,
        out=folder / "report",
        progress=False,
        n_neighbors=N_NEIGHBORS,
    )


def _child(variant: str, folder: Path) -> None:
    import faiss  # noqa: F401  (imported before timing in both variants)
    import pandas  # noqa: F401
    import scipy.sparse.csgraph  # noqa: F401

    started = time.perf_counter()
    (_reference if variant == "reference" else _pipeline)(folder)
    seconds = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"variant": variant, "seconds": seconds, "peak_rss_mib": peak_mib}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=Path("build/bench_pipeline.json"))
    parser.add_argument("--child", choices=["reference", "pipeline"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.folder)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_data(args.n, folder)
        runs = {"reference": [], "pipeline": []}
        for repeat in range(args.repeats):
            for variant in ("reference", "pipeline"):
                out = subprocess.run(
                    [sys.executable, __file__, "--child", variant, "--folder", str(folder)],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                result = json.loads(out.stdout.strip().splitlines()[-1])
                runs[variant].append(result)
                print(
                    f"run {repeat + 1} {variant:9s} {result['seconds']:7.2f} s  "
                    f"peak {result['peak_rss_mib']:7.0f} MiB",
                    flush=True,
                )
    medians = {
        v: {
            "seconds": statistics.median(r["seconds"] for r in rs),
            "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in rs),
        }
        for v, rs in runs.items()
    }
    ratio = medians["pipeline"]["seconds"] / medians["reference"]["seconds"]
    summary = {
        "n": args.n,
        "dim": DIM,
        "n_attributes": N_ATTRIBUTES,
        "n_neighbors": N_NEIGHBORS,
        "reference_min_similarity": MIN_SIMILARITY,
        "repeats": args.repeats,
        "runs": runs,
        "medians": medians,
        "ratio": ratio,
        "target_ratio": 1.5,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(summary, indent=2) + "\n")
    for variant, m in medians.items():
        print(f"median {variant:9s} {m['seconds']:7.2f} s  peak {m['peak_rss_mib']:7.0f} MiB")
    print(f"written to {args.json}")
    print(f"ratio: {ratio:.2f}")


if __name__ == "__main__":
    main()
