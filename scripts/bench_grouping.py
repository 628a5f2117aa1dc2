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
its own planted flips (``planted.csv``); ``--make-demo DIR`` writes and embeds it.

Two rows need more than the saved embeddings:

* flip test-time augmentation (``tta="flip"``) reads ``NAME_flip_vectors.npy``
  and ``NAME_flip_ids.npy`` from ``--flip DIR`` (NAME = the benchmark folder's
  name), written by ``embed_images(..., tta="flip")``;
* the calibrated cut (``min_similarity="auto"``) reads augmented views
  ``NAME.npz`` (arrays ``rows``, ``vectors``, ``ids``, from
  ``views.embed_views(dataset, n_views=2, max_images=None, seed=0)``) from
  ``--views DIR``, runs ``calibrate_cut`` with the run's options, and compares
  its estimated pair precision / recall with the true ones at its cut and at
  the best cut.

Usage::

    python scripts/bench_grouping.py --select /tmp/h6/bench_s0 --report /tmp/h6/bench_s1 \\
        --demo /tmp/h6/demo --flip /tmp/s2/calib --views /tmp/s2/calib/views --out docs/grouping
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

from clusterclean import AugmentedViews, as_embeddings
from clusterclean.calibrate import calibrate_cut
from clusterclean.evaluate import detection_scores, grouping_scores
from clusterclean.group import Grouper, GroupOptions, components_per_cut
from clusterclean.pipeline import RunConfig, refine_vectors, run
from clusterclean.synth import inject_noise

