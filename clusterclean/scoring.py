"""Components + labels -> component, (component, attribute), image and cell scores.

Notation, for a component C of n >= 2 images and an attribute a:

* k_a = images of C where a is not missing, c_a = those where a is 1;
* r_a = c_a / k_a, the positive ratio;
* m_a = min(c_a, k_a - c_a) / k_a, the minority fraction (0 when C agrees);
* the *active* attributes of C are those with c_a > 0; the component metrics
  average over them, so an attribute nobody in C has does not dilute them.

Component metrics (0 for a perfectly consistent component, and for singletons):

* ``variance`` = mean over active a of m_a^2, in [0, 0.25];
* ``geometric_variance`` = exp(mean over active a of log(m_a + eps)) - eps with
  eps = GEOMETRIC_EPS = 1e-3, in [0, 0.5]; it is high only when *every*
  active attribute disagrees;
* ``cubic_variance`` = mean over active a of m_a^3, in [0, 0.125]; it punishes
  the worst attributes most;
* ``label_count_std`` = population standard deviation over active a of r_a,
  in [0, 0.5]; without missing labels this is std(c_a) / n, the seed
  article's label-count spread;
* ``inconsistency_score`` = 2 * sqrt(variance), in [0, 1] (the root mean square
  of 2 m_a), the component score used for ranking, higher = more suspicious.

Cells: the *agreement* of image i's known label y on a is the share of C's
labelled images carrying the same value: r_a if y = 1, 1 - r_a if y = 0. A
cell is a suspected label issue when agreement < ``min_label_agreement``
(0.5 by default: a strict minority; a tie is not flagged, since nobody can say
which side is wrong). Its ``score`` = 1 - agreement, in (0.5, 1] by default.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ._contracts import Dataset, Embeddings, check_known_attributes
from ._validation import check_float, check_int
from .errors import InvalidInputError
from .options import Option, declare

__all__ = [
    "OPTIONS",
    "METRICS",
    "Metric",
    "register_metric",
    "GEOMETRIC_EPS",
    "Scores",
    "score_components",
    "component_label_counts",
    "parse_threshold",
    "flag_name",
    "threshold_text",
    "count_flags",
    "flag_table",
    "find_varying_attributes",
]

#: The options of the score stage, declared once (:mod:`clusterclean.options`).
OPTIONS = declare(
    "score",
    Option(
        "thresholds",
        ("p80",),
        "component flag thresholds, e.g. p80,0.05 (percentiles or absolute values)",
        "strs",
        each=lambda text: parse_threshold(text),
        one_str=True,
    ),
    Option(
        "min_label_agreement",
        0.5,
        "a cell agreeing with less than this share of its component is a suspected label "
        "issue (0.5 = strict minority)",
        "float",
        low=0.0,
        high=1.0,
    ),
    Option(
        "min_component_size",
        2,
        "smaller components are not scored",
        "int",
        low=1,
    ),
    Option(
        "exclude_attributes",
        (),
        "attributes reported but never scored, e.g. pose,occluded (they may differ between views)",
        "strs",
        aliases=("--per-image-attributes",),
    ),
    Option(
        "detect_varying_attributes",
        True,
        "find attributes that vary inside components far more than the rest and leave "
        "them unscored",
        "bool",
    ),
    Option(
        "consistent_attributes",
        (),
        "score these attributes or tasks even when detected as varying",
        "strs",
    ),
)

logger = logging.getLogger(__name__)

GEOMETRIC_EPS = 1e-3

#: Columns of the component flags table (``component_flags.parquet``).
FLAG_COLUMNS = ("component_id", "metric", "threshold", "cut", "value")


@dataclass(frozen=True)
class Metric:
    """A component metric: a number per component, 0 when the component agrees.

    Attributes
    ----------
    name : str
        Column of ``components.parquet`` and ``--metric`` value.
    short : str
        Name in the flag columns of schema-1 reports (``is_bad_component_<short>_<threshold>``),
        which :func:`clusterclean.report.read_report` still reads.
    formula : str
        One line, in the README's notation (the column's description).
    compute : callable
        ``compute(m, active, ratio, n_active) -> ndarray of shape (n_components,)``:
        ``m`` the minority fractions m_a (0 where not active), ``active`` where
        c_a > 0 (and scored), ``ratio`` c_a / k_a, ``n_active`` the active
        attributes per component; all of shape (n_components, n_attributes).
    """

    name: str
    short: str
    formula: str
    compute: Callable[..., np.ndarray]


#: Registry: metric name -> :class:`Metric`, in column order (:func:`register_metric`).
METRICS: dict[str, Metric] = {}


def register_metric(name: str, *, short: str, formula: str):
    """Decorator: add a component metric ``compute(m, active, ratio, n_active)``.

    ``score_components`` adds its column and one flag column per threshold,
    ``components.parquet`` its column (described by ``formula``), the HTML
    report its sort key, ``clean --metric`` its name.
    """

    def decorate(compute):
        METRICS[name] = Metric(name, short, formula, compute)
        return compute

    return decorate


def _mean_over_active(values: np.ndarray, n_active: np.ndarray) -> np.ndarray:
    return values.sum(axis=1) / np.maximum(n_active, 1)


@register_metric("variance", short="var", formula="mean over active attributes of m_a^2")
def _variance(m, active, ratio, n_active):
    return _mean_over_active(m**2, n_active)


@register_metric(
    "geometric_variance",
    short="gvar",
    formula="exp(mean log(m_a + 1e-3)) - 1e-3 over active attributes",
)
def _geometric_variance(m, active, ratio, n_active):
    log_m = np.where(active, np.log(m + GEOMETRIC_EPS), 0.0)
    geometric = np.exp(_mean_over_active(log_m, n_active)) - GEOMETRIC_EPS
    # exp(log(eps)) - eps is not exactly 0 in floating point: pin agreement to 0
    return np.where((m > 0).any(axis=1), np.maximum(geometric, 0.0), 0.0)


@register_metric("cubic_variance", short="cvar", formula="mean over active attributes of m_a^3")
def _cubic_variance(m, active, ratio, n_active):
    return _mean_over_active(m**3, n_active)


@register_metric(
    "label_count_std", short="std", formula="std over active attributes of r_a = c_a / k_a"
)
def _label_count_std(m, active, ratio, n_active):
    r = np.where(active, ratio, 0.0)
    mean_r = _mean_over_active(r, n_active)
    squared = np.where(active, (ratio - mean_r[:, None]) ** 2, 0.0)
    return np.sqrt(_mean_over_active(squared, n_active))


_ROW_CHUNK = 65536  # images per chunk when expanding component counts to cells


@dataclass(frozen=True)
class Scores:
    """The score tables of one run.

    Attributes
    ----------
    components : pandas.DataFrame
        One row per component (singletons included), indexed 0..n-1 by
        ``component_id``.
    component_attributes : pandas.DataFrame
        One row per (component of >= ``min_component_size`` images, attribute
        known in it).
    images : pandas.DataFrame
        One row per image, in dataset order.
    label_issues : pandas.DataFrame
        One row per suspected wrong cell.
    component_flags : pandas.DataFrame
        One row per (component, metric, threshold) where the component's metric is
        strictly above the threshold's cut (``component_flags.parquet``).
    """

    components: pd.DataFrame
    component_attributes: pd.DataFrame
    images: pd.DataFrame
    label_issues: pd.DataFrame
    component_flags: pd.DataFrame


def parse_threshold(threshold: str | float) -> tuple[str, float]:
    """Read a threshold: ``"p80"`` (80th percentile) or an absolute number.

    Returns ``("percentile", 80.0)`` or ``("absolute", 0.05)``.
    """
    if isinstance(threshold, (int, float)) and not isinstance(threshold, bool):
        return "absolute", float(threshold)
    text = str(threshold).strip().lower()
    match = re.fullmatch(r"p(\d+(?:\.\d+)?)", text)
    if match and 0 <= float(match.group(1)) <= 100:
        return "percentile", float(match.group(1))
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not np.isfinite(value):
        raise InvalidInputError(
            f"A threshold must be a percentile like 'p80' (0-100) or a number like 0.05. "
            f"Got {threshold!r} instead."
        )
    return "absolute", value


def threshold_text(threshold: str | float) -> str:
    """A threshold written one way: ``"p80"`` for a percentile, ``"0.05"`` for a value."""
    kind, value = parse_threshold(threshold)
    return f"p{value:g}" if kind == "percentile" else f"{value:g}"


def flag_name(metric: str, threshold: str | float) -> str:
    """How a (metric, threshold) flag is named in ``run.json`` and the summary.

    ``flag_name("variance", "p80") == "variance>p80"``: the components whose metric
    is strictly above the threshold.
    """
    return f"{metric}>{threshold_text(threshold)}"


def flag_table(flags) -> pd.DataFrame:
    """The component flags table from ``(component_ids, metric, threshold, cut, values)``
    entries, one per (metric, threshold): the flagged components and their values."""
    frames = [
        pd.DataFrame(
            {
                "component_id": np.asarray(ids, dtype=np.int32),
                "metric": metric,
                "threshold": threshold_text(threshold),
                "cut": np.float64(cut),
                "value": np.asarray(values, dtype=np.float64),
            },
            columns=FLAG_COLUMNS,
        )
        for ids, metric, threshold, cut, values in flags
    ]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=FLAG_COLUMNS)


def count_flags(component_flags: pd.DataFrame | None, thresholds: dict) -> dict[str, int]:
    """Flagged components per flag: ``{flag_name: count}`` for every key of
    ``thresholds`` (run.json's, so a flag that caught nothing counts 0)."""
    if component_flags is None or not len(component_flags):
        return dict.fromkeys(thresholds, 0)
    names = component_flags["metric"] + ">" + component_flags["threshold"]
    counts = names.value_counts()
    return {name: int(counts.get(name, 0)) for name in thresholds}


def component_label_counts(
    component_ids: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per component and attribute, count labelled and positive images.

    Returns
    -------
    n_known, n_positive : ndarray of shape (n_components, n_attributes), dtype int64
        k_a and c_a of every component.
    """
    from scipy.sparse import csr_matrix

    component_ids = np.asarray(component_ids, dtype=np.int64)
    n_components = int(component_ids.max()) + 1 if len(component_ids) else 0
    rows = np.arange(len(component_ids))
    membership = csr_matrix(
        (np.ones(len(component_ids), dtype=np.int64), (component_ids, rows)),
        shape=(n_components, len(component_ids)),
    )
    known = ~np.isnan(labels)
    n_known = np.asarray(membership @ known.astype(np.int64))
    n_positive = np.asarray(membership @ (labels == 1).astype(np.int64))
    return n_known, n_positive


def _component_metrics(n_known: np.ndarray, n_positive: np.ndarray, scored: np.ndarray):
    """The registered metrics per component (see the module docstring)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = n_positive / n_known
        minority = np.minimum(n_positive, n_known - n_positive) / n_known
    active = (n_positive > 0) & scored[None, :]
    n_active = active.sum(axis=1)
    m = np.where(active, minority, 0.0)
    values = {name: metric.compute(m, active, ratio, n_active) for name, metric in METRICS.items()}
    n_disagreeing = (np.where(scored[None, :], np.nan_to_num(minority), 0.0) > 0).sum(axis=1)
    return (
        {
            **values,
            "n_active_attributes": n_active,
            "n_disagreeing_attributes": n_disagreeing,
        },
        ratio,
        minority,
    )


def score_components(
    component_ids: np.ndarray,
    dataset: Dataset,
    *,
    embeddings: Embeddings | None = None,
    thresholds: Sequence[str | float] = ("p80",),
    min_label_agreement: float = 0.5,
    min_component_size: int = 2,
    exclude_attributes: Sequence[str] = (),
) -> Scores:
    """Score every component for label disagreement.

    Parameters
    ----------
    component_ids : ndarray of shape (n_images,), dtype int32
        Dense component ids, as returned by :func:`find_components`.
    dataset : Dataset
        The labels (rows in the same order as ``component_ids``).
    embeddings : Embeddings, optional
        When given, each image's cosine similarity to its component's mean
        direction (``centroid_cosine``) is reported.
    thresholds : sequence of str or float, default=("p80",)
        Flag thresholds applied to every metric: ``"pNN"`` = the NN-th
        percentile over the components of >= ``min_component_size`` images, or
        an absolute value. A component is flagged when its metric is strictly
        above the threshold (so a perfectly consistent dataset flags nothing).
    min_label_agreement : float in [0, 1], default=0.5
        A cell whose agreement is below this is a suspected label issue.
    min_component_size : int, default=2
        Smaller components are not scored (a singleton has nobody to disagree with).
    exclude_attributes : sequence of str, default=()
        Attributes reported for information but never scored or flagged
        (e.g. ones that legitimately differ between views).

    Returns
    -------
    Scores
        The four score tables (see ``README.md`` for every column).
    """
    func = "score_components"
    started = time.perf_counter()
    min_label_agreement = check_float(
        min_label_agreement, "min_label_agreement", func, low=0.0, high=1.0
    )
    min_component_size = check_int(min_component_size, "min_component_size", func, min_value=1)
    component_ids = np.asarray(component_ids, dtype=np.int64)
    if component_ids.shape != (dataset.n_images,):
        raise InvalidInputError(
            f"component_ids has shape {component_ids.shape} but the dataset has "
            f"{dataset.n_images} images; they must match row for row."
        )
    check_known_attributes(exclude_attributes, dataset, "exclude_attributes", func)
    parsed = [(t, parse_threshold(t)) for t in thresholds]
    labels = dataset.labels
    scored = np.array([a not in set(exclude_attributes) for a in dataset.attributes], dtype=bool)

    sizes = np.bincount(component_ids) if len(component_ids) else np.zeros(0, dtype=np.int64)
    n_components = len(sizes)
    big = sizes >= min_component_size
    n_known, n_positive = component_label_counts(component_ids, labels)
    metrics, ratio, minority = _component_metrics(n_known, n_positive, scored)
    for name in METRICS:
        metrics[name] = np.where(big, metrics[name], 0.0)
    metrics["n_disagreeing_attributes"] = np.where(big, metrics["n_disagreeing_attributes"], 0)

    components = pd.DataFrame({"component_id": np.arange(n_components, dtype=np.int32)})
    components["component_size"] = sizes.astype(np.int64)
    for name in METRICS:
        components[name] = metrics[name].astype(np.float64)
    components["inconsistency_score"] = 2.0 * np.sqrt(metrics["variance"])
    components["n_active_attributes"] = metrics["n_active_attributes"].astype(np.int64)
    components["n_disagreeing_attributes"] = metrics["n_disagreeing_attributes"].astype(np.int64)

    threshold_values, flags = {}, []
    for name in METRICS:
        for raw, (kind, value) in parsed:
            if kind == "percentile":
                pool = metrics[name][big]
                cut = float(np.percentile(pool, value)) if len(pool) else np.inf
            else:
                cut = value
            threshold_values[flag_name(name, raw)] = cut
            flagged = np.flatnonzero(big & (metrics[name] > cut))
            flags.append((flagged, name, raw, cut, metrics[name][flagged]))
    component_flags = flag_table(flags)

    issues, image_cols = _cell_scores(
        component_ids, labels, ratio, minority, big, scored, min_label_agreement
    )
    images = pd.DataFrame({"image_id": dataset.ids.astype(str)})
    images["component_id"] = component_ids.astype(np.int32)
    images["component_size"] = sizes[component_ids].astype(np.int64)
    if embeddings is not None:
        images["centroid_cosine"] = _centroid_cosine(component_ids, embeddings)
    n_rare = image_cols["n_rare_labels"]
    images["n_rare_labels"] = n_rare
    images["label_issue_score"] = image_cols["label_issue_score"]
    attr_names = np.asarray(dataset.attributes, dtype=object)
    rare_lists = [[] for _ in range(dataset.n_images)]
    for row, col in zip(issues["row"], issues["col"], strict=True):
        rare_lists[row].append(attr_names[col])
    images["rare_labels"] = rare_lists

    n_issues = np.bincount(component_ids[issues["row"]], minlength=n_components)
    components["n_label_issues"] = n_issues.astype(np.int64)

    label_issues = pd.DataFrame(
        {
            "image_id": dataset.ids[issues["row"]].astype(str),
            "component_id": component_ids[issues["row"]].astype(np.int32),
            "attribute": attr_names[issues["col"]].astype(str),
            "given_label": labels[issues["row"], issues["col"]].astype(np.int8),
            "component_majority": _majority(ratio[component_ids[issues["row"]], issues["col"]]),
            "minority_fraction": issues["minority"].astype(np.float64),
            "agreement": issues["agreement"].astype(np.float64),
            "label_issue_score": (1.0 - issues["agreement"]).astype(np.float64),
        }
    )
    label_issues = label_issues.sort_values(
        ["label_issue_score", "component_id", "image_id", "attribute"],
        ascending=[False, True, True, True],
        kind="stable",
    ).reset_index(drop=True)

    comp_attr = _component_attribute_table(n_known, n_positive, ratio, minority, big, attr_names)
    logger.info(
        "scores: %d components (%d scored), %d suspected label issues, %.2f s",
        n_components,
        int(big.sum()),
        len(label_issues),
        time.perf_counter() - started,
    )
    components.attrs["thresholds"] = threshold_values
    return Scores(
        components=components,
        component_attributes=comp_attr,
        images=images,
        label_issues=label_issues,
        component_flags=component_flags,
    )


def _cell_scores(component_ids, labels, ratio, minority, big, scored, min_label_agreement):
    """Find suspected wrong cells, chunked over images to bound memory."""
    rows, cols, agreements, minorities = [], [], [], []
    n_images = len(component_ids)
    n_rare = np.zeros(n_images, dtype=np.int64)
    worst = np.zeros(n_images, dtype=np.float64)
    for start in range(0, n_images, _ROW_CHUNK):
        stop = min(start + _ROW_CHUNK, n_images)
        comp = component_ids[start:stop]
        y = labels[start:stop]
        r = ratio[comp]
        agreement = np.where(y == 1, r, 1.0 - r)
        rare = (
            ~np.isnan(y) & (agreement < min_label_agreement) & big[comp][:, None] & scored[None, :]
        )
        rare_rows, rare_cols = np.nonzero(rare)
        rows.append(rare_rows + start)
        cols.append(rare_cols)
        agreements.append(agreement[rare_rows, rare_cols])
        minorities.append(minority[comp[rare_rows], rare_cols])
        n_rare[start:stop] = rare.sum(axis=1)
        score = np.where(rare, 1.0 - agreement, 0.0)
        worst[start:stop] = score.max(axis=1) if score.shape[1] else 0.0
    issues = {
        "row": np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64),
        "col": np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64),
        "agreement": np.concatenate(agreements) if agreements else np.zeros(0),
        "minority": np.concatenate(minorities) if minorities else np.zeros(0),
    }
    return issues, {"n_rare_labels": n_rare, "label_issue_score": worst}


