"""``clusterclean`` command line: parse arguments, call the library, set the exit code.

Exit codes: 0 success, 1 a ClustercleanError or an OS error on user files (one
line on stderr, no traceback), 2 a usage error (one usage line, the error, where
to read more), 130 interrupted, 141 stdout closed by its reader (``| head``: quiet,
files already written). Commands write their files first and print after; -q
prints nothing but errors.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from . import __version__
from .errors import ClustercleanError, InvalidInputError, printable
from .options import csv_list

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    """argparse with a short usage error: one usage line, the error, where to read more.

    argparse prints the whole usage (about 50 lines for ``run``) before the error;
    the subcommands' parsers are of this class too (``add_subparsers`` keeps it).
    """

    def short_usage(self) -> str:
        words = [self.prog]
        for action in self._actions:
            if action.help == argparse.SUPPRESS:
                continue
            name = action.metavar or action.dest.upper()
            if not action.option_strings:
                words.append(name)
            elif action.required:
                words.append(f"{action.option_strings[-1]} {name}")
        return " ".join([*words, "[options]"])

    def error(self, message: str):
        self.exit(
            2,
            f"usage: {self.short_usage()}\n{self.prog}: error: {message}\nsee {self.prog} --help\n",
        )


def _add_output_flags(parser: argparse.ArgumentParser, prefix: str = ""):
    """-v / -q: accepted before the subcommand (``prefix`` "top_") and after it."""
    group = parser.add_argument_group("output")
    group.add_argument(
        "-v",
        "--verbose",
        dest=f"{prefix}verbose",
        action="count",
        default=0,
        help="more log output (-vv for debug)",
    )
    group.add_argument(
        "-q",
        "--quiet",
        dest=f"{prefix}quiet",
        action="store_true",
        help="only errors: no summary, no warnings, no progress bars",
    )
    return group


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = _add_output_flags(common)
    group.add_argument(
        "--no-progress", dest="progress", action="store_false", help="hide progress bars"
    )
    return common


def _pipeline_options():
    """The options of ``run`` that ``demo`` and ``evaluate`` share: all but loading and seed."""
    from .pipeline import RUN_OPTIONS

    return [o for o in RUN_OPTIONS if o.stage not in ("load", "run")]


def _add_pipeline_options(parser: argparse.ArgumentParser, **defaults) -> None:
    """One flag per declared option (:func:`clusterclean.options.add_flags`)."""
    from .options import add_flags

    add_flags(parser, _pipeline_options(), defaults=defaults)


def _config_from_args(args: argparse.Namespace, **defaults):
    from .pipeline import RunConfig

    fields = RunConfig.__dataclass_fields__
    values = {name: getattr(args, name) for name in fields if getattr(args, name, None) is not None}
    for name, value in defaults.items():
        values.setdefault(name, value)
    return RunConfig(**values)


def _calibration_lines(calibration: dict | None) -> list[str]:
    if not calibration:
        return []
    return [
        f"calibrated cut (--min-similarity auto): {calibration['min_similarity']:.2f}, "
        f"estimated pair precision {calibration['estimated_precision']:.3f}, recall "
        f"{calibration['estimated_recall']:.3f} ({calibration['n_images']} images x "
        f"{calibration['n_views']} views; see run.json)"
    ]


def _grouping_check_lines(check: dict | None) -> list[str]:
    if not check:
        return []
    line = (
        f"grouping check: labels agree {check['agreement']:.2f} that components are single "
        f"identities (linked images differ on {check['within_disagreement']:.2f} attributes, "
        f"nearest images across components on {check['outside_disagreement']:.2f})"
    )
    if check["reliable"]:
        return [line]
    return [
        line,
        f"WARNING: agreement below {check['min_agreement']:g}: many components likely join "
        "different identities, so many flags are not label errors; improve the grouping first "
        "(see the README, 'When the grouping check warns')",
    ]


def _say(args: argparse.Namespace, lines: Sequence[str]) -> None:
    """The command's result on stdout, unless -q (only errors)."""
    if not args.quiet:
        print("\n".join(lines))


