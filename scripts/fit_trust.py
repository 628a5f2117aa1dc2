"""Fit the trust model of ``clusterclean.trust`` on the suite's development seed.

    .venv/bin/python scripts/fit_trust.py --work benchmarks/suite-work/s0 \\
        --root benchmarks/suite/s0 --out docs/suite/trust.json

Reads the reports ``scripts/suite.py run`` wrote for the development seed,
re-scores each report's components to get its candidate cells before any trust
step, labels each candidate cell with the truth (``planted.csv``), and

1. for each ``min_grouping_attributes`` g of a grid, leaves one dataset out at a
   time: fits the logistic model (``sklearn.linear_model.LogisticRegression``,
   standardised features) on the other datasets, chooses on them the smallest
   cut whose flagged cells are >= 90 % right on every one of them, and measures
   precision / recall / F1 of the flagged cells on the held-out dataset;
2. among the g whose held-out precision is >= 0.9 everywhere, keeps the one of
   best mean held-out F1 (the most precise g when none reaches 0.9), and measures
   how often its grouping problems really are another identity (the image's true
   person differs from the majority person of its component);
3. fits the shipped model on all datasets with that g, chooses the cut the same
   way, and writes everything (grid, held-out figures, coefficients) as JSON.

The coefficients printed at the end are pasted into ``clusterclean/trust.py``
(``MODEL``), the cut and g into its ``OPTIONS``; g = 1000 stands for "never" (no
image holds that many suspected cells), shipped as ``min_grouping_attributes=None``.
The shipped model's run and figures: ``docs/suite/trust.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from clusterclean.report import read_report
from clusterclean.scoring import score_components
from clusterclean.trust import FEATURES, cell_confidence, cell_features, find_grouping_issues

GRID = (2, 3, 4, 5, 6, 1000)
TARGET_PRECISION = 0.9


def rescored(report_dir: Path):
    """The report and its suspected cells as scoring found them, before any trust step."""
    report = read_report(report_dir, load_embeddings=False)
    scored = score_components(
        report.images["component_id"].to_numpy(),
        report.dataset,
        exclude_attributes=tuple(report.run_info.get("excluded_attributes", ())),
    )
    return report, scored.label_issues


def candidates(report_dir: Path, planted: pd.DataFrame, g: int) -> pd.DataFrame:
    """The report's suspected cells before any trust step, with features and truth."""
    report, label_issues = rescored(report_dir)
    kept, _ = find_grouping_issues(label_issues, min_grouping_attributes=g)
    features = cell_features(kept, report.images, report.components, report.component_attributes)
    truth = set(zip(planted["image_id"], planted["attribute"], strict=True))
    features["wrong"] = np.array(  # bool even when no cell is kept
        [(i, a) in truth for i, a in zip(kept["image_id"], kept["attribute"], strict=True)],
        dtype=bool,
    )
    features["n_planted"] = len(truth)
    return features


def grouping_truth(report_dir: Path, folder: Path, g: int) -> dict:
    """How many of the images split off as grouping problems are really another person."""
    report, label_issues = rescored(report_dir)
    _, grouping = find_grouping_issues(label_issues, min_grouping_attributes=g)
    person = pd.read_csv(folder / "truth.csv").set_index("image")["group"]
    images = report.images.assign(person=person.reindex(report.images["image_id"]).to_numpy())
    majority = images.groupby("component_id")["person"].agg(lambda p: p.value_counts().index[0])
    other = [
        person[i] != majority[c]
        for i, c in zip(grouping["image_id"], grouping["component_id"], strict=True)
    ]
    return {"n_images": len(other), "another_person": int(sum(other))}


def fit(frames: list[pd.DataFrame]) -> dict:
    from sklearn.linear_model import LogisticRegression

    data = pd.concat(frames, ignore_index=True)
    x = data[list(FEATURES)].to_numpy(dtype=np.float64)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    model = LogisticRegression(C=1.0, max_iter=1000).fit((x - mean) / scale, data["wrong"])
    return {
        "intercept": float(model.intercept_[0]),
        "mean": [float(v) for v in mean],
        "scale": [float(v) for v in scale],
        "weights": [float(v) for v in model.coef_[0]],
    }


def scores(frame: pd.DataFrame, confidence: np.ndarray, cut: float) -> dict:
    flagged = confidence >= cut
    hits = int((flagged & frame["wrong"].to_numpy()).sum())
    n_flagged = int(flagged.sum())
    n_planted = int(frame["n_planted"].iloc[0]) if len(frame) else 0
    precision = hits / n_flagged if n_flagged else 1.0
    recall = hits / n_planted if n_planted else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "n_flagged": n_flagged}


def choose_cut(frames: list[pd.DataFrame], model: dict) -> float:
    """The smallest cut whose flagged cells are >= TARGET_PRECISION right on every frame."""
    for cut in np.round(np.arange(0.05, 1.0, 0.01), 2):
        if all(
            scores(f, cell_confidence(f, model), cut)["precision"] >= TARGET_PRECISION
            for f in frames
        ):
            return float(cut)
    return 0.99


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="suite run --work, one seed")
    parser.add_argument("--root", type=Path, required=True, help="suite datasets, same seed")
    parser.add_argument("--out", type=Path, default=Path("docs/suite/trust.json"))
    args = parser.parse_args(argv)
    names = sorted(p.name[: -len("-report")] for p in args.work.glob("*-report"))
    planted = {n: pd.read_csv(args.root / n / "planted.csv") for n in names}
    grid = {}
    for g in GRID:
        frames = {n: candidates(args.work / f"{n}-report", planted[n], g) for n in names}
        held_out = {}
        for name in names:
            train = [frames[n] for n in names if n != name]
            model = fit(train)
            cut = choose_cut(train, model)
            held_out[name] = dict(
                scores(frames[name], cell_confidence(frames[name], model), cut), cut=cut
            )
        grid[g] = held_out
        mean_f1 = np.mean([v["f1"] for v in held_out.values()])
        worst = min(v["precision"] for v in held_out.values())
        print(f"g={g}: mean held-out F1 {mean_f1:.3f}, worst precision {worst:.3f}", held_out)
    ok = [g for g in GRID if min(v["precision"] for v in grid[g].values()) >= TARGET_PRECISION]
    pool = ok or list(GRID)
    key = (
        (lambda g: np.mean([v["f1"] for v in grid[g].values()]))
        if ok
        else (lambda g: np.mean([v["precision"] for v in grid[g].values()]))
    )
    best = max(pool, key=key)
    frames = [candidates(args.work / f"{n}-report", planted[n], best) for n in names]
    model = fit(frames)
    cut = choose_cut(frames, model)
    result = {
        "grouping_problems": {
            n: grouping_truth(args.work / f"{n}-report", args.root / n, best) for n in names
        },
        "datasets": names,
        "target_precision": TARGET_PRECISION,
        "grid": {str(g): v for g, v in grid.items()},
        "min_grouping_attributes": best,
        "min_confidence": cut,
        "model": model,
        "features": list(FEATURES),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("min_grouping_attributes", "min_confidence")}))
    print(json.dumps(model))
    return 0


if __name__ == "__main__":
    sys.exit(main())
