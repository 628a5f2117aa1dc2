"""Scale benchmark: embeddings -> finished report at N = 100k, 300k, 1M (d = 256).

Data: ``bench_pipeline.make_data`` (planted near-duplicate groups of 1-8, 20
binary attributes with 1% flips). For each N, each in a fresh subprocess (so
the peak RSS is its own):

* ``reference``: bare FAISS + scipy with the same index the pipeline picks at
  that N (exact ``IndexFlatIP`` up to 100k, IVF above) -- search k = 10 + self,
  edges above the cut, ``scipy.sparse.csgraph.connected_components``;
* ``flat``: the exact FAISS search alone where the pipeline uses IVF, only for
  N <= ``--flat-max`` (default 100k, i.e. never: at 100k the reference *is*
  the exact search, and an exact search at 1M is O(N^2 d) = 5e14 flops, hours
  on 2 shared cores);
* ``pipeline``: ``clusterclean.run`` from the vectors to a written report
  folder (every stage: graph, components, scores, pairs, duplicates,
  Parquet + report.html), with each stage's wall time from run.json, then
  (after the peak RSS is taken) the recall of its kNN lists on a sample of
  queries against an exact search: recall@10 counting ties (a returned
  neighbour is right when its similarity is >= the exact 10th similarity), and
  edge recall (exact neighbours above the similarity cut that were found).

Prints a table, writes ``--out/bench_scale.json`` and ``--out/scaling.png``
(wall time vs N, log-log, with an N log N line through the 100k point).

    python scripts/bench_scale.py --sizes 100000 300000 1000000 --out docs/scale
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import MIN_SIMILARITY, N_NEIGHBORS, load_data, make_data  # noqa: E402

from clusterclean.index import FLAT_MAX_IMAGES  # noqa: E402

RECALL_QUERIES = 1000


def _vectors(folder: Path) -> np.ndarray:
    vectors = np.load(folder / "vectors.npy")
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors, dtype=np.float32)


def _graph_reference(folder: Path, kind: str, n_probe: int | None) -> dict:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from clusterclean.index import build_index, choose_index, search_index

    vectors = _vectors(folder)
    n = len(vectors)
    probe = {"n_probe": n_probe} if n_probe and n > FLAT_MAX_IMAGES and kind == "auto" else {}
    spec = choose_index(n, vectors.shape[1], index=kind, **probe)
    index = build_index(vectors, spec)
    sims, idx = search_index(index, vectors, N_NEIGHBORS + 1)
    src = np.repeat(np.arange(n), N_NEIGHBORS + 1)
    keep = (sims.ravel() >= MIN_SIMILARITY) & (idx.ravel() != src) & (idx.ravel() >= 0)
    graph = coo_matrix((np.ones(keep.sum()), (src[keep], idx.ravel()[keep])), shape=(n, n))
    connected_components(graph, directed=False)
    return {"index": spec.as_dict()}


def _pipeline(folder: Path, n_probe: int | None) -> dict:
    import clusterclean as cc

    dataset, embeddings = load_data(folder)
    # the search-based pipeline: the dataset-fitted refinement and the re-ranking
    # (when this version has them) are measured by scripts/bench_pipeline.py
    fields = cc.RunConfig.__dataclass_fields__
    plain = {name: False for name in ("refine", "rerank") if name in fields}
    report = cc.run(
        labels=dataset,
        embeddings=embeddings,
        out=folder / "report",
        progress=False,
        n_neighbors=N_NEIGHBORS,
        min_similarity=MIN_SIMILARITY,
        n_probe=n_probe if len(embeddings) > FLAT_MAX_IMAGES else None,
        **plain,
    )
    info = json.loads((folder / "report" / "run.json").read_text())
    return {
        "stages": info["timings"],
        "index": info["index"],
        "counts": {k: info["counts"][k] for k in ("components_multi", "largest_component")},
        "neighbors": report.neighbors,
        "vectors": embeddings.vectors,
    }


def recall(vectors: np.ndarray, neighbors, queries: np.ndarray) -> dict:
    """Tie-aware recall@k and edge recall of ``neighbors`` on ``queries`` rows."""
    import faiss

    width = neighbors.indices.shape[1]
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    sims, idx = exact.search(vectors[queries], width + 1)
    # drop each query itself (or the last entry when a duplicate displaced it)
    is_self = idx == queries[:, None]
    is_self[~is_self.any(axis=1), -1] = True
    sims = sims[~is_self].reshape(len(queries), width)
    idx = idx[~is_self].reshape(len(queries), width)
    found_sims = neighbors.similarities[queries]
    kth = sims[:, -1:]
    at_k = float((found_sims >= kth - 1e-6).sum() / found_sims.size)
    wanted = sims >= MIN_SIMILARITY
    found = neighbors.indices[queries]
    hits = np.array([np.isin(idx[q][wanted[q]], found[q]).sum() for q in range(len(queries))])
    edge = float(hits.sum() / max(int(wanted.sum()), 1))
    return {"recall_at_k": at_k, "edge_recall": edge, "n_queries": len(queries), "k": width}


def _child(variant: str, folder: Path, n_probe: int | None) -> None:
    import faiss  # noqa: F401  (imported before timing in every variant)
    import pandas  # noqa: F401
    import scipy.sparse.csgraph  # noqa: F401

    import clusterclean.pipeline  # noqa: F401

    started = time.perf_counter()
    if variant == "pipeline":
        extra = _pipeline(folder, n_probe)
    else:
        extra = _graph_reference(folder, "flat" if variant == "flat" else "auto", n_probe)
    seconds = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"variant": variant, "seconds": seconds, "peak_rss_mib": peak_mib}
    if variant == "pipeline":
        vectors, neighbors = extra.pop("vectors"), extra.pop("neighbors")
        rng = np.random.default_rng(1)
        n_queries = min(RECALL_QUERIES, len(vectors))
        queries = np.sort(rng.choice(len(vectors), n_queries, replace=False))
        extra["recall"] = recall(vectors, neighbors, queries)
    result.update(extra)
    result["load_average"] = os.getloadavg()[0]
    print(json.dumps(result))


def _run_child(variant: str, folder: Path, n_probe: int | None) -> dict:
    probe = ["--n-probe", str(n_probe)] if n_probe else []
    out = subprocess.run(
        [sys.executable, __file__, "--child", variant, "--folder", str(folder), *probe],
        capture_output=True,
        text=True,
    )
    if out.returncode:
        sys.exit(f"the {variant} run failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = np.array([r["n"] for r in results], dtype=float)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    series = {
        "pipeline (embeddings -> report)": [r["pipeline"]["seconds"] for r in results],
        "pipeline: kNN graph stage": [r["pipeline"]["stages"]["graph"] for r in results],
        "bare FAISS + scipy (same index)": [r["reference"]["seconds"] for r in results],
    }
    for label, values in series.items():
        ax.plot(sizes, values, marker="o", label=label)
    flat = [(r["n"], r["flat"]["seconds"]) for r in results if "flat" in r]
    if flat:
        ax.plot(*zip(*flat), marker="x", linestyle="none", label="exact flat search")
    base_n, base_t = sizes[0], series["pipeline (embeddings -> report)"][0]
    grid = np.geomspace(sizes[0], sizes[-1], 50)
    ax.plot(
        grid,
        base_t * grid * np.log(grid) / (base_n * math.log(base_n)),
        linestyle="--",
        color="grey",
        label="N log N (through the first point)",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("images N (d = 256)")
    ax.set_ylabel("wall time, s")
    ax.set_title("clusterclean scaling (2 shared cores)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--flat-max", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=Path("docs/scale"))
    parser.add_argument("--n-probe", type=int, default=None, help="IVF cells scanned (default 4)")
    variants = ["reference", "flat", "pipeline"]
    parser.add_argument("--child", choices=variants, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.folder, args.n_probe)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            make_data(n, folder)
            # at N <= FLAT_MAX_IMAGES the reference already is the exact search
            exact_extra = FLAT_MAX_IMAGES < n <= args.flat_max
            variants = ["reference", "pipeline"] + (["flat"] if exact_extra else [])
            runs: dict[str, list[dict]] = {v: [] for v in variants}
            for _ in range(args.repeats):
                for variant in variants:
                    result = _run_child(variant, folder, args.n_probe)
                    runs[variant].append(result)
                    print(
                        f"N={n:>8d} {variant:9s} {result['seconds']:8.1f} s  "
                        f"peak {result['peak_rss_mib']:7.0f} MiB  "
                        f"load {result['load_average']:.1f}",
                        flush=True,
                    )
        entry: dict = {"n": n, "runs": runs}
        for variant, rs in runs.items():
            median = statistics.median(r["seconds"] for r in rs)
            chosen = min(rs, key=lambda r: abs(r["seconds"] - median))
            entry[variant] = chosen
        results.append(entry)
        (args.out / "bench_scale.json").write_text(json.dumps(results, indent=2) + "\n")
        _plot(results, args.out / "scaling.png")
    stages = ["graph", "components", "scores", "duplicates", "write"]
    print(
        f"{'N':>8s} {'total s':>8s} {'peak MiB':>8s} "
        + " ".join(f"{s:>10s}" for s in stages)
        + f" {'ref s':>7s} {'flat s':>7s} {'recall@10':>9s} {'edge rec':>8s}"
    )
    for r in results:
        p = r["pipeline"]
        flat = f"{r['flat']['seconds']:7.1f}" if "flat" in r else f"{'-':>7s}"
        print(
            f"{r['n']:8d} {p['seconds']:8.1f} {p['peak_rss_mib']:8.0f} "
            + " ".join(f"{p['stages'].get(s, float('nan')):10.1f}" for s in stages)
            + f" {r['reference']['seconds']:7.1f} {flat} "
            f"{p['recall']['recall_at_k']:9.3f} {p['recall']['edge_recall']:8.3f}"
        )
    print(f"written to {args.out / 'bench_scale.json'} and {args.out / 'scaling.png'}")


if __name__ == "__main__":
    main()
