"""The report folder: column names, dtypes, SCHEMA_VERSION, Parquet write/read.

This is the only module that knows the on-disk names and types. Every table is
written to a temporary file and renamed; the whole folder is first assembled
next to its destination and swapped in, so a reader sees either the previous
complete report or the new one, never a half-written one.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import __version__
from ._contracts import Dataset, Embeddings, Neighbors
from ._docs import fill_blocks
from .atomic import atomic_write, pid_alive
from .errors import InvalidInputError, InvalidTypeError, ReportSchemaError, printable
from .run_record import RunRecord
from .scoring import METRICS

__all__ = [
    "SCHEMA_VERSION",
    "READABLE_VERSIONS",
    "RENAMED_IN_2",
    "edge_table",
    "column_tables",
    "fill_column_tables",
    "SCORE_DIRECTION",
    "TABLES",
    "Report",
    "write_report_folder",
    "check_output_folder",
    "read_report",
    "write_table",
    "read_table",
    "order_columns",
    "refresh_manifest",
    "report_ownership_problem",
    "written_table",
    "metadata_for",
]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = "2"
#: Schema versions read_report reads: an older one is upgraded in memory (CHANGELOG.md).
READABLE_VERSIONS = ("1", SCHEMA_VERSION)
METADATA_KEY = b"clusterclean"
SCORE_DIRECTION = "higher = more suspicious; every *_score column is in [0, 1]"
RUN_FILE = "run.json"

# table -> {column: (arrow type name, description)}: every column of every table,
# whatever the options (metrics registered later add their own components column).
TABLES: dict[str, dict[str, tuple[str, str]]] = {
    "dataset": {
        "image_id": ("string", "unique image id (the labels table's image value)"),
        "path": ("string", "absolute image path; null when only embeddings were given"),
        "split": ("string", "train / val / test, when the labels have a split column"),
        "group": ("string", "known identity (e.g. PETA person id), when given"),
        "labels": ("list<float32>", "labels in attribute order: 1, 0 or NaN (missing)"),
    },
    "images": {
        "image_id": ("string", "unique image id"),
        "path": ("string", "absolute image path, or null"),
        "split": ("string", "train / val / test, or null"),
        "group": ("string", "known identity, or null"),
        "component_id": ("int32", "component the image belongs to"),
        "component_size": ("int64", "images in that component"),
        "nearest_id": (
            "string",
            "first neighbour by link similarity (refined / re-ranked), before the cut",
        ),
        "nearest_cosine": ("float32", "plain cosine similarity to nearest_id"),
        "centroid_cosine": ("float32", "cosine similarity to the component's mean direction"),
        "n_rare_labels": ("int64", "labels of this image that are a minority in its component"),
        "rare_labels": ("list<string>", "those attributes"),
        "label_issue_score": ("float64", "max score of its suspected label issues, 0 if none"),
    },
    "components": {
        "component_id": ("int32", "dense component id"),
        "component_size": ("int64", "images in the component"),
        # one column per registered metric (clusterclean.scoring.register_metric)
        **{name: ("float64", metric.formula) for name, metric in METRICS.items()},
        "inconsistency_score": ("float64", "2 * sqrt(variance), in [0, 1]"),
        "n_active_attributes": ("int64", "attributes with c_a > 0"),
        "n_disagreeing_attributes": ("int64", "attributes with m_a > 0"),
        "n_label_issues": ("int64", "suspected wrong cells in the component"),
        "n_edges": ("int64", "graph edges inside the component"),
        "mean_edge_cosine": ("float32", "mean plain cosine similarity of those edges"),
        "min_edge_cosine": (
            "float32",
            "plain cosine of the weakest edge holding the component together (the cut "
            "--min-similarity applies to the link score, not to this cosine)",
        ),
        "n_hops": (
            "int32",
            "diameter in edges (longest shortest path; exact on chains and trees, a lower "
            "bound otherwise): a long chain hints at two subjects merged",
        ),
        "is_possibly_two_people": (
            "bool",
            "one side of a graph component split in two because its labels and embedding "
            "both said two people (clusterclean.mixed; run.json mixed_components)",
        ),
        "mixed_with": ("int32", "the other side's component_id; null when not split"),
    },
    "component_attributes": {
        "component_id": ("int32", "component (>= 2 images)"),
        "attribute": ("string", "attribute name"),
        "n_known": ("int64", "k_a: images of the component where the attribute is not missing"),
        "n_positive": ("int64", "c_a: images where it is 1"),
        "positive_ratio": ("float64", "r_a = c_a / k_a"),
        "minority_fraction": ("float64", "m_a = min(c_a, k_a - c_a) / k_a"),
    },
    "label_issues": {
        "image_id": ("string", "image holding the suspected wrong cell"),
        "component_id": ("int32", "its component"),
        "attribute": ("string", "attribute of the cell"),
        "given_label": ("int8", "the label as given (1 or 0)"),
        "component_majority": ("int8", "the component's majority value; null on a tie"),
        "minority_fraction": ("float64", "m_a of the attribute in the component"),
        "agreement": ("float64", "share of the component's labelled images with the same value"),
        "label_issue_score": ("float64", "1 - agreement"),
        "confidence": (
            "float64",
            "estimated probability that the cell is wrong (clusterclean.trust: a logistic "
            "model fitted on the benchmark suite); the table is ranked by it, highest first",
        ),
        "is_flagged": (
            "bool",
            "confidence >= min_confidence (run.json parameters): the cells to review first",
        ),
    },
    "component_flags": {
        "component_id": ("int32", "a component whose metric is above a --thresholds cut"),
        "metric": ("string", "the metric (a components column, e.g. variance)"),
        "threshold": ("string", "the threshold as given: a percentile (p80) or a value (0.05)"),
        "cut": ("float64", "the value the threshold resolved to (run.json thresholds)"),
        "value": ("float64", "the component's metric, strictly above cut"),
    },
    "grouping_issues": {
        "image_id": ("string", "image in its component's minority on many attributes at once"),
        "component_id": ("int32", "the component it was grouped into"),
        "n_disagreeing_attributes": (
            "int64",
            "attributes on which it is in the minority (>= min_grouping_attributes)",
        ),
        "disagreeing_attributes": (
            "list<string>",
            "those attributes: more likely another identity grouped in than as many label "
            "errors; its cells are not in label_issues",
        ),
    },
    "pairs": {
        "image_id_a": ("string", "first image of the pair (lower row)"),
        "image_id_b": ("string", "second image"),
        "cosine": ("float32", "plain cosine similarity"),
        "split_a": ("string", "split of image a, or null"),
        "split_b": ("string", "split of image b, or null"),
        "is_cross_split": ("bool", "both splits known and different (leakage)"),
        "n_differing_labels": ("int64", "attributes known in both images with different values"),
        "differing_attributes": ("list<string>", "those attributes"),
    },
    "edges": {
        "row_a": ("int32", "row of one image in images.parquet / dataset.parquet (row_a < row_b)"),
        "row_b": ("int32", "row of the other image"),
        "image_id_a": ("string", "id of the image at row_a"),
        "image_id_b": ("string", "id of the image at row_b"),
        "cosine": ("float32", "plain cosine similarity"),
    },
    "embeddings": {
        "image_id": ("string", "image id"),
        "embedding": (
            "fixed_size_list<float32>",
            "L2-normalised backbone vector, before the projection head and whitening "
            "(adaptation.npz, refinement.npz)",
        ),
    },
    # --- cleaning logs (strategies.write_cleaned) ------------------------------ #
    "changes": {
        "image_id": ("string", "image whose cell a strategy changed (or left on a tie)"),
        "component_id": ("int32", "its component"),
        "split": ("string", "train / val / test, or null"),
        "attribute": ("string", "attribute of the cell (a task value for one-of-K tasks)"),
        "old": ("int8", "label before: 1, 0 or null (missing)"),
        "new": ("int8", "label after: 1, 0 or null; equal to old on a majority tie"),
        "strategy": ("string", "strategy name"),
        "reason": ("string", "the rule and the component counts that decided it"),
    },
    "dropped": {
        "image_id": ("string", "image removed from the cleaned table"),
        "component_id": ("int32", "its component"),
        "split": ("string", "train / val / test, or null"),
        "strategy": ("string", "strategy name"),
        "reason": ("string", "the rule and the values that decided it"),
    },
    # --- end cleaning logs ------------------------------------------------------ #
}
# --- duplicates (clusterclean.duplicates.find_duplicates) -------------------
TABLES["duplicates"] = {
    "kind": ("string", "exact_file (same bytes), exact_pixels (same decoded pixels) or near"),
    "duplicate_group_id": ("int32", "duplicate group, dense within a kind"),
    "duplicate_group_size": ("int64", "images in the group"),
    "image_id": ("string", "member image"),
    "path": ("string", "its path, or null"),
    "split": ("string", "its split, or null"),
    "content_hash": ("string", "shared BLAKE2b-128 hex digest; null for near groups"),
    "is_kept": ("bool", "the one member to keep when deduplicating"),
    "home_split": ("string", "the group's best split (train > val > test); its copies stay"),
    "is_cross_split": ("bool", "the group spans >= 2 known splits"),
    "is_leak": ("bool", "copy in a split other than home_split: drop it from its split"),
    "n_differing_labels": ("int64", "attributes whose known values differ inside the group"),
    "differing_attributes": ("list<string>", "those attributes"),
}
# --- kNN lists (what `clusterclean run --add` merges new images into) ---------
TABLES["neighbors"] = {
    "row": (
        "int32",
        "row of the querying image in images.parquet; n_neighbors rows each, in row order",
    ),
    "neighbor_row": ("int32", "row of its neighbour, most similar first; -1 = none"),
    "cosine": (
        "float32",
        "cosine similarity of the searched vectors (after the head and the whitening); "
        "-inf where neighbor_row is -1",
    ),
}
# --- new images against a base report (clusterclean.incremental.add_images) ----
TABLES["additions"] = {
    "image_id": ("string", "new image"),
    "component_id": ("int32", "its component in the updated report"),
    "n_existing_in_component": ("int64", "images of the base report in that component"),
    "nearest_existing_id": ("string", "most similar image of the base report"),
    "nearest_existing_cosine": ("float32", "plain cosine similarity to it"),
    "is_duplicate": ("bool", "in a duplicate group (exact or near) with a base image"),
    "n_contradicting_pairs": ("int64", "edges to base images whose known labels differ"),
    "contradicted_attributes": ("list<string>", "attributes that differ on those edges"),
}
# --- images the embedding stage could not read (clusterclean.embed.SkippedImage) ---
TABLES["skipped"] = {
    "image_id": ("string", "image left out of the run"),
    "path": ("string", "its file"),
    "reason": ("string", "why it could not be embedded (truncated, not an image, ...)"),
}
HTML_FILE = "report.html"
#: The fitted refinement (clusterclean.refine.Refinement.save / load_refinement).
REFINEMENT_FILE = "refinement.npz"
#: The trained projection head (clusterclean.adapt.Adaptation.save / load_adaptation).
ADAPTATION_FILE = "adaptation.npz"
# --- end duplicates ----------------------------------------------------------


@dataclass(frozen=True)
class Report:
    """Everything one run produced; what ``write_report`` saves and ``read_report`` loads.

    Attributes
    ----------
    dataset : Dataset
        The labels the run scored.
    images, components, component_attributes, label_issues, pairs, edges : DataFrame
        The report tables (columns documented in ``TABLES`` and the README).
    embeddings : Embeddings or None
        The backbone's vectors, before the projection head (``adaptation``) and the
        whitening (``refinement``) that the graph was built on.
    duplicates : DataFrame or None
        Exact / near duplicate groups and split leaks (``TABLES["duplicates"]``).
    neighbors : Neighbors or None
        The kNN lists the graph was cut from (``neighbors.parquet``).
    skipped : DataFrame or None
        Images that could not be read and were left out (``skipped.parquet``).
    additions : DataFrame or None
        New images against a base report (``additions.parquet``, ``run --add``).
    component_flags : DataFrame or None
        The components above each (metric, threshold) cut of ``--thresholds``
        (``component_flags.parquet``, :func:`clusterclean.scoring.score_components`).
    grouping_issues : DataFrame or None
        Images split off as grouping problems by the trust stage
        (``grouping_issues.parquet``, :mod:`clusterclean.trust`); None on a report
        written before that stage existed.
    refinement : clusterclean.refine.Refinement or None
        The whitening fitted on the run's embeddings (``refinement.npz``).
    adaptation : clusterclean.adapt.Adaptation or None
        The projection head trained with ``adapt`` (``adaptation.npz``).
    run_info : RunRecord
        Parameters, versions, timings and counts (``run.json``); a dict given
        here is checked and made a :class:`~clusterclean.run_record.RunRecord`.
    folder : Path or None
        Where the report was written or read from.
    """

    dataset: Dataset
    images: pd.DataFrame
    components: pd.DataFrame
    component_attributes: pd.DataFrame
    label_issues: pd.DataFrame
    pairs: pd.DataFrame
    edges: pd.DataFrame
    embeddings: Embeddings | None = None
    duplicates: pd.DataFrame | None = None
    neighbors: Neighbors | None = None
    skipped: pd.DataFrame | None = None
    additions: pd.DataFrame | None = None
    grouping_issues: pd.DataFrame | None = None
    component_flags: pd.DataFrame | None = None
    refinement: Any = None
    adaptation: Any = None
    run_info: RunRecord = field(default_factory=RunRecord)
    folder: Path | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.run_info, RunRecord):
            object.__setattr__(self, "run_info", RunRecord.from_dict(self.run_info))


def _schema(name: str) -> dict[str, tuple[str, str]]:
    """``TABLES[name]``, with the metrics registered after this module was imported."""
    spec = TABLES[name]
    if name == "components":
        late = {m: ("float64", metric.formula) for m, metric in METRICS.items() if m not in spec}
        spec = {**spec, **late}
    return spec


def order_columns(name: str, frame: pd.DataFrame) -> pd.DataFrame:
    """The table's columns in their on-disk order: declared ones first, then extras."""
    spec = _schema(name)
    declared = [c for c in spec if c in frame.columns]
    return frame[declared + [c for c in frame.columns if c not in spec]]