def _summary_lines(report, extra_lines: Sequence[str] = ()) -> list[str]:
    from .pipeline import summarize

    s = summarize(report)
    lines = [
        f"images: {s['images']}"
        + (
            f" ({s['skipped_images']} unreadable, skipped: see skipped.parquet)"
            if s["skipped_images"]
            else ""
        ),
        f"components: {s['components']} ({s['components_multi']} with 2+ images, "
        f"largest {s['largest_component']})",
    ]
    if s["attributes"]:
        lines += [
            f"inconsistent components (any attribute disagrees): {s['inconsistent_components']}",
            "flagged components: "
            + (", ".join(f"{k}={v}" for k, v in s["flagged_components"].items()) or "none"),
            f"suspected wrong label cells: {s['label_issues']}"
            + (
                f" ({s['flagged_label_issues']} flagged at confidence >= {s['min_confidence']:g}: "
                "review those first, label_issues.parquet is ranked by confidence)"
                if s["flagged_label_issues"] is not None
                else ""
            ),
            *(
                [
                    "images grouped with another identity (grouping problems, not label errors): "
                    f"{s['grouping_issues']}"
                ]
                if s["grouping_issues"]
                else []
            ),
            "attributes treated as per-image (not scored): "
            + (", ".join(s["per_image_attributes"]) or "none"),
            f"components split as possibly two people: {s['possibly_two_people']}",
        ]
    else:
        lines.append("no labels: duplicate groups only")
    lines += [
        "duplicate groups: "
        + (", ".join(f"{k}={v}" for k, v in s["duplicates"].items()) or "not computed"),
    ]
    if s["attributes"]:
        lines.append(
            "most inconsistent attributes (components disagreeing): "
            + (", ".join(f"{a} ({n})" for a, n in s["top_attributes"]) or "none")
        )
    lines += [
        *_calibration_lines(s["calibration"]),
        *_grouping_check_lines(s["grouping_check"]),
        *extra_lines,
    ]
    if s["folder"]:
        lines.append(f"report: {s['folder']}")
    return lines


def _cmd_add(args: argparse.Namespace) -> int:
    from .incremental import add_images
    from .pipeline import RunConfig

    # given flags must repeat the base run's values (add_images says which differ)
    given = {
        name: getattr(args, name)
        for name in RunConfig.__dataclass_fields__
        if getattr(args, name, None) is not None
    }
    report, additions = add_images(
        args.base,
        images=args.add,
        labels=args.labels,
        out=args.out,
        embeddings=args.embeddings,
        embedding_ids=args.embedding_ids,
        options=given,
        progress=args.progress,
    )
    contradicting = additions.loc[additions["n_contradicting_pairs"] > 0, "image_id"]
    new_lines = [
        f"new images: {len(additions)}, duplicating a base image: "
        f"{int(additions['is_duplicate'].sum())}, contradicting one: {len(contradicting)}"
        + (f" (first: {', '.join(contradicting[:3])})" if len(contradicting) else ""),
        f"per new image: {args.out / 'additions.parquet'}",
    ]
    _say(args, _summary_lines(report, new_lines))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from .pipeline import run

    if args.add is not None and args.base is None:
        raise InvalidInputError(
            "--add NEW_DIR needs --base REPORT_DIR, the report to add the new images to."
        )
    if args.base is not None:
        return _cmd_add(args)
    config = _config_from_args(args)
    report = run(
        images=args.images,
        labels=args.labels,
        out=args.out,
        embeddings=args.embeddings,
        embedding_ids=args.embedding_ids,
        config=config,
        progress=args.progress,
    )
    _say(args, _summary_lines(report))
    return 0


def _add_run_parser(sub) -> None:
    parser = sub.add_parser(
        "run",
        parents=[_common_options()],
        help="find components and label inconsistencies; write a report",
        description="Embed images, build the kNN graph, find components, "
        "score label disagreement and write a report folder.",
    )
    data = parser.add_argument_group("data")
    data.add_argument("--images", type=Path, default=None, help="folder of images")
    data.add_argument(
        "--labels", type=Path, default=None, help="labels table (CSV or Parquet; wide or long form)"
    )
    data.add_argument("--out", type=Path, required=True, help="report folder to write")
    data.add_argument(
        "--add",
        type=Path,
        default=None,
        metavar="NEW_DIR",
        help="folder of new images to add to the --base report (only they are embedded)",
    )
    data.add_argument(
        "--base",
        type=Path,
        default=None,
        metavar="REPORT_DIR",
        help="an earlier report; --labels/--add/--embeddings then describe only the new images",
    )
    data.add_argument(
        "--embeddings",
        type=Path,
        default=None,
        help="use these vectors instead of embedding (Parquet with image_id + a "
        "list column, or .npy with --embedding-ids)",
    )
    data.add_argument(
        "--embedding-ids",
        type=Path,
        default=None,
        help="with a .npy --embeddings file: the ids of its rows (one per line, or a "
        "CSV/Parquet file with an image_id column)",
    )
    from .options import add_flags
    from .pipeline import RUN_OPTIONS

    add_flags(parser, [o for o in RUN_OPTIONS if o.stage == "load"])
    _add_pipeline_options(parser)
    # demo and evaluate have their own --seed, which seeds the pipeline too
    add_flags(parser, [o for o in RUN_OPTIONS if o.stage == "run"])
    parser.set_defaults(handler=_cmd_run)


