"""Measure grouping methods: same-person pairs and the label-error detection they enable.

For each method (plain cosine cut, each refinement alone, the recommended
combination) the similarity cut is chosen on a *selection* benchmark (best
same-person pair F1 over a grid) and then applied unchanged to a *report*
benchmark with other persons (another seed) and to the demo data: no
parameter is tuned on the labels the table reports.

Every benchmark folder holds ``labels.csv`` (image, split, group, attributes),
``vectors_none.npy`` and ``ids_none.npy`` (EfficientNet-Lite0 embeddings and
their image names); ``--embed`` writes them with
``synth.make_fashion_benchmark`` + ``embed_images`` (slow on a CPU: ~1-30
images/s). Label-error detection runs ``clusterclean.run`` on the saved
embeddings with planted minority flips (``synth.inject_noise`` kind
``disagreement``, rate 0.1) and scores ``label_issues`` with
``evaluate.detection_scores``. The demo folder (``make_demo_dataset``) carries
its own planted flips (``planted.csv``).

Usage::

    python scripts/bench_grouping.py --select /tmp/h6/bench_s0 --report /tmp/h6/bench_s1 \\
        --demo /tmp/h6/demo --out docs/grouping
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd

from clusterclean import as_embeddings
from clusterclean.components import find_components, split_components
from clusterclean.evaluate import detection_scores, grouping_scores
from clusterclean.graph import (
    cosine_of_pairs,
    edges_from_neighbors,
    rerank_neighbors,
    scale_locally,
    search_neighbors,
)
from clusterclean.pipeline import RunConfig, _refine, run
from clusterclean.synth import inject_noise

BASE = RunConfig(backbone="efficientnet_lite0", min_similarity=0.9)

#: name -> (what it is, config changes). The cut is chosen per method on the
#: selection data, unless the changes fix ``min_similarity``.
METHODS = {
    "plain": ("cosine cut + connected components", {}),
    "mutual": ("mutual-kNN edges only", {"mutual": True}),
    "local": ("local scaling over 5 neighbours", {"n_local": 5}),
    "communities": ("Louvain split of each component", {"communities": True}),
    "size_cap_20": ("re-split components above 20 images", {"max_component_size": 20}),
    "whiten": ("PCA whitening (auto dim, power 1)", {"refine": True}),
    "rerank": ("k-reciprocal re-ranking (k=6, expansion 2)", {"rerank": True}),
    "whiten+rerank": (
        "whitening + re-ranking (recommended)",
        {"refine": True, "rerank": True},
    ),
    "recommended (cut 0.5)": (
        "whitening + re-ranking at the documented fixed cut 0.5 (demo config)",
        {"refine": True, "rerank": True, "min_similarity": 0.5},
    ),
    "whiten+rerank+communities": (
        "whitening + re-ranking + Louvain",
        {"refine": True, "rerank": True, "communities": True},
    ),
}
CUTS = np.round(np.arange(0.10, 0.96, 0.02), 2)


def _load(folder: Path, vectors: str = "vectors_none.npy", ids: str = "ids_none.npy"):
    names = [Path(str(i)).name for i in np.load(folder / ids)]
    embeddings = as_embeddings(names, np.load(folder / vectors), "efficientnet_lite0")
    labels = pd.read_csv(folder / "labels.csv").rename(columns={"image": "image_id"})
    order = pd.Index(names).get_indexer(labels["image_id"].astype(str))
    embeddings = as_embeddings(
        np.asarray(names, dtype=object)[order], embeddings.vectors[order], "efficientnet_lite0"
    )
    return embeddings, labels


def _embed(folder: Path, seed: int, n_persons: int) -> None:
    from clusterclean import embed_images
    from clusterclean.dataset import load_dataset
    from clusterclean.synth import make_fashion_benchmark

    data = make_fashion_benchmark(folder, n_persons=n_persons, seed=seed)
    dataset = load_dataset(data.labels_path, images=data.images_dir)
    vectors = embed_images(dataset, backbone="efficientnet_lite0", progress=True)
    np.save(folder / "vectors_none.npy", vectors.vectors)
    np.save(folder / "ids_none.npy", np.asarray(vectors.ids, dtype=str))


def choose_cut(embeddings, groups, config: RunConfig) -> float:
    """The grid cut with the best same-person pair F1 on the selection data."""
    return max((f1, cut) for cut, f1 in cut_curve(embeddings, groups, config))[1]


def cut_curve(embeddings, groups, config: RunConfig) -> list[tuple[float, float]]:
    """(cut, same-person pair F1) over the grid :data:`CUTS`.

    Runs the grouping stages of ``run`` (refine, search, re-rank / local
    scaling, cut, components, split) with the lists computed once.
    """
    refined, _ = _refine(embeddings, config)
    neighbors = search_neighbors(refined, n_neighbors=config.n_neighbors)
    if config.rerank:
        neighbors = rerank_neighbors(
            neighbors, refined, n_reciprocal=config.n_reciprocal, n_expansion=config.n_expansion
        )
    if config.n_local:
        neighbors = scale_locally(neighbors, n_local=config.n_local)
    scores = []
    for cut in CUTS:
        edges = edges_from_neighbors(neighbors, min_similarity=float(cut), mutual=config.mutual)
        edges["similarity"] = cosine_of_pairs(embeddings, edges["src"], edges["dst"])
        components = split_components(
            edges,
            find_components(edges, len(embeddings)),
            max_component_size=config.max_component_size,
            communities=config.communities,
        )
        scores.append((float(cut), grouping_scores(components, groups)["pair_f1"]))
    return scores


def plot_curves(embeddings, groups, path: Path) -> None:
    """Pair F1 against the cut for the main methods, one line each, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    for method in ("plain", "local", "whiten", "rerank", "whiten+rerank"):
        curve = cut_curve(embeddings, groups, replace(BASE, **METHODS[method][1]))
        axes.plot([c for c, _ in curve], [f for _, f in curve], label=method)
    axes.set_xlabel("min_similarity (cut on the link similarity)")
    axes.set_ylabel("same-person pair F1")
    axes.set_title("Held-out benchmark: pair F1 against the cut")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(tmp, dpi=110)
    plt.close(figure)
    os.replace(tmp, path)


