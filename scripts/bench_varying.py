"""Attributes that may differ inside a component: precision of flagged cells with and
without detecting them, and what the detection finds, misses and wrongly proposes.

On a benchmark folder (scripts/make_benchmark.py) with saved embeddings: adds
``--n-per-image`` attributes that change from view to view of a person (random per
image, like pose or "carrying something"), plants annotator disagreement in the
consistent attributes, runs the pipeline with and without the detection, and prints a
Markdown table and writes JSON.

    python scripts/bench_varying.py --vectors V.npy --ids IDS.npy --labels labels.csv \
        --json docs/results/varying.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

import clusterclean as cc
from clusterclean.evaluate import detection_scores
from clusterclean.synth import inject_noise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=Path, required=True)
    parser.add_argument("--ids", type=Path, required=True)
    parser.add_argument("--labels", type=Path, required=True, help="benchmark labels.csv")
    parser.add_argument("--n-per-image", type=int, default=3)
    parser.add_argument("--rate", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=Path("build/bench_varying.json"))
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    ids = [str(i) for i in np.load(args.ids, allow_pickle=False)]
    table = pd.read_csv(args.labels).set_index("image").loc[ids].reset_index()
    table = table.rename(columns={"image": "image_id"})
    consistent = [c for c in table.columns if c not in ("image_id", "split", "group")]
    noisy = inject_noise(
        table, kind="disagreement", rate=args.rate, seed=args.seed, attributes=consistent
    )
    labels = noisy.labels.copy()
    per_image = [f"per_image_{k}" for k in range(args.n_per_image)]
    for name in per_image:  # differs between the views of one person half of the time
        labels[name] = rng.integers(0, 2, size=len(labels))
    dataset = cc.load_dataset(labels)
    embeddings = cc.as_embeddings(ids, np.load(args.vectors))
    results = {}
    for name, detect in (("without detection", False), ("with detection", True)):
        report = cc.run(
            labels=dataset, embeddings=embeddings, progress=False, detect_varying_attributes=detect
        )
        scores = detection_scores(report.label_issues, noisy.planted)
        proposed = report.run_info["varying_attributes"].get("proposed", [])
        results[name] = {
            "precision": scores["precision"],
            "recall": scores["recall"],
            "f1": scores["f1"],
            "n_flagged": len(report.label_issues),
            "per_image_found": sorted(set(proposed) & set(per_image)),
            "per_image_missed": sorted(set(per_image) - set(proposed)) if detect else per_image,
            "wrongly_proposed": sorted(set(proposed) - set(per_image)),
        }
    print(
        "| run | flagged cells | precision | recall | F1 | per-image found | missed | "
        "wrongly proposed |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['n_flagged']} | {r['precision']:.3f} | {r['recall']:.3f} | "
            f"{r['f1']:.3f} | {len(r['per_image_found'])} of {len(per_image)} | "
            f"{len(r['per_image_missed'])} | {len(r['wrongly_proposed'])} |"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {"args": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=2
        )
        + "\n"
    )
    print(f"written to {args.json}")


if __name__ == "__main__":
    main()
