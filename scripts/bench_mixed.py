"""Components that mix two look-alike persons: flagged-cell precision with and without
detecting them ("possibly two people", clusterclean.mixed), and how right the detection is.

On benchmark folders (scripts/make_benchmark.py) with saved embeddings
(``vectors_none.npy`` + ``ids_none.npy``): plants annotator disagreement
(``synth.inject_noise`` kind ``disagreement``, rate 0.1) and runs the default pipeline
with ``detect_mixed`` on and off. The benchmark holds many persons of the same
clothing class (the look-alikes): the graph joins some of them, and their differing
labels are then flagged as errors. A second scenario adds ``--n-per-image`` attributes
that change from view to view (as scripts/bench_varying.py does) and crosses both
features (varying-attribute detection, mixed detection).

The thresholds (``min_mixed_attributes``, ``min_mixed_gap``) are chosen on the
selection folder (best mean detection F1 over the noise seeds) and applied unchanged
to the report folder. A detection is *right* when the component it split holds more
than one true person, and *clean* when its two sides share no person.

    python scripts/bench_mixed.py --select /tmp/h6/bench_s0 --report /tmp/h6/bench_s1 \\
        --json docs/results/mixed.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

import clusterclean as cc
from clusterclean.evaluate import detection_scores
from clusterclean.synth import inject_noise

GRID = {"min_mixed_attributes": (2, 3), "min_mixed_gap": (0.05, 0.1, 0.15, 0.2)}


def load(folder: Path) -> tuple[cc.Embeddings, pd.DataFrame]:
    """The folder's embeddings and labels (``image_id``, split, group, attributes), same order."""
    ids = [Path(str(i)).name for i in np.load(folder / "ids_none.npy")]
    labels = pd.read_csv(folder / "labels.csv").rename(columns={"image": "image_id"})
    labels = labels.set_index("image_id").loc[ids].reset_index()
    return cc.as_embeddings(ids, np.load(folder / "vectors_none.npy"), "efficientnet_lite0"), labels


def noisy_labels(labels: pd.DataFrame, *, seed: int, n_per_image: int, rate: float):
    """Planted disagreement in the benchmark's attributes, plus random per-image ones."""
    attributes = [c for c in labels.columns if c not in ("image_id", "split", "group")]
    noise = inject_noise(labels, kind="disagreement", rate=rate, seed=seed, attributes=attributes)
    table = noise.labels.copy()
    rng = np.random.default_rng(seed)
    for k in range(n_per_image):  # differs between the views of one person half of the time
        table[f"per_image_{k}"] = rng.integers(0, 2, size=len(table))
    return cc.load_dataset(table), noise.planted


def measure(dataset, embeddings, planted, **options) -> dict:
    """One run: flagged-cell scores and how right the mixed detection is."""
    report = cc.run(labels=dataset, embeddings=embeddings, progress=False, **options)
    scores = detection_scores(report.label_issues, planted)
    images, components = report.images, report.components
    persons = images.groupby("component_id")["group"].agg(lambda g: set(g))
    split = components[components["is_possibly_two_people"]]
    pairs = split[split["component_id"] < split["mixed_with"]]
    multi = [
        len(persons[a] | persons[b]) > 1 for a, b in zip(pairs["component_id"], pairs["mixed_with"])
    ]
    clean = [
        not persons[a] & persons[b] for a, b in zip(pairs["component_id"], pairs["mixed_with"])
    ]
    return {
        "n_flagged": len(report.label_issues),
        "precision": scores["precision"],
        "recall": scores["recall"],
        "f1": scores["f1"],
        "n_mixed": len(pairs),
        "n_mixed_right": int(sum(multi)),
        "n_mixed_clean": int(sum(clean)),
        "n_label_candidates": report.run_info["mixed_components"].get("n_label_candidates", 0),
        "n_multi_person_left": int(
            sum(
                len(p) > 1 for p, n in zip(persons, images.groupby("component_id").size()) if n >= 3
            )
        ),
        "per_image_proposed": report.run_info["varying_attributes"].get("proposed", []),
    }


def select(folder: Path, seeds: list[int], rate: float) -> tuple[dict, list[dict]]:
    """The grid point with the best mean F1 on the selection folder (no per-image attributes)."""
    embeddings, labels = load(folder)
    data = [noisy_labels(labels, seed=s, n_per_image=0, rate=rate) for s in seeds]
    rows = []
    for values in itertools.product(*GRID.values()):
        options = dict(zip(GRID, values))
        f1 = [measure(d, embeddings, p, **options)["f1"] for d, p in data]
        rows.append({**options, "mean_f1": float(np.mean(f1))})
    best = max(rows, key=lambda r: r["mean_f1"])
    return {k: best[k] for k in GRID}, rows


def report(folder: Path, chosen: dict, seeds: list[int], rate: float, n_per_image: int):
    """Rows of the result table for one folder, averaged over the noise seeds."""
    embeddings, labels = load(folder)
    runs = {
        "benchmark, mixed detection off": (0, {"detect_mixed": False}),
        "benchmark, mixed detection on": (0, chosen),
        f"+{n_per_image} per-image attributes, both detections off": (
            n_per_image,
            {"detect_mixed": False, "detect_varying_attributes": False},
        ),
        f"+{n_per_image} per-image attributes, varying detection only": (
            n_per_image,
            {"detect_mixed": False},
        ),
        f"+{n_per_image} per-image attributes, mixed detection only": (
            n_per_image,
            {**chosen, "detect_varying_attributes": False},
        ),
        f"+{n_per_image} per-image attributes, both detections on": (n_per_image, chosen),
    }
    rows = []
    for name, (n_extra, options) in runs.items():
        per_seed = []
        for seed in seeds:
            dataset, planted = noisy_labels(labels, seed=seed, n_per_image=n_extra, rate=rate)
            per_seed.append(measure(dataset, embeddings, planted, **options))
        numeric = {
            k: float(np.mean([r[k] for r in per_seed]))
            for k in per_seed[0]
            if k != "per_image_proposed"
        }
        rows.append({"folder": folder.name, "run": name, **numeric, "per_seed": per_seed})
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| data | run | flagged cells | precision | recall | F1 | split as two people "
        "| of them >1 person | sides share no person | components of 3+ images still "
        "holding >1 person |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['folder']} | {r['run']} | {r['n_flagged']:.0f} | {r['precision']:.3f} "
            f"| {r['recall']:.3f} | {r['f1']:.3f} | {r['n_mixed']:.1f} | {r['n_mixed_right']:.1f} "
            f"| {r['n_mixed_clean']:.1f} | {r['n_multi_person_left']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--select", type=Path, required=True, help="folder the thresholds are chosen on"
    )
    parser.add_argument("--report", type=Path, nargs="+", required=True, help="folders reported")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="noise seeds")
    parser.add_argument("--rate", type=float, default=0.1)
    parser.add_argument("--n-per-image", type=int, default=3)
    parser.add_argument("--json", type=Path, default=Path("build/bench_mixed.json"))
    args = parser.parse_args()

    chosen, grid = select(args.select, args.seeds, args.rate)
    print(f"chosen on {args.select.name} (best mean F1 over seeds {args.seeds}): {chosen}")
    rows = [
        r
        for folder in args.report
        for r in report(folder, chosen, args.seeds, args.rate, args.n_per_image)
    ]
    text = markdown(rows)
    print(text)
    payload = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "selection_grid": grid,
        "chosen": chosen,
        "results": rows,
        "markdown": text,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.json.with_name(f".{args.json.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    os.replace(tmp, args.json)
    print(f"written to {args.json}")


if __name__ == "__main__":
    main()