#: The plain cosine graph; every method changes it (the cosine floor 0.5 of the
#: default stays on: it only matters once re-ranking is on).
BASE = RunConfig(backbone="efficientnet_lite0", min_similarity=0.9, refine=False, rerank=False)

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
    "recommended + flip TTA": (
        "the default, cut 0.5, on flip test-time-augmented embeddings (f(x) + f(mirror x)) / 2",
        {"refine": True, "rerank": True, "min_similarity": 0.5, "tta": "flip"},
    ),
    "recommended + auto cut": (
        "whitening + re-ranking, cut calibrated per data set on augmented views (no labels)",
        {"refine": True, "rerank": True, "min_similarity": "auto"},
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


def _load_config(folder: Path, config: RunConfig, flip: Path | None):
    """The embeddings a method uses: flip-TTA ones from ``flip`` when ``config.tta == "flip"``."""
    demo = not (folder / "vectors_none.npy").exists()
    if config.tta == "flip":
        if flip is None:
            raise SystemExit(f"method with tta='flip' needs --flip DIR (for {folder.name})")
        embeddings, labels = _load(
            folder,
            str(flip / f"{folder.name}_flip_vectors.npy"),
            str(flip / f"{folder.name}_flip_ids.npy"),
        )
    elif demo:
        embeddings, labels = _load(folder, "vectors.npy", "ids.npy")
    else:
        embeddings, labels = _load(folder)
    return embeddings, labels


def _load_views(path: Path, embeddings) -> AugmentedViews:
    """Saved views, their rows aligned to ``embeddings`` by image id."""
    saved = np.load(path)
    rows = pd.Index(embeddings.ids.astype(str)).get_indexer(
        [Path(str(i)).name for i in saved["ids"]]
    )
    if (rows < 0).any():
        raise SystemExit(f"{path}: {int((rows < 0).sum())} view ids are not in the embeddings")
    order = np.argsort(rows)
    return AugmentedViews(rows[order], saved["vectors"][order], embeddings.backbone)


def _make_demo(folder: Path) -> None:
    from clusterclean import embed_images
    from clusterclean.dataset import load_dataset
    from clusterclean.synth import make_demo_dataset

    data = make_demo_dataset(folder)
    dataset = load_dataset(data.labels_path, images=data.images_dir, multiclass_columns=("age",))
    vectors = embed_images(dataset, backbone="efficientnet_lite0", progress=True)
    np.save(folder / "vectors.npy", vectors.vectors)
    np.save(folder / "ids.npy", np.asarray(vectors.ids, dtype=str))


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
    return max((s["pair_f1"], cut) for cut, s in cut_curve(embeddings, groups, config))[1]


def cut_curve(embeddings, groups, config: RunConfig) -> list[tuple[float, dict]]:
    """(cut, same-person pair scores) over the grid :data:`CUTS`.

    The grouping stages of ``run`` (refine, search, re-rank / local scaling,
    cut, cosine floor, components, split) with the lists scored once
    (:func:`clusterclean.calibrate.components_per_cut`).
    """
    _, refinement = refine_vectors(embeddings, config)
    per_cut = components_per_cut(
        embeddings,
        grouper=Grouper(GroupOptions.of(config)),
        refinement=refinement,
        cuts=CUTS,
    )
    return [(float(c), grouping_scores(ids, groups)) for c, ids in zip(CUTS, per_cut)]


def calibrated_cut(embeddings, groups, views: AugmentedViews, config: RunConfig) -> dict:
    """``min_similarity="auto"`` on saved views: its cut and estimates, and the truth."""
    _, refinement = refine_vectors(embeddings, config)
    started = time.perf_counter()
    calibration = calibrate_cut(
        embeddings,
        views,
        grouper=Grouper(GroupOptions.of(config)),
        refinement=refinement,
        cuts=CUTS,
    )
    seconds = time.perf_counter() - started
    truth = dict(cut_curve(embeddings, groups, config))
    best = max(truth, key=lambda c: truth[c]["pair_f1"])
    chosen = calibration.min_similarity
    keys = ("pair_precision", "pair_recall", "pair_f1")
    return {
        "cut": chosen,
        "estimated": calibration.at(chosen),
        "true": {k: truth[chosen][k] for k in keys},
        "best_cut": best,
        "true_at_best": {k: truth[best][k] for k in keys},
        "true_at_0.5": {k: truth[0.5][k] for k in keys},
        "n_same_pairs_estimated": calibration.n_same_pairs,
        "seconds": seconds,
        "summary": calibration.summary(),
    }


def plot_curves(embeddings, groups, path: Path) -> None:
    """Pair F1 against the cut for the main methods, one line each, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    for method in ("plain", "local", "whiten", "rerank", "whiten+rerank"):
        curve = cut_curve(embeddings, groups, replace(BASE, **METHODS[method][1]))
        axes.plot([c for c, _ in curve], [s["pair_f1"] for _, s in curve], label=method)
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


def measure(embeddings, labels, planted, config: RunConfig, noisy=None) -> dict:
    """Run the whole pipeline once; grouping + detection scores and the wall time."""
    noisy = labels if noisy is None else noisy
    started = time.perf_counter()
    report = run(labels=noisy, embeddings=embeddings, config=config, progress=False)
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


def _calibration_markdown(rows: dict[str, dict], titles: dict[str, str]) -> str:
    head = (
        '### Calibrated cut (`min_similarity="auto"`): estimate vs truth\n\n'
        "| data | auto cut | est. P | est. R | est. F1 | true P | true R | true F1 "
        "| best cut | its true F1 | true F1 at 0.5 | s |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    body = "".join(
        f"| {titles[name]} | {r['cut']:.2f} | {r['estimated']['precision']:.3f} "
        f"| {r['estimated']['recall']:.3f} | {r['estimated']['f1']:.3f} "
        f"| {r['true']['pair_precision']:.3f} | {r['true']['pair_recall']:.3f} "
        f"| **{r['true']['pair_f1']:.3f}** | {r['best_cut']:.2f} "
        f"| {r['true_at_best']['pair_f1']:.3f} | {r['true_at_0.5']['pair_f1']:.3f} "
        f"| {r['seconds']:.1f} |\n"
        for name, r in rows.items()
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
    parser.add_argument("--flip", type=Path, default=None, help="folder of flip-TTA embeddings")
    parser.add_argument("--views", type=Path, default=None, help="folder of augmented views")
    parser.add_argument(
        "--make-demo", action="store_true", help="first write and embed the demo into --demo"
    )
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
    if args.make_demo:
        _make_demo(args.demo)
    folders = {"report": args.report, **({"demo": args.demo} if args.demo else {})}
    report_emb, report_labels = _load(args.report)
    plot_curves(report_emb, report_labels["group"].to_numpy(), args.out / "cut_curves.png")
    if args.plot_only:
        return 0
    results: dict[str, list[dict]] = {name: [] for name in folders}
    calibrations: dict[str, dict] = {}
    for method in args.methods.split(","):
        description, changes = METHODS[method]
        config = replace(BASE, **changes)
        if "min_similarity" not in changes:
            select_emb, select_labels = _load_config(args.select, config, args.flip)
            cut = choose_cut(select_emb, select_labels["group"].to_numpy(), config)
        else:  # a fixed, documented cut, or one calibrated per data set: nothing to choose
            cut = changes["min_similarity"]
        for name, folder in folders.items():
            embeddings, labels = _load_config(folder, config, args.flip)
            if cut == "auto":
                views = _load_views(args.views / f"{folder.name}.npz", embeddings)
                calibrations[name] = calibrated_cut(
                    embeddings, labels["group"].to_numpy(), views, config
                )
                config_here = replace(config, min_similarity=calibrations[name]["cut"])
            else:
                config_here = replace(config, min_similarity=cut)
            if name == "demo":
                planted = pd.read_csv(args.demo / "planted.csv")
                config_here = replace(config_here, multiclass_columns=("age",))
                row = measure(embeddings, labels, planted, config_here)
            else:
                noise = inject_noise(labels, kind="disagreement", rate=args.noise_rate, seed=0)
                row = measure(embeddings, labels, noise.planted, config_here, noisy=noise.labels)
            row.update(method=method, description=description, cut=config_here.min_similarity)
            results[name].append(row)
            print(
                f"{name:6s} {method:28s} cut {row['cut']:.2f}  pair F1 {row['pair_f1']:.3f}  "
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
        "calibration": calibrations,
    }
    _write_atomic(args.out / "bench_grouping.json", json.dumps(payload, indent=2, default=str))
    titles = {
        "report": f"Held-out benchmark ({args.report.name}, {len(report_emb)} images)",
        "demo": "Demo data (make_demo_dataset, 60 persons)",
    }
    markdown = "\n".join(_markdown(results[name], titles[name]) for name in results)
    if calibrations:
        markdown += "\n" + _calibration_markdown(calibrations, titles)
    _write_atomic(args.out / "bench_grouping.md", markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
