"""Does cleaning help? Noise sweeps, detection quality and downstream F1 on the benchmark.

    .venv/bin/python scripts/make_benchmark.py --out benchmarks/fashion
    .venv/bin/python scripts/evaluate_benchmark.py --benchmark benchmarks/fashion --out docs/results

Reads the benchmark (true labels, persons, precomputed embeddings), runs the
pipeline with the recommended grouping pinned (``refine=True, rerank=True``;
``--run-option refine=false --run-option rerank=false`` for the plain cosine
graph) and writes under ``--out``:

* ``threshold_sweep.parquet`` -- for each similarity cut, through the
  pipeline (so ``--run-option`` settings apply): components vs persons and
  ``label_issues`` precision / recall at the reference noise
  (``--reference disagreement:0.1``); ``grouping_sweep.parquet`` its grouping
  part. The cut used afterwards is the one with the best pair F1 on the TRAIN
  persons (``--min-similarity auto``; identities are known there, as in PETA);
* ``noise_detection.parquet`` / ``noise_downstream.parquet`` -- for every noise
  kind and level: detection / cleaning scores of ``label_issues`` and of each
  strategy, and macro-F1 of linear probes trained on raw / oracle / cleaned
  labels, scored on the true labels of the test persons;
* ``experiments.parquet`` -- the train/val experiments A-D;
* ``leakage.json`` -- probe F1 with the person split vs the leaky image split;
* ``results.json`` (headline figures) and ``results.md`` (tables);
* ``f1_vs_noise.png``, ``detection_vs_noise.png``, ``detection_vs_threshold.png``,
  ``component_scores.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from clusterclean.errors import ClustercleanError

logger = logging.getLogger("evaluate_benchmark")

#: RunConfig fields of the embedding stage: unused here (the benchmark's
#: embeddings are precomputed; benchmark.json says how), so not recorded.
EMBEDDING_OPTIONS = ("backbone", "weights", "batch_size", "num_workers", "device")
#: Pipeline options of the benchmark runs, pinned rather than taken from
#: RunConfig's defaults: the recommended grouping (whitening + re-ranking).
GROUPING = {"refine": True, "rerank": True}
GROUPING_COLUMNS = (
    "pair_precision",
    "pair_recall",
    "pair_f1",
    "adjusted_rand",
    "largest_component",
    "n_components",
)
CUTS = ",".join(f"{c:.2f}" for c in np.arange(0.20, 0.951, 0.05))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--benchmark", type=Path, default=Path("benchmarks/fashion"))
    parser.add_argument("--out", type=Path, default=Path("docs/results"))
    parser.add_argument(
        "--kinds", default="disagreement,uniform,class_conditional", help="comma-separated"
    )
    parser.add_argument("--levels", default="0,0.05,0.1,0.2,0.3,0.5", help="comma-separated")
    parser.add_argument("--reference", default="disagreement:0.1", help="KIND:RATE")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-similarity", default="auto", help="a float, or auto")
    parser.add_argument("--cuts", default=CUTS, help="similarity cuts swept (comma-separated)")
    parser.add_argument("--n-neighbors", type=int, default=10)
    parser.add_argument("--mutual", action="store_true", help="mutual kNN edges only")
    parser.add_argument(
        "--run-option",
        action="append",
        metavar="KEY=VALUE",
        help="any other pipeline option (RunConfig field), JSON value; repeatable",
    )
    parser.add_argument("--probe-dim", type=int, default=64)
    return parser


# --------------------------------------------------------------------------- io


def _atomic(path: Path, write) -> None:
    from clusterclean.atomic import atomic_write

    atomic_write(Path(path), write)


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    _atomic(path, lambda tmp: frame.to_parquet(tmp, index=False))


def write_json(data, path: Path) -> None:
    from clusterclean.evaluate import _json_default

    write_text(json.dumps(data, indent=2, default=_json_default) + "\n", path)


def write_text(text: str, path: Path) -> None:
    _atomic(path, lambda tmp: Path(tmp).write_text(text))


def save_figure(fig, path: Path) -> None:
    _atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))


# --------------------------------------------------------------------------- stages


def noise_sweep(labels, embeddings, config, kinds, levels, groups, confusions, seed, features):
    from clusterclean.evaluate import evaluate_cleaning

    detection, downstream = [], []
    for kind in kinds:
        for level in levels:
            started = time.perf_counter()
            result = evaluate_cleaning(
                labels,
                kind=kind,
                rate=level,
                seed=seed,
                embeddings=embeddings,
                config=config,
                attribute_groups=groups,
                confusions=confusions if kind == "class_conditional" else None,
                probe_features=features,
            )
            tags = {"noise": kind, "level": level, "n_planted_cells": len(result.planted)}
            detection.append(result.detection.assign(**tags))
            downstream.append(result.downstream.assign(**tags))
            logger.info("%s %.2f done in %.1f s", kind, level, time.perf_counter() - started)
    return pd.concat(detection, ignore_index=True), pd.concat(downstream, ignore_index=True)


def threshold_sweep(labels, embeddings, config, cuts, kind, rate, groups, seed):
    """Grouping and ``label_issues`` detection for every similarity cut, through the pipeline.

    Components depend on the embeddings and pipeline options only, so the
    grouping columns (``pair_f1`` ..., ``train_pair_f1`` on the train persons)
    hold for every noise setting.
    """
    from dataclasses import replace

    from clusterclean.evaluate import evaluate_cleaning, grouping_scores

    by_id = labels.set_index("image_id")
    rows = []
    for cut in cuts:
        result = evaluate_cleaning(
            labels,
            kind=kind,
            rate=rate,
            seed=seed,
            embeddings=embeddings,
            config=replace(config, min_similarity=float(cut)),
            strategies=[],
            attribute_groups=groups,
            probe=False,
        )
        images = result.report.images.set_index("image_id")
        train = by_id.index[by_id["split"] == "train"]
        on_train = grouping_scores(
            images.loc[train, "component_id"].to_numpy(), by_id.loc[train, "group"].to_numpy()
        )
        frame = result.detection.assign(
            min_similarity=float(cut), train_pair_f1=on_train["pair_f1"]
        )
        for key, value in result.grouping.items():
            frame[key] = value
        rows.append(frame)
    return pd.concat(rows, ignore_index=True)


def run_config(args: argparse.Namespace, min_similarity: float):
    """The pipeline options: the recommended grouping (refine + rerank), --n-neighbors,
    --mutual, then every --run-option KEY=VALUE (``refine=false`` for the plain graph)."""
    from clusterclean.pipeline import RunConfig

    values = {"n_neighbors": args.n_neighbors, "mutual": args.mutual, **GROUPING}
    for option in args.run_option or []:
        key, sep, text = option.partition("=")
        if not sep or key not in RunConfig.__dataclass_fields__:
            raise SystemExit(
                f"--run-option must be KEY=VALUE with KEY one of "
                f"{sorted(RunConfig.__dataclass_fields__)}; got {option!r}."
            )
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        values[key] = tuple(value) if isinstance(value, list) else value
    return RunConfig(**{**values, "min_similarity": min_similarity})


def leakage(labels, leaky, embeddings, groups, probe_dim, seed):
    """Oracle probes with the person split vs the image split (views leak across)."""
    from clusterclean.evaluate import macro_f1, pca_features, probe_f1

    out = {}
    for name, table in (("by_person", labels), ("by_image", leaky)):
        frame = table.set_index("image_id")
        attributes = [a for members in groups.values() for a in members]
        train_ids = frame.index[frame["split"] == "train"]
        test_ids = frame.index[frame["split"] == "test"]
        features = pca_features(embeddings, train_ids, probe_dim)
        values = frame[attributes].astype(float)
        scores = probe_f1(features, values.loc[train_ids], values.loc[test_ids], seed=seed)
        out[name] = macro_f1(scores, groups)
    return out


# --------------------------------------------------------------------------- plots


def plot_f1_vs_noise(downstream: pd.DataFrame, path: Path, column: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(dict.fromkeys(downstream["noise"]))
    fig, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 4), sharey=True)
    for ax, kind in zip(np.atleast_1d(axes), kinds, strict=True):
        part = downstream[downstream["noise"] == kind]
        for name, rows in part.groupby("labels", sort=False):
            style = {"raw": "k--", "oracle": "k:"}.get(name, "-o")
            ax.plot(rows["level"], rows[column], style, label=name, markersize=3)
        ax.set_title(f"{kind} noise")
        ax.set_xlabel("noise level")
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel(column.replace("_", " ") + " (test persons, true labels)")
    np.atleast_1d(axes)[-1].legend(fontsize=8)
    save_figure(fig, path)
    plt.close(fig)


def plot_detection_vs_noise(detection: pd.DataFrame, path: Path) -> None:
    import matplotlib.pyplot as plt

    part = detection[detection["attributes"] == "all"]
    kinds = list(dict.fromkeys(part["noise"]))
    fig, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 4), sharey=True)
    for ax, kind in zip(np.atleast_1d(axes), kinds, strict=True):
        rows = part[(part["noise"] == kind) & (part["level"] > 0)]
        for name, method in rows.groupby("method", sort=False):
            ax.plot(method["level"], method["f1"], "-o", label=name, markersize=3)
        ax.set_title(f"{kind} noise")
        ax.set_xlabel("noise level")
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("cell F1 vs planted errors")
    np.atleast_1d(axes)[-1].legend(fontsize=8)
    save_figure(fig, path)
    plt.close(fig)


def plot_threshold(sweep: pd.DataFrame, chosen: float, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, style in (("all", "-"), ("invisible", "--")):
        rows = sweep[(sweep["method"] == "label_issues") & (sweep["attributes"] == name)]
        ax.plot(rows["min_similarity"], rows["precision"], "b" + style, label=f"precision ({name})")
        ax.plot(rows["min_similarity"], rows["recall"], "r" + style, label=f"recall ({name})")
    rows = sweep[(sweep["method"] == "label_issues") & (sweep["attributes"] == "all")]
    ax.plot(rows["min_similarity"], rows["pair_f1"], "g:", label="grouping pair F1")
    ax.axvline(chosen, color="grey", lw=0.8)
    ax.set_xlabel("min_similarity (edge cut)")
    ax.set_ylabel("label_issues vs planted cells")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)
    plt.close(fig)


def plot_component_scores(report, planted: pd.DataFrame, path: Path) -> None:
    import matplotlib.pyplot as plt

    images = report.images.set_index("image_id")
    bad = set(images.loc[planted["image_id"].unique(), "component_id"])
    comps = report.components[report.components["component_size"] >= 2]
    has_error = comps["component_id"].isin(bad)
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(0, 1, 26)
    ax.hist(comps.loc[~has_error, "inconsistency_score"], bins=bins, alpha=0.6, label="clean")
    ax.hist(comps.loc[has_error, "inconsistency_score"], bins=bins, alpha=0.6, label="planted")
    ax.set_xlabel("component inconsistency_score")
    ax.set_ylabel("components (>= 2 images)")
    ax.legend()
    save_figure(fig, path)
    plt.close(fig)


# --------------------------------------------------------------------------- main


def _cell(column: str, value) -> str:
    """Counts as integers, other floats with 3 decimals, NaN / None as blank."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, float):
        counted = column.startswith("n_") or column in ("largest_component", "over_pruned")
        return str(int(value)) if counted else f"{value:.3f}"
    return str(value)