def measure(embeddings, labels, planted, config: RunConfig, noisy=None, **options) -> dict:
    """Run the whole pipeline once; grouping + detection scores and the wall time.

    ``options`` go to ``run`` (e.g. a fitted ``adaptation``)."""
    noisy = labels if noisy is None else noisy
    started = time.perf_counter()
    report = run(labels=noisy, embeddings=embeddings, config=config, progress=False, **options)
    seconds = time.perf_counter() - started
    truth = labels.set_index("image_id")["group"].reindex(report.images["image_id"]).to_numpy()
    grouping = grouping_scores(report.images["component_id"].to_numpy(), truth)
    detection = detection_scores(report.label_issues, planted, tasks=report.dataset.tasks)
    return {
        "pair_precision": grouping["pair_precision"],
        "pair_recall": grouping["pair_recall"],
        "pair_f1": grouping["pair_f1"],
        "adjusted_rand": grouping["adjusted_rand"],
        "largest_component": grouping["largest_component"],
        "n_components": grouping["n_components"],
        "detection_precision": detection["precision"],
        "detection_recall": detection["recall"],
        "detection_f1": detection["f1"],
        "seconds": seconds,
        "refinement": report.run_info.get("refinement"),
    }


def _markdown(rows: list[dict], title: str) -> str:
    head = (
        f"### {title}\n\n"
        "| method | cut | pair P | pair R | pair F1 | ARI | largest | detect P | detect R "
        "| detect F1 | s |\n|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    body = "".join(
        f"| {r['method']} | {r['cut']:.2f} | {r['pair_precision']:.3f} | {r['pair_recall']:.3f} "
        f"| **{r['pair_f1']:.3f}** | {r['adjusted_rand']:.3f} | {r['largest_component']} "
        f"| {r['detection_precision']:.3f} | {r['detection_recall']:.3f} "
        f"| **{r['detection_f1']:.3f}** | {r['seconds']:.1f} |\n"
        for r in rows
    )
    return head + body


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--select", type=Path, required=True, help="benchmark to choose cuts on")
    parser.add_argument("--report", type=Path, required=True, help="held-out benchmark")
    parser.add_argument("--demo", type=Path, default=None, help="demo folder (optional)")
    parser.add_argument("--out", type=Path, default=Path("docs/grouping"))
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset")
    parser.add_argument("--noise-rate", type=float, default=0.1)
    parser.add_argument(
        "--plot-only", action="store_true", help="only draw cut_curves.png (F1 against the cut)"
    )
    parser.add_argument(
        "--embed",
        nargs=2,
        type=int,
        metavar=("N_PERSONS_SELECT", "N_PERSONS_REPORT"),
        help="first write and embed the benchmarks (seeds 0 and 1)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.embed:
        _embed(args.select, 0, args.embed[0])
        _embed(args.report, 1, args.embed[1])
    select_emb, select_labels = _load(args.select)
    datasets = {"report": _load(args.report)}
    if args.demo is not None:
        demo_emb, demo_labels = _load(args.demo, "vectors.npy", "ids.npy")
        datasets["demo"] = (demo_emb, demo_labels)
    report_emb, report_labels = datasets["report"]
    plot_curves(report_emb, report_labels["group"].to_numpy(), args.out / "cut_curves.png")
    if args.plot_only:
        return 0
    results: dict[str, list[dict]] = {name: [] for name in datasets}
    for method in args.methods.split(","):
        description, changes = METHODS[method]
        config = replace(BASE, **changes)
        if "min_similarity" in changes:  # a fixed, documented cut: nothing to choose
            cut = changes["min_similarity"]
        else:
            cut = choose_cut(select_emb, select_labels["group"].to_numpy(), config)
        config = replace(config, min_similarity=cut)
        for name, (embeddings, labels) in datasets.items():
            if name == "demo":
                planted = pd.read_csv(args.demo / "planted.csv")
                config_here = replace(config, multiclass_columns=("age",))
                row = measure(embeddings, labels, planted, config_here)
            else:
                noise = inject_noise(labels, kind="disagreement", rate=args.noise_rate, seed=0)
                row = measure(embeddings, labels, noise.planted, config, noisy=noise.labels)
            row.update(method=method, description=description, cut=cut)
            results[name].append(row)
            print(
                f"{name:6s} {method:28s} cut {cut:.2f}  pair F1 {row['pair_f1']:.3f}  "
                f"ARI {row['adjusted_rand']:.3f}  largest {row['largest_component']:3d}  "
                f"detection F1 {row['detection_f1']:.3f}  {row['seconds']:.1f} s",
                flush=True,
            )
    payload = {
        "select": str(args.select),
        "report": str(args.report),
        "demo": None if args.demo is None else str(args.demo),
        "noise": {"kind": "disagreement", "rate": args.noise_rate, "seed": 0},
        "base_config": asdict(BASE),
        "cuts_grid": CUTS.tolist(),
        "results": results,
    }
    _write_atomic(args.out / "bench_grouping.json", json.dumps(payload, indent=2, default=str))
    titles = {
        "report": f"Held-out benchmark ({args.report.name}, {len(datasets['report'][0])} images)",
        "demo": "Demo data (make_demo_dataset, 60 persons)",
    }
    markdown = "\n".join(_markdown(results[name], titles[name]) for name in results)
    _write_atomic(args.out / "bench_grouping.md", markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