def _cmd_demo(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from .demo import DEMO_CONFIG, run_demo

    config = _config_from_args(args, **asdict(DEMO_CONFIG))
    result = run_demo(
        args.out, n_persons=args.n_persons, seed=args.seed, config=config, progress=args.progress
    )
    recall = result.n_found / result.n_planted if result.n_planted else 0.0
    precision = result.n_found / result.n_flagged if result.n_flagged else 0.0
    confident = result.n_found_confident / result.n_confident if result.n_confident else 0.0
    found = [
        f"planted disagreements found: {result.n_found} of {result.n_planted} "
        f"(recall {recall:.2f}, precision {precision:.2f})",
        f"  among the flagged cells (is_flagged): {result.n_found_confident} of "
        f"{result.n_confident} are planted (precision {confident:.2f})",
    ]
    _say(args, _summary_lines(result.report, found))
    return 0


def _add_demo_parser(sub) -> None:
    parser = sub.add_parser(
        "demo",
        parents=[_common_options()],
        help="run the whole pipeline on a generated offline demo dataset",
        description="Build a small PETA-like dataset from images that ship "
        "offline, plant annotator disagreements, run the pipeline "
        "with the packaged EfficientNet-Lite0 and report what it "
        "found.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("demo-out"),
        help="folder for the data and the report (default demo-out)",
    )
    parser.add_argument("--n-persons", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    _add_pipeline_options(parser, backbone="efficientnet_lite0 for the demo")
    parser.set_defaults(handler=_cmd_demo)


def _cmd_report(args: argparse.Namespace) -> int:
    from .errors import InvalidInputError
    from .html import write_html
    from .report import HTML_FILE, read_report, refresh_manifest

    if not args.max_mb >= 0:
        raise InvalidInputError(f"--max-mb must be a number of MiB >= 0; got {args.max_mb}.")
    report = read_report(args.report_dir, load_embeddings=False)
    path = write_html(
        report,
        args.report_dir / HTML_FILE,
        n_gallery=args.top,
        sort_by=args.sort_by,
        max_bytes=int(args.max_mb * 2**20),
    )
    refresh_manifest(args.report_dir, (HTML_FILE,))
    _say(args, [f"report: {path}"])
    return 0


def _add_report_parser(sub) -> None:
    from .html import DEFAULT_MAX_BYTES, sort_keys

    parser = sub.add_parser(
        "report",
        parents=[_common_options()],
        help="(re)build report.html from a report folder's Parquet files",
        description="Rebuild the self-contained report.html of a report folder "
        "written by `clusterclean run`, e.g. with more components or another ranking.",
    )
    parser.add_argument("report_dir", type=Path, metavar="REPORT_DIR", help="report folder")
    parser.add_argument(
        "--top",
        type=int,
        default=100,
        help="components (in the initial order) whose thumbnails are embedded; every "
        "component is listed either way (default 100)",
    )
    parser.add_argument(
        "--sort-by",
        choices=sort_keys(),
        default="inconsistency_score",
        help="initial order of the components, worst first; for a score, components with "
        "label issues come first (default inconsistency_score)",
    )
    parser.add_argument(
        "--max-mb",
        type=float,
        default=DEFAULT_MAX_BYTES / 2**20,
        help="size cap of the page in MiB; thumbnails past it are left out (default 20)",
    )
    parser.set_defaults(handler=_cmd_report)


def _strategy_thresholds(text: str | None, strategies, parser) -> dict[str, str]:
    """``--threshold``: one value for every strategy that takes one, or ``name=value,...``."""
    from .strategies import strategy_options

    if text is None:
        return {}
    if "=" not in text:
        return {s: text for s in strategies if "threshold" in strategy_options(s)}
    thresholds = {}
    for part in csv_list(text):
        name, _, value = part.partition("=")
        if name.strip() not in strategies or not value.strip():
            parser.error(
                f"--threshold {part!r} must read STRATEGY=VALUE with a strategy of --strategy "
                f"({','.join(strategies)})"
            )
        thresholds[name.strip()] = value.strip()
    return thresholds


def _clean_summary_lines(summary: dict) -> list[str]:
    threshold = summary.get("threshold")
    lines = [
        f"{summary['strategy']}{f' (threshold {threshold})' if threshold else ''}: "
        f"{summary['images']} images -> {summary['kept']} kept, {summary['dropped']} dropped; "
        f"{summary['changed_cells']} cells changed, {summary['ties']} ties left unchanged"
    ]
    for split, n in summary["splits"].items():
        lines.append(
            f"  split {split}: {n['images']} images, {n['dropped']} dropped, "
            f"{n['changed_cells']} cells changed, {n['ties']} ties"
        )
    for attribute, n in summary["attributes"].items():
        lines.append(
            f"  attribute {attribute}: {n['changed_cells']} cells changed, {n['ties']} ties"
        )
    return lines


def _cmd_clean(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .report import read_report
    from .strategies import clean_labels, strategy_options, write_cleaned

    if args.out is None and not args.dry_run:
        parser.error("the following arguments are required: --out (or --dry-run)")
    repeated = sorted({s for s in args.strategy if args.strategy.count(s) > 1})
    if not args.strategy or repeated:
        parser.error(f"--strategy must list each strategy once; got {','.join(args.strategy)}")
    thresholds = _strategy_thresholds(args.threshold, args.strategy, parser)
    report = read_report(args.report_dir, load_embeddings=False)
    results = []
    for strategy in args.strategy:
        uses = strategy_options(strategy)
        options = {"threshold": thresholds.get(strategy)}
        if "metric" in uses:
            options["metric"] = args.metric
        if "attributes" in uses:
            options["include_attributes"] = args.attributes
            options["exclude_attributes"] = args.exclude_attributes
        result = clean_labels(
            report,
            strategy=strategy,
            min_component_size=args.min_component_size,
            splits=args.splits,
            **options,
        )
        results.append(result)
    lines = [line for result in results for line in _clean_summary_lines(result.summary())]
    if args.dry_run:
        _say(args, [*lines, "dry run: nothing written"])
        return 0
    # written before anything is printed: `clean ... | head -1` still gets the files
    written = write_cleaned(results, args.out, overwrite=args.overwrite)
    _say(args, [*lines, "wrote: " + ", ".join(str(p) for p in written)])
    return 0


def _add_clean_parser(sub) -> None:
    from .scoring import METRICS
    from .strategies import STRATEGIES

    strategies = ", ".join(STRATEGIES)
    parser = sub.add_parser(
        "clean",
        parents=[_common_options()],
        help=f"write a cleaned label table from a report (strategies: {strategies})",
        description="Clean the labels of a report folder with one or more strategies and "
        "write each cleaned table, plus changes.parquet and dropped.parquet next to it.",
    )
    parser.add_argument("report_dir", type=Path, metavar="REPORT_DIR", help="report folder")
    parser.add_argument(
        "--strategy",
        type=csv_list,
        required=True,
        help=f"{strategies}; several comma-separated ones are each written to OUT's name + "
        ".STRATEGY",
    )
    parser.add_argument(
        "--threshold",
        default=None,
        help="component: absolute cut or percentile pNN (default p80); label, image: t in "
        "(0, 0.5] (default 0.2). One value for every strategy that takes one, or "
        "STRATEGY=VALUE,... (component=p90,image=0.25)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="cleaned table, .parquet or .csv (wide form)"
    )
    parser.add_argument(
        "--metric",
        default="variance",
        help=f"component metric: {', '.join(METRICS)} (default variance)",
    )
    parser.add_argument(
        "--splits",
        type=csv_list,
        default=None,
        help="clean only images of these splits, e.g. train or train,val (default all)",
    )
    parser.add_argument(
        "--min-component-size",
        type=int,
        default=2,
        help="smaller components are left untouched (default 2)",
    )
    chosen = parser.add_mutually_exclusive_group()
    chosen.add_argument(
        "--attributes", type=csv_list, default=None, help="clean only these attributes or tasks"
    )
    chosen.add_argument(
        "--exclude-attributes",
        type=csv_list,
        default=None,
        help="leave these attributes or tasks alone",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print what would change (per strategy, split and attribute); write nothing",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing output files (the cleaned tables, changes.parquet, "
        "dropped.parquet); without it, a file already there stops the command",
    )
    parser.set_defaults(handler=lambda args: _cmd_clean(args, parser))


def _named_groups(texts: Sequence[str] | None) -> dict[str, tuple[str, ...]]:
    """``--group visible=a,b`` options -> {"visible": ("a", "b")}."""
    from .errors import InvalidInputError

    groups = {}
    for text in texts or ():
        name, sep, members = text.partition("=")
        if not sep or not name.strip() or not csv_list(members):
            raise InvalidInputError(
                f"--group must be NAME=ATTR,ATTR,... (e.g. invisible=age,gender); got {text!r}."
            )
        groups[name.strip()] = csv_list(members)
    return groups


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .errors import InvalidInputError
    from .evaluate import evaluate_cleaning, parse_injection, read_benchmark, write_evaluation

    kind, rate = parse_injection(args.inject)
    groups, confusions = _named_groups(args.group), None
    images, embeddings, labels = args.images, args.embeddings, args.labels
    if args.benchmark is not None:
        bench = read_benchmark(args.benchmark)
        labels, embeddings, confusions = bench.labels, bench.embeddings, bench.confusions
        groups = groups or bench.groups
    elif labels is None:
        raise InvalidInputError(
            "evaluate needs trusted labels: --labels FILE (with --images DIR or --embeddings "
            "FILE), or --benchmark DIR made by scripts/make_benchmark.py."
        )
    result = evaluate_cleaning(
        labels,
        kind=kind,
        rate=rate,
        seed=args.seed,
        images=images,
        embeddings=embeddings,
        config=_config_from_args(args),
        attribute_groups=groups,
        confusions=confusions,
        probe=args.probe,
        progress=args.progress,
    )
    seconds = result.report.run_info.timings.get("total")
    lines = [f"planted {kind} noise at {rate:g}: {len(result.planted)} wrong cells"]
    if seconds is not None:
        lines.append(f"pipeline: {seconds:.1f} s for {len(result.noisy)} images")
    if result.n_disputed_cells:
        lines.append(
            f"warning: the given labels already disagree inside their group on "
            f"{result.n_disputed_pairs} (group, attribute) pairs ({result.n_disputed_cells} "
            "cells): flags there count as false positives; pass labels you trust"
        )
    if result.grouping is not None:
        g = result.grouping
        lines.append(
            f"components vs groups: pair precision {g['pair_precision']:.3f}, recall "
            f"{g['pair_recall']:.3f}, F1 {g['pair_f1']:.3f}, ARI {g['adjusted_rand']:.3f}, "
            f"largest component {g['largest_component']}"
        )
    lines += _grouping_check_lines(result.report.run_info.grouping_check)
    lines.append("cells vs planted (precision / recall / F1):")
    for row in result.detection.itertuples(index=False):
        extra = ""
        if row.method != "label_issues":
            extra = f", clean cells removed {int(row.n_clean_removed)}"
        else:
            extra = f"; P@100 {row.precision_at_100:.3f}"
            if hasattr(row, "flagged_f1"):
                extra += (
                    f"; flagged (confidence >= min_confidence) {row.flagged_precision:.3f} / "
                    f"{row.flagged_recall:.3f} / {row.flagged_f1:.3f}"
                )
        lines.append(
            f"  {row.method:<13} {row.attributes:<10} {row.precision:.3f} / {row.recall:.3f} / "
            f"{row.f1:.3f}{extra}"
        )
    if result.downstream is not None:
        lines.append("linear probe macro-F1 on the true test labels, by training labels:")
        for row in result.downstream.to_dict("records"):
            scores = ", ".join(
                f"{key[9:] or 'all'} {value:.3f}"
                for key, value in row.items()
                if key.startswith("macro_f1")
            )
            lines.append(f"  {row['labels']:<13} {scores}")
    if args.out is not None:
        lines.append(f"evaluation: {write_evaluation(result, args.out)}")
    _say(args, lines)
    return 0


def _add_evaluate_parser(sub) -> None:
    parser = sub.add_parser(
        "evaluate",
        parents=[_common_options()],
        help="plant label noise in trusted labels and measure how well it is found and cleaned",
        description="Take labels you trust (or a benchmark from scripts/make_benchmark.py), "
        "plant noise (--inject KIND:RATE), run the pipeline and every cleaning strategy, and "
        "report grouping vs the known groups, precision/recall of the flagged and changed "
        "cells vs the planted ones, and linear-probe F1 on the true test labels.",
    )
    source = parser.add_argument_group("data")
    source.add_argument("--labels", default=None, help="trusted labels table (CSV/Parquet, wide)")
    source.add_argument("--images", type=Path, default=None, help="images folder")
    source.add_argument(
        "--embeddings",
        type=Path,
        default=None,
        help="precomputed vectors (Parquet with image_id + a list column) instead of --images",
    )
    source.add_argument(
        "--benchmark", type=Path, default=None, help="benchmark folder (labels + embeddings)"
    )
    source.add_argument(
        "--multiclass",
        dest="multiclass_columns",
        type=csv_list,
        default=None,
        help="one-of-K label columns, e.g. age,pose",
    )
    noise = parser.add_argument_group("noise and measures")
    noise.add_argument(
        "--inject",
        default="disagreement:0.1",
        help="KIND:RATE, KIND = disagreement, uniform or class_conditional, RATE in [0, 0.5] "
        "(default disagreement:0.1)",
    )
    noise.add_argument("--seed", type=int, default=0, help="seed of the planted noise")
    noise.add_argument(
        "--group",
        action="append",
        default=None,
        metavar="NAME=ATTR,...",
        help="an attribute group scored apart (repeatable), e.g. invisible=age,gender",
    )
    noise.add_argument(
        "--no-probe", dest="probe", action="store_false", help="skip the downstream probes"
    )
    parser.add_argument("--out", type=Path, default=None, help="folder for the evaluation files")
    _add_pipeline_options(parser)
    parser.set_defaults(handler=_cmd_evaluate)


# Subcommands register here: (adder) functions taking the subparsers object.
SUBCOMMANDS: list[Callable] = [
    _add_run_parser,
    _add_demo_parser,
    _add_report_parser,
    _add_clean_parser,
    _add_evaluate_parser,
]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="clusterclean",
        description="Find near-duplicate images and the label inconsistencies among them.",
    )
    parser.add_argument("--version", action="version", version=f"clusterclean {__version__}")
    _add_output_flags(parser, prefix="top_")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    for command in sub.choices.values():  # its errors name it (unknown flags included)
        command.set_defaults(command_parser=command)
    return parser


def _configure_logging(args: argparse.Namespace) -> None:
    level = logging.WARNING
    if getattr(args, "quiet", False):
        level = logging.ERROR
    elif getattr(args, "verbose", 0) >= 2:
        level = logging.DEBUG
    elif getattr(args, "verbose", 0) == 1:
        level = logging.INFO
    handler = _CurrentStderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # faiss logs at INFO each library it tries ("Could not load library with AVX2 support
    # due to: ModuleNotFoundError ...") before loading the one that works: not ours to show
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def _quiet_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null so that the exit flush cannot fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):  # not a real file (tests): nothing to do
        pass


class _CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record.

    A plain StreamHandler keeps the stream it was created with; when ``main`` is
    called in-process (tests, notebooks) that stream may since have been replaced
    and closed, and logging would fail with "--- Logging error ---".
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``clusterclean`` command; returns the exit code."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    # -v / -q before the subcommand count as after it
    args.verbose = getattr(args, "verbose", 0) + args.top_verbose
    args.quiet = getattr(args, "quiet", False) or args.top_quiet
    # bars only for a person watching: redirected, tqdm's \r lines would fill the log;
    # -q is "only errors", so no bars either
    if getattr(args, "progress", False) and (args.quiet or not _stderr_is_tty()):
        args.progress = False
    _configure_logging(args)
    try:
        code = int(args.handler(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except BrokenPipeError:
        # `clusterclean clean ... | head -1`: the reader left; files are written (each
        # command writes before it prints). Exit quietly, as a Unix tool killed by SIGPIPE.
        _quiet_stdout()
        return 128 + 13
    # OSError: unreadable input, full disk, permissions -- the user's to fix
    except (ClustercleanError, OSError) as error:
        # one line, whatever the message: scripts read stderr line by line
        message = printable(" ".join(str(error).split()))
        print(f"clusterclean: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("clusterclean: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
