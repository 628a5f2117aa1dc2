"""Choose a grouping option leave-one-dataset-out by re-grouping saved suite reports.

(Named choose_label_penalty.py until session 26: the label penalty was its first use and
is still its default grid.) Re-groups saved suite reports (``scripts/suite.py run``
writes them) with every (label_penalty, label_tolerance) of a grid, or with ``--grid
NAME=V1,V2`` (repeatable: every combination) any other option that acts after the head,
reusing each report's backbone vectors, projection head and refinement, so nothing is
embedded or trained again (the head stays the one trained at the report's settings: an
approximation for options that also shape its training pairs). For each dataset left
out, the setting with the best mean suspected-cell F1 on the others is chosen and its
figures on the one left out are reported, beside ``--reference`` (the default).

python scripts/choose_by_regrouping.py --reports /tmp/suite-work/s0 --data /tmp/suite/s0 \\
    --out docs/suite/label_penalty_s0.json
python scripts/choose_by_regrouping.py --reports /tmp/suite-work/s1 --data /tmp/suite/s1 \\
    --only 0.15,2 --out docs/suite/label_penalty_s1.json   # held-out seed: the chosen one
python scripts/choose_by_regrouping.py --reports /tmp/suite-work/s0 --data /tmp/suite/s0 \\
    --grid min_cosine=0.4,0.5,0.6 --reference min_cosine=0.5 --out /tmp/min_cosine_s0.json
"""

from __future__ import annotations

import argparse
import itertools
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


def penalty_settings(grid) -> dict[str, dict]:
    """``{"PENALTY,TOLERANCE": options}`` of label-penalty pairs."""
    return {
        f"{penalty:g},{tolerance}": {"label_penalty": penalty, "label_tolerance": tolerance}
        for penalty, tolerance in grid
    }


def grid_settings(items: list[str]) -> dict[str, dict]:
    """``NAME=V1,V2`` items -> every combination, labelled ``NAME=V;NAME2=W``."""
    axes = []
    for item in items:
        name, _, values = item.partition("=")
        axes.append([(name, text, json.loads(text)) for text in values.split(",")])
    return {
        ";".join(f"{n}={text}" for n, text, _ in combo): {n: v for n, _, v in combo}
        for combo in itertools.product(*axes)
    }


def regroup(folder: Path, data: Path, settings: dict[str, dict]) -> dict[str, dict]:
    """Figures of one saved report re-grouped at every setting (label -> run options)."""
    report = cc.read_report(folder)
    name = folder.name.removesuffix("-report")
    truth = pd.read_csv(data / name / "truth.csv")
    planted = pd.read_csv(data / name / "planted.csv")
    head = folder / "adaptation.npz"
    adaptation = load_adaptation(head) if head.exists() else None
    refinement = load_refinement(folder / "refinement.npz")
    rows = {}
    for label, options in settings.items():
        started = time.perf_counter()
        again = cc.run(
            labels=report.dataset,
            embeddings=report.embeddings,
            adaptation=adaptation,
            refinement=refinement,
            adapt="views" if adaptation is not None else "none",
            progress=False,
            **options,
        )
        row = dict(measure(again, truth, planted), seconds=round(time.perf_counter() - started, 2))
        rows[label] = row
        print(
            f"{name:13s} {label:24s}  pair F1 "
            f"{row['pair_f1']:.3f}  cell P {row['cell_precision']:.3f} R "
            f"{row['cell_recall']:.3f} F1 {row['cell_f1']:.3f}  P@100 "
            f"{row['precision_at_100']:.2f}",
            flush=True,
        )
    return name, rows


def best_setting(
    results: dict[str, dict[str, dict]], datasets: list[str], prefer: str | None = None
) -> str:
    """The setting with the best mean suspected-cell F1 over ``datasets``; on a tie (within
    1e-9), ``prefer`` (the default: a tie is no reason to move it), else the first listed."""
    settings = list(results[datasets[0]])
    if prefer in settings:
        settings.insert(0, settings.pop(settings.index(prefer)))
    score = {s: sum(results[d][s]["cell_f1"] for d in datasets) for s in settings}
    top = max(score.values())
    return next(s for s in settings if score[s] >= top - 1e-9)


def leave_one_out(results: dict[str, dict[str, dict]], reference: str = "0,1") -> dict[str, dict]:
    """For each dataset: the setting the others choose (best mean cell F1) and its figures,
    beside those of ``reference`` (``off``; for the label penalty, no penalty)."""
    chosen = {}
    for held in results:
        others = [d for d in results if d != held]
        best = best_setting(results, others, prefer=reference)
        chosen[held] = {
            "chosen_on": others,
            "setting": best,
            "held_out": results[held][best],
            "off": results[held][reference],
        }
    return chosen


def print_choice(chosen: dict[str, dict], reference: str, overall: str) -> None:
    """Print each fold's choice and its held-out cell F1 beside the reference's."""
    for held, row in chosen.items():
        print(
            f"left out {held}: chosen {row['setting']} -> cell F1 "
            f"{row['held_out']['cell_f1']:.3f} ({reference}: {row['off']['cell_f1']:.3f})"
        )
    print(f"best mean cell F1 over all: {overall}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--only", help="PENALTY,TOLERANCE: that one (and off), not the grid")
    parser.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="NAME=V1,V2",
        help="another option's values instead of the label-penalty grid (repeatable)",
    )
    parser.add_argument("--reference", help="with --grid: the default's label, e.g. NAME=V")
    args = parser.parse_args(argv)
    logging.getLogger("clusterclean").setLevel(logging.ERROR)
    grid, reference = GRID, "0,1"
    if args.only:
        penalty, tolerance = args.only.split(",")
        grid = ((0.0, 1), (float(penalty), int(tolerance)))
    settings = penalty_settings(grid)
    if args.grid:
        settings, reference = grid_settings(args.grid), args.reference
        if reference not in settings:
            parser.error(f"--reference must be one of {sorted(settings)}")
    results = dict(regroup(f, args.data, settings) for f in sorted(args.reports.glob("*-report")))
    summary = {"grid": settings if args.grid else [list(g) for g in grid], "results": results}
    if not args.only and len(results) > 1:
        summary["leave_one_dataset_out"] = leave_one_out(results, reference)
        overall = best_setting(results, list(results), prefer=reference)
        summary["best_on_all"] = overall
        print_choice(summary["leave_one_dataset_out"], reference, overall)
    args.out.write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
