"""A benchmark suite built to differ: four seeded, offline PETA-like datasets.

    .venv/bin/python scripts/suite.py make --seed 0 --out benchmarks/suite
    .venv/bin/python scripts/suite.py run --root benchmarks/suite --seeds 1 --out docs/suite

Each dataset varies what matters for grouping and detection; none is a copy of the
project's older Fashion-MNIST benchmark, and none is used by the unit tests:

The four datasets (``DATASETS``) are described in ``docs/suite/README.md``:
identities, view strength, look-alike density, attribute kinds and noise kind differ.

Sources ship offline: Debian's ``dataset-fashion-mnist``, scikit-image's bundled
photos and scikit-learn's digits. Every dataset folder holds ``images/``,
``labels.csv`` (the noisy labels a user has: ``image``, ``split``, attributes;
no identity column), ``truth.csv`` (``image``, ``group`` = the identity, true
labels) and ``planted.csv`` (the wrong cells: ``image_id``, ``attribute``,
``true_label``, ``given_label``), plus ``dataset.json``.

Seeds: seed 0 and seeds 100 and up are development seeds (defaults are chosen on
them); the figures reported in the README come from seeds 1 and 2. One command makes
any missing dataset, runs them and fills the README's tables::

    .venv/bin/python scripts/suite.py run --seeds 1,2 --out docs/suite --readme

``run`` runs ``clusterclean.run`` on each dataset as a user would (image files,
every option at its default, an embedding cache so that reruns do not re-embed),
then the baseline in the same run: plain FAISS kNN on the same backbone vectors,
the best cut of a grid chosen with the truth (an oracle), and the minority rule.
It prints one table per dataset -- pair P/R/F1, P/R/F1 of the flagged cells
(``is_flagged``), precision@100, seconds -- then precision@k and the precision /
recall curve over ``confidence`` cuts, and writes ``suite_s<seed>.json`` and
``suite_s<seed>.md`` for each seed (a run of some datasets replaces their rows and keeps
the others'; ``--readme``: then fills the README's tables).
``--config NAME=VALUE`` (repeatable) sets a run option, e.g. ``min_confidence=0.5``.

``measure`` reads reports a ``run`` already wrote (``--work``) and measures them again,
adding the trust stage (:func:`clusterclean.trust.rank_label_issues`, with ``--config``'s
``min_confidence`` / ``min_grouping_attributes``) to reports written before it existed::

    .venv/bin/python scripts/suite.py measure --root benchmarks/suite --work \
        benchmarks/suite-work --seeds 1 --datasets fashion_mild,two_styles,photo_digits
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter

from clusterclean._docs import fill_blocks
from clusterclean.synth import (
    FASHION_INVISIBLE,
    FASHION_VISIBLE,
    inject_noise,
    load_fashion_mnist,
    make_views,
)

logger = logging.getLogger("suite")
ROOT = Path(__file__).resolve().parents[1]

DATASETS = ("fashion_mild", "crowd_strong", "two_styles", "photo_digits")
UPPER_BODY = (0, 2, 4, 6)  # T-shirt, pullover, coat, shirt: one silhouette family
PALETTE = np.array(
    [[200, 40, 40], [40, 90, 200], [230, 230, 230], [30, 30, 30], [60, 160, 70], [220, 200, 60]],
    dtype=np.float32,
)
SIZE = (64, 64)


# --------------------------------------------------------------------------- images


def _jpeg(image: Image.Image, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _garment(
    item: np.ndarray, garment: np.ndarray, background: np.ndarray, size=(80, 80)
) -> Image.Image:
    alpha = item.astype(np.float32)[:, :, None] / 255.0
    arr = background * (1 - alpha) + garment * alpha
    canvas = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="RGB")
    return canvas.resize(size, Image.Resampling.BILINEAR)


def _sketch(item: np.ndarray, ink: np.ndarray, size=(80, 80)) -> Image.Image:
    """The same item as a pencil sketch: its edges in ``ink`` on light paper."""
    gray = Image.fromarray(item).resize(size, Image.Resampling.BILINEAR)
    edges = np.asarray(gray.filter(ImageFilter.FIND_EDGES), dtype=np.float32)[:, :, None] / 255.0
    paper = np.array([235, 230, 215], dtype=np.float32)
    arr = paper * (1 - edges) + ink * 0.5 * edges
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="RGB")


def strong_view(base: Image.Image, rng: np.random.Generator, size=SIZE) -> tuple[Image.Image, dict]:
    """A strong camera-like view; returns the view and its per-image facts."""
    width, height = base.size
    scale = rng.uniform(0.6, 1.0)
    aspect = rng.uniform(0.85, 1.15)
    crop_w, crop_h = min(width, width * scale * aspect), min(height, height * scale / aspect)
    x0, y0 = rng.uniform(0, width - crop_w), rng.uniform(0, height - crop_h)
    view = base.rotate(rng.uniform(-12, 12), resample=Image.Resampling.BILINEAR, fillcolor=(0,) * 3)
    view = view.resize(size, Image.Resampling.BILINEAR, box=(x0, y0, x0 + crop_w, y0 + crop_h))
    flipped = bool(rng.random() < 0.5)
    if flipped:
        view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    view = view.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.2)))
    arr = np.asarray(view, dtype=np.float32)
    contrast, brightness = rng.uniform(0.6, 1.4, size=2)
    mean = arr.mean()
    arr = (arr - mean) * contrast + mean * brightness
    arr = arr * rng.uniform(0.8, 1.2, size=3) + rng.normal(0, rng.uniform(0, 10), arr.shape)
    if rng.random() < 0.5:  # an occluder: 10-25 % of the frame
        h, w = arr.shape[:2]
        oh, ow = int(h * rng.uniform(0.3, 0.5)), int(w * rng.uniform(0.3, 0.5))
        oy, ox = int(rng.integers(0, h - oh)), int(rng.integers(0, w - ow))
        arr[oy : oy + oh, ox : ox + ow] = rng.uniform(0, 255, size=3)
    out = Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), mode="RGB")
    decoded = Image.open(io.BytesIO(_jpeg(out, int(rng.integers(40, 91))))).convert("RGB")
    return decoded, {"facing_left": int(flipped), "bright_light": int(brightness > 1.0)}


def _mild_view(base: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, dict]:
    flipped = bool(rng.random() < 0.5)
    if flipped:
        base = base.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    brightness = rng.uniform(0.75, 1.25)
    arr = np.clip(np.asarray(base, dtype=np.float32) * brightness, 0, 255).astype(np.uint8)
    view = make_views(Image.fromarray(arr), 1, rng=rng, size=SIZE)[0]
    return view, {"facing_left": int(flipped), "bright_light": int(brightness > 1.0)}


# --------------------------------------------------------------------------- datasets


def _split(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.choice(np.array(["train", "val", "test"]), size=n, p=[0.6, 0.2, 0.2])


def _fashion_attrs(cls: int, rng: np.random.Generator, invisible: list[str]) -> dict:
    attrs = {name: int(cls in members) for name, members in FASHION_VISIBLE.items()}
    attrs.update({name: int(rng.random() < FASHION_INVISIBLE[name]) for name in invisible})
    return attrs


def _persons_fashion(name: str, seed: int) -> list[dict]:
    """Identity records: base image maker, n_views, attributes."""
    items, classes = load_fashion_mnist()
    rng = np.random.default_rng([seed, DATASETS.index(name)])
    records = []
    if name == "fashion_mild":
        chosen = rng.choice(len(items), size=430, replace=False)
        for index in chosen:
            cls = int(classes[index])
            base = _garment(items[index], rng.uniform(40, 255, 3), rng.uniform(0, 90, 3))
            records.append(
                {
                    "bases": [base],
                    "n_views": int(rng.integers(1, 7)),
                    "view": "mild",
                    "attrs": _fashion_attrs(cls, rng, list(FASHION_INVISIBLE)),
                }
            )
    elif name == "crowd_strong":
        pool = np.flatnonzero(np.isin(classes, UPPER_BODY))
        chosen = rng.choice(pool, size=2000, replace=False)
        invisible = list(FASHION_INVISIBLE)[:6]
        for index in chosen:
            cls = int(classes[index])
            garment = PALETTE[rng.integers(len(PALETTE))] + rng.normal(0, 12, 3)
            background = PALETTE[rng.integers(len(PALETTE))] * 0.3 + rng.normal(0, 8, 3)
            records.append(
                {
                    "bases": [_garment(items[index], garment, background)],
                    "n_views": int(rng.integers(2, 7)),
                    "view": "strong",
                    "attrs": _fashion_attrs(cls, rng, invisible),
                }
            )
    elif name == "two_styles":
        chosen = rng.choice(len(items), size=195, replace=False)
        invisible = ["is_male", "age_under_30", "on_phone", "is_tourist"]
        for index in chosen:  # twins: the same item, near colours, independent attributes
            cls = int(classes[index])
            garment, background = rng.uniform(40, 255, 3), rng.uniform(0, 90, 3)
            for _ in range(2):
                g = garment + rng.normal(0, 15, 3)
                records.append(
                    {
                        "bases": [
                            _garment(items[index], g, background + rng.normal(0, 10, 3)),
                            _sketch(items[index], g),
                        ],
                        "n_views": int(rng.integers(3, 7)),
                        "view": "mild",
                        "attrs": _fashion_attrs(cls, rng, invisible),
                        "per_image": True,
                    }
                )
    return records


def _persons_photos(seed: int) -> list[dict]:
    from clusterclean.synth import DemoPersons

    rng = np.random.default_rng([seed, DATASETS.index("photo_digits")])
    persons = DemoPersons(300)
    records = []
    for person in range(300):
        base, attrs = persons.draw(person, rng)
        n_views = 1 if rng.random() < 0.1 else int(rng.integers(2, 7))
        records.append({"bases": [base], "n_views": n_views, "view": "mild", "attrs": attrs})
    return records


NOISE = {
    "fashion_mild": ("disagreement", 0.10),
    "crowd_strong": ("uniform", 0.04),
    "two_styles": ("disagreement", 0.10),
    "photo_digits": ("class_conditional", 0.06),
}


def make_dataset(name: str, seed: int, out: Path) -> dict:
    """Write one dataset of the suite; returns its summary (also in dataset.json)."""
    started = time.perf_counter()
    records = _persons_photos(seed) if name == "photo_digits" else _persons_fashion(name, seed)
    rng = np.random.default_rng([seed, 100 + DATASETS.index(name)])
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    splits = _split(len(records), rng)
    rows = []
    for p, record in enumerate(records):
        group = f"p{p:05d}"
        for v in range(record["n_views"]):
            base = record["bases"][v % len(record["bases"])]
            if record["view"] == "strong":
                view, facts = strong_view(base, rng)
            else:
                view, facts = _mild_view(base, rng)
            image = f"{group}_v{v}.jpg"
            (images / image).write_bytes(_jpeg(view))
            row = {"image_id": image, "split": splits[p], "group": group, **record["attrs"]}
            if record.get("per_image"):
                row.update(facts)
            rows.append(row)
    truth = pd.DataFrame(rows)
    per_image = [c for c in ("facing_left", "bright_light") if c in truth.columns]
    kind, rate = NOISE[name]
    attributes = [c for c in truth.columns if c not in ("image_id", "split", "group", *per_image)]
    # noise goes where a minority can show: persons seen >= 3 times (cells of singletons
    # and pairs cannot be told wrong by any grouping method, so they are not planted)
    sizes = truth.groupby("group")["image_id"].transform("size")
    multi = truth[sizes >= 3].reset_index(drop=True)
    noisy = inject_noise(multi, kind=kind, rate=rate, seed=seed, attributes=attributes)
    labels = truth.copy().set_index("image_id")
    labels.update(noisy.labels.set_index("image_id")[attributes])
    labels = labels.reset_index()
    labels[attributes] = labels[attributes].astype(int)
    given = labels.drop(columns=["group"]).rename(columns={"image_id": "image"})
    given.to_csv(out / "labels.csv", index=False)
    truth.rename(columns={"image_id": "image"}).to_csv(out / "truth.csv", index=False)
    noisy.planted.to_csv(out / "planted.csv", index=False)
    summary = {
        "name": name,
        "seed": seed,
        "n_identities": len(records),
        "n_images": len(truth),
        "n_attributes": len(attributes) + len(per_image),
        "per_image_attributes": per_image,
        "noise": {"kind": kind, "rate": rate, "n_planted": len(noisy.planted)},
        "seconds": round(time.perf_counter() - started, 2),
    }
    (out / "dataset.json").write_text(json.dumps(summary, indent=2) + "\n")
    logger.info("%s seed %d: %s", name, seed, summary)
    return summary


# --------------------------------------------------------------------------- measure


PRECISION_AT = (50, 100, 200, 500)
CURVE_CUTS = tuple(round(c, 2) for c in np.arange(0.05, 1.0, 0.05))


def confidence_curve(issues: pd.DataFrame, planted: pd.DataFrame) -> list[dict]:
    """Precision / recall of the cells with confidence >= each cut of CURVE_CUTS."""
    from clusterclean.evaluate import detection_scores

    rows = []
    for cut in CURVE_CUTS:
        found = detection_scores(issues[issues["confidence"] >= cut], planted)
        rows.append(
            {
                "cut": float(cut),
                "n_flagged": found["n_flagged"],
                "precision": found["precision"],
                "recall": found["recall"],
                "f1": found["f1"],
            }
        )
    return rows


def measure(report, truth: pd.DataFrame, planted: pd.DataFrame) -> dict:
    from clusterclean.evaluate import detection_scores, grouping_scores, precision_at_k

    groups = truth.set_index("image").loc[report.dataset.ids.astype(str), "group"].to_numpy()
    grouping = grouping_scores(report.images["component_id"].to_numpy(), groups)
    issues = report.label_issues  # ranked by confidence when the trust step ran
    trusted = "is_flagged" in issues.columns
    flagged = issues[issues["is_flagged"]] if trusted else issues
    cells = detection_scores(flagged, planted)
    every = detection_scores(issues, planted)
    extra = {}
    if trusted:
        extra = {
            **{f"precision_at_{k}": precision_at_k(issues, planted, k) for k in PRECISION_AT},
            "all_cells_precision": every["precision"],
            "all_cells_recall": every["recall"],
            "n_grouping_issues": 0
            if report.grouping_issues is None
            else len(report.grouping_issues),
            "curve": confidence_curve(issues, planted),
        }
    agreement, purity = grouping_agreement(report, groups)
    return {
        "grouping_agreement": agreement,
        "linked_pair_purity": purity,
        "pair_precision": grouping["pair_precision"],
        "pair_recall": grouping["pair_recall"],
        "pair_f1": grouping["pair_f1"],
        "cell_precision": cells["precision"],
        "cell_recall": cells["recall"],
        "cell_f1": cells["f1"],
        "n_flagged": cells["n_flagged"],
        "n_planted": cells["n_planted"],
        "precision_at_100": precision_at_k(issues, planted, 100),
        **extra,
    }


def grouping_agreement(report, groups: np.ndarray) -> tuple[float | None, float | None]:
    """The run's label agreement (:func:`clusterclean.trust.check_grouping`; computed from
    the tables for a report written before the check) and, from the truth, the share of
    the graph's edges inside a component that join one identity."""
    from clusterclean.trust import check_grouping

    ids = report.images["component_id"].to_numpy()
    check = report.run_info.grouping_check
    if check is None and report.neighbors is not None:
        excluded = set(report.run_info.excluded_attributes)
        identity = [i for i, a in enumerate(report.dataset.attributes) if a not in excluded]
        check = check_grouping(
            report.dataset.labels[:, identity], ids, report.edges, report.neighbors
        )
    a, b = report.edges["row_a"].to_numpy(), report.edges["row_b"].to_numpy()
    inside = ids[a] == ids[b]
    purity = float((groups[a] == groups[b])[inside].mean()) if inside.any() else None
    return (None if check is None else check["agreement"]), purity


