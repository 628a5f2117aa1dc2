"""Choose one option's value leave-one-dataset-out from whole suite runs, one per value.

Where an option changes what the head learns (the cut shapes the head's ``related``
pairs), re-grouping saved reports (``scripts/choose_by_regrouping.py``) is not enough:
each value needs its own ``scripts/suite.py run --config NAME=VALUE`` on the development
seeds. This reads those runs' ``suite_s<seed>.json`` files, averages each dataset's
figures over the seeds, and for each dataset left out picks the value with the best
mean flagged-cell F1 on the others (``choose_by_regrouping.leave_one_out``)::

    python scripts/choose_from_runs.py --reference 0.5 \\
        --value 0.4=/tmp/exp/cut0.4_s0/suite_s0.json,/tmp/exp/cut0.4_s100/suite_s100.json \\
        --value 0.5=docs/suite/head_s0_colour_matrix.json,docs/suite/head_s100_default.json \\
        --json docs/suite/min_similarity_dev.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from choose_by_regrouping import best_setting, leave_one_out, print_choice  # noqa: E402

FIGURES = ("pair_f1", "cell_precision", "cell_recall", "cell_f1", "precision_at_100")


def read_value(files: list[Path]) -> dict[str, dict]:
    """``{dataset: {figure: mean over the seeds' files}}`` of one value's runs."""
    rows: dict[str, list[dict]] = {}
    for file in files:
        for key, row in json.loads(file.read_text(encoding="utf-8")).items():
            rows.setdefault(key.partition("@")[0], []).append(row)
    return {
        name: {f: sum(r[f] for r in runs) / len(runs) for f in FIGURES} | {"n_seeds": len(runs)}
        for name, runs in rows.items()
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--value",
        action="append",
        required=True,
        metavar="VALUE=FILE[,FILE...]",
        help="an option value and its runs' suite JSON files (one per seed)",
    )
    parser.add_argument("--reference", required=True, help="the current default's VALUE")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    by_value = {}
    for item in args.value:
        value, _, files = item.partition("=")
        by_value[value] = read_value([Path(f) for f in files.split(",")])
    if args.reference not in by_value:
        parser.error(f"--reference {args.reference} is not one of the --value VALUEs")
    datasets = sorted(set.intersection(*(set(v) for v in by_value.values())))
    results = {d: {value: by_value[value][d] for value in by_value} for d in datasets}
    for d in datasets:
        for value, row in results[d].items():
            print(
                f"{d:13s} {value:>6s}  pair F1 {row['pair_f1']:.3f}  cell P "
                f"{row['cell_precision']:.3f} R {row['cell_recall']:.3f} F1 {row['cell_f1']:.3f}"
            )
    chosen = leave_one_out(results, reference=args.reference)
    overall = best_setting(results, datasets, prefer=args.reference)
    print_choice(chosen, args.reference, overall)
    summary = {
        "reference": args.reference,
        "files": {item.partition("=")[0]: item.partition("=")[2].split(",") for item in args.value},
        "results": results,
        "leave_one_dataset_out": chosen,
        "best_on_all": overall,
    }
    args.json.write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
