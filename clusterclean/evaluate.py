"""Measure cleaning against a known truth: grouping, detection, repair, downstream F1.

Four families of measures, each a plain function over plain tables:

* :func:`grouping_scores` -- predicted components vs the true persons:
  pairwise precision / recall / F1, adjusted Rand index, largest component;
* :func:`detection_scores` -- flagged cells (``label_issues``) vs planted cells;
* :func:`cleaning_scores` -- a cleaned label table vs the noisy one and the
  truth: which changes hit planted errors, how many clean cells a strategy
  removed (over-pruning) or corrupted, how many errors are left;
* :func:`probe_f1` and :func:`train_val_experiments` -- a linear probe per
  attribute (logistic regression on the embeddings) trained on one label table
  and scored on another: per-attribute F1, macro over attribute groups, and
  the four train/val experiments A-D of the PETA component-cleaning article.

End to end, :func:`evaluate_cleaning` plants noise in trusted labels
(:func:`clusterclean.synth.inject_noise`), runs the pipeline and every
cleaning strategy and applies all of the above (``clusterclean evaluate``);
:func:`write_evaluation` saves the result and :func:`read_benchmark` reads a
folder made by ``scripts/make_benchmark.py``.

Label tables here are DataFrames indexed by ``image_id`` with one float column
per attribute: 1.0 present, 0.0 absent, NaN missing (:func:`label_frame` makes
one from a :class:`~clusterclean._contracts.Dataset`). A cleaned table may
lack rows (pruned images).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._contracts import Dataset, Embeddings
from ._validation import check_int, check_type
from .errors import InvalidInputError, InvalidTypeError

__all__ = [
    "EXPERIMENTS",
    "Benchmark",
    "read_benchmark",
    "Evaluation",
    "evaluate_cleaning",
    "parse_injection",
    "pca_features",
    "cleaning_scores",
    "detection_scores",
    "grouping_scores",
    "label_frame",
    "macro_f1",
    "probe_f1",
    "train_val_experiments",
    "write_evaluation",
]

logger = logging.getLogger(__name__)

#: The four train/val experiments: name -> (train labels, val labels).
EXPERIMENTS = {
    "A": ("raw", "raw"),
    "B": ("cleaned", "cleaned"),
    "C": ("cleaned", "raw"),
    "D": ("raw", "cleaned"),
}


def _ratio(numerator: int, denominator: int) -> float:
    """numerator / denominator, and 1.0 for 0 / 0 (nothing claimed, nothing wrong)."""
    return 1.0 if denominator == 0 else numerator / denominator


def _f1(precision: float, recall: float) -> float:
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def _pairs(counts: np.ndarray) -> int:
    counts = np.asarray(counts, dtype=np.int64)
    return int((counts * (counts - 1) // 2).sum())


# --------------------------------------------------------------------------- grouping


def grouping_scores(predicted, truth) -> dict[str, float]:
    """Compare predicted components with the true identities, pair by pair.

    Over all unordered pairs of images: a pair is *predicted* when both images
    share a component and *true* when both show the same person. With the
    contingency counts n_ij (images in component i and person j), a_i = sum_j
    n_ij and b_j = sum_i n_ij, and C(x) = x (x - 1) / 2:

    * correct pairs = sum_ij C(n_ij); predicted = sum_i C(a_i); true = sum_j C(b_j);
    * ``pair_precision`` = correct / predicted (1.0 when nothing is predicted);
    * ``pair_recall`` = correct / true (1.0 when there are no true pairs);
    * ``pair_f1`` = their harmonic mean (0 when both are 0);
    * ``adjusted_rand`` = ``sklearn.metrics.adjusted_rand_score``.

    Runs in O(n_images) time and memory (no pair is enumerated).

    Parameters
    ----------
    predicted : array-like of shape (n_images,)
        Component id of each image.
    truth : array-like of shape (n_images,)
        True identity (e.g. person / group id) of each image, in the same order.

    Returns
    -------
    dict
        ``pair_precision``, ``pair_recall``, ``pair_f1``, ``adjusted_rand``,
        ``n_images``, ``n_components``, ``n_persons``, ``largest_component``,
        ``n_predicted_pairs``, ``n_true_pairs``, ``n_correct_pairs``.
    """
    from sklearn.metrics import adjusted_rand_score

    predicted = _codes(predicted, "predicted")
    truth = _codes(truth, "truth")
    if len(predicted) != len(truth):
        raise InvalidInputError(
            f"grouping_scores got {len(predicted)} predicted component ids but {len(truth)} "
            "true identities; give one of each per image, in the same order."
        )
    n_true = int(truth.max()) + 1 if len(truth) else 0
    joint = predicted.astype(np.int64) * max(n_true, 1) + truth
    cell_counts = np.unique(joint, return_counts=True)[1]
    component_sizes = np.bincount(predicted) if len(predicted) else np.zeros(0, np.int64)
    person_sizes = np.bincount(truth) if len(truth) else np.zeros(0, np.int64)
    correct, n_pred, n_pos = _pairs(cell_counts), _pairs(component_sizes), _pairs(person_sizes)
    precision, recall = _ratio(correct, n_pred), _ratio(correct, n_pos)
    return {
        "pair_precision": precision,
        "pair_recall": recall,
        "pair_f1": _f1(precision, recall),
        "adjusted_rand": float(adjusted_rand_score(truth, predicted)) if len(truth) else 1.0,
        "n_images": len(predicted),
        "n_components": int((component_sizes > 0).sum()),
        "n_persons": int((person_sizes > 0).sum()),
        "largest_component": int(component_sizes.max()) if len(component_sizes) else 0,
        "n_predicted_pairs": n_pred,
        "n_true_pairs": n_pos,
        "n_correct_pairs": correct,
    }


def _codes(values, name: str) -> np.ndarray:
    series = pd.Series(np.asarray(values, dtype=object))
    if series.isna().any():
        row = int(np.flatnonzero(series.isna().to_numpy())[0])
        raise InvalidInputError(
            f"The {name!r} parameter of grouping_scores has a missing value at position {row}; "
            "every image needs an id (give singletons ids of their own)."
        )
    return pd.factorize(series.astype(str), sort=False)[0].astype(np.int64)


# --------------------------------------------------------------------------- detection


def _require_columns(
    frame,
    columns: Sequence[str],
    name: str,
    func: str,
    *,
    expected: str = "a pandas.DataFrame",
    noun: str = "columns",
) -> None:
    check_type(frame, pd.DataFrame, name, func, expected)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InvalidInputError(
            f"The {name!r} table given to {func} lacks the {noun} {missing[:5]}; "
            f"it has {list(frame.columns)[:10]}."
        )


def _cells(frame: pd.DataFrame, task_of: Mapping[str, str]) -> set[tuple[str, str]]:
    attributes = frame["attribute"].astype(str).map(lambda a: task_of.get(a, a))
    return set(zip(frame["image_id"].astype(str), attributes, strict=True))


def detection_scores(
    flagged: pd.DataFrame,
    planted: pd.DataFrame,
    *,
    tasks: Mapping[str, Sequence[str]] | None = None,
    attributes: Sequence[str] | None = None,
) -> dict[str, float]:
    """Precision / recall / F1 of flagged cells against planted cells.

    A cell is an (``image_id``, ``attribute``) pair; duplicates count once.
    With F the flagged cells and P the planted ones:
    ``precision`` = |F & P| / |F| (1.0 when nothing is flagged),
    ``recall`` = |F & P| / |P| (1.0 when nothing is planted),
    ``f1`` = 2 precision recall / (precision + recall).

    Parameters
    ----------
    flagged : pandas.DataFrame
        ``image_id``, ``attribute`` (e.g. the report's ``label_issues``).
    planted : pandas.DataFrame
        ``image_id``, ``attribute`` (e.g. :attr:`NoisyLabels.planted`).
    tasks : mapping of str to sequence of str, optional
        One-of-K tasks (``Dataset.tasks``): the one-hot attributes
        ``age=old``, ``age=young`` ... of a task count as the one cell ``age``,
        so a planted ``age`` flip matches a flagged ``age=old``.
    attributes : sequence of str, optional
        Score only these attributes (task names for one-of-K tasks), e.g. the
        invisible ones.

    Returns
    -------
    dict
        ``precision``, ``recall``, ``f1``, ``n_flagged``, ``n_planted``,
        ``n_true_positives``.
    """
    func = "detection_scores"
    _require_columns(flagged, ("image_id", "attribute"), "flagged", func)
    _require_columns(planted, ("image_id", "attribute"), "planted", func)
    task_of = {member: task for task, members in (tasks or {}).items() for member in members}
    found, truth = _cells(flagged, task_of), _cells(planted, task_of)
    if attributes is not None:
        keep = {str(a) for a in attributes}
        found = {cell for cell in found if cell[1] in keep}
        truth = {cell for cell in truth if cell[1] in keep}
    hits = len(found & truth)
    precision, recall = _ratio(hits, len(found)), _ratio(hits, len(truth))
    return {
        "precision": precision,
        "recall": recall,
        "f1": _f1(precision, recall),
        "n_flagged": len(found),
        "n_planted": len(truth),
        "n_true_positives": hits,
    }


def precision_at_k(
    ranked: pd.DataFrame,
    planted: pd.DataFrame,
    k: int = 100,
    *,
    tasks: Mapping[str, Sequence[str]] | None = None,
) -> float:
    """Share of the first ``k`` cells of ``ranked`` that are planted: what a reviewer of
    the top ``k`` flags finds. ``hits in top k / min(k, len(ranked))``; NaN when empty.

    Parameters
    ----------
    ranked : pandas.DataFrame
        ``image_id``, ``attribute``, most suspicious first (the report's
        ``label_issues`` are ranked by ``confidence``).
    planted : pandas.DataFrame
        ``image_id``, ``attribute``.
    k : int, default=100
    tasks : mapping, optional
        One-of-K tasks, as in :func:`detection_scores`.
    """
    func = "precision_at_k"
    _require_columns(ranked, ("image_id", "attribute"), "ranked", func)
    _require_columns(planted, ("image_id", "attribute"), "planted", func)
    k = check_int(k, "k", func, min_value=1)
    task_of = {member: task for task, members in (tasks or {}).items() for member in members}
    top = ranked.head(k)
    if not len(top):
        return float("nan")
    truth = _cells(planted, task_of)
    hits = sum(
        (str(i), task_of.get(str(a), str(a))) in truth
        for i, a in zip(top["image_id"], top["attribute"], strict=True)
    )
    return hits / len(top)


# --------------------------------------------------------------------------- cleaning


def label_frame(dataset: Dataset) -> pd.DataFrame:
    """The labels of a :class:`Dataset` as a DataFrame indexed by ``image_id``.

    Returns
    -------
    pandas.DataFrame of shape (n_images, n_attributes), dtype float32
        1.0 / 0.0 / NaN, columns = ``dataset.attributes``.
    """
    if not isinstance(dataset, Dataset):
        raise InvalidTypeError(
            f"The 'dataset' parameter of label_frame must be a Dataset; "
            f"got {type(dataset).__name__}."
        )
    index = pd.Index(dataset.ids.astype(str), name="image_id")
    return pd.DataFrame(dataset.labels, index=index, columns=list(dataset.attributes))


def _aligned(frame, reference: pd.DataFrame, name: str, func: str) -> np.ndarray:
    """``frame`` as a float array on ``reference``'s rows and columns (NaN where absent)."""
    if not isinstance(frame, pd.DataFrame):
        raise InvalidTypeError(
            f"The {name!r} parameter of {func} must be a pandas.DataFrame indexed by image_id; "
            f"got {type(frame).__name__}."
        )
    extra_rows = frame.index.difference(reference.index)
    if len(extra_rows):
        raise InvalidInputError(
            f"The {name!r} table of {func} has {len(extra_rows)} image ids that the noisy table "
            f"lacks (first: {extra_rows[0]!r}); a cleaned table may only drop rows."
        )
    missing = [c for c in reference.columns if c not in frame.columns]
    if missing:
        raise InvalidInputError(
            f"The {name!r} table of {func} lacks the attribute columns {missing[:5]}; "
            "give it the same attribute columns as the noisy table."
        )
    values = frame.loc[:, list(reference.columns)].reindex(reference.index)
    return values.to_numpy(dtype=np.float64)


def cleaning_scores(
    noisy: pd.DataFrame, cleaned: pd.DataFrame, truth: pd.DataFrame
) -> dict[str, float]:
    """What a cleaning strategy did to the cells, judged against the truth.

    All three tables are indexed by ``image_id`` with the same attribute
    columns (1.0 / 0.0 / NaN); ``cleaned`` may lack rows (pruned images: all
    their cells count as removed). Over the labelled cells of ``noisy``:

    * planted = noisy != truth; clean = noisy == truth;
    * changed = cleaned differs from noisy (a new value, set missing, or the
      row dropped); of those, *relabelled* got a value, *removed* did not;
    * ``precision`` = |changed & planted| / |changed|,
      ``recall`` = |changed & planted| / |planted|, ``f1`` their harmonic mean
      (1.0 for 0 / 0);
    * ``n_corrected`` = planted cells relabelled to the true value;
    * ``n_clean_removed`` = clean cells removed (over-pruning);
      ``n_clean_corrupted`` = clean cells relabelled to a wrong value;
    * ``n_errors_left`` = labelled cells of ``cleaned`` that differ from the
      truth; ``error_rate_after`` = that over the labelled cells of ``cleaned``
      (``error_rate_before`` the same for ``noisy``).

    Returns
    -------
    dict
        The counts and rates above, plus ``n_cells`` and ``n_images_removed``.
    """
    func = "cleaning_scores"
    if not isinstance(noisy, pd.DataFrame):
        raise InvalidTypeError(
            f"The 'noisy' parameter of {func} must be a pandas.DataFrame indexed by image_id; "
            f"got {type(noisy).__name__}."
        )
    given = noisy.to_numpy(dtype=np.float64)
    after = _aligned(cleaned, noisy, "cleaned", func)
    true = _aligned(truth, noisy, "truth", func)
    if np.isnan(true[~np.isnan(given)]).any():
        raise InvalidInputError(
            f"The 'truth' table of {func} has missing values where the noisy table has labels; "
            "the truth must cover every labelled cell."
        )
    labelled = ~np.isnan(given)
    planted = labelled & (given != true)
    clean = labelled & ~planted
    kept = ~np.isnan(after)
    changed = labelled & (~kept | (after != given))
    relabelled = changed & kept
    removed = changed & ~kept
    hits = int((changed & planted).sum())
    precision = _ratio(hits, int(changed.sum()))
    recall = _ratio(hits, int(planted.sum()))
    wrong_after = kept & (after != true)
    return {
        "precision": precision,
        "recall": recall,
        "f1": _f1(precision, recall),
        "n_cells": int(labelled.sum()),
        "n_planted": int(planted.sum()),
        "n_changed": int(changed.sum()),
        "n_relabelled": int(relabelled.sum()),
        "n_removed": int(removed.sum()),
        "n_images_removed": int(len(noisy.index.difference(cleaned.index))),
        "n_corrected": int((planted & relabelled & (after == true)).sum()),
        "n_clean_removed": int((clean & removed).sum()),
        "n_clean_corrupted": int((clean & relabelled).sum()),
        "n_errors_left": int(wrong_after.sum()),
        "error_rate_before": int(planted.sum()) / int(labelled.sum()) if labelled.any() else 0.0,
        "error_rate_after": int(wrong_after.sum()) / int(kept.sum()) if kept.any() else 0.0,
    }


# --------------------------------------------------------------------------- downstream


def _features(embeddings, func: str) -> tuple[pd.Index, np.ndarray]:
    if not isinstance(embeddings, Embeddings):
        raise InvalidTypeError(
            f"The 'embeddings' parameter of {func} must be an Embeddings "
            f"(clusterclean.as_embeddings(ids, vectors)); got {type(embeddings).__name__}."
        )
    return pd.Index(embeddings.ids.astype(str)), np.asarray(embeddings.vectors, dtype=np.float64)


def _rows(index: pd.Index, labels: pd.DataFrame, name: str, func: str) -> np.ndarray:
    positions = index.get_indexer(labels.index.astype(str))
    if (positions < 0).any():
        first = labels.index[int(np.flatnonzero(positions < 0)[0])]
        raise InvalidInputError(
            f"The {name!r} labels of {func} hold {int((positions < 0).sum())} image ids without "
            f"an embedding (first: {first!r}); embed them or drop those rows."
        )
    return positions


def _check_labels(labels, name: str, func: str, attributes: Sequence[str]) -> pd.DataFrame:
    expected = "a pandas.DataFrame indexed by image_id"
    _require_columns(labels, attributes, name, func, expected=expected, noun="attributes")
    return labels


class _Probes:
    """One logistic regression per attribute, fitted on the labelled rows only."""

    def __init__(self, features: np.ndarray, labels: np.ndarray, *, c: float, seed: int) -> None:
        from sklearn.linear_model import LogisticRegression

        self.models: list = []
        for column in labels.T:
            known = ~np.isnan(column)
            classes = np.unique(column[known])
            if len(classes) < 2:  # one class (or none) seen: predict it (or 0) everywhere
                self.models.append(float(classes[0]) if len(classes) else 0.0)
                continue
            model = LogisticRegression(C=c, solver="liblinear", random_state=seed)
            self.models.append(model.fit(features[known], column[known]))

    def f1(self, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Positive-class F1 per attribute on the labelled rows; NaN when undefined."""
        from sklearn.metrics import f1_score

        scores = np.full(labels.shape[1], np.nan)
        for a, (model, column) in enumerate(zip(self.models, labels.T, strict=True)):
            known = ~np.isnan(column)
            if not known.any():
                continue
            x = features[known]
            pred = np.full(len(x), model) if isinstance(model, float) else model.predict(x)
            scores[a] = f1_score(column[known], pred, zero_division=np.nan)
        return scores


def _standardize(features: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Standardise every feature with the mean / std of the training rows."""
    mean = features[rows].mean(axis=0)
    std = features[rows].std(axis=0)
    return (features - mean) / np.where(std > 0, std, 1.0)


def probe_f1(
    embeddings: Embeddings,
    train: pd.DataFrame,
    test: pd.DataFrame,
    *,
    attributes: Sequence[str] | None = None,
    c: float = 1.0,
    seed: int = 0,
) -> pd.Series:
    """Train a linear probe per attribute on ``train``, score its F1 on ``test``.

    Each attribute gets its own ``LogisticRegression(C=c)`` fitted on the
    standardised embeddings of the ``train`` rows where it is labelled (an
    attribute with one class in ``train`` predicts that class). The score is the
    F1 of the positive class on the labelled ``test`` rows,
    F1 = 2 TP / (2 TP + FP + FN), NaN when the test rows hold no positive and
    none is predicted.

    Parameters
    ----------
    embeddings : Embeddings
        Features; every row of ``train`` and ``test`` needs one (matched by id).
    train, test : pandas.DataFrame
        Label tables indexed by ``image_id`` (1.0 / 0.0 / NaN).
    attributes : sequence of str, optional
        Default: the columns of ``train``.
    c : float
        Inverse regularisation strength of the logistic regression.
    seed : int
        ``random_state`` of the solver.

    Returns
    -------
    pandas.Series
        F1 per attribute (index = attribute names).
    """
    func = "probe_f1"
    index, features = _features(embeddings, func)
    attributes = list(train.columns if attributes is None else attributes)
    _check_labels(train, "train", func, attributes)
    _check_labels(test, "test", func, attributes)
    train_rows = _rows(index, train, "train", func)
    test_rows = _rows(index, test, "test", func)
    scaled = _standardize(features, train_rows)
    probes = _Probes(scaled[train_rows], train[attributes].to_numpy(np.float64), c=c, seed=seed)
    scores = probes.f1(scaled[test_rows], test[attributes].to_numpy(np.float64))
    return pd.Series(scores, index=attributes, name="f1")


def macro_f1(
    per_attribute: pd.Series, groups: Mapping[str, Sequence[str]] | None = None
) -> dict[str, float]:
    """Mean F1 over all attributes and over each named group (NaN scores skipped).

    Returns
    -------
    dict
        ``macro_f1`` and ``macro_f1_<group>`` for every group.
    """
    out = {"macro_f1": float(np.nanmean(per_attribute.to_numpy(dtype=np.float64)))}
    for name, members in (groups or {}).items():
        values = per_attribute.reindex(list(members)).to_numpy(dtype=np.float64)
        out[f"macro_f1_{name}"] = float(np.nanmean(values)) if np.isfinite(values).any() else np.nan
    return out


def train_val_experiments(
    embeddings: Embeddings,
    raw: pd.DataFrame,
    cleaned: pd.DataFrame,
    *,
    train_ids: Sequence[str],
    val_ids: Sequence[str],
    truth: pd.DataFrame | None = None,
    groups: Mapping[str, Sequence[str]] | None = None,
    c: float = 1.0,
    seed: int = 0,
) -> pd.DataFrame:
    """The four train/val experiments of the PETA component-cleaning article.

    * A: train on raw labels, validate on raw labels (no cleaning);
    * B: train on cleaned labels, validate on cleaned labels;
    * C: train on cleaned labels, validate on raw labels;
    * D: train on raw labels, validate on cleaned labels.

    "Cleaned" uses the rows and cells of ``cleaned`` (pruned images and
    removed cells are left out of training and of validation alike). Each
    row is scored against its own validation labels (``macro_f1...``, what the
    article could measure) and, when ``truth`` is given, against the true labels
    of the same validation images (``true_macro_f1...``).

    Parameters
    ----------
    embeddings : Embeddings
    raw, cleaned : pandas.DataFrame
        Label tables indexed by ``image_id`` with the same attribute columns.
    train_ids, val_ids : sequence of str
        The images of each split.
    truth : pandas.DataFrame, optional
        True labels, same columns.
    groups : mapping of str to sequence of str, optional
        Named attribute groups (e.g. visible / invisible) for extra macro columns.
    c, seed
        As in :func:`probe_f1`.

    Returns
    -------
    pandas.DataFrame
        One row per experiment: ``experiment``, ``train_labels``, ``val_labels``,
        ``n_train``, ``n_val``, the macro F1 columns.
    """
    func = "train_val_experiments"
    index, features = _features(embeddings, func)
    attributes = list(_check_labels(raw, "raw", func, []).columns)
    _check_labels(cleaned, "cleaned", func, attributes)
    tables = {"raw": raw, "cleaned": cleaned}
    if truth is not None:
        _check_labels(truth, "truth", func, attributes)
    train_ids = pd.Index([str(i) for i in train_ids])
    val_ids = pd.Index([str(i) for i in val_ids])
    all_train = _rows(index, raw.loc[raw.index.intersection(train_ids)], "raw", func)
    scaled = _standardize(features, all_train)
    probes = {}
    for name, table in tables.items():
        part = table.loc[table.index.intersection(train_ids), attributes]
        rows = _rows(index, part, name, func)
        probes[name] = (_Probes(scaled[rows], part.to_numpy(np.float64), c=c, seed=seed), len(part))
    records = []
    for experiment, (train_name, val_name) in EXPERIMENTS.items():
        probe, n_train = probes[train_name]
        val = tables[val_name].loc[tables[val_name].index.intersection(val_ids), attributes]
        rows = _rows(index, val, val_name, func)
        record = {
            "experiment": experiment,
            "train_labels": train_name,
            "val_labels": val_name,
            "n_train": n_train,
            "n_val": len(val),
        }
        scores = pd.Series(probe.f1(scaled[rows], val.to_numpy(np.float64)), index=attributes)
        record.update(macro_f1(scores, groups))
        if truth is not None:
            true_val = truth.reindex(val.index)[attributes].to_numpy(np.float64)
            true_scores = pd.Series(probe.f1(scaled[rows], true_val), index=attributes)
            record.update({f"true_{k}": v for k, v in macro_f1(true_scores, groups).items()})
        records.append(record)
    return pd.DataFrame(records)


# --------------------------------------------------------------------------- end to end


def parse_injection(text: str) -> tuple[str, float]:
    """Parse a noise specification ``KIND:RATE`` such as ``disagreement:0.1``.

    Returns
    -------
    (str, float)
        The noise kind (one of :data:`clusterclean.synth.NOISE_KINDS`) and the
        rate in [0, 0.5].
    """
    from .synth import NOISE_KINDS

    kind, sep, rate_text = str(text).partition(":")
    try:
        rate = float(rate_text)
    except ValueError:
        rate = None
    if not sep or kind not in NOISE_KINDS or rate is None or not 0.0 <= rate <= 0.5:
        raise InvalidInputError(
            f"The noise specification must be KIND:RATE with KIND one of {list(NOISE_KINDS)} "
            f"and RATE a float in [0, 0.5], e.g. 'disagreement:0.1'. Got {text!r} instead."
        )
    return kind, rate


@dataclass(frozen=True)
class Evaluation:
    """Everything :func:`evaluate_cleaning` measured.

    Attributes
    ----------
    report : Report
        The pipeline's report on the noisy labels.
    planted : pandas.DataFrame
        The planted cells (:func:`clusterclean.synth.inject_noise`).
    truth, noisy : pandas.DataFrame
        True and noisy labels (:func:`label_frame` form, one-hot for tasks).
    cleaned : dict of str to pandas.DataFrame
        The labels after each strategy (pruned images absent).
    grouping : dict or None
        :func:`grouping_scores` of the components vs the ``group`` column.
    detection : pandas.DataFrame
        One row per (``method``, ``attributes``): ``method`` is
        ``label_issues`` (the report's flagged cells, :func:`detection_scores`)
        or a strategy (its changed cells, :func:`cleaning_scores`);
        ``attributes`` is ``all`` or an attribute group name.
    downstream : pandas.DataFrame or None
        One row per training labels (``raw``, ``oracle``, each strategy):
        :func:`macro_f1` of a linear probe trained on the train split and
        scored on the TRUE labels of the test split; None without splits.
    n_disputed_pairs, n_disputed_cells : int
        (group, attribute) pairs, and their cells, on which the labels given
        as the truth already disagree (:class:`clusterclean.synth.NoisyLabels`):
        no noise is planted there, and flags on them count as false positives.
    """

    report: Any
    planted: pd.DataFrame
    truth: pd.DataFrame
    noisy: pd.DataFrame
    cleaned: dict[str, pd.DataFrame]
    grouping: dict[str, float] | None
    detection: pd.DataFrame
    downstream: pd.DataFrame | None
    n_disputed_pairs: int = 0
    n_disputed_cells: int = 0

    def summary(self) -> dict[str, Any]:
        """A JSON-ready digest: grouping, detection and downstream rows, and the seconds
        the pipeline took (``run_seconds``, run.json's ``timings.total``)."""
        return {
            "n_images": int(len(self.noisy)),
            "run_seconds": self.report.run_info.timings.get("total"),
            "n_planted_cells": int(len(self.planted)),
            "n_disputed_pairs": int(self.n_disputed_pairs),
            "n_disputed_cells": int(self.n_disputed_cells),
            "grouping": self.grouping,
            "detection": _records(self.detection),
            "downstream": None if self.downstream is None else _records(self.downstream),
        }


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
        for row in frame.to_dict(orient="records")
    ]


def write_evaluation(evaluation: Evaluation, out: str | Path) -> Path:
    """Write an :class:`Evaluation` to a folder, each file atomically.

    Files: ``evaluation.json`` (:meth:`Evaluation.summary`),
    ``detection.parquet``, ``downstream.parquet`` (when probes ran) and
    ``planted.parquet`` (labels as strings, since one-of-K values are text).

    Returns
    -------
    Path
        The folder.
    """
    import json

    from .atomic import atomic_write

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)

    text = json.dumps(evaluation.summary(), indent=2, default=_json_default) + "\n"
    atomic_write(folder / "evaluation.json", lambda tmp: tmp.write_text(text))
    planted = evaluation.planted.astype({"true_label": str, "given_label": str})
    tables = {"detection": evaluation.detection, "planted": planted}
    if evaluation.downstream is not None:
        tables["downstream"] = evaluation.downstream
    for name, frame in tables.items():
        atomic_write(
            folder / f"{name}.parquet", lambda tmp, frame=frame: frame.to_parquet(tmp, index=False)
        )
    return folder