def _arrow_type(name: str, dim: int | None = None):
    import pyarrow as pa

    simple = {
        "string": pa.string(),
        "int8": pa.int8(),
        "int32": pa.int32(),
        "int64": pa.int64(),
        "float32": pa.float32(),
        "float64": pa.float64(),
        "bool": pa.bool_(),
        "list<string>": pa.list_(pa.string()),
        "list<float32>": pa.list_(pa.float32()),
    }
    if name == "fixed_size_list<float32>":
        return pa.list_(pa.float32(), dim)
    return simple[name]


# --- schema 1 -> 2 (CHANGELOG.md) -------------------------------------------------
#: Columns renamed in schema 2: table -> {schema-1 name: schema-2 name}.
RENAMED_IN_2: dict[str, dict[str, str]] = {
    "images": {"nearest_similarity": "nearest_cosine", "centroid_similarity": "centroid_cosine"},
    "components": {
        "size": "component_size",
        "mean_similarity": "mean_edge_cosine",
        "min_similarity": "min_edge_cosine",
    },
    "label_issues": {"score": "label_issue_score"},
    "pairs": {"similarity": "cosine"},
    "edges": {"src": "row_a", "dst": "row_b", "similarity": "cosine"},
    "neighbors": {"src": "row", "dst": "neighbor_row", "similarity": "cosine"},
    "duplicates": {"group_id": "duplicate_group_id", "group_size": "duplicate_group_size"},
    "additions": {"nearest_existing_similarity": "nearest_existing_cosine"},
}
_V1_FLAG = re.compile(r"is_bad_component_(?P<short>[a-z0-9]+)_(?P<threshold>p[0-9.]+|[0-9_]+)")