BASELINE_CUTS = tuple(round(c, 2) for c in np.arange(0.5, 0.99, 0.02))


def baseline(report, truth: pd.DataFrame, planted: pd.DataFrame) -> dict:
    """Plain FAISS kNN on the raw backbone vectors, the best cut (oracle), minority rule."""
    import clusterclean as cc

    best = None
    for cut in BASELINE_CUTS:
        plain = cc.run(
            labels=report.dataset,
            embeddings=report.embeddings,
            progress=False,
            refine=False,
            rerank=False,
            adapt="none",
            min_cosine=-1.0,
            min_similarity=float(cut),
            detect_mixed=False,
            detect_varying_attributes=False,
            label_penalty=0.0,  # no labels as evidence: the vectors alone
            min_confidence=0.0,  # every suspected cell: the plain minority rule
        )
        scores = measure(plain, truth, planted)
        if best is None or scores["pair_f1"] > best["pair_f1"]:
            best = dict(scores, cut=float(cut))
    return best


def run_dataset(folder: Path, work: Path, config: dict | None = None) -> dict:
    import clusterclean as cc

    truth = pd.read_csv(folder / "truth.csv")
    planted = pd.read_csv(folder / "planted.csv")
    started = time.perf_counter()
    report = cc.run(
        images=folder / "images",
        labels=folder / "labels.csv",
        out=work / f"{folder.name}-report",
        cache_dir=work / "cache",
        backbone="efficientnet_lite0",  # the offline backbone; every other option default
        progress=False,
        **(config or {}),
    )
    seconds = time.perf_counter() - started
    row = dict(measure(report, truth, planted), seconds=round(seconds, 1))
    row["baseline"] = baseline(report, truth, planted)
    row["n_images"] = report.dataset.n_images
    return row