def _json_default(value):
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return None if np.isnan(value) else float(value)
    return str(value)


def _wide_table(labels) -> pd.DataFrame:
    """A wide labels table with an ``image_id`` column (``image`` is renamed)."""
    if isinstance(labels, (str, Path)):
        path = Path(labels)
        if not path.is_file():
            raise InvalidInputError(f"The labels file {str(path)!r} does not exist.")
        table = pd.read_parquet(path) if path.suffix in (".parquet", ".pq") else pd.read_csv(path)
    elif isinstance(labels, pd.DataFrame):
        table = labels.copy()
    else:
        raise InvalidTypeError(
            "The 'labels' parameter of evaluate_cleaning must be a path to a CSV/Parquet file or "
            f"a pandas.DataFrame; got {type(labels).__name__}."
        )
    if "image_id" not in table.columns:
        for candidate in ("image", "path", "filename"):
            if candidate in table.columns:
                table = table.rename(columns={candidate: "image_id"})
                break
        else:
            raise InvalidInputError(
                "The labels table needs an image column ('image_id', 'image', 'path' or "
                f"'filename'); its columns are {list(table.columns)}."
            )
    return table


def pca_features(embeddings: Embeddings, train_ids, n_components: int) -> Embeddings:
    """Embeddings projected on the top principal axes of the training rows.

    x -> (x - mean) @ V[:n_components].T with mean and V (right singular
    vectors, by seeded randomized SVD) of the ``train_ids`` rows; the probes
    train much faster on them.
    Returned unchanged when ``n_components`` >= the dimension.
    """
    index = pd.Index(embeddings.ids.astype(str))
    vectors = embeddings.vectors.astype(np.float64)
    if n_components >= vectors.shape[1]:
        return embeddings
    rows = index.get_indexer(pd.Index(train_ids).astype(str))
    if (rows < 0).any() or len(rows) == 0:
        raise InvalidInputError(
            "pca_features needs an embedding for every training image and at least one "
            f"training image; {int((rows < 0).sum())} of {len(rows)} have none."
        )
    mean = vectors[rows].mean(axis=0)
    from sklearn.utils.extmath import randomized_svd

    _, _, axes = randomized_svd(vectors[rows] - mean, n_components, random_state=0)
    projected = (vectors - mean) @ axes[:n_components].T
    return Embeddings(ids=embeddings.ids, vectors=projected.astype(np.float32), backbone="pca")