def _renamed(frame: pd.DataFrame, meta: dict) -> pd.DataFrame:
    """A table read from an older schema with this version's column names."""
    if meta.get("version") == "1":
        frame = frame.rename(columns=RENAMED_IN_2.get(meta.get("table"), {}))
    return frame


def _v1_flag(column: str) -> tuple[str, str] | None:
    """``(metric, threshold)`` of a schema-1 flag column (``is_bad_component_var_p80``)."""
    match = _V1_FLAG.fullmatch(column)
    metric = {m.short: name for name, m in METRICS.items()}.get(match["short"]) if match else None
    if metric is None:
        return None
    return metric, match["threshold"].replace("_", ".")


def _upgrade_from_v1(tables: dict[str, pd.DataFrame], dataset: Dataset, run_info: RunRecord):
    """Schema 2's cross-table changes on a schema-1 report (renames are done per table).

    The edges get their image ids; the ``is_bad_component_<short>_<threshold>``
    columns of ``components`` become the ``component_flags`` table, with the cuts
    ``run.json`` recorded; ``run.json``'s thresholds and flag counts are keyed the
    schema-2 way (``variance>p80``).
    """
    from .scoring import flag_name, flag_table

    tables["edges"] = edge_table(tables["edges"], dataset)
    components = tables["components"]
    flags, names = [], {}
    for column in components.columns:
        parsed = _v1_flag(column)
        if parsed is None:
            continue
        metric, threshold = parsed
        names[column] = flag_name(metric, threshold)
        chosen = components.loc[components[column].to_numpy(dtype=bool)]
        cut = run_info.thresholds.get(column, np.nan)
        flags.append((chosen["component_id"], metric, threshold, cut, chosen[metric]))
    tables["components"] = components.drop(columns=list(names))
    tables["component_flags"] = flag_table(flags)
    counts = dict(run_info.counts)
    if isinstance(counts.get("flagged_components"), dict):
        counts["flagged_components"] = {
            names.get(k, k): v for k, v in counts["flagged_components"].items()
        }
    thresholds = {names.get(k, k): v for k, v in run_info.thresholds.items()}
    return tables, run_info.replace(counts=counts, thresholds=thresholds)


