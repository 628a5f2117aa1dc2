"""Where the wrong flags are: flagged-cell precision per attribute, and by component purity.

For each ``*-report`` folder that ``scripts/suite.py run --work`` wrote for one seed, reads
``label_issues.parquet`` (the flagged cells, ``is_flagged``), the dataset's ``planted.csv``
(the wrong cells) and ``truth.csv`` (each image's identity), and prints

- per attribute: flagged cells, their precision, and the attribute's share of the
  dataset's images labelled 1 (a near-constant attribute has a rare value to flag);
- by the number of identities in the flagged cell's component (1 = the component is
  one person), and by whether the flagged image belongs to its component's majority
  identity.

    python scripts/flag_precision_by_attribute.py --work /tmp/exp/s1final-work/s1 \\
        --root /tmp/suite/s1 --json docs/suite/flags_by_attribute_s1.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_embed import write_result  # noqa: E402

from clusterclean.report import read_report  # noqa: E402


def flagged_cells(report, data: Path) -> pd.DataFrame:
    """The flagged cells of one report with their truth and their component's purity."""
    issues = report.label_issues
    images = report.images[["image_id", "component_id"]].copy()
    planted = pd.read_csv(data / "planted.csv")
    person = pd.read_csv(data / "truth.csv").set_index("image")["group"]
    wrong = set(zip(planted["image_id"], planted["attribute"], strict=True))
    images["person"] = person.reindex(images["image_id"]).to_numpy()
    n_people = images.groupby("component_id")["person"].nunique()
    majority = images.groupby("component_id")["person"].agg(lambda p: p.value_counts().index[0])
    flagged = issues[issues["is_flagged"]].copy()
    flagged["wrong"] = [
        (i, a) in wrong for i, a in zip(flagged["image_id"], flagged["attribute"], strict=True)
    ]
    flagged["n_people"] = flagged["component_id"].map(n_people).to_numpy()
    flagged["majority_person"] = (
        person.reindex(flagged["image_id"]).to_numpy()
        == flagged["component_id"].map(majority).to_numpy()
    )
    return flagged


def summary(flagged: pd.DataFrame, labels: pd.DataFrame, by: str) -> list[dict]:
    rows = []
    for key, part in flagged.groupby(by):
        row = {by: key if isinstance(key, str) else int(key), "flagged": len(part)}
        row["precision"] = float(part["wrong"].mean())
        if by == "attribute" and key in labels.columns:
            row["share_of_ones"] = float(np.nanmean(labels[key].to_numpy(dtype=float)))
        rows.append(row)
    return rows


def missed_cells(report, data: Path) -> dict[str, int]:
    """Why each planted cell that is not flagged was missed: its component has fewer than
    3 images (no majority), at least half of the component shares its value (a tie, or
    the wrong value outvotes the right one), it is a minority cell the run did not
    suspect (e.g. an attribute excluded as per-image), or one below the confidence cut."""
    dataset, issues, images = report.dataset, report.label_issues, report.images
    labels = pd.DataFrame(dataset.labels, index=dataset.ids.astype(str), columns=dataset.attributes)
    planted = pd.read_csv(data / "planted.csv")
    suspected = set(zip(issues["image_id"], issues["attribute"], strict=True))
    shown = issues[issues["is_flagged"]]
    flagged = set(zip(shown["image_id"], shown["attribute"], strict=True))
    component = images.set_index("image_id")["component_id"]
    members = images.groupby("component_id")["image_id"].apply(list)
    reasons = dict.fromkeys(
        (
            "component_under_3",
            "half_or_more_share_it",
            "minority_not_suspected",
            "minority_below_cut",
        ),
        0,
    )
    for cell in zip(planted["image_id"], planted["attribute"], strict=True):
        if cell in flagged:
            continue
        image, attribute = cell
        group = members[component[image]]
        if len(group) < 3:
            reasons["component_under_3"] += 1
            continue
        values = labels.loc[group, attribute].dropna()
        if float((values == labels.loc[image, attribute]).mean()) >= 0.5:
            reasons["half_or_more_share_it"] += 1
        elif cell in suspected:
            reasons["minority_below_cut"] += 1
        else:
            reasons["minority_not_suspected"] += 1
    return reasons


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="folder of *-report folders")
    parser.add_argument("--root", type=Path, required=True, help="the suite datasets, same seed")
    parser.add_argument("--json", type=Path, default=Path("flags_by_attribute.json"))
    args = parser.parse_args(argv)
    result = {"command": " ".join(["scripts/flag_precision_by_attribute.py", *sys.argv[1:]])}
    for report in sorted(args.work.glob("*-report")):
        name = report.name.removesuffix("-report")
        saved = read_report(report, load_embeddings=False)  # read once, for both tables
        flagged = flagged_cells(saved, args.root / name)
        labels = pd.read_csv(args.root / name / "labels.csv")
        result[name] = {
            by: summary(flagged, labels, by) for by in ("attribute", "n_people", "majority_person")
        }
        result[name]["missed"] = missed_cells(saved, args.root / name)
        print(f"== {name}: {len(flagged)} flagged, precision {flagged['wrong'].mean():.3f}")
        print(f"  planted cells not flagged, by why: {result[name]['missed']}")
        for by in ("attribute", "n_people", "majority_person"):
            rows = result[name][by]
            for row in rows:
                extra = (
                    f", share of 1s {row['share_of_ones']:.2f}" if "share_of_ones" in row else ""
                )
                print(
                    f"  {by}={row[by]}: {row['flagged']} flagged, "
                    f"precision {row['precision']:.3f}{extra}"
                )
    write_result(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