def measure_saved(folder: Path, report_dir: Path, config: dict | None = None) -> dict:
    """``measure`` of a report already written, with the trust stage added when it lacks it."""
    from dataclasses import replace

    from clusterclean.report import read_report
    from clusterclean.trust import OPTIONS, rank_label_issues

    report = read_report(report_dir)  # with the kNN lists, for grouping_agreement
    if "confidence" not in report.label_issues.columns:
        names = {o.name for o in OPTIONS}
        trust = rank_label_issues(
            report.label_issues,
            report.images,
            report.components,
            report.component_attributes,
            **{k: v for k, v in (config or {}).items() if k in names},
        )
        report = replace(
            report, label_issues=trust.label_issues, grouping_issues=trust.grouping_issues
        )
    truth = pd.read_csv(folder / "truth.csv")
    planted = pd.read_csv(folder / "planted.csv")
    return dict(measure(report, truth, planted), n_images=report.dataset.n_images)


def curve_markdown(results: dict) -> str:
    """Precision@k and the P/R curve over confidence, one block per dataset."""
    lines = []
    for key, row in results.items():
        if "curve" not in row:
            continue
        at = ", ".join(f"P@{k} {_fmt(row[f'precision_at_{k}'])}" for k in PRECISION_AT)
        lines += [
            f"**{key}**: every suspected cell P {_fmt(row['all_cells_precision'])} / R "
            f"{_fmt(row['all_cells_recall'])}; {at}; grouping issues "
            f"{row['n_grouping_issues']}",
            "",
            "| confidence >= | flagged | precision | recall | F1 |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {c['cut']:.2f} | {c['n_flagged']} | {_fmt(c['precision'])} | "
            f"{_fmt(c['recall'])} | {_fmt(c['f1'])} |"
            for c in row["curve"]
        ]
        lines.append("")
    return "\n".join(lines)