def edge_table(edges: pd.DataFrame, dataset: Dataset) -> pd.DataFrame:
    """The graph's edges (``row_a``, ``row_b``, ``cosine``) with the images' ids added,
    as ``edges.parquet`` holds them."""
    ids = pd.Series(dataset.ids.astype(str))  # a string Series takes 4x faster than numpy str
    id_a, id_b = (ids.take(edges[c].to_numpy()).array for c in ("row_a", "row_b"))
    return order_columns("edges", edges.assign(image_id_a=id_a, image_id_b=id_b))


def column_tables(names: str = "all") -> str:
    """The Markdown column tables of the report (the README's ``<!-- columns: all -->`` block).

    ``names``: ``"all"`` or comma-separated table names. Metrics registered later
    (:func:`clusterclean.scoring.register_metric`) are left out: the page
    documents what every report has.
    """
    chosen = list(TABLES) if names.strip() == "all" else [n.strip() for n in names.split(",")]
    lines = []
    for name in chosen:
        lines += [f"**`{name}.parquet`**", "", "| column | type | meaning |", "|---|---|---|"]
        lines += [f"| `{c}` | {t} | {d} |" for c, (t, d) in TABLES[name].items()]
        lines.append("")
    return "\n".join(lines)


def fill_column_tables(text: str) -> str:
    """``text`` with every ``<!-- columns: ... -->`` block filled by :func:`column_tables`."""
    return fill_blocks(text, "columns", column_tables)


def _metadata(table: str, extra: dict[str, Any] | None) -> dict[bytes, bytes]:
    payload = {
        "version": SCHEMA_VERSION,
        "creator": {"library": "clusterclean", "version": __version__},
        "score_direction": SCORE_DIRECTION,
        "table": table,
    }
    payload.update(extra or {})
    return {METADATA_KEY: json.dumps(payload).encode()}


metadata_for = _metadata  # the schema metadata of a table other modules write (cleaned tables)


def _to_arrow(name: str, frame: pd.DataFrame):
    """Build an Arrow table with the declared types, in the declared column order."""
    import pyarrow as pa

    spec = _schema(name)
    undeclared = [c for c in frame.columns if c not in spec]
    if undeclared:
        raise InvalidInputError(
            f"Column(s) {undeclared} are not part of the {name!r} table schema "
            "(clusterclean.report.TABLES)."
        )
    frame = order_columns(name, frame)
    arrays, fields = [], []
    for column, (type_name, description) in spec.items():
        if column not in frame.columns:
            continue
        values = frame[column]
        if type_name == "fixed_size_list<float32>":
            matrix = np.ascontiguousarray(np.stack(values.to_numpy()), dtype=np.float32)
            array = pa.FixedSizeListArray.from_arrays(pa.array(matrix.ravel()), matrix.shape[1])
        else:
            array = pa.array(
                values.tolist() if values.dtype == object or not len(values) else values,
                type=_arrow_type(type_name),
                from_pandas=True,
            )
        arrays.append(array)
        fields.append(pa.field(column, array.type, metadata={"description": description}))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def write_table(
    name: str, frame: pd.DataFrame, path: str | Path, *, metadata: dict | None = None
) -> Path:
    """Write one report table as Parquet, atomically, with the schema metadata."""
    return _write_arrow(name, _to_arrow(name, frame), Path(path), metadata)


def _write_arrow(name: str, table, path: Path, metadata: dict | None) -> Path:
    import pyarrow.parquet as pq

    table = table.replace_schema_metadata(_metadata(name, metadata))
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))
    return path


def written_table(path: str | Path) -> str | None:
    """The table name in a Parquet file's clusterclean metadata; None for any other file."""
    import pyarrow.parquet as pq

    try:
        if Path(path).is_symlink() or not Path(path).is_file():
            return None
        raw = (pq.read_schema(path).metadata or {}).get(METADATA_KEY)
        meta = json.loads(raw) if raw else None
    except (OSError, ValueError):
        return None
    return meta.get("table") if isinstance(meta, dict) else None


def read_table(path: str | Path, *, expected: str | None = None) -> tuple[pd.DataFrame, dict]:
    """Read a table written by :func:`write_table`, checking its schema version.

    Returns the DataFrame, with this version's column names also when an older
    version wrote it (``RENAMED_IN_2``), and the clusterclean metadata dict.
    """
    frame, meta = _read_parquet(path, expected)
    return _renamed(frame, meta), meta