def markdown_table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    lines = [header, rule]
    for row in frame.itertuples(index=False):
        cells = [_cell(c, v) for c, v in zip(frame.columns, row, strict=True)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def evaluate(args: argparse.Namespace) -> dict:
    from clusterclean.evaluate import (
        evaluate_cleaning,
        parse_injection,
        pca_features,
        read_benchmark,
        train_val_experiments,
    )

    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    bench = read_benchmark(args.benchmark)
    labels, leaky, embeddings = bench.labels, bench.leaky, bench.embeddings
    groups, confusions, info = bench.groups, bench.confusions, bench.info
    kinds = [k for k in args.kinds.split(",") if k]
    levels = [float(v) for v in args.levels.split(",") if v]
    ref_kind, ref_rate = parse_injection(args.reference)

    cuts = [float(c) for c in args.cuts.split(",") if c]
    sweep = threshold_sweep(
        labels, embeddings, run_config(args, 0.9), cuts, ref_kind, ref_rate, groups, args.seed
    )
    write_parquet(sweep, args.out / "threshold_sweep.parquet")
    grouping = sweep[(sweep["method"] == "label_issues") & (sweep["attributes"] == "all")]
    grouping = grouping[["min_similarity", "train_pair_f1", *GROUPING_COLUMNS]]
    write_parquet(grouping, args.out / "grouping_sweep.parquet")
    if args.min_similarity == "auto":
        cut = float(grouping.loc[grouping["train_pair_f1"].idxmax(), "min_similarity"])
    else:
        cut = float(args.min_similarity)
    logger.info("similarity cut %.3f", cut)
    config = run_config(args, cut)

    split = labels.set_index("image_id")["split"]
    features = pca_features(embeddings, split.index[split == "train"], args.probe_dim)
    detection, downstream = noise_sweep(
        labels, embeddings, config, kinds, levels, groups, confusions, args.seed, features
    )
    write_parquet(detection, args.out / "noise_detection.parquet")
    write_parquet(downstream, args.out / "noise_downstream.parquet")

    reference = evaluate_cleaning(
        labels,
        kind=ref_kind,
        rate=ref_rate,
        seed=args.seed,
        embeddings=embeddings,
        config=config,
        attribute_groups=groups,
        confusions=confusions if ref_kind == "class_conditional" else None,
        probe_features=features,
    )
    strategies = reference.downstream[~reference.downstream["labels"].isin(["raw", "oracle"])]
    best = str(strategies.loc[strategies["macro_f1_visible"].idxmax(), "labels"])
    experiments = train_val_experiments(
        features,
        reference.noisy,
        reference.cleaned[best],
        train_ids=split.index[split == "train"],
        val_ids=split.index[split == "val"],
        truth=reference.truth,
        groups=groups,
    ).assign(strategy=best)
    write_parquet(experiments, args.out / "experiments.parquet")
    leaks = leakage(labels, leaky, embeddings, groups, args.probe_dim, args.seed)
    write_json(leaks, args.out / "leakage.json")

    plot_f1_vs_noise(downstream, args.out / "f1_vs_noise.png", "macro_f1_visible")
    plot_detection_vs_noise(detection, args.out / "detection_vs_noise.png")
    plot_threshold(sweep, cut, args.out / "detection_vs_threshold.png")
    plot_component_scores(reference.report, reference.planted, args.out / "component_scores.png")

    ref_detection = reference.detection
    headline = {
        "reference_noise": args.reference,
        "min_similarity": cut,
        "config": {k: v for k, v in asdict(config).items() if k not in EMBEDDING_OPTIONS},
        "embedding": info.get("parameters"),
        "grouping": reference.grouping,
        "label_issues": {
            r["attributes"]: {k: r[k] for k in ("precision", "recall", "f1", "n_planted")}
            for r in ref_detection[ref_detection["method"] == "label_issues"].to_dict("records")
        },
        "downstream": reference.downstream.to_dict("records"),
        "best_strategy": best,
        "experiments": experiments.to_dict("records"),
        "leakage": leaks,
        "benchmark": info["counts"],
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json(headline, args.out / "results.json")
    tables = [
        f"# Benchmark results ({args.reference}, min_similarity={cut})\n",
        "## Grouping vs persons\n",
        markdown_table(grouping[["min_similarity", *GROUPING_COLUMNS]]),
        "\n## Detection at the reference noise\n",
        markdown_table(
            ref_detection[["method", "attributes", "precision", "recall", "f1"]]
            .assign(over_pruned=ref_detection.get("n_clean_removed", np.nan))
            .round(3)
        ),
        "\n## Downstream macro-F1 (linear probe, true labels of the test persons)\n",
        markdown_table(reference.downstream.round(3)),
        "\n## Train/val experiments A-D (best strategy: " + best + ")\n",
        markdown_table(experiments.round(3)),
        "\n## Leakage: oracle probes, person split vs image split\n",
        markdown_table(pd.DataFrame(leaks).T.reset_index(names="split").round(3)),
    ]
    write_text("\n".join(tables) + "\n", args.out / "results.md")
    return headline


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("clusterclean", "faiss"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        headline = evaluate(args)
    except ClustercleanError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({k: headline[k] for k in ("min_similarity", "label_issues")}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