def _config(items: list[str]) -> dict:
    """``NAME=VALUE`` pairs: VALUE read as JSON (numbers, true, null), else as text."""
    config = {}
    for item in items:
        name, _, text = item.partition("=")
        try:
            config[name] = json.loads(text)
        except ValueError:
            config[name] = text
    return config


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def markdown(results: dict) -> str:
    columns = (
        "pair_precision",
        "pair_recall",
        "pair_f1",
        "cell_precision",
        "cell_recall",
        "cell_f1",
        "precision_at_100",
        "grouping_agreement",
    )
    lines = [
        "| dataset | seed | run | images | pair P | pair R | pair F1 | cell P | cell R | cell F1 "
        "| P@100 | agreement | s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, row in results.items():
        name, seed = key.rsplit("@", 1)
        runs = [("default", row)] + ([("baseline", row["baseline"])] if "baseline" in row else [])
        for label, values in runs:
            # runs measured before the grouping check have no agreement
            cells = " | ".join(_fmt(values.get(c, "–")) for c in columns)
            extra = _fmt(row.get("seconds", "")) if label == "default" else f"cut {values['cut']}"
            lines.append(f"| {name} | {seed} | {label} | {row['n_images']} | {cells} | {extra} |")
    return "\n".join(lines) + "\n"


def fill_readme(text: str, root: Path) -> str:
    """Every ``<!-- suite: docs/suite/x.json -->`` block of ``text`` rendered from its JSON
    file (paths from ``root``; ``python scripts/suite.py readme``)."""

    def table(path: str) -> str:
        return markdown(json.loads((root / path).read_text(encoding="utf-8")))

    return fill_blocks(text, "suite", table)


def tables(results: dict) -> str:
    """The per-dataset table, then precision@k and the confidence curves."""
    return markdown(results) + "\n" + curve_markdown(results)


def write_readme() -> None:
    """Fill the README's suite tables from docs/suite's JSON files."""
    readme = ROOT / "README.md"
    readme.write_text(fill_readme(readme.read_text(encoding="utf-8"), ROOT), encoding="utf-8")
    print(f"filled the suite tables of {readme}")


def main_with_head_views(head_views, argv) -> int:
    """``main(argv)`` with the head's views made by ``head_views`` (an experiment).

    ``head_views(dataset, config, n_views, max_images, progress, model, pixel_views)``
    returns the ``AugmentedViews`` the head trains on; ``pixel_views`` is the pipeline's
    own view embedding (same arguments, without the last), for an experiment that only
    changes what it is given. The calibration's views are left as they are.
    """
    import clusterclean.pipeline as pipeline

    pixel_views = pipeline._embed_views

    def embed_views(dataset, config, n_views, max_images, progress, model, *, view_size=None):
        if (n_views, max_images) != (config.adapt_views, config.adapt_max_images):
            return pixel_views(
                dataset, config, n_views, max_images, progress, model, view_size=view_size
            )
        return head_views(dataset, config, n_views, max_images, progress, model, pixel_views)

    pipeline._embed_views = embed_views
    return main(argv)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("make", help="write the datasets of one seed")
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--out", type=Path, default=Path("benchmarks/suite"))
    make.add_argument("--datasets", default=",".join(DATASETS))
    run = sub.add_parser("run", help="run clusterclean and the baseline on each dataset")
    run.add_argument("--root", type=Path, default=Path("benchmarks/suite"))
    run.add_argument("--seeds", default="1")
    run.add_argument("--datasets", default=",".join(DATASETS))
    run.add_argument("--out", type=Path, default=Path("docs/suite"))
    run.add_argument("--work", type=Path, default=Path("benchmarks/suite-work"))
    run.add_argument(
        "--readme",
        action="store_true",
        help="then fill the README's suite tables (needs --out docs/suite)",
    )
    sub.add_parser("readme", help="fill the README's suite tables from their JSON files")
    again = sub.add_parser("measure", help="measure the reports a run already wrote")
    again.add_argument("--root", type=Path, default=Path("benchmarks/suite"))
    again.add_argument("--seeds", default="1")
    again.add_argument("--datasets", default=",".join(DATASETS))
    again.add_argument("--out", type=Path, default=None)
    again.add_argument("--work", type=Path, default=Path("benchmarks/suite-work"))
    for command in (run, again):
        command.add_argument(
            "--config",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="a run option, e.g. min_confidence=0.5 (repeatable)",
        )
    args = parser.parse_args(argv)
    if args.command == "run" and args.readme and args.out.resolve() != ROOT / "docs" / "suite":
        parser.error("--readme fills the README from docs/suite; give --out docs/suite")
    if args.command == "readme":
        write_readme()
        return 0
    config = _config(args.config) if args.command in ("run", "measure") else {}
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    names = [n for n in args.datasets.split(",") if n]
    if args.command == "make":
        for name in names:
            make_dataset(name, args.seed, args.out / f"s{args.seed}" / name)
        return 0
    results = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        for name in names:
            folder = args.root / f"s{seed}" / name
            key = f"{name}@{seed}"
            if args.command == "measure":
                report_dir = args.work / f"s{seed}" / f"{name}-report"
                results[key] = measure_saved(folder, report_dir, config)
            else:
                if not folder.is_dir():
                    make_dataset(name, seed, folder)
                results[key] = run_dataset(folder, args.work / f"s{seed}", config)
            print(markdown({key: results[key]}), flush=True)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        order = {name: i for i, name in enumerate(DATASETS)}
        for seed in sorted({int(key.rpartition("@")[2]) for key in results}):
            # a run of some datasets replaces their rows and keeps the others'
            file = args.out / f"suite_s{seed}.json"
            part = json.loads(file.read_text()) if file.exists() else {}
            part.update({k: v for k, v in results.items() if k.endswith(f"@{seed}")})
            part = dict(sorted(part.items(), key=lambda kv: order.get(kv[0].partition("@")[0], 99)))
            file.write_text(json.dumps(part, indent=2, default=float) + "\n")
            (args.out / f"suite_s{seed}.md").write_text(tables(part))
    print(tables(results))
    if args.command == "run" and args.readme:
        write_readme()
    return 0


if __name__ == "__main__":
    sys.exit(main())
