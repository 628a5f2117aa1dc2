"""Cleaning strategies: a finished report -> a new, cleaned Dataset + a change log.

Every strategy reads the components and labels of a :class:`~clusterclean.report.Report`
and returns a *new* :class:`~clusterclean._contracts.Dataset`; the report is
never modified. Notation (the same as :mod:`clusterclean.scoring`), for a
component C of n >= ``min_component_size`` images and an attribute a:

* k_a = images of C where a is known (not missing), c_a = those where a is 1;
* r_a = c_a / k_a, m_a = min(c_a, k_a - c_a) / k_a (the minority fraction);
* the *agreement* of an image's known cell is the share of C's labelled images
  holding the same value: r_a for a 1, 1 - r_a for a 0 (computed as
  c_a / k_a or (k_a - c_a) / k_a, one division, so that 1/5 equals t = 0.2
  exactly).

Missing cells are never votes: they are not counted in k_a or c_a.

For a one-of-K task T (``pose`` = ``pose=left`` / ``pose=right`` / ...), an
image *votes* when all of its one-hot cells are known and exactly one is 1 (its
value); n_T = voting images of C, and v_T(x) = voters holding value x.

Strategies (t = ``threshold``):

``component``
    Drop every image of C when ``metric(C) > cut`` (strictly), where the metric
    is the report's ``variance``, ``geometric_variance``, ``cubic_variance`` or
    ``label_count_std`` and cut = t (absolute, >= 0) or the NN-th percentile
    of the metric over the components of >= ``min_component_size`` images
    (t = ``"pNN"``). Default t = ``"p80"``.
``label``
    Binary a: when m_a >= t (i.e. t <= r_a <= 1 - t, both ends included), every
    known cell of a in C becomes missing. Task T: when
    (n_T - max_x v_T(x)) / n_T >= t, every known cell of T in C becomes
    missing. t in (0, 0.5], default 0.2. Missing cells stay missing.
``intersection``
    Keep the labels all of C's labelled images share. Binary a: when
    0 < c_a < k_a (positive in some but not all), its 1 cells become 0: the
    label set of every image becomes the intersection of the label sets.
    Task T: when the voters hold more than one value, every known cell of T in
    C becomes missing (a task always has one value, so "none" cannot stand
    for "not shared"). Missing cells stay missing. No threshold.
``image``
    Drop an image of C that holds a rare label: one of its known cells has
    agreement < t (strictly), i.e. it is 1 where r_a < t or 0 where
    r_a > 1 - t. A missing cell never drops an image. t in (0, 0.5], default
    0.2. With the same t, ``image`` and ``label`` split the disagreements:
    m_a < t is a rare minority (``image`` drops its images), m_a >= t is
    ambiguous (``label`` makes it missing).
``majority``
    Binary a: the majority is 1 when 2 c_a > k_a, 0 when 2 c_a < k_a; known
    cells that differ are set to it. Task T: the value with the most votes,
    when it is unique, replaces the value of every voter that differs (two
    cells change: old value 1 -> 0, new value 0 -> 1). A tie (2 c_a = k_a, or
    several values with the top count) changes nothing and is reported: one
    row per known tied cell in ``changes`` with ``old == new``. Missing cells
    and non-voting task rows stay as they are. No threshold. Idempotent.

Common rules: components of fewer than ``min_component_size`` images are left
untouched; with ``splits``, only images of those splits are dropped or changed,
but every image of the component still votes; attributes excluded from scoring
by the report (``run.json`` ``excluded_attributes``) are never
changed and never drop an image.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._contracts import Dataset
from ._validation import check_choice, check_int, check_type
from .dataset import SPLITS
from .errors import InvalidInputError, InvalidTypeError
from .report import Report, write_table
from .scoring import METRICS, component_label_counts, parse_threshold

__all__ = [
    "STRATEGIES",
    "CleanResult",
    "CleaningView",
    "Edits",
    "clean_labels",
    "cleaned_frame",
    "strategy_options",
    "register_strategy",
    "write_cleaned",
]

logger = logging.getLogger(__name__)

CHANGES_COLUMNS = (
    "image_id",
    "component_id",
    "split",
    "attribute",
    "old",
    "new",
    "strategy",
    "reason",
)
DROPPED_COLUMNS = ("image_id", "component_id", "split", "strategy", "reason")
_NO_SPLIT = "(no split)"
_CLEANED_SUFFIXES = {".parquet": None, ".pq": None, ".csv": ",", ".tsv": "\t"}
_LOG_FILES = ("changes.parquet", "dropped.parquet")


# --------------------------------------------------------------------------- #
# What a strategy sees and returns
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class CleaningView:
    """The read-only input of a strategy function.

    Attributes
    ----------
    labels : ndarray of shape (n_images, n_attributes), dtype float32
        The report's labels (1 / 0 / NaN); never written to.
    attributes : tuple of str
        Attribute names, one per column.
    component_ids : ndarray of shape (n_images,), dtype int64
        Component of every image.
    n_known, n_positive : ndarray of shape (n_components, n_attributes), dtype int64
        k_a and c_a per component, counted over *all* images (every split).
    is_scored_component : ndarray of shape (n_components,), dtype bool
        Component has >= ``min_component_size`` images.
    is_editable_row : ndarray of shape (n_images,), dtype bool
        Image is in a scored component and in one of the selected splits.
    binary_columns : ndarray of shape (n_attributes,), dtype bool
        Selected attributes that belong to no task.
    task_columns : dict of str to ndarray of int
        Selected one-of-K tasks: task name -> column indices of its values.
    threshold : float or None
        The resolved threshold (the component cut for ``component``).
    metric : str
        Component metric (``component`` strategy).
    metric_values : ndarray of shape (n_components,), dtype float64
        The report's values of ``metric``.
    threshold_text : str
        The threshold as the user gave it, for reasons.
    """

    labels: np.ndarray
    attributes: tuple[str, ...]
    component_ids: np.ndarray
    n_known: np.ndarray
    n_positive: np.ndarray
    is_scored_component: np.ndarray
    is_editable_row: np.ndarray
    binary_columns: np.ndarray
    task_columns: dict[str, np.ndarray]
    threshold: float | None
    metric: str
    metric_values: np.ndarray
    threshold_text: str

    @property
    def n_components(self) -> int:
        return len(self.is_scored_component)

    def selected_columns(self) -> np.ndarray:
        """Binary and task columns, ndarray of shape (n_attributes,), dtype bool."""
        selected = self.binary_columns.copy()
        for cols in self.task_columns.values():
            selected[cols] = True
        return selected


@dataclass
class Edits:
    """What a strategy decides; :func:`clean_labels` applies it to a copy.

    ``drop_rows`` / ``drop_reasons``: images to remove. ``cell_*``: cells to set
    (``cell_new`` is 1, 0 or NaN). ``tie_*``: cells left alone on a majority
    tie, reported with ``old == new``.
    """

    drop_rows: list[np.ndarray] = field(default_factory=list)
    drop_reasons: list[np.ndarray] = field(default_factory=list)
    cell_rows: list[np.ndarray] = field(default_factory=list)
    cell_cols: list[np.ndarray] = field(default_factory=list)
    cell_new: list[np.ndarray] = field(default_factory=list)
    cell_reasons: list[np.ndarray] = field(default_factory=list)
    tie_rows: list[np.ndarray] = field(default_factory=list)
    tie_cols: list[np.ndarray] = field(default_factory=list)
    tie_reasons: list[np.ndarray] = field(default_factory=list)

    def set_cells(self, rows, cols, new, reasons) -> None:
        self.cell_rows.append(np.asarray(rows, dtype=np.int64))
        self.cell_cols.append(np.asarray(cols, dtype=np.int64))
        self.cell_new.append(np.broadcast_to(np.float32(new), np.shape(rows)).astype(np.float32))
        self.cell_reasons.append(np.asarray(reasons, dtype=object))

    def tie_cells(self, rows, cols, reasons) -> None:
        self.tie_rows.append(np.asarray(rows, dtype=np.int64))
        self.tie_cols.append(np.asarray(cols, dtype=np.int64))
        self.tie_reasons.append(np.asarray(reasons, dtype=object))

    def drop(self, rows, reasons) -> None:
        self.drop_rows.append(np.asarray(rows, dtype=np.int64))
        self.drop_reasons.append(np.asarray(reasons, dtype=object))


def _concat(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)


# --------------------------------------------------------------------------- #
# Registry
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class _Spec:
    threshold: str  # "none", "ratio" (0, 0.5] or "component" (absolute >= 0 or pNN)
    default_threshold: str | float | None
    uses_attributes: bool


#: Strategy name -> function(CleaningView) -> Edits.
STRATEGIES: dict[str, Callable[[CleaningView], Edits]] = {}
_SPECS: dict[str, _Spec] = {}


def strategy_options(strategy: str) -> frozenset[str]:
    """The options of :func:`clean_labels` that ``strategy`` uses, besides the common ones.

    A subset of ``{"threshold", "metric", "attributes"}`` (``attributes`` stands
    for ``include_attributes`` / ``exclude_attributes``); ``min_component_size``
    and ``splits`` apply to every strategy.
    """
    spec = _SPECS[check_choice(strategy, "strategy", "clean_labels", STRATEGIES)]
    options = set()
    if spec.threshold != "none":
        options.add("threshold")
    if spec.threshold == "component":
        options.add("metric")
    if spec.uses_attributes:
        options.add("attributes")
    return frozenset(options)


def register_strategy(name: str, *, threshold: str, default, uses_attributes: bool = True):
    """Decorator: add a cleaning strategy ``func(view: CleaningView) -> Edits`` by name.

    ``threshold``: ``"none"``, ``"ratio"`` (a number in (0, 0.5]) or ``"component"``
    (an absolute cut or ``pNN`` on a component metric); ``default``: its default
    threshold; ``uses_attributes``: whether ``include/exclude_attributes`` apply.
    ``clean_labels(strategy=name)``, ``clusterclean clean --strategy`` and the
    cleaned-table names read :data:`STRATEGIES`, so nothing else changes.
    """
    if threshold not in ("none", "ratio", "component"):
        raise ValueError(f"threshold must be 'none', 'ratio' or 'component', not {threshold!r}")

    def decorate(func):
        STRATEGIES[name] = func
        _SPECS[name] = _Spec(threshold, default, uses_attributes)
        return func

    return decorate


def _cells_where(view: CleaningView, flagged: np.ndarray, cells: np.ndarray):
    """Rows and columns of editable cells in ``cells`` whose (component, column) is flagged.

    ``flagged`` has shape (n_components, n_attributes); ``cells`` (n_images, n_attributes).
    """
    mask = flagged[view.component_ids] & cells & view.is_editable_row[:, None]
    return np.nonzero(mask)


def _reasons(view: CleaningView, rows: np.ndarray, cols: np.ndarray, make) -> np.ndarray:
    """One reason per cell from ``make(component, column)``, built once per pair."""
    comps = view.component_ids[rows]
    cache: dict[tuple[int, int], str] = {}
    out = np.empty(len(rows), dtype=object)
    for i, key in enumerate(zip(comps.tolist(), cols.tolist(), strict=True)):
        if key not in cache:
            cache[key] = make(*key)
        out[i] = cache[key]
    return out


def _set_cells(edits: Edits, view: CleaningView, rows, cols, new, make) -> None:
    """``edits.set_cells`` with one reason per cell from ``make(component, column)``."""
    edits.set_cells(rows, cols, new, _reasons(view, rows, cols, make))


def _tie_cells(edits: Edits, view: CleaningView, rows, cols, make) -> None:
    """``edits.tie_cells`` with one reason per cell from ``make(component, column)``."""
    edits.tie_cells(rows, cols, _reasons(view, rows, cols, make))


def _task_votes(view: CleaningView, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The value each image votes for in a task, and the votes per component.

    Returns
    -------
    value : ndarray of shape (n_images,), dtype int64
        Index into ``cols`` of the image's value; -1 when it does not vote.
    counts : ndarray of shape (n_components, len(cols)), dtype int64
        v_T(x) per component.
    """
    block = view.labels[:, cols]
    voting = ~np.isnan(block).any(axis=1) & ((block == 1).sum(axis=1) == 1)
    value = np.where(voting, np.argmax(block == 1, axis=1), -1)
    counts = np.zeros((view.n_components, len(cols)), dtype=np.int64)
    np.add.at(counts, (view.component_ids[voting], value[voting]), 1)
    return value, counts