def evaluate_cleaning(
    labels,
    *,
    kind: str = "disagreement",
    rate: float = 0.1,
    seed: int = 0,
    images: str | Path | None = None,
    embeddings: Embeddings | str | Path | None = None,
    config=None,
    strategies: Sequence[str] | None = None,
    attribute_groups: Mapping[str, Sequence[str]] | None = None,
    confusions: Sequence[tuple[str, str]] | None = None,
    probe: bool = True,
    probe_dim: int = 64,
    probe_features: Embeddings | None = None,
    progress: bool = False,
) -> Evaluation:
    """Plant noise in trusted labels, run the pipeline and every strategy, measure.

    1. ``inject_noise(labels, kind=kind, rate=rate, seed=seed)`` plants errors
       in ``labels`` (taken as the truth);
    2. :func:`clusterclean.pipeline.run` on the noisy labels (with ``images`` or
       precomputed ``embeddings``);
    3. every strategy of :func:`clusterclean.strategies.clean_labels` with its
       default options;
    4. measures: :func:`grouping_scores` (when a ``group`` column is known),
       :func:`detection_scores` of ``label_issues`` (every suspected cell, and as
       ``flagged_precision`` / ``flagged_recall`` / ``flagged_f1`` the ``is_flagged``
       ones), :func:`cleaning_scores`
       of each strategy, per attribute group; and, when ``probe`` and the
       labels have ``train`` and ``test`` splits, :func:`probe_f1` of probes
       trained on raw / oracle / cleaned train labels and scored on the true
       test labels (features: the embeddings projected on their top
       ``probe_dim`` principal axes of the train rows).

    Parameters
    ----------
    labels : str, Path or pandas.DataFrame
        The trusted wide labels table (image column, optional ``split`` and
        ``group``, attributes; one-of-K columns listed in
        ``config.multiclass_columns``).
    kind, rate, seed, confusions
        The noise, as in :func:`clusterclean.synth.inject_noise`.
    images, embeddings
        As in :func:`clusterclean.pipeline.run`; one is needed.
    config : RunConfig, optional
        Pipeline options.
    strategies : sequence of str, optional
        Default: all of :data:`clusterclean.strategies.STRATEGIES`.
    attribute_groups : mapping of str to sequence of str, optional
        Named attribute subsets (e.g. ``visible`` / ``invisible``) scored apart.
    probe : bool
        Run the downstream linear probes.
    probe_dim : int
        Principal axes kept for the probes.
    probe_features : Embeddings, optional
        Features for the probes, e.g. :func:`pca_features` computed once for
        many calls; default: ``pca_features(embeddings, train ids, probe_dim)``.
    progress : bool
        Progress bars of the pipeline.

    Returns
    -------
    Evaluation
    """
    from .dataset import load_dataset
    from .pipeline import RunConfig, run
    from .strategies import STRATEGIES, clean_labels
    from .synth import inject_noise

    config = config or RunConfig()
    strategies = list(STRATEGIES if strategies is None else strategies)
    table = _wide_table(labels)
    noisy_labels = inject_noise(table, kind=kind, rate=rate, seed=seed, confusions=confusions)
    report = run(
        images=images,
        labels=noisy_labels.labels,
        embeddings=embeddings,
        config=config,
        progress=progress,
        image_column="image_id",
    )
    dataset = report.dataset
    noisy = label_frame(dataset)
    truth_dataset = load_dataset(
        table, image_column="image_id", multiclass_columns=config.multiclass_columns
    )
    truth = label_frame(truth_dataset).reindex(index=noisy.index, columns=noisy.columns)
    truth = truth.fillna(0.0).where(noisy.notna() | truth.notna())
    groups = {"all": list(noisy.columns)}
    task_of = {m: t for t, members in dataset.tasks.items() for m in members}
    for name, members in (attribute_groups or {}).items():
        wanted = set(members)
        groups[name] = [c for c in noisy.columns if task_of.get(c, c) in wanted]
    rows = []
    for name, columns in groups.items():
        names = sorted({task_of.get(c, c) for c in columns})
        issues = report.label_issues
        found = detection_scores(
            issues, noisy_labels.planted, tasks=dataset.tasks, attributes=names
        )
        # label_issues is ranked by confidence: the top 100 are what a reviewer reads first
        ranked = issues[issues["attribute"].map(lambda a: task_of.get(a, a)).isin(names)]
        top = precision_at_k(ranked, noisy_labels.planted, 100, tasks=dataset.tasks)
        row = {"method": "label_issues", "attributes": name, **found, "precision_at_100": top}
        if "is_flagged" in issues.columns:  # the confident cells: what a user reviews first
            flagged = detection_scores(
                issues[issues["is_flagged"]],
                noisy_labels.planted,
                tasks=dataset.tasks,
                attributes=names,
            )
            row.update({f"flagged_{k}": flagged[k] for k in ("precision", "recall", "f1")})
        rows.append(row)
    cleaned = {}
    for strategy in strategies:
        result = clean_labels(report, strategy=strategy)
        cleaned[strategy] = label_frame(result.dataset)
        for name, columns in groups.items():
            scores = cleaning_scores(noisy[columns], cleaned[strategy][columns], truth[columns])
            rows.append({"method": strategy, "attributes": name, **scores})
    detection = pd.DataFrame(rows)
    grouping = None
    if "group" in dataset.table.columns and dataset.table["group"].notna().all():
        component_ids = report.images.set_index("image_id").loc[noisy.index, "component_id"]
        grouping = grouping_scores(component_ids.to_numpy(), dataset.table["group"].to_numpy())
    downstream = None
    if probe:
        downstream = _downstream(
            report, noisy, truth, cleaned, groups, probe_features or probe_dim, seed
        )
    logger.info(
        "evaluate_cleaning: %s %.2f, %d planted cells, label_issues F1 %.3f",
        kind,
        rate,
        len(noisy_labels.planted),
        rows[0]["f1"],
    )
    return Evaluation(
        report=report,
        planted=noisy_labels.planted,
        truth=truth,
        noisy=noisy,
        cleaned=cleaned,
        grouping=grouping,
        detection=detection,
        downstream=downstream,
        n_disputed_pairs=noisy_labels.n_disputed_pairs,
        n_disputed_cells=noisy_labels.n_disputed_cells,
    )


