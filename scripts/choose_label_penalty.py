"""Choose label_penalty / label_tolerance by leave-one-dataset-out on the suite's reports.

Re-groups saved suite reports (``scripts/suite.py run`` writes them) with every
(label_penalty, label_tolerance) of a grid, reusing each report's backbone
vectors, projection head and refinement, so nothing is embedded or trained
again. For each dataset left out, the setting with the best mean suspected-cell
F1 on the others is chosen and its figures on the one left out are reported.

python scripts/choose_label_penalty.py --reports /tmp/suite-work/s0 --data /tmp/suite/s0 \\
    --out docs/suite/label_penalty_s0.json
python scripts/choose_label_penalty.py --reports /tmp/suite-work/s1 --data /tmp/suite/s1 \\
    --only 0.15,2 --out docs/suite/label_penalty_s1.json   # held-out seed: the chosen one
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from suite import measure  # noqa: E402

import clusterclean as cc  # noqa: E402
from clusterclean.adapt import load_adaptation  # noqa: E402
from clusterclean.refine import load_refinement  # noqa: E402

GRID = ((0.0, 1), (0.08, 0), (0.08, 1), (0.15, 1), (0.15, 2), (0.3, 1), (0.3, 2))


def regroup(folder: Path, data: Path, grid) -> dict[str, dict]:
    """Figures of one saved report re-grouped at every setting of ``grid``."""
    report = cc.read_report(folder)
    name = folder.name.removesuffix("-report")
    truth = pd.read_csv(data / name / "truth.csv")
    planted = pd.read_csv(data / name / "planted.csv")
    head = folder / "adaptation.npz"
    adaptation = load_adaptation(head) if head.exists() else None
    refinement = load_refinement(folder / "refinement.npz")
    rows = {}
    for penalty, tolerance in grid:
        started = time.perf_counter()
        again = cc.run(
            labels=report.dataset,
            embeddings=report.embeddings,
            adaptation=adaptation,
            refinement=refinement,
            adapt="views" if adaptation is not None else "none",
            progress=False,
            label_penalty=penalty,
            label_tolerance=tolerance,
        )
        row = dict(measure(again, truth, planted), seconds=round(time.perf_counter() - started, 2))
        rows[f"{penalty:g},{tolerance}"] = row
        print(
            f"{name:13s} penalty {penalty:<5g} tolerance {tolerance}  pair F1 "
            f"{row['pair_f1']:.3f}  cell P {row['cell_precision']:.3f} R "
            f"{row['cell_recall']:.3f} F1 {row['cell_f1']:.3f}  P@100 "
            f"{row['precision_at_100']:.2f}",
            flush=True,
        )
    return name, rows


def best_setting(results: dict[str, dict[str, dict]], datasets: list[str]) -> str:
    """The setting with the best mean suspected-cell F1 over ``datasets``."""
    settings = results[datasets[0]].keys()
    return max(settings, key=lambda s: sum(results[d][s]["cell_f1"] for d in datasets))


def leave_one_out(results: dict[str, dict[str, dict]]) -> dict[str, dict]:
    """For each dataset: the setting the others choose (best mean cell F1) and its figures."""
    chosen = {}
    for held in results:
        others = [d for d in results if d != held]
        best = best_setting(results, others)
        chosen[held] = {
            "chosen_on": others,
            "setting": best,
            "held_out": results[held][best],
            "off": results[held]["0,1"],
        }
    return chosen


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--only", help="PENALTY,TOLERANCE: that one (and off), not the grid")
    args = parser.parse_args(argv)
    logging.getLogger("clusterclean").setLevel(logging.ERROR)
    grid = GRID
    if args.only:
        penalty, tolerance = args.only.split(",")
        grid = ((0.0, 1), (float(penalty), int(tolerance)))
    results = dict(regroup(f, args.data, grid) for f in sorted(args.reports.glob("*-report")))
    summary = {"grid": [list(g) for g in grid], "results": results}
    if not args.only and len(results) > 1:
        summary["leave_one_dataset_out"] = leave_one_out(results)
        overall = best_setting(results, list(results))
        summary["best_on_all"] = overall
        for held, row in summary["leave_one_dataset_out"].items():
            print(
                f"left out {held}: chosen {row['setting']} -> cell F1 "
                f"{row['held_out']['cell_f1']:.3f} (off: {row['off']['cell_f1']:.3f})"
            )
        print(f"best mean cell F1 over all: {overall}")
    args.out.write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
