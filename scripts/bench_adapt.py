"""Measure ``--adapt``: a projection head trained on augmented views (and known groups).

For each benchmark (a *selection* one, where the head's hyper-parameters were
chosen, and a held-out *report* one) and the saved augmented views of its
images (``clusterclean.views.embed_views``, EfficientNet-Lite0, 2 views of every
image, in ``VIEWS_DIR/<benchmark name>.npz``), run the whole pipeline on the
saved embeddings with 10% planted minority flips (as ``bench_grouping.py``)
and report same-person pair P/R/F1, ARI, the largest component and
label-error detection P/R/F1 for

- ``default``: the default pipeline (whitening + re-ranking, cut 0.5), no head;
- ``adapt views``: the label-free head (``fit_adaptation(embeddings, views)``),
  then the default pipeline; at the default cut 0.5, and at the cut (of 0.40,
  0.42, ..., 0.60) with the best pair F1 on the selection benchmark;
- ``adapt groups``: the head also learns the persons of the ``split == "train"``
  images (``group`` unknown for every other image), scored on all images and
  on the ``split == "test"`` images only (persons the head never saw: pairs,
  ARI and detection restricted to those images).

The adapt stage's wall time (``fit_adaptation``; embedding the views is not
included: it costs ``n_views`` times the embedding of the sampled images) and
the spread over three seeds of the label-free head are recorded too.

Usage::

    python scripts/bench_adapt.py --select /tmp/h6/bench_s0 --report /tmp/h6/bench_s1 \\
        --views-dir /tmp/s2/views --out docs/grouping
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_grouping import _load, _load_views, _write_atomic  # noqa: E402

from clusterclean.adapt import fit_adaptation  # noqa: E402
from clusterclean.evaluate import detection_scores, grouping_scores  # noqa: E402
from clusterclean.pipeline import RunConfig, _related, run  # noqa: E402
from clusterclean.synth import inject_noise  # noqa: E402

DEFAULT = RunConfig(backbone="efficientnet_lite0")
SEEDS = (0, 1, 2)
#: Cuts tried on the selection benchmark for the label-free head.
SELECT_CUTS = np.round(np.arange(0.40, 0.62, 0.02), 2).tolist()


def scores(report, labels: pd.DataFrame, planted: pd.DataFrame, keep: np.ndarray | None) -> dict:
    """Grouping and detection scores, over all images or the images where ``keep``."""
    images = report.images
    truth = labels.set_index("image_id")["group"].reindex(images["image_id"]).to_numpy()
    components = images["component_id"].to_numpy()
    issues = report.label_issues
    if keep is not None:
        kept = set(labels.loc[keep, "image_id"].astype(str))
        mask = images["image_id"].isin(kept).to_numpy()
        components, truth = components[mask], truth[mask]
        issues = issues[issues["image_id"].isin(kept)]
        planted = planted[planted["image_id"].isin(kept)]
    grouping = grouping_scores(components, truth)
    detection = detection_scores(issues, planted, tasks=report.dataset.tasks)
    return {
        "n_images": int(len(components)),
        "pair_precision": grouping["pair_precision"],
        "pair_recall": grouping["pair_recall"],
        "pair_f1": grouping["pair_f1"],
        "adjusted_rand": grouping["adjusted_rand"],
        "largest_component": grouping["largest_component"],
        "detection_precision": detection["precision"],
        "detection_recall": detection["recall"],
        "detection_f1": detection["f1"],
    }


def evaluate(folder: Path, views_dir: Path, cut_views: float | None) -> tuple[list[dict], dict]:
    """The table rows of one benchmark, and the seed spread of the label-free head."""
    embeddings, labels = _load(folder)
    views = _load_views(views_dir / f"{folder.name}.npz", embeddings)
    noise = inject_noise(labels, kind="disagreement", rate=0.1, seed=0)
    is_train = (labels["split"] == "train").to_numpy()
    is_test = (labels["split"] == "test").to_numpy()
    known = np.where(is_train, labels["group"].to_numpy(dtype=object), None)

    def run_scores(config, adaptation, keep=None):
        options = {} if adaptation is None else {"adaptation": adaptation}
        report = run(
            labels=noise.labels, embeddings=embeddings, config=config, progress=False, **options
        )
        return scores(report, labels, noise.planted, keep)

    def row(method, config, adaptation=None, fit_seconds=0.0, keep=None, scored_on="all"):
        started = time.perf_counter()
        result = run_scores(config, adaptation, keep)
        result.update(
            method=method,
            cut=config.min_similarity,
            scored_on=scored_on,
            adapt_seconds=round(fit_seconds, 2),
            run_seconds=round(time.perf_counter() - started, 2),
        )
        print(
            f"{folder.name} {method:34s} {scored_on:5s} cut {config.min_similarity:.2f} "
            f"pair F1 {result['pair_f1']:.3f} ARI {result['adjusted_rand']:.3f} "
            f"largest {result['largest_component']:3d} detection F1 {result['detection_f1']:.3f} "
            f"adapt {fit_seconds:.1f} s",
            flush=True,
        )
        return result

    def fitted(groups=None, seed=0):
        started = time.perf_counter()
        # as the pipeline trains it: images the plain graph joins are not pushed apart
        related = _related(embeddings, views.rows, DEFAULT)
        head = fit_adaptation(embeddings, views, groups=groups, related=related, seed=seed)
        return head, time.perf_counter() - started

    rows = [row("default", DEFAULT)]
    views_config = replace(DEFAULT, adapt="views")
    head, view_seconds = fitted()
    rows.append(row("adapt views", views_config, head, view_seconds))
    if cut_views is None:  # the selection benchmark: the cut of best pair F1 in the whole run
        cut_views = max(
            (run_scores(replace(views_config, min_similarity=float(cut)), head)["pair_f1"], cut)
            for cut in SELECT_CUTS
        )[1]
    rows.append(
        row(
            "adapt views (cut chosen on select)",
            replace(views_config, min_similarity=cut_views),
            head,
            view_seconds,
        )
    )
    groups_config = replace(DEFAULT, adapt="groups")
    supervised, group_seconds = fitted(known)
    rows.append(row("adapt groups (train persons known)", groups_config, supervised, group_seconds))
    rows.append(row("default", DEFAULT, keep=is_test, scored_on="test"))
    rows.append(
        row("adapt views", views_config, head, view_seconds, keep=is_test, scored_on="test")
    )
    rows.append(
        row(
            "adapt groups (train persons known)",
            groups_config,
            supervised,
            group_seconds,
            keep=is_test,
            scored_on="test",
        )
    )
    spread = []
    for seed in SEEDS:
        other, seconds = fitted(seed=seed)
        spread.append(row(f"adapt views seed {seed}", views_config, other, seconds))
    return rows, {
        "cut_views": cut_views,
        "seeds": list(SEEDS),
        "pair_f1": [r["pair_f1"] for r in spread],
        "detection_f1": [r["detection_f1"] for r in spread],
    }


def _markdown(rows: list[dict], title: str) -> str:
    head = (
        f"### {title}\n\n"
        "| method | scored on | cut | pair P | pair R | pair F1 | ARI | largest | detect P "
        "| detect R | detect F1 | adapt s |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    body = "".join(
        f"| {r['method']} | {r['scored_on']} ({r['n_images']}) | {r['cut']:.2f} "
        f"| {r['pair_precision']:.3f} | {r['pair_recall']:.3f} | **{r['pair_f1']:.3f}** "
        f"| {r['adjusted_rand']:.3f} | {r['largest_component']} | {r['detection_precision']:.3f} "
        f"| {r['detection_recall']:.3f} | **{r['detection_f1']:.3f}** "
        f"| {r['adapt_seconds']:.1f} |\n"
        for r in rows
    )
    return head + body


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--select", type=Path, required=True, help="benchmark to choose on")
    parser.add_argument("--report", type=Path, required=True, help="held-out benchmark")
    parser.add_argument("--views-dir", type=Path, required=True, help="folder of <name>.npz views")
    parser.add_argument("--out", type=Path, default=Path("docs/grouping"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    select_rows, select_spread = evaluate(args.select, args.views_dir, None)
    report_rows, report_spread = evaluate(args.report, args.views_dir, select_spread["cut_views"])
    payload = {
        "select": str(args.select),
        "report": str(args.report),
        "views": {
            "dir": str(args.views_dir),
            "backbone": "efficientnet_lite0",
            "n_views": 2,
            "images": "all",
            "seed": 0,
        },
        "noise": {"kind": "disagreement", "rate": 0.1, "seed": 0},
        "base_config": asdict(DEFAULT),
        "head": (
            "fit_adaptation defaults: linear, dim 128, 30 epochs, temperature 0.2, related = "
            "the plain graph's components (as run() trains it)"
        ),
        "groups_known": "split == 'train' only (persons are disjoint across splits)",
        "results": {"select": select_rows, "report": report_rows},
        "seed_spread": {"select": select_spread, "report": report_spread},
    }
    _write_atomic(args.out / "bench_adapt.json", json.dumps(payload, indent=2, default=str))
    print(_markdown(select_rows, f"Selection benchmark ({args.select.name})"))
    print(_markdown(report_rows, f"Held-out benchmark ({args.report.name})"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