def _downstream(report, noisy, truth, cleaned, groups, features, seed) -> pd.DataFrame | None:
    """Probe macro-F1 per training labels; ``features`` = Embeddings or a PCA dimension."""
    table = report.dataset.table
    if "split" not in table.columns:
        logger.info("evaluate_cleaning: no 'split' column, downstream probes skipped")
        return None
    split = pd.Series(table["split"].to_numpy(), index=noisy.index)
    train_ids, test_ids = split.index[split == "train"], split.index[split == "test"]
    if len(train_ids) == 0 or len(test_ids) == 0:
        logger.info("evaluate_cleaning: no train or no test images, downstream probes skipped")
        return None
    if not isinstance(features, Embeddings):
        features = pca_features(report.embeddings, train_ids, features)
    test = truth.loc[test_ids]
    named = {k: v for k, v in groups.items() if k != "all"}
    sources = {"raw": noisy, "oracle": truth, **cleaned}
    rows = []
    for name, frame in sources.items():
        train = frame.loc[frame.index.intersection(train_ids)]
        scores = probe_f1(features, train, test, seed=seed)
        rows.append({"labels": name, "n_train": len(train), **macro_f1(scores, named)})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Benchmark:
    """A benchmark folder written by ``scripts/make_benchmark.py``, read back.

    Attributes
    ----------
    labels, leaky : pandas.DataFrame
        ``labels.csv`` / ``labels_leaky.csv`` (TRUE labels, ``image`` renamed
        ``image_id``): split by person / by image.
    embeddings : Embeddings
        ``embeddings.parquet``.
    groups : dict of str to list of str
        ``visible`` and ``invisible`` attribute names.
    confusions : list of (str, str)
        Related attribute pairs for ``class_conditional`` noise.
    info : dict
        ``benchmark.json`` (parameters, counts, timings).
    """

    labels: pd.DataFrame
    leaky: pd.DataFrame
    embeddings: Embeddings
    groups: dict[str, list[str]]
    confusions: list[tuple[str, str]]
    info: dict[str, Any]


def read_benchmark(folder: str | Path) -> Benchmark:
    """Read a benchmark folder (``labels.csv``, ``embeddings.parquet``, ``benchmark.json``)."""
    import json

    from .embed import load_embeddings

    folder = Path(folder)
    needed = ("benchmark.json", "labels.csv", "labels_leaky.csv", "embeddings.parquet")
    missing = [name for name in needed if not (folder / name).is_file()]
    if missing:
        raise InvalidInputError(
            f"The benchmark folder {str(folder)!r} lacks {missing}; make it with "
            f"`python scripts/make_benchmark.py --out {folder}`."
        )
    info = json.loads((folder / "benchmark.json").read_text())
    return Benchmark(
        labels=_wide_table(folder / "labels.csv"),
        leaky=_wide_table(folder / "labels_leaky.csv"),
        embeddings=load_embeddings(folder / "embeddings.parquet"),
        groups={k: list(v) for k, v in info["attributes"].items()},
        confusions=[(a, b) for a, b in info["confusions"]],
        info=info,
    )