def _majority(ratio: np.ndarray) -> pd.Series:
    """1 where r_a > 0.5, 0 where r_a < 0.5, missing on a tie."""
    majority = pd.Series((ratio > 0.5).astype(np.int8), dtype="Int8")
    majority[ratio == 0.5] = pd.NA
    return majority


def _centroid_cosine(component_ids: np.ndarray, embeddings: Embeddings) -> np.ndarray:
    """Cosine similarity of each image to the mean direction of its component."""
    if len(embeddings) != len(component_ids):
        raise InvalidInputError(
            f"There are {len(embeddings)} embeddings for {len(component_ids)} images; "
            "they must match row for row."
        )
    vectors = embeddings.vectors
    n_components = int(component_ids.max()) + 1 if len(component_ids) else 0
    sums = np.zeros((n_components, vectors.shape[1]), dtype=np.float64)
    np.add.at(sums, component_ids, vectors)
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    centroids = sums / np.maximum(norms, 1e-12)
    return np.einsum("ij,ij->i", vectors, centroids[component_ids]).astype(np.float32)


def _component_attribute_table(n_known, n_positive, ratio, minority, big, attr_names):
    comp_idx, attr_idx = np.nonzero(big[:, None] & (n_known > 0))
    return pd.DataFrame(
        {
            "component_id": comp_idx.astype(np.int32),
            "attribute": attr_names[attr_idx].astype(str),
            "n_known": n_known[comp_idx, attr_idx].astype(np.int64),
            "n_positive": n_positive[comp_idx, attr_idx].astype(np.int64),
            "positive_ratio": ratio[comp_idx, attr_idx].astype(np.float64),
            "minority_fraction": minority[comp_idx, attr_idx].astype(np.float64),
        }
    )