def _read_parquet(path: str | Path, expected: str | None) -> tuple[pd.DataFrame, dict]:
    """A table as written, its schema version checked (one of ``READABLE_VERSIONS``)."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise ReportSchemaError(
            f"{path} is missing; re-run `clusterclean run` to rebuild the report."
        )
    try:
        table = pq.read_table(path)
        raw = (table.schema.metadata or {}).get(METADATA_KEY)
        meta = json.loads(raw) if raw is not None else None
    except (OSError, ValueError) as error:  # ArrowInvalid is a ValueError: truncated, not Parquet
        raise ReportSchemaError(
            f"{path} is not a readable Parquet table ({' '.join(str(error).split())}); "
            "re-run `clusterclean run` to rebuild the report."
        ) from error
    if raw is None:
        raise ReportSchemaError(
            f"{path} was not written by clusterclean (no {METADATA_KEY.decode()!r} metadata)."
        )
    if not isinstance(meta, dict):
        raise ReportSchemaError(f"{path} has damaged clusterclean metadata; re-run it.")
    if meta.get("version") not in READABLE_VERSIONS:
        raise ReportSchemaError(
            f"{path} has report schema version {meta.get('version')!r}; this clusterclean "
            f"({__version__}) reads versions {', '.join(READABLE_VERSIONS)}. Re-run "
            "`clusterclean run` with "
            "this version, or install the clusterclean version that wrote it "
            f"({meta.get('creator', {}).get('version', 'unknown')})."
        )
    if expected is not None and meta.get("table") != expected:
        raise ReportSchemaError(f"{path} holds table {meta.get('table')!r}, not {expected!r}.")
    return table.to_pandas(), meta


def _dataset_frame(dataset: Dataset) -> pd.DataFrame:
    frame = pd.DataFrame({"image_id": dataset.ids.astype(str)})
    for column in ("path", "split", "group"):
        if column in dataset.table.columns:
            frame[column] = dataset.table[column].to_numpy(dtype=object)
    frame["labels"] = list(dataset.labels)
    return frame


def _dataset_from_frame(frame: pd.DataFrame, meta: dict) -> Dataset:
    attributes = tuple(meta.get("attributes", []))
    labels = (
        np.stack(frame["labels"].to_numpy()).astype(np.float32)
        if len(frame)
        else np.zeros((0, len(attributes)), dtype=np.float32)
    )
    labels = labels.reshape(len(frame), len(attributes))
    table = frame.drop(columns=["labels"]).reset_index(drop=True)
    tasks = {k: tuple(v) for k, v in meta.get("tasks", {}).items()}
    root = Path(meta["root"]) if meta.get("root") else None
    return Dataset(table=table, labels=labels, attributes=attributes, tasks=tasks, root=root)


def _embeddings_frame(embeddings: Embeddings) -> pd.DataFrame:
    return pd.DataFrame(
        {"image_id": embeddings.ids.astype(str), "embedding": list(embeddings.vectors)}
    )


def _neighbors_frame(neighbors: Neighbors) -> pd.DataFrame:
    n_images, width = neighbors.indices.shape
    return pd.DataFrame(
        {
            "row": np.repeat(np.arange(n_images, dtype=np.int32), width),
            "neighbor_row": neighbors.indices.ravel().astype(np.int32),
            "cosine": neighbors.similarities.ravel().astype(np.float32),
        }
    )


def _neighbors_from_frame(frame: pd.DataFrame, meta: dict) -> Neighbors:
    width = int(meta["n_neighbors"])
    shape = (len(frame) // max(width, 1), width)
    return Neighbors(
        indices=frame["neighbor_row"].to_numpy(dtype=np.int64).reshape(shape),
        similarities=frame["cosine"].to_numpy(dtype=np.float32).reshape(shape),
    )


def _describe(entries: list[Path]) -> str:
    names = sorted(f"{e.name}/" if e.is_dir() and not e.is_symlink() else e.name for e in entries)
    shown = ", ".join(printable(n) for n in names[:5])
    return shown + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _file_entry(path: Path, rows: int | None = None, columns: list[str] | None = None) -> dict:
    import hashlib

    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    entry: dict[str, Any] = {"bytes": path.stat().st_size, "blake2b": digest.hexdigest()}
    if rows is not None:
        entry["rows"] = rows
        entry["columns"] = columns
    return entry


def report_ownership_problem(out: Path) -> str | None:
    """Why clusterclean may not replace the existing folder ``out``; None when it may.

    It may when ``out`` is empty, or is a report it wrote whose ``run.json`` manifest
    lists every file in it with the size and BLAKE2b digest they still have, and the
    folder holds nothing else. Anything else (a user's file or sub-folder, a changed
    or missing report file, a ``run.json`` clusterclean did not write) is a reason.
    """
    entries = sorted(out.iterdir())
    if not entries:
        return None
    try:
        info = json.loads((out / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        info = None
    manifest = info.get("manifest") if isinstance(info, dict) else None
    if not isinstance(manifest, dict) or not all(isinstance(v, dict) for v in manifest.values()):
        return f"is not empty and holds no clusterclean report ({_describe(entries)})"
    foreign = [e for e in entries if e.name != RUN_FILE and e.name not in manifest]
    if foreign:
        return f"holds files that are not part of its report ({_describe(foreign)})"
    for name, recorded in sorted(manifest.items()):
        path = out / name
        if "/" in name or not path.is_file() or path.is_symlink():
            return f"is missing the report file {printable(name)} its run.json lists"
        if path.stat().st_size != recorded.get("bytes") or (
            _file_entry(path)["blake2b"] != recorded.get("blake2b")
        ):
            return f"holds {printable(name)}, changed since clusterclean wrote it"
    return None


def _same_or_nested(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


def _prepare_folder(out: Path, inputs: tuple[Any, ...] = ()) -> Path:
    """Check that ``out`` may be (re)placed, and return the staging folder next to it."""
    for given in inputs:
        if isinstance(given, (str, os.PathLike)) and str(given):
            path = Path(given).resolve()
            if _same_or_nested(out, path):
                raise InvalidInputError(
                    f"The output folder {out} is, holds or lies inside the input {path}; "
                    "choose an --out outside every input so nothing of yours is replaced."
                )
    if out.exists() and not out.is_dir():
        raise InvalidInputError(
            f"The output {out} exists and is not a folder; choose another --out."
        )
    if out.is_dir():
        problem = report_ownership_problem(out)
        if problem is not None:
            raise InvalidInputError(
                f"The output folder {out} {problem}; clusterclean replaces only a folder that "
                "is empty or holds exactly a report it wrote. Move those files away or choose "
                "a new --out."
            )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(out.parent, os.W_OK):
            raise PermissionError(errno.EACCES, "permission denied or read-only file system")
        _remove_stale_siblings(out)
        staging = _sibling(out, "partial")
        staging.mkdir()
    except OSError as exc:  # a read-only or full disk, a file where a folder should be, ...
        raise InvalidInputError(
            f"Cannot write into {out.parent} ({exc.strerror or exc}); choose a writable --out "
            "folder."
        ) from exc
    return staging


def output_folder(out: Any, *, func: str = "run") -> Path:
    """``out`` as an absolute path, a symlink resolved to the folder it names."""
    if not isinstance(out, (str, os.PathLike)) or not str(out):
        raise InvalidTypeError(
            f"The 'out' parameter of {func} must be a folder path (str or os.PathLike). "
            f"Got {out!r} instead."
        )
    out = Path(out).absolute()
    return out.resolve() if out.is_symlink() else out


def check_output_folder(out: str | Path, *, inputs: tuple[Any, ...] = ()) -> Path:
    """Make :func:`write_report`'s checks on ``out`` now, before any long work.

    The folder itself is not created; its parent is, and a staging folder is
    made and removed there to prove it is writable. Returns ``out`` as absolute
    (a symlink resolved: the report replaces the folder it points to).

    Parameters
    ----------
    out : str or Path
        The report folder.
    inputs : tuple of paths, optional
        The run's input files and folders: ``out`` may be none of them, and may
        neither hold one nor lie inside one.

    Raises
    ------
    InvalidInputError
        ``out`` is a file, a folder holding anything but a report clusterclean
        wrote (see :func:`report_ownership_problem`), an input or near one, or
        cannot be written (read-only, no permission, full disk).
    """
    out = output_folder(out)
    _prepare_folder(out, inputs).rmdir()
    return out


def _sibling(out: Path, kind: str) -> Path:
    """A staging (``partial``) or moved-aside (``old``) folder beside ``out``, named by our pid."""
    return out.parent / f".{out.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _remove_stale_siblings(out: Path) -> None:
    """Clean up after runs killed while writing ``out`` (only folders of dead processes).

    Their staging folders ``.NAME.partial-PID-*`` are deleted. A ``.NAME.old-PID-*``
    folder is the previous complete report, moved aside just before the swap: it
    is put back when ``out`` is missing (the run died between the two renames),
    else deleted.
    """
    pattern = re.compile(rf"\.{re.escape(out.name)}\.(partial|old)-(\d+)-[0-9a-f]{{8}}")
    for path in sorted(out.parent.iterdir()):
        match = pattern.fullmatch(path.name)
        if match is None or not path.is_dir() or pid_alive(int(match[2])):
            continue
        if match[1] == "old" and not out.exists():
            os.replace(path, out)
            logger.warning("Restored the report %s that an interrupted run had moved aside", out)
        else:
            shutil.rmtree(path, ignore_errors=True)


#: Parquet tables of a report: always written, then written when present on the Report.
_REQUIRED_TABLES = (
    "dataset",
    "images",
    "components",
    "component_attributes",
    "label_issues",
    "pairs",
    "edges",
)
_OPTIONAL_TABLES = ("duplicates", "skipped", "additions", "grouping_issues", "component_flags")
#: Columns a reader relies on, checked on read (the manifest records the full list).
_KEY_COLUMNS = {
    "dataset": ("image_id", "labels"),
    "images": ("image_id", "component_id", "component_size"),
    "components": ("component_id", "component_size"),
    "component_attributes": ("component_id", "attribute"),
    "label_issues": ("image_id", "component_id", "attribute"),
    "grouping_issues": ("image_id", "component_id"),
    "pairs": ("image_id_a", "image_id_b"),
    "edges": ("row_a", "row_b", "cosine"),
    "embeddings": ("image_id", "embedding"),
    "neighbors": ("row", "neighbor_row", "cosine"),
}


def _run_id(tables: dict[str, Any]) -> str:
    """A digest of what identifies a run: its labels, its grouping and its findings.

    Derived from content (not drawn at random), so identical runs write identical
    bytes; the tables it covers are the ones identical across thread counts. Of
    ``label_issues`` it covers the cells found, in image and attribute order, not
    their ``confidence``: that follows the vectors (``centroid_cosine``), whose
    last bits depend on the thread count of the embedding model, and so does the
    confidence order of the rows.
    """
    import hashlib

    import pyarrow as pa

    digest = hashlib.blake2b(digest_size=12)
    issues = tables["label_issues"]
    found = [c for c in issues.column_names if c not in ("confidence", "is_flagged")]
    parts = {
        "dataset": tables["dataset"],
        "component_attributes": tables["component_attributes"],
        "label_issues": issues.select(found).sort_by(
            [("image_id", "ascending"), ("attribute", "ascending")]
        ),
        "images": tables["images"].select(["image_id", "component_id"]),
    }
    for name, table in parts.items():
        table = table.replace_schema_metadata(None)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        digest.update(name.encode() + sink.getvalue().to_pybytes())
    return digest.hexdigest()


def write_report_folder(
    report: Report,
    out: str | Path,
    *,
    inputs: tuple[Any, ...] = (),
    pages: dict[str, Callable[[Report, Path], Any]] | None = None,
) -> Path:
    """Write the report folder atomically and return its path.

    This module is the I/O layer: it knows the tables, not how a run is shown.
    ``pages`` maps a file name to ``write(report, path)`` for the files rendered
    from the report (``report.html``, :func:`clusterclean.publish.write_report`
    passes it); each is written into the staging folder and listed in the
    manifest like the tables.

    Files: ``dataset.parquet`` (the labels as scored), ``images.parquet``,
    ``components.parquet``, ``component_attributes.parquet``,
    ``label_issues.parquet``, ``pairs.parquet``, ``edges.parquet``,
    ``grouping_issues.parquet`` (when the trust stage ran), ``embeddings.parquet``
    (when there are embeddings), ``neighbors.parquet`` (the kNN lists, when given),
    ``duplicates.parquet`` (when duplicates were computed), ``run.json``, and
    the files in ``pages`` (``report.html`` when :func:`clusterclean.publish.write_report`
    writes the folder).

    ``run.json`` carries the run's id (also in every table's Parquet metadata)
    and a manifest of every other file with its size and BLAKE2b digest: the
    proof that the folder is clusterclean's to replace on a later run (see
    :func:`report_ownership_problem`) and what :func:`read_report` checks.
    An existing ``out`` is replaced only when it is such a report holding
    nothing else; ``inputs`` (the run's input paths) may not be, hold or lie
    inside ``out``.
    """
    import pyarrow as pa

    started = time.perf_counter()
    out = output_folder(out, func="write_report")
    staging = _prepare_folder(out, inputs)
    try:
        dataset_meta = {
            "attributes": list(report.dataset.attributes),
            "tasks": {k: list(v) for k, v in report.dataset.tasks.items()},
            "root": str(report.dataset.root) if report.dataset.root else None,
        }
        frames: dict[str, tuple[pd.DataFrame, dict | None]] = {
            "dataset": (_dataset_frame(report.dataset), dataset_meta)
        }
        for name in _REQUIRED_TABLES[1:]:
            frames[name] = (getattr(report, name), None)
        for name in _OPTIONAL_TABLES:
            if getattr(report, name) is not None:
                frames[name] = (getattr(report, name), None)
        if report.embeddings is not None:
            frames["embeddings"] = (
                _embeddings_frame(report.embeddings),
                {"backbone": report.embeddings.backbone},
            )
        if report.neighbors is not None:
            frames["neighbors"] = (
                _neighbors_frame(report.neighbors),
                {"n_neighbors": int(report.neighbors.indices.shape[1])},
            )
        tables: dict[str, pa.Table] = {name: _to_arrow(name, f) for name, (f, _) in frames.items()}
        run_id = _run_id(tables)
        manifest: dict[str, dict] = {}
        for name, table in tables.items():
            extra = dict(frames[name][1] or {}, run_id=run_id)
            path = _write_arrow(name, table, staging / f"{name}.parquet", extra)
            manifest[path.name] = _file_entry(path, table.num_rows, table.column_names)
        if report.refinement is not None:
            report.refinement.save(staging / REFINEMENT_FILE)
        if report.adaptation is not None:
            report.adaptation.save(staging / ADAPTATION_FILE)
        run_info = report.run_info.replace(
            schema_version=SCHEMA_VERSION,
            run_id=run_id,
            timings={**report.run_info.timings, "write": round(time.perf_counter() - started, 4)},
            manifest=None,
        )
        for name, write_page in (pages or {}).items():
            write_page(replace(report, folder=out, run_info=run_info), staging / name)
        for name in (REFINEMENT_FILE, ADAPTATION_FILE, *(pages or {})):
            if (staging / name).is_file():
                manifest[name] = _file_entry(staging / name)
        _write_run_json(staging, run_info.replace(manifest=manifest))
        _swap_into_place(staging, out)
    except OSError as error:  # e.g. a full disk: say where, the previous report is intact
        raise InvalidInputError(
            f"Could not write the report to {out} ({' '.join(str(error).split())}); free "
            "space or choose another --out. Any previous report there is unchanged."
        ) from error
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    logger.info("report written to %s", out)
    return out


def _write_run_json(folder: Path, run_info: RunRecord) -> None:
    text = json.dumps(run_info.as_dict(), indent=2, sort_keys=True, default=str)
    atomic_write(folder / RUN_FILE, lambda tmp: tmp.write_text(text + "\n"))


def refresh_manifest(folder: str | Path, names: tuple[str, ...]) -> None:
    """Record the new size and digest of report files clusterclean rewrote in place.

    ``clusterclean report`` rebuilds ``report.html`` inside a report folder; the
    manifest in ``run.json`` must follow, or the next run would not own the folder.
    """
    folder = Path(folder)
    run_info = _read_run_info(folder)
    manifest = dict(run_info.manifest)
    for name in names:
        manifest[name] = _file_entry(folder / name)
    _write_run_json(folder, run_info.replace(manifest=manifest))


def _swap_into_place(staging: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = _sibling(out, "old")
        os.replace(out, old)
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _read_run_info(folder: Path) -> RunRecord:
    """``run.json`` validated: JSON, an object, this schema version, a run id and manifest,
    each known field of its JSON type (:class:`~clusterclean.run_record.RunRecord`)."""
    path = folder / RUN_FILE
    if not path.is_file():
        raise ReportSchemaError(
            f"{folder} is not a clusterclean report (no {RUN_FILE}); run `clusterclean run "
            f"... --out {folder}` first."
        )
    try:
        run_info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ReportSchemaError(
            f"{path} is not readable JSON ({' '.join(str(error).split())}); the report is "
            "damaged: re-run `clusterclean run` to rebuild it."
        ) from error
    if not isinstance(run_info, dict):
        raise ReportSchemaError(
            f"{path} must hold a JSON object; it holds a {type(run_info).__name__}. The report "
            "is damaged: re-run `clusterclean run` to rebuild it."
        )
    version = run_info.get("schema_version")
    if version not in READABLE_VERSIONS:
        raise ReportSchemaError(
            f"{path} has report schema version {printable(repr(version))}; this clusterclean "
            f"({__version__}) reads versions {', '.join(READABLE_VERSIONS)}. Re-run "
            "`clusterclean run` with "
            "this version."
        )
    manifest = run_info.get("manifest")
    if not isinstance(run_info.get("run_id"), str) or not isinstance(manifest, dict):
        raise ReportSchemaError(
            f"{path} has no run id or file manifest: the report was written by an older "
            "clusterclean or edited. Re-run `clusterclean run` to rebuild it."
        )
    try:
        return RunRecord.from_dict(run_info, where=str(path))
    except ValueError as error:
        raise ReportSchemaError(
            f"{error}: the report is damaged or edited. Re-run `clusterclean run` to rebuild it."
        ) from None


def _read_report_table(folder: Path, name: str, run_info: RunRecord) -> tuple[pd.DataFrame, dict]:
    """One table of a report, checked against ``run.json``: run id, size, rows, columns."""
    path = folder / f"{name}.parquet"
    recorded = run_info.manifest.get(path.name)
    if not isinstance(recorded, dict):
        raise ReportSchemaError(
            f"{path} is not listed in {folder / RUN_FILE}: it does not belong to this report. "
            "Re-run `clusterclean run` to rebuild the report."
        )
    frame, meta = _read_parquet(path, name)
    renamed = _renamed(frame, meta)
    problem = None
    if meta.get("run_id") != run_info.run_id:
        problem = f"comes from another run (run id {meta.get('run_id')!r}, not {run_info.run_id!r})"
    elif len(frame) != recorded.get("rows"):
        problem = f"has {len(frame)} rows, not the {recorded.get('rows')} {RUN_FILE} recorded"
    else:
        missing = [c for c in _KEY_COLUMNS.get(name, ()) if c not in renamed.columns]
        missing += [c for c in recorded.get("columns") or () if c not in frame.columns]
        if missing:
            problem = f"lacks the column(s) {sorted(set(missing))}"
        elif path.stat().st_size != recorded.get("bytes"):
            problem = (
                f"has {path.stat().st_size} bytes, not the {recorded.get('bytes')} {RUN_FILE} "
                "recorded: it was changed after the run"
            )
    if problem:
        raise ReportSchemaError(
            f"{path} {problem}; the report is damaged or mixed from several runs. Re-run "
            "`clusterclean run` to rebuild it."
        )
    return renamed, meta


def read_report(folder: str | Path, *, load_embeddings: bool = True) -> Report:
    """Load a report folder written by :func:`write_report`.

    Every table is checked against ``run.json``: same run id, the recorded size,
    row count and columns, and the schema version; the first that differs is
    named in the error.

    A report of an older schema version (``READABLE_VERSIONS``) is upgraded in
    memory to this one: columns renamed (``RENAMED_IN_2``), the edges given their
    image ids, schema 1's ``is_bad_component_*`` columns turned into the
    ``component_flags`` table. The files are left as they are; ``run_info``
    keeps the version that wrote them (``schema_version``).

    Raises
    ------
    InvalidTypeError
        ``folder`` is not a path.
    ReportSchemaError
        When the folder is incomplete, damaged, mixed from several runs or was
        written with a schema version this clusterclean cannot read.
    """
    if not isinstance(folder, (str, os.PathLike)) or not str(folder):
        raise InvalidTypeError(
            f"The 'folder' parameter of read_report must be a report folder path (str or "
            f"os.PathLike). Got {folder!r} instead."
        )
    folder = Path(folder)
    run_info = _read_run_info(folder)
    frame, meta = _read_report_table(folder, "dataset", run_info)
    dataset = _dataset_from_frame(frame, meta)
    tables = {name: _read_report_table(folder, name, run_info)[0] for name in _REQUIRED_TABLES[1:]}
    # optional tables are read when present (a user may delete the large ones to save
    # space); a present one must belong to the run like the rest
    for name in _OPTIONAL_TABLES:
        if (folder / f"{name}.parquet").is_file():
            tables[name] = _read_report_table(folder, name, run_info)[0]
    embeddings = None
    if load_embeddings and (folder / "embeddings.parquet").is_file():
        emb, meta = _read_report_table(folder, "embeddings", run_info)
        vectors = (
            np.stack(emb["embedding"].to_numpy())
            if len(emb)
            else np.zeros((0, 0), dtype=np.float32)
        )
        embeddings = Embeddings(
            ids=emb["image_id"].to_numpy(dtype=object),
            vectors=np.ascontiguousarray(vectors, dtype=np.float32),
            backbone=meta.get("backbone", "user"),
        )
    neighbors = None
    if load_embeddings and (folder / "neighbors.parquet").is_file():
        frame, meta = _read_report_table(folder, "neighbors", run_info)
        neighbors = _neighbors_from_frame(frame, meta)
    if run_info.schema_version == "1":
        tables, run_info = _upgrade_from_v1(tables, dataset, run_info)
    return Report(
        dataset=dataset,
        embeddings=embeddings,
        neighbors=neighbors,
        run_info=run_info,
        folder=folder,
        **tables,
    )
