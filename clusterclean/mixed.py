"""Components that mix two look-alike identities ("possibly two people").

Single-link grouping can join two look-alike subjects (two persons in the same
clothes): their differing labels then look like label errors. A component is
reported as *possibly two people* and split into its two sides before scoring
when the labels and the embedding both say so.

Notation, for a component C of n >= ``min_component_size`` images:

* a *unit* is a scored attribute, or a one-of-K task (counted once, whatever
  the number of its one-hot columns); attributes in ``exclude_attributes``
  (per-image ones such as pose) are not units;
* a unit *splits* C into two sides when its known values in C take exactly
  two values (for a task: the value of each image, i.e. its one-hot column
  holding 1); images where it is missing are on neither side;
* a *candidate* bipartition (A, B) of C is the split of a unit known on every
  image of C; its label support is the number of units whose split agrees with
  it on every image where they are known (up to swapping A and B).

The best candidate (highest support; ties: the larger smaller side, then the
unit found first in column order) is tested against the embedding. With v_i the
unit (refined) vectors and S_ij = v_i . v_j:

* within = mean of S_ij over the pairs i < j on the same side;
* between = mean of S_ij over the pairs on different sides;
* gap = within - between;
* margin_i = mean_{j in side(i), j != i} S_ij - mean_{j in other side} S_ij,
  for each image whose side holds another image.

C is mixed when support >= ``min_attributes``, gap >= ``min_similarity_gap``
and every margin_i > 0 (each image is closer, on average, to its own side than
to the other). The embedding test is the guard against label noise: when a few
images of one person carry flipped labels, their labels split C, but nothing
places them apart in the embedding: the gap stays near 0, or some image sits
closer to the other side than to its own (a negative margin).

The defaults (3 attributes, gap 0.05) gave the best mean F1 of flagged cells
over a grid ({2, 3} attributes x gaps {0.05, 0.1, 0.15, 0.2}) on a selection
benchmark, and were then measured unchanged on a held-out one
(``scripts/bench_mixed.py``, ``docs/results/mixed.json``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ._contracts import Dataset, Embeddings, check_known_attributes
from ._validation import check_float, check_int
from .components import renumber
from .errors import InvalidInputError
from .options import Option, declare
from .scoring import component_label_counts

__all__ = ["OPTIONS", "find_mixed_components", "split_mixed_components", "mixed_component_columns"]

#: The options of the mixed stage, declared once (:mod:`clusterclean.options`).
OPTIONS = declare(
    "mixed",
    Option(
        "detect_mixed",
        True,
        "split components whose labels and embedding both say two look-alike people, "
        "reported as possibly two people",
        "bool",
    ),
    Option(
        "min_mixed_attributes",
        3,
        "attributes (a one-of-K task counts once) that must split a component the same way",
        "int",
        low=1,
    ),
    Option(
        "min_mixed_gap",
        0.05,
        "smallest gap between the mean similarity inside the two sides and across them",
        "float",
        low=-2.0,
        high=2.0,
    ),
)

logger = logging.getLogger(__name__)

#: Columns of the table :func:`find_mixed_components` returns.
MIXED_COLUMNS = (
    "component_id",
    "size",
    "n_side_a",
    "n_side_b",
    "attributes",
    "n_attributes",
    "within_similarity",
    "between_similarity",
    "similarity_gap",
    "min_margin",
    "is_mixed",
    "rows_b",
)


def _units(dataset: Dataset, exclude_attributes: Sequence[str]) -> list[tuple[str, list[int]]]:
    """(name, column indices) of every scored attribute and one-of-K task."""
    excluded = set(exclude_attributes)
    index = {name: col for col, name in enumerate(dataset.attributes)}
    in_task = {col for cols in dataset.tasks.values() for col in cols}
    units = [(a, [index[a]]) for a in dataset.attributes if a not in in_task and a not in excluded]
    for task, columns in dataset.tasks.items():
        kept = [index[c] for c in columns if c not in excluded]
        if kept:
            units.append((task, kept))
    return units


def _unit_values(labels: np.ndarray, units: list[tuple[str, list[int]]]) -> np.ndarray:
    """Value of every unit per image, shape (n_images, n_units), -1 = missing: the label
    (0/1) of an attribute, the index of the column holding 1 for a task."""
    values = np.full((len(labels), len(units)), -1, dtype=np.int64)
    for j, (_, columns) in enumerate(units):
        if len(columns) == 1:
            known = ~np.isnan(labels[:, columns[0]])
            values[known, j] = labels[known, columns[0]]
        else:
            block = labels[:, columns] == 1
            values[:, j] = np.where(block.any(axis=1), block.argmax(axis=1), -1)
    return values


def _best_candidate(values: np.ndarray, names: list[str]) -> tuple[np.ndarray, list[str]] | None:
    """The bipartition supported by the most units, and those units' names.

    ``values`` (n, n_units) are the units' values on the component's images.
    A unit splits the component when its known values take exactly two values;
    its sides are 0 for the value of its first known image, 1 for the other.
    It supports a candidate when its sides equal the candidate's on its known
    images, up to swapping the sides.
    """
    known = values >= 0
    first = values[known.argmax(axis=0), np.arange(values.shape[1])]
    high = np.where(known, values, -1).max(axis=0)
    low = np.where(known, values, high + 1).min(axis=0)
    two_valued = (low < high) & np.where(known, (values == low) | (values == high), True).all(
        axis=0
    )
    if not two_valued.any():
        return None
    sides = np.where(known, values != first, -1)[:, two_valued].T  # (n_splits, n)
    full = sides[known[:, two_valued].all(axis=0)]
    if not len(full):
        return None
    candidates = np.stack(list({row.tobytes(): row for row in full}.values()))  # first-seen order
    same = sides[:, None, :] == candidates[None, :, :]
    mask = (sides >= 0)[:, None, :]
    agrees = np.where(mask, same, True).all(axis=2) | np.where(mask, ~same, True).all(axis=2)
    support = agrees.sum(axis=0)  # per candidate
    smaller = np.minimum(candidates.sum(axis=1), candidates.shape[1] - candidates.sum(axis=1))
    best = np.lexsort((-smaller, -support))[0]
    split_names = [name for name, keep in zip(names, two_valued, strict=True) if keep]
    return candidates[best], [split_names[i] for i in np.nonzero(agrees[:, best])[0]]


def _separation(vectors: np.ndarray, side: np.ndarray) -> tuple[float, float, float]:
    """within, between and the smallest margin_i (see the module docstring).

    Computed from side sums, O(n dim): for unit vectors the sum of S_ij over
    the ordered pairs of a side X is |sum_X v|^2 - |X|.
    """
    sums = [vectors[side == s].sum(axis=0, dtype=np.float64) for s in (0, 1)]
    sizes = [int((side == s).sum()) for s in (0, 1)]
    within_pairs = sum(s * (s - 1) / 2 for s in sizes)
    within_total = sum((float(sums[s] @ sums[s]) - sizes[s]) / 2 for s in (0, 1))
    within = within_total / within_pairs if within_pairs else float("nan")
    between = float(sums[0] @ sums[1]) / (sizes[0] * sizes[1])
    margins = []
    for s in (0, 1):
        if sizes[s] < 2:
            continue
        members = vectors[side == s].astype(np.float64)
        own = (members @ sums[s] - 1.0) / (sizes[s] - 1)
        other = members @ sums[1 - s] / sizes[1 - s]
        margins.append(float((own - other).min()))
    return within, between, min(margins) if margins else float("nan")


def find_mixed_components(
    component_ids: np.ndarray,
    dataset: Dataset,
    embeddings: Embeddings,
    *,
    exclude_attributes: Sequence[str] = (),
    min_attributes: int = 3,
    min_similarity_gap: float = 0.05,
    min_component_size: int = 3,
) -> pd.DataFrame:
    """Find components whose labels and embedding both split them into two sides.

    The test and its formulas are in the module docstring.

    Parameters
    ----------
    component_ids : ndarray of shape (n_images,)
        Component of each image, row for row with ``dataset``.
    dataset : Dataset
        The labels.
    embeddings : Embeddings
        Vectors the similarities are computed on (the refined ones in
        :func:`clusterclean.pipeline.run`), row for row with ``dataset``.
    exclude_attributes : sequence of str, default=()
        Attribute columns that are not evidence (per-image ones).
    min_attributes : int, default=3
        Units (attributes or tasks) that must split the component the same way.
    min_similarity_gap : float in [-2, 2], default=0.05
        Smallest within - between similarity gap.
    min_component_size : int, default=3
        Smaller components are never tested (>= 3: two images have no
        "rest of the person" to compare with).

    Returns
    -------
    pandas.DataFrame
        One row per component with a label-supported candidate (``is_mixed``
        says whether the embedding agreed): ``component_id``, ``size``,
        ``n_side_a`` (images on the side of its first row), ``n_side_b``,
        ``attributes`` (the supporting units), ``n_attributes``,
        ``within_similarity``, ``between_similarity``, ``similarity_gap``,
        ``min_margin``, ``is_mixed``, ``rows_b`` (dataset rows of side b).
    """
    func = "find_mixed_components"
    started = time.perf_counter()
    min_attributes = check_int(min_attributes, "min_attributes", func, min_value=1)
    min_similarity_gap = check_float(
        min_similarity_gap, "min_similarity_gap", func, low=-2.0, high=2.0
    )
    min_component_size = check_int(min_component_size, "min_component_size", func, min_value=3)
    component_ids = np.asarray(component_ids, dtype=np.int64)
    if component_ids.shape != (dataset.n_images,) or len(embeddings) != dataset.n_images:
        raise InvalidInputError(
            f"component_ids ({component_ids.shape[0]} rows), the dataset ({dataset.n_images} "
            f"images) and the embeddings ({len(embeddings)} rows) must match row for row."
        )
    check_known_attributes(exclude_attributes, dataset, "exclude_attributes", func)
    units = _units(dataset, exclude_attributes)
    order = np.argsort(component_ids, kind="stable")
    sizes = np.bincount(component_ids) if len(component_ids) else np.zeros(0, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    # only components where enough units vary can hold a supported candidate
    n_known, n_positive = component_label_counts(component_ids, dataset.labels)
    varies = (n_positive > 0) & (n_positive < n_known)
    n_varying = np.zeros(len(sizes), dtype=np.int64)
    for _, columns in units:
        n_varying += varies[:, columns].any(axis=1)
    values = _unit_values(dataset.labels, units)
    names = [name for name, _ in units]
    rows = []
    for component in np.nonzero((sizes >= min_component_size) & (n_varying >= min_attributes))[0]:
        members = order[starts[component] : starts[component + 1]]
        found = _best_candidate(values[members], names)
        if found is None or len(found[1]) < min_attributes:
            continue
        side, support = found
        within, between, margin = _separation(embeddings.vectors[members], side)
        gap = within - between
        rows.append(
            (
                int(component),
                len(members),
                int((side == 0).sum()),
                int((side == 1).sum()),
                support,
                len(support),
                within,
                between,
                gap,
                margin,
                bool(gap >= min_similarity_gap and margin > 0),
                members[side == 1].tolist(),
            )
        )
    table = pd.DataFrame(rows, columns=list(MIXED_COLUMNS))
    table["is_mixed"] = table["is_mixed"].astype(bool)
    logger.info(
        "mixed components: %d of %d tested split by >= %d attributes, %d also by the "
        "embedding (%.2f s)",
        len(table),
        int((sizes >= min_component_size).sum()),
        min_attributes,
        int(table["is_mixed"].sum()),
        time.perf_counter() - started,
    )
    return table


def split_mixed_components(
    component_ids: np.ndarray, mixed: pd.DataFrame | None
) -> tuple[np.ndarray, pd.DataFrame]:
    """Split each mixed component into its two sides.

    Parameters
    ----------
    component_ids : ndarray of shape (n_images,)
        The components ``mixed`` was found on.
    mixed : pandas.DataFrame or None
        :func:`find_mixed_components`'s table; rows with ``is_mixed`` are
        split. None splits nothing (the ids are only renumbered).

    Returns
    -------
    component_ids : ndarray of shape (n_images,), dtype int32
        Dense ids numbered by each component's first row; every new component
        lies inside one input component.
    sides : pandas.DataFrame
        One row per split: ``component_id_a``, ``component_id_b`` (the new ids
        of its two sides) and the evidence columns of ``mixed``.
    """
    component_ids = np.asarray(component_ids, dtype=np.int64)
    if mixed is None:
        mixed = pd.DataFrame({c: [] for c in MIXED_COLUMNS}).astype({"is_mixed": bool})
    split = mixed[mixed["is_mixed"]].reset_index(drop=True)
    labels = component_ids.copy()
    next_label = int(component_ids.max()) + 1 if len(component_ids) else 0
    for offset, rows_b in enumerate(split["rows_b"]):
        labels[np.asarray(rows_b, dtype=np.int64)] = next_label + offset
    new_ids = renumber(labels) if len(labels) else np.zeros(0, dtype=np.int32)
    first_a = [
        int(np.argmax(component_ids == c)) for c in split["component_id"].to_numpy(dtype=np.int64)
    ]
    sides = split.drop(columns=["component_id", "is_mixed"])
    sides.insert(0, "component_id_a", new_ids[first_a].astype(np.int64))
    sides.insert(1, "component_id_b", [int(new_ids[rows[0]]) for rows in split["rows_b"]])
    return new_ids, sides


def mixed_component_columns(sides: pd.DataFrame, n_components: int) -> pd.DataFrame:
    """The components-table columns ``is_possibly_two_people`` and ``mixed_with``.

    Returns
    -------
    pandas.DataFrame
        ``n_components`` rows: ``is_possibly_two_people`` (bool: one side of a
        split mixed component) and ``mixed_with`` (Int32: the other side's
        component id, missing elsewhere).
    """
    partner = pd.array([pd.NA] * n_components, dtype="Int32")
    a = sides["component_id_a"].to_numpy(dtype=np.int64)
    b = sides["component_id_b"].to_numpy(dtype=np.int64)
    partner[a] = b
    partner[b] = a
    return pd.DataFrame({"is_possibly_two_people": ~pd.isna(partner), "mixed_with": partner})