def find_varying_attributes(
    component_ids: np.ndarray,
    dataset: Dataset,
    *,
    min_component_size: int = 2,
    min_share: float = 0.25,
    min_ratio: float = 3.0,
    min_components: int = 5,
) -> pd.DataFrame:
    """Find attributes that vary inside components far more often than the others.

    Not every attribute is a property of the subject: pose, occlusion or
    "carrying nothing" can change between two views of one person. Voting on
    them turns real differences into "label errors". For each attribute (a
    one-of-K task counts as one), over the components of at least
    ``min_component_size`` images where it is known in two or more images:

    * ``n_components`` = such components, ``n_varying`` = those where its
      known values are not all equal (for a task: more than one value);
    * ``varying_share`` = n_varying / n_components;
    * ``ratio_to_median`` = varying_share / max(median share over attributes, 0.05).

    Label noise makes every attribute vary a little; an attribute is proposed
    as per-image (``is_per_image``) when varying_share >= ``min_share``,
    ratio_to_median >= ``min_ratio`` and n_components >= ``min_components``:
    it varies far more often than noise explains for the rest, in enough
    components to tell. With many noisy labels (noise close to the per-image
    rate) the two cannot be told apart and nothing is proposed.

    Returns
    -------
    pandas.DataFrame
        One row per attribute or task: ``attribute``, ``columns`` (its one-hot
        columns), ``n_components``, ``n_varying``, ``varying_share``,
        ``ratio_to_median``, ``is_per_image``; sorted by varying_share, highest first.
    """
    component_ids = np.asarray(component_ids, dtype=np.int64)
    sizes = np.bincount(component_ids) if len(component_ids) else np.zeros(0, dtype=np.int64)
    big = sizes >= min_component_size
    n_known, n_positive = component_label_counts(component_ids, dataset.labels)
    index = {name: col for col, name in enumerate(dataset.attributes)}
    in_task = {col for cols in dataset.tasks.values() for col in cols}
    units = [(a, (a,)) for a in dataset.attributes if a not in in_task]
    units += [(task, tuple(cols)) for task, cols in dataset.tasks.items()]
    rows = []
    for name, columns in units:
        cols = [index[c] for c in columns]
        known, positive = n_known[:, cols], n_positive[:, cols]
        if len(cols) == 1:
            labelled = known[:, 0] >= 2
            varies = (positive[:, 0] > 0) & (positive[:, 0] < known[:, 0])
        else:  # one-of-K: more than one value voted for
            labelled = known.min(axis=1) >= 2
            varies = (positive > 0).sum(axis=1) > 1
        scored = big & labelled
        n = int(scored.sum())
        rows.append((name, list(columns), n, int((scored & varies).sum())))
    table = pd.DataFrame(rows, columns=["attribute", "columns", "n_components", "n_varying"])
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(table["n_components"] > 0, table["n_varying"] / table["n_components"], 0.0)
    table["varying_share"] = share.astype(np.float64)
    observed = share[table["n_components"].to_numpy() > 0]
    baseline = max(float(np.median(observed)) if len(observed) else 0.0, 0.05)
    table["ratio_to_median"] = share / baseline
    table["is_per_image"] = (
        (share >= min_share)
        & (table["ratio_to_median"] >= min_ratio)
        & (table["n_components"] >= min_components)
    )
    return table.sort_values(
        ["varying_share", "attribute"], ascending=[False, True], kind="stable"
    ).reset_index(drop=True)