def _task_cells(view: CleaningView, cols: np.ndarray, flagged_components: np.ndarray):
    """Known editable cells of a task's columns in the flagged components."""
    flagged = np.zeros((view.n_components, len(view.attributes)), dtype=bool)
    flagged[np.ix_(flagged_components, cols)] = True
    return _cells_where(view, flagged, ~np.isnan(view.labels))


@register_strategy("component", threshold="component", default="p80", uses_attributes=False)
def prune_components(view: CleaningView) -> Edits:
    """Drop every image of a component whose metric is strictly above the cut."""
    bad = view.is_scored_component & (view.metric_values > view.threshold)
    rows = np.nonzero(bad[view.component_ids] & view.is_editable_row)[0]
    comps = view.component_ids[rows]
    text = {
        int(c): f"{view.metric} {view.metric_values[c]:.4g} > {view.threshold:.4g} "
        f"(threshold {view.threshold_text})"
        for c in np.unique(comps)
    }
    edits = Edits()
    edits.drop(rows, [text[int(c)] for c in comps])
    return edits


@register_strategy("label", threshold="ratio", default=0.2)
def prune_labels(view: CleaningView) -> Edits:
    """Make ambiguous attributes (minority >= t) missing for the whole component."""
    t = view.threshold
    k, c = view.n_known, view.n_positive
    edits = Edits()
    with np.errstate(invalid="ignore", divide="ignore"):
        minority = np.minimum(c, k - c) / k
    flagged = (k > 0) & (minority >= t) & view.binary_columns[None, :]
    flagged &= view.is_scored_component[:, None]
    rows, cols = _cells_where(view, flagged, ~np.isnan(view.labels))
    _set_cells(
        edits,
        view,
        rows,
        cols,
        np.nan,
        lambda comp, col: (
            f"ambiguous: {c[comp, col]} of {k[comp, col]} labelled images "
            f"positive (minority {minority[comp, col]:.3g} >= t={t:g})"
        ),
    )
    for task, task_cols in view.task_columns.items():
        _, counts = _task_votes(view, task_cols)
        n_voters = counts.sum(axis=1)
        top = counts.max(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            task_minority = (n_voters - top) / n_voters
        ambiguous = view.is_scored_component & (n_voters > 0) & (task_minority >= t)
        rows, cols = _task_cells(view, task_cols, ambiguous)
        _set_cells(
            edits,
            view,
            rows,
            cols,
            np.nan,
            lambda comp, col, task=task, counts=counts, m=task_minority: (
                f"ambiguous task {task!r}: the most common value is held by "
                f"{counts[comp].max()} of {counts[comp].sum()} labelled images "
                f"(minority {m[comp]:.3g} >= t={t:g})"
            ),
        )
    return edits


@register_strategy("intersection", threshold="none", default=None)
def intersect_labels(view: CleaningView) -> Edits:
    """Keep only the labels every labelled image of the component shares."""
    k, c = view.n_known, view.n_positive
    edits = Edits()
    flagged = (c > 0) & (c < k) & view.binary_columns[None, :]
    flagged &= view.is_scored_component[:, None]
    rows, cols = _cells_where(view, flagged, view.labels == 1)
    _set_cells(
        edits,
        view,
        rows,
        cols,
        0.0,
        lambda comp, col: f"not shared: {c[comp, col]} of {k[comp, col]} labelled images positive",
    )
    for task, task_cols in view.task_columns.items():
        _, counts = _task_votes(view, task_cols)
        n_values = (counts > 0).sum(axis=1)
        not_shared = view.is_scored_component & (n_values > 1)
        rows, cols = _task_cells(view, task_cols, not_shared)
        _set_cells(
            edits,
            view,
            rows,
            cols,
            np.nan,
            lambda comp, col, task=task, n_values=n_values, counts=counts: (
                f"task {task!r} not shared: {n_values[comp]} different values among "
                f"{counts[comp].sum()} labelled images"
            ),
        )
    return edits


@register_strategy("image", threshold="ratio", default=0.2)
def prune_images(view: CleaningView) -> Edits:
    """Drop images holding a label whose agreement in the component is below t."""
    t = view.threshold
    k, c = view.n_known, view.n_positive
    comp = view.component_ids
    y = view.labels
    with np.errstate(invalid="ignore", divide="ignore"):
        same = np.where(y == 1, c[comp], k[comp] - c[comp])
        agreement = same / k[comp]
    rare = ~np.isnan(y) & (agreement < t) & view.selected_columns()[None, :]
    rare &= view.is_editable_row[:, None]
    rows = np.nonzero(rare.any(axis=1))[0]
    names = view.attributes
    reasons = []
    for row in rows.tolist():
        cells = [
            f"{names[col]}={int(y[row, col])} ({same[row, col]} of {k[comp[row], col]} agree)"
            for col in np.nonzero(rare[row])[0].tolist()
        ]
        reasons.append(f"rare labels (agreement < t={t:g}): " + ", ".join(cells))
    edits = Edits()
    edits.drop(rows, reasons)
    return edits


@register_strategy("majority", threshold="none", default=None)
def relabel_majority(view: CleaningView) -> Edits:
    """Set every known cell to its component's majority; leave and report ties."""
    k, c = view.n_known, view.n_positive
    edits = Edits()
    base = view.binary_columns[None, :] & view.is_scored_component[:, None] & (k > 0)
    known = ~np.isnan(view.labels)
    for value, flagged in ((1.0, base & (2 * c > k)), (0.0, base & (2 * c < k))):
        rows, cols = _cells_where(view, flagged, known & (view.labels != value))
        _set_cells(
            edits,
            view,
            rows,
            cols,
            value,
            lambda comp, col: (
                f"majority: {c[comp, col]} of {k[comp, col]} labelled images positive"
            ),
        )
    rows, cols = _cells_where(view, base & (2 * c == k), known)
    _tie_cells(
        edits,
        view,
        rows,
        cols,
        lambda comp, col: (
            f"tie: {c[comp, col]} of {k[comp, col]} labelled images positive; left unchanged"
        ),
    )
    for task, task_cols in view.task_columns.items():
        _majority_task(view, edits, task, task_cols)
    return edits


def _majority_task(view: CleaningView, edits: Edits, task: str, cols: np.ndarray) -> None:
    value, counts = _task_votes(view, cols)
    top = counts.max(axis=1)
    is_top = (counts == top[:, None]) & (top[:, None] > 0)
    n_top = is_top.sum(axis=1)
    winner = np.argmax(is_top, axis=1)
    comp = view.component_ids
    eligible = view.is_editable_row & view.is_scored_component[comp] & (value >= 0)
    relabel = np.nonzero(eligible & (n_top[comp] == 1) & (value != winner[comp]))[0]
    names = view.attributes
    reasons = [
        f"majority: {names[cols[winner[comp[r]]]]} held by {top[comp[r]]} of "
        f"{counts[comp[r]].sum()} labelled images (task {task!r})"
        for r in relabel.tolist()
    ]
    edits.set_cells(relabel, cols[value[relabel]], 0.0, reasons)  # the old value: 1 -> 0
    edits.set_cells(relabel, cols[winner[comp[relabel]]], 1.0, reasons)  # the winner: 0 -> 1
    tied_rows = np.nonzero(eligible & (n_top[comp] > 1))[0]
    tie_rows, tie_idx = np.nonzero(is_top[comp[tied_rows]])
    tie_rows = tied_rows[tie_rows]
    reasons = [
        f"tie: values {', '.join(names[j] for j in cols[is_top[comp[r]]])} each held by "
        f"{top[comp[r]]} of {counts[comp[r]].sum()} labelled images (task {task!r}); "
        "left unchanged"
        for r in tie_rows.tolist()
    ]
    edits.tie_cells(tie_rows, cols[tie_idx], reasons)


# --------------------------------------------------------------------------- #
# Result
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class CleanResult:
    """The outcome of one strategy.

    Attributes
    ----------
    dataset : Dataset
        A new dataset: the kept images (input order) with the cleaned labels.
    changes : pandas.DataFrame
        One row per changed cell (and, for ``majority``, per tied cell with
        ``old == new``): ``image_id``, ``component_id``, ``split``,
        ``attribute``, ``old``, ``new`` (float32 1 / 0 / NaN = missing),
        ``strategy``, ``reason``.
    dropped : pandas.DataFrame
        One row per removed image: ``image_id``, ``component_id``, ``split``,
        ``strategy``, ``reason``.
    strategy : str
        The strategy name.
    options : dict
        The resolved options (threshold, metric, min_component_size, splits,
        attributes cleaned).
    source : Dataset
        The input dataset (not modified), for the summary.
    """

    dataset: Dataset
    changes: pd.DataFrame
    dropped: pd.DataFrame
    strategy: str
    options: dict[str, Any]
    source: Dataset = field(repr=False)

    def summary(self) -> dict[str, Any]:
        """Counts of what the strategy did, overall, per split and per attribute.

        Returns
        -------
        dict
            ``strategy``, ``threshold`` (as applied, e.g. ``"p80 = 0.0312"``;
            None when the strategy takes none), ``images`` (input), ``kept``, ``dropped``,
            ``changed_cells`` (rows with old != new), ``ties`` (rows with
            old == new), ``splits``: split -> {``images``, ``dropped``,
            ``changed_cells``, ``ties``} (``"(no split)"`` for images without
            one), ``attributes``: attribute -> {``changed_cells``, ``ties``}
            for every attribute with any row.
        """
        is_tie = _is_tie(self.changes)
        split_of = _split_labels(self.source.table)
        splits: dict[str, dict[str, int]] = {}
        for name, n in pd.Series(split_of).value_counts(sort=False).items():
            splits[str(name)] = {"images": int(n), "dropped": 0, "changed_cells": 0, "ties": 0}
        for name, n in _split_labels(self.dropped).value_counts().items():
            splits[str(name)]["dropped"] = int(n)
        for key, mask in (("changed_cells", ~is_tie), ("ties", is_tie)):
            for name, n in _split_labels(self.changes[mask]).value_counts().items():
                splits[str(name)][key] = int(n)
        attributes: dict[str, dict[str, int]] = {}
        for key, mask in (("changed_cells", ~is_tie), ("ties", is_tie)):
            for name, n in self.changes.loc[mask, "attribute"].value_counts(sort=False).items():
                attributes.setdefault(str(name), {"changed_cells": 0, "ties": 0})[key] = int(n)
        order = {a: i for i, a in enumerate(self.source.attributes)}
        return {
            "strategy": self.strategy,
            "threshold": self.options["threshold"],
            "images": self.source.n_images,
            "kept": self.dataset.n_images,
            "dropped": len(self.dropped),
            "changed_cells": int((~is_tie).sum()),
            "ties": int(is_tie.sum()),
            "splits": splits,
            "attributes": dict(sorted(attributes.items(), key=lambda kv: order[kv[0]])),
        }


def _is_tie(changes: pd.DataFrame) -> np.ndarray:
    old = changes["old"].to_numpy(dtype=np.float32)
    new = changes["new"].to_numpy(dtype=np.float32)
    return old == new  # NaN == NaN is False: a cell made missing is a change


def _split_labels(frame: pd.DataFrame) -> pd.Series:
    if "split" not in frame.columns:
        return pd.Series([_NO_SPLIT] * len(frame), dtype=object)
    return frame["split"].astype(object).where(frame["split"].notna(), _NO_SPLIT)


# --------------------------------------------------------------------------- #
# clean_labels
# --------------------------------------------------------------------------- #
def _resolve_threshold(strategy: str, threshold, pool: np.ndarray) -> tuple[float | None, str]:
    """The cut a strategy compares with, and its text for reasons and options."""
    spec = _SPECS[strategy]
    func = "clean_labels"
    if spec.threshold == "none":
        if threshold is not None:
            raise InvalidInputError(
                f"The {strategy!r} strategy takes no threshold; got threshold={threshold!r}. "
                "Leave it out (it applies to the component, label and image strategies)."
            )
        return None, ""
    raw = spec.default_threshold if threshold is None else threshold
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
        raise InvalidTypeError(
            f"The 'threshold' parameter of {func} must be a float or a string like 'p80'. "
            f"Got {raw!r} instead."
        )
    kind, value = parse_threshold(raw)
    if spec.threshold == "ratio":
        if kind != "absolute" or not 0 < value <= 0.5:
            raise InvalidInputError(
                f"The 'threshold' parameter of {func} must be a float in (0, 0.5] for the "
                f"{strategy!r} strategy. Got {raw!r} instead."
            )
        return value, f"{value:g}"
    if kind == "absolute":
        if value < 0:
            raise InvalidInputError(
                f"The 'threshold' parameter of {func} must be a float >= 0 or a percentile "
                f"like 'p80' for the 'component' strategy. Got {raw!r} instead."
            )
        return value, f"{value:g}"
    cut = float(np.percentile(pool, value)) if len(pool) else np.inf
    return cut, f"p{value:g} = {cut:.4g}"


def _attribute_selection(
    dataset: Dataset,
    include: Sequence[str] | None,
    exclude: Sequence[str] | None,
    report_excluded: Sequence[str],
    strategy: str,
) -> np.ndarray:
    """Selected columns, ndarray of shape (n_attributes,), dtype bool."""
    func = "clean_labels"
    if include is not None and exclude is not None:
        raise InvalidInputError(
            f"Give either 'include_attributes' or 'exclude_attributes' to {func}, not both."
        )
    if not _SPECS[strategy].uses_attributes and (include is not None or exclude is not None):
        raise InvalidInputError(
            "The 'component' strategy drops whole components by a metric computed over every "
            "scored attribute, so it takes no attribute selection; leave out "
            "include_attributes / exclude_attributes (--attributes / --exclude-attributes)."
        )
    column = {a: j for j, a in enumerate(dataset.attributes)}
    task_of = {a: t for t, attrs in dataset.tasks.items() for a in attrs}

    def columns(names: Sequence[str], param: str) -> set[int]:
        if isinstance(names, str):
            raise InvalidTypeError(
                f"The {param!r} parameter of {func} must be a list of names. Got {names!r} instead."
            )
        out: set[int] = set()
        for name in names:
            if name in dataset.tasks:
                out.update(column[a] for a in dataset.tasks[name])
            elif name in column:
                out.add(column[name])
            else:
                known = list(dataset.tasks) + [a for a in dataset.attributes if a not in task_of]
                raise InvalidInputError(
                    f"The {param!r} parameter of {func} names {name!r}, which is neither an "
                    f"attribute nor a task of the report; valid names include "
                    f"{', '.join(map(repr, known[:10]))}"
                    + (f" ({len(known) - 10} more)." if len(known) > 10 else ".")
                )
        for task, attrs in dataset.tasks.items():
            chosen = [column[a] in out for a in attrs]
            if any(chosen) and not all(chosen):
                raise InvalidInputError(
                    f"The {param!r} parameter of {func} names only some values of the "
                    f"one-of-K task {task!r}; name the task itself ({task!r}) so that it "
                    "stays one-of-K."
                )
        return out

    selected = np.ones(dataset.n_attributes, dtype=bool)
    if include is not None:
        selected[:] = False
        selected[sorted(columns(include, "include_attributes"))] = True
        forbidden = sorted(a for a in include if a in set(report_excluded))
        if forbidden:
            raise InvalidInputError(
                f"The 'include_attributes' parameter of {func} names {forbidden}, which the "
                "report excluded from scoring (run --exclude-attributes); those attributes are "
                "never cleaned. Re-run the report without excluding them to clean them."
            )
    if exclude is not None:
        selected[sorted(columns(exclude, "exclude_attributes"))] = False
    for name in report_excluded:
        if name in column:
            selected[column[name]] = False
        for attr in dataset.tasks.get(name, ()):
            selected[column[attr]] = False
    return selected


def _component_ids(report: Report) -> np.ndarray:
    ids = report.dataset.ids.astype(str)
    by_id = pd.Series(
        report.images["component_id"].to_numpy(dtype=np.int64),
        index=report.images["image_id"].astype(str).to_numpy(),
    )
    missing = ~pd.Index(ids).isin(by_id.index)
    if missing.any():
        raise InvalidInputError(
            f"The report's images table has no component for image {ids[missing][0]!r}; the "
            "report is inconsistent. Re-run `clusterclean run` to rebuild it."
        )
    return by_id.reindex(ids).to_numpy(dtype=np.int64)


def _editable_rows(dataset: Dataset, splits: Sequence[str] | None) -> np.ndarray:
    if splits is None:
        return np.ones(dataset.n_images, dtype=bool)
    if isinstance(splits, str) or not all(isinstance(s, str) for s in splits) or not splits:
        raise InvalidTypeError(
            "The 'splits' parameter of clean_labels must be a non-empty list of split names "
            f"such as ['train'] or ['train', 'val']. Got {splits!r} instead."
        )
    bad = [s for s in splits if s not in SPLITS]
    if bad:
        raise InvalidInputError(
            f"The 'splits' parameter of clean_labels must name splits among "
            f"{', '.join(SPLITS)}. Got {bad[0]!r} instead."
        )
    if "split" not in dataset.table.columns:
        raise InvalidInputError(
            "The report's dataset has no split column, so splits=... cannot choose images; "
            "add a 'split' column to the labels table and re-run `clusterclean run`, or leave "
            "splits out to clean every image."
        )
    return dataset.table["split"].isin(list(splits)).to_numpy(dtype=bool)


def clean_labels(
    report: Report,
    *,
    strategy: str,
    threshold: float | str | None = None,
    metric: str = "variance",
    min_component_size: int = 2,
    splits: Sequence[str] | None = None,
    include_attributes: Sequence[str] | None = None,
    exclude_attributes: Sequence[str] | None = None,
) -> CleanResult:
    """Clean the labels of a report with one strategy; the report is not modified.

    Parameters
    ----------
    report : Report
        A finished report (:func:`clusterclean.pipeline.run` or
        :func:`clusterclean.report.read_report`).
    strategy : {"component", "label", "intersection", "image", "majority"}
        The rule; see the module docstring for each exact formula.
    threshold : float or str, optional
        ``component``: an absolute cut >= 0 or a percentile ``"pNN"`` over the
        components of >= ``min_component_size`` images (default ``"p80"``);
        a component is dropped when its metric is strictly above the cut.
        ``label`` / ``image``: t in (0, 0.5] (default 0.2).
        ``intersection`` / ``majority`` take none (giving one is an error).
    metric : str, default="variance"
        ``component`` only: ``variance``, ``geometric_variance``,
        ``cubic_variance`` or ``label_count_std``, as scored by the report.
    min_component_size : int, default=2
        Components with fewer images are left untouched (singletons have
        nobody to disagree with).
    splits : sequence of str, optional
        Only images of these splits are dropped or changed (``["train"]``, or
        ``["train", "val"]``); every image still votes in its component.
    include_attributes, exclude_attributes : sequence of str, optional
        Attribute or task names to clean (or to leave alone); not for
        ``component``. Attributes the report excluded from scoring are never
        changed.

    Returns
    -------
    CleanResult
        The new dataset, the change log and the dropped images.
    """
    func = "clean_labels"
    started = time.perf_counter()
    check_type(report, Report, "report", func, "a Report (from run() or read_report())")
    strategy = check_choice(strategy, "strategy", func, STRATEGIES)
    metric = check_choice(metric, "metric", func, METRICS)
    min_component_size = check_int(min_component_size, "min_component_size", func, min_value=1)
    dataset = report.dataset
    # the user's exclusions plus the per-image attributes the run detected
    report_excluded = tuple(
        report.run_info.excluded_attributes
        or report.run_info.parameters.get("exclude_attributes", ())
    )
    selected = _attribute_selection(
        dataset, include_attributes, exclude_attributes, report_excluded, strategy
    )
    component_ids = _component_ids(report)
    sizes = np.bincount(component_ids) if len(component_ids) else np.zeros(0, dtype=np.int64)
    scored = sizes >= min_component_size
    metric_values = (
        report.components.set_index("component_id")[metric]
        .reindex(np.arange(len(sizes)))
        .to_numpy(dtype=np.float64)
    )
    cut, threshold_text = _resolve_threshold(strategy, threshold, metric_values[scored])
    n_known, n_positive = component_label_counts(component_ids, dataset.labels)
    column = {a: j for j, a in enumerate(dataset.attributes)}
    task_columns = {
        task: np.array([column[a] for a in attrs], dtype=np.int64)
        for task, attrs in dataset.tasks.items()
        if all(selected[column[a]] for a in attrs)
    }
    binary = selected.copy()
    for cols in task_columns.values():
        binary[cols] = False
    for attrs in dataset.tasks.values():
        binary[[column[a] for a in attrs]] = False
    view = CleaningView(
        labels=dataset.labels,
        attributes=dataset.attributes,
        component_ids=component_ids,
        n_known=n_known,
        n_positive=n_positive,
        is_scored_component=scored,
        is_editable_row=_editable_rows(dataset, splits) & scored[component_ids],
        binary_columns=binary,
        task_columns=task_columns,
        threshold=cut,
        metric=metric,
        metric_values=metric_values,
        threshold_text=threshold_text,
    )
    edits = STRATEGIES[strategy](view)
    dropped, changes, new_dataset = _apply(dataset, component_ids, edits, strategy)
    options = {
        "threshold": threshold_text or None,
        "metric": metric if strategy == "component" else None,
        "min_component_size": min_component_size,
        "splits": None if splits is None else list(splits),
        "attributes": [a for a, s in zip(dataset.attributes, selected, strict=True) if s],
    }
    logger.info(
        "clean %s: %d of %d images dropped, %d cells changed, %.2f s",
        strategy,
        len(dropped),
        dataset.n_images,
        int((~_is_tie(changes)).sum()),
        time.perf_counter() - started,
    )
    return CleanResult(
        dataset=new_dataset,
        changes=changes,
        dropped=dropped,
        strategy=strategy,
        options=options,
        source=dataset,
    )


def _apply(dataset: Dataset, component_ids: np.ndarray, edits: Edits, strategy: str):
    """Apply ``edits`` to a copy: (dropped, changes, new dataset)."""
    ids = dataset.ids.astype(str)
    split = (
        dataset.table["split"].to_numpy(dtype=object)
        if "split" in dataset.table.columns
        else np.full(dataset.n_images, None, dtype=object)
    )
    drop_rows = _concat(edits.drop_rows, np.int64)
    order = np.argsort(drop_rows, kind="stable")
    drop_rows = drop_rows[order]
    dropped = pd.DataFrame(
        {
            "image_id": ids[drop_rows],
            "component_id": component_ids[drop_rows].astype(np.int32),
            "split": split[drop_rows],
            "strategy": strategy,
            "reason": _concat(edits.drop_reasons, object)[order],
        },
        columns=list(DROPPED_COLUMNS),
    )
    labels = dataset.labels.copy()
    rows = np.concatenate([_concat(edits.cell_rows, np.int64), _concat(edits.tie_rows, np.int64)])
    cols = np.concatenate([_concat(edits.cell_cols, np.int64), _concat(edits.tie_cols, np.int64)])
    old = dataset.labels[rows, cols]
    n_set = sum(len(r) for r in edits.cell_rows)
    new = old.copy()
    new[:n_set] = _concat(edits.cell_new, np.float32)
    reasons = np.concatenate(
        [_concat(edits.cell_reasons, object), _concat(edits.tie_reasons, object)]
    )
    labels[rows[:n_set], cols[:n_set]] = new[:n_set]
    order = np.lexsort((cols, rows))
    rows, cols = rows[order], cols[order]
    changes = pd.DataFrame(
        {
            "image_id": ids[rows],
            "component_id": component_ids[rows].astype(np.int32),
            "split": split[rows],
            "attribute": np.asarray(dataset.attributes, dtype=object)[cols],
            "old": old[order].astype(np.float32),
            "new": new[order].astype(np.float32),
            "strategy": strategy,
            "reason": reasons[order],
        },
        columns=list(CHANGES_COLUMNS),
    )
    keep = np.ones(dataset.n_images, dtype=bool)
    keep[drop_rows] = False
    new_dataset = Dataset(
        table=dataset.table.loc[keep].reset_index(drop=True),
        labels=labels[keep],
        attributes=dataset.attributes,
        tasks=dict(dataset.tasks),
        root=dataset.root,
    )
    return dropped, changes, new_dataset


# --------------------------------------------------------------------------- #
# Export
# --------------------------------------------------------------------------- #
def cleaned_frame(dataset: Dataset) -> pd.DataFrame:
    """The labels in the wide form of an input table.

    Columns: ``image_id``, ``split`` / ``group`` when the dataset has them,
    then one nullable Int8 column (1 / 0 / missing) per binary attribute and
    one string column per one-of-K task holding the value name (``left`` for
    ``pose=left``; missing unless exactly one of its cells is 1 and the others
    0), in attribute order.
    """
    frame = pd.DataFrame({"image_id": dataset.ids.astype(object)})
    for meta in ("split", "group"):
        if meta in dataset.table.columns:
            frame[meta] = dataset.table[meta].to_numpy(dtype=object)
    task_of = {a: t for t, attrs in dataset.tasks.items() for a in attrs}
    column = {a: j for j, a in enumerate(dataset.attributes)}
    columns: dict[str, pd.Series | np.ndarray] = {}
    for j, attribute in enumerate(dataset.attributes):
        task = task_of.get(attribute)
        if task is None:
            values = dataset.labels[:, j]
            columns[attribute] = pd.Series(values, dtype=np.float64).astype("Int8").array
        elif task not in columns:
            attrs = dataset.tasks[task]
            block = dataset.labels[:, [column[a] for a in attrs]]
            valid = ~np.isnan(block).any(axis=1) & ((block == 1).sum(axis=1) == 1)
            names = np.array([a.removeprefix(f"{task}=") for a in attrs], dtype=object)
            values = np.where(valid, names[np.argmax(block == 1, axis=1)], None)
            columns[task] = values.astype(object)
    for name, values in columns.items():
        frame[name] = values
    return frame


def _output_paths(results: Sequence[CleanResult], path: Path) -> list[Path]:
    suffix = path.suffix.lower()
    if suffix not in _CLEANED_SUFFIXES:
        raise InvalidInputError(
            f"The output '{path}' has the suffix {suffix!r}; write the cleaned labels to one of "
            f"{', '.join(_CLEANED_SUFFIXES)}."
        )
    if path.name in _LOG_FILES:
        raise InvalidInputError(
            f"The output '{path}' would be overwritten by the change log written next to it "
            f"({' and '.join(_LOG_FILES)}); choose another name such as cleaned{suffix}."
        )
    names = [r.strategy for r in results]
    if len(set(names)) != len(names):
        raise InvalidInputError(
            f"Each strategy may be written once; got {names}. Remove the repeated one."
        )
    if len(results) == 1:
        return [path]
    return [path.with_name(f"{path.stem}.{name}{path.suffix}") for name in names]


def write_cleaned(
    results: CleanResult | Sequence[CleanResult], path: str | Path, *, overwrite: bool = False
) -> list[Path]:
    """Write cleaned label tables plus ``changes.parquet`` and ``dropped.parquet`` next to them.

    Parameters
    ----------
    results : CleanResult or sequence of CleanResult
        One result is written to ``path``; several go to
        ``<stem>.<strategy><suffix>`` each (``cleaned.image.parquet``).
    path : str or Path
        ``.parquet`` / ``.pq`` or ``.csv`` / ``.tsv``: the format of the table
        (see :func:`cleaned_frame`). ``changes.parquet`` and
        ``dropped.parquet`` in the same folder receive the rows of every
        result (the ``strategy`` column tells them apart).
    overwrite : bool, default=False
        Replace output files that exist already. Without it, an existing file
        that this function did not write (a CSV file, or a Parquet file without
        its ``clusterclean`` metadata) stops the call before anything is
        written: nothing of yours is lost.
        Every file is first written under a temporary name; only when all
        are written are they renamed into place, one after the other.

    Returns
    -------
    list of Path
        The cleaned tables, then the changes and dropped files. Every file is
        written to a temporary name and renamed into place.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .atomic import staged_writes
    from .report import metadata_for, written_table

    if isinstance(results, CleanResult):
        results = [results]
    results = list(results)
    if not results or not all(isinstance(r, CleanResult) for r in results):
        raise InvalidTypeError(
            "The 'results' parameter of write_cleaned must be a CleanResult or a non-empty "
            f"list of them. Got {results!r} instead."
        )
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise InvalidTypeError(
            f"The 'path' parameter of write_cleaned must be a file path. Got {path!r} instead."
        )
    path = Path(path)
    outputs = _output_paths(results, path)
    logs = [path.parent / f"{name}.parquet" for name in ("changes", "dropped")]
    # a file this function wrote before (its Parquet metadata says so) is replaced; any
    # other file is the user's and stops the call unless overwrite=True
    ours = ("cleaned", "changes", "dropped")
    foreign = [
        p
        for p in (*outputs, *logs)
        if (p.exists() or p.is_symlink()) and written_table(p) not in ours
    ]
    if foreign and not overwrite:
        raise InvalidInputError(
            f"{', '.join(map(str, foreign))} already exist(s) and clusterclean did not write "
            "it (or it is a CSV file, which carries no mark); nothing was written. Choose "
            "another --out, or pass --overwrite (API: overwrite=True) to replace it."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    writers = []
    for result, out in zip(results, outputs, strict=True):
        frame = cleaned_frame(result.dataset)
        sep = _CLEANED_SUFFIXES[out.suffix.lower()]
        if sep is None:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            table = table.cast(  # pandas' str dtype becomes large_string; use plain string
                pa.schema(
                    [
                        field.with_type(pa.string())
                        if pa.types.is_large_string(field.type)
                        else field
                        for field in table.schema
                    ],
                    metadata=table.schema.metadata,
                )
            )
            meta = metadata_for(
                "cleaned",
                {
                    "strategy": result.strategy,
                    "options": result.options,
                    "tasks": {k: list(v) for k, v in result.dataset.tasks.items()},
                },
            )
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
            writers.append((out, lambda tmp, table=table: pq.write_table(table, tmp)))
        else:
            writers.append(
                (out, lambda tmp, frame=frame, sep=sep: frame.to_csv(tmp, sep=sep, index=False))
            )
    for name, log in zip(("changes", "dropped"), logs, strict=True):
        frame = pd.concat([getattr(r, name) for r in results], ignore_index=True)
        writers.append((log, lambda tmp, name=name, frame=frame: write_table(name, frame, tmp)))
    written = staged_writes(writers)
    logger.info("cleaned labels written to %s", ", ".join(map(str, written)))
    return written
