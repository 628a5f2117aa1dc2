"""The trust stage: how far to believe each suspected label cell, and which are grouping errors.

It follows scoring (:func:`clusterclean.scoring.score_components`) and reads only
the report tables. :func:`rank_label_issues` does two things:

1. **Grouping problems** (:func:`find_grouping_issues`, off by default). An image
   in its component's minority on at least ``min_grouping_attributes`` attributes
   at once is more likely another identity merged into the component than the
   victim of that many independent annotator mistakes. Its cells leave
   ``label_issues``; the image gets one row in ``grouping_issues`` instead.
2. **Confidence** (:func:`cell_confidence`). Every remaining suspected cell gets
   the estimated probability that its label really is wrong, a logistic model
   over what makes a component's vote reliable::

       z = b + sum_j w_j * (f_j - mu_j) / sigma_j,   confidence = 1 / (1 + exp(-z))

   with six features f (:data:`FEATURES`), in this order:

   * ``against`` = 1 - agreement: the share of the component's labelled images
     voting against the cell;
   * ``log2_n_known`` = log2(k_a): how many images voted;
   * ``n_other_rare`` = n_rare_labels - 1: the image's other minority cells
     (many at once = a grouping doubt);
   * ``n_disagreeing_attributes`` of the component;
   * ``centroid_cosine`` of the image to its component (1 when unknown);
   * ``mean_edge_cosine`` of the component's edges (1 when unknown).

   b, w, mu, sigma (:data:`MODEL`) were fitted by ``scripts/fit_trust.py`` on the
   development seed (0) of the benchmark suite, leave-one-dataset-out; the
   figures and the provenance are in ``docs/suite/trust.md``.

``label_issues`` comes back ranked by confidence (highest first; ties by image id
and attribute); ``is_flagged`` = confidence >= ``min_confidence``, the cut the fit
chose so that flagged cells were right at least 90 % of the time on the datasets
it was chosen on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ._validation import check_int
from .options import Option, declare, defaults

__all__ = [
    "OPTIONS",
    "FEATURES",
    "MODEL",
    "Trust",
    "cell_features",
    "cell_confidence",
    "find_grouping_issues",
    "rank_label_issues",
    "check_grouping",
    "MIN_GROUPING_AGREEMENT",
    "GROUPING_ADVICE",
]

logger = logging.getLogger(__name__)

#: The options of the trust stage, declared once (:mod:`clusterclean.options`).
OPTIONS = declare(
    "trust",
    Option(
        "min_confidence",
        0.31,
        "suspected cells with at least this confidence are is_flagged (chosen for >= 90% "
        "precision on the benchmark suite, docs/suite/trust.md)",
        "float",
        low=0.0,
        high=1.0,
    ),
    Option(
        "min_grouping_attributes",
        None,
        "an image in its component's minority on at least this many attributes is reported "
        "in grouping_issues, not as label errors (none: never; the suite found no gain)",
        "int",
        low=1,
        nullable=True,
    ),
)
_DEFAULTS = defaults(OPTIONS)

#: Feature names, in model order (see the module docstring).
FEATURES = (
    "against",
    "log2_n_known",
    "n_other_rare",
    "n_disagreeing_attributes",
    "centroid_cosine",
    "mean_edge_cosine",
)
#: The shipped model: fitted by scripts/fit_trust.py on the suite's development seed 0
#: (fashion_mild, photo_digits, two_styles), features standardised with ``mean`` and
#: ``scale``; provenance and held-out figures in docs/suite/trust.md (trust.json).
MODEL = {
    "intercept": 2.4892421832169407,
    "mean": (
        0.7271739705390731,
        2.3009551129611916,
        0.9560117302052786,
        3.2602639296187683,
        0.9219936185743103,
        0.8278688135122624,
    ),
    "scale": (
        0.08377371044123097,
        0.40386637345892357,
        1.3809981684315789,
        2.122461620878146,
        0.03919641086003392,
        0.04894865713613919,
    ),
    "weights": (
        0.9121427174858114,
        -0.13309391947541954,
        -1.2630231437176276,
        -0.7609551507072713,
        1.364123733331127,
        -0.32642088061010477,
    ),
}


@dataclass(frozen=True)
class Trust:
    """What the trust stage returns.

    Attributes
    ----------
    label_issues : DataFrame
        The suspected cells with ``confidence`` and ``is_flagged``, ranked by
        confidence (``TABLES["label_issues"]``).
    grouping_issues : DataFrame
        One row per image split off as a grouping problem
        (``TABLES["grouping_issues"]``); empty when ``min_grouping_attributes`` is None.
    """

    label_issues: pd.DataFrame
    grouping_issues: pd.DataFrame

    def n_label_issues(self, n_components: int) -> np.ndarray:
        """Suspected cells per component: ``components.parquet``'s ``n_label_issues``."""
        ids = self.label_issues["component_id"].to_numpy(dtype=np.int64)
        return np.bincount(ids, minlength=n_components).astype(np.int64)


def cell_features(
    label_issues: pd.DataFrame,
    images: pd.DataFrame,
    components: pd.DataFrame,
    component_attributes: pd.DataFrame,
) -> pd.DataFrame:
    """The model's features of every suspected cell, one row per ``label_issues`` row.

    Parameters
    ----------
    label_issues, images, components, component_attributes : DataFrame
        The report tables of one run (``clusterclean.report.TABLES``); ``images``
        needs ``n_rare_labels`` and may lack ``centroid_cosine``, ``components``
        may lack ``mean_edge_cosine`` (both then count as 1).

    Returns
    -------
    DataFrame of shape (n_cells, 6)
        Columns :data:`FEATURES`, float64, index aligned with ``label_issues``.
    """
    keys = pd.MultiIndex.from_arrays(
        [
            label_issues["component_id"].to_numpy(dtype=np.int64),
            label_issues["attribute"].astype(str).to_numpy(),
        ]
    )
    n_known = component_attributes.set_index(
        [
            component_attributes["component_id"].to_numpy(dtype=np.int64),
            component_attributes["attribute"].astype(str).to_numpy(),
        ]
    )["n_known"]
    known = n_known.reindex(keys).to_numpy(dtype=np.float64)
    image = images.set_index("image_id")
    image_ids = label_issues["image_id"]
    rare = image["n_rare_labels"].reindex(image_ids).to_numpy(dtype=np.float64)
    centroid = _column(image, "centroid_cosine").reindex(image_ids).to_numpy(np.float64)
    comp = components.set_index("component_id")
    ids = label_issues["component_id"]
    disagreeing = comp["n_disagreeing_attributes"].reindex(ids).to_numpy(dtype=np.float64)
    tight = _column(comp, "mean_edge_cosine").reindex(ids).to_numpy(dtype=np.float64)
    return pd.DataFrame(
        {
            "against": 1.0 - label_issues["agreement"].to_numpy(dtype=np.float64),
            "log2_n_known": np.log2(np.maximum(known, 1.0)),
            "n_other_rare": np.maximum(rare - 1.0, 0.0),
            "n_disagreeing_attributes": disagreeing,
            "centroid_cosine": np.nan_to_num(centroid, nan=1.0),
            "mean_edge_cosine": np.nan_to_num(tight, nan=1.0),
        },
        index=label_issues.index,
        columns=list(FEATURES),
    )


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    if name in frame.columns:
        return frame[name]
    return pd.Series(np.nan, index=frame.index, dtype=np.float64)


def cell_confidence(features: pd.DataFrame, model: dict | None = None) -> np.ndarray:
    """Probability that each suspected cell is wrong: the logistic model of the docstring.

    The sum runs feature by feature in :data:`FEATURES` order (not a BLAS product),
    so the bytes are the same whatever the thread count.

    Parameters
    ----------
    features : DataFrame
        :func:`cell_features`.
    model : dict, optional
        ``intercept``, ``mean``, ``scale``, ``weights`` (one per feature); :data:`MODEL`
        by default.

    Returns
    -------
    ndarray of shape (n_cells,), float64 in [0, 1]
    """
    model = MODEL if model is None else model
    z = np.full(len(features), float(model["intercept"]), dtype=np.float64)
    for j, name in enumerate(FEATURES):
        x = features[name].to_numpy(dtype=np.float64)
        z += float(model["weights"][j]) * (x - float(model["mean"][j])) / float(model["scale"][j])
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50.0, 50.0)))


def find_grouping_issues(
    label_issues: pd.DataFrame, *, min_grouping_attributes: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split off the images whose many minority cells say "another identity".

    Parameters
    ----------
    label_issues : DataFrame
        Suspected cells (``image_id``, ``component_id``, ``attribute``, ...).
    min_grouping_attributes : int >= 1
        An image with at least this many suspected cells is a grouping problem.

    Returns
    -------
    label_issues : DataFrame
        The cells of the other images, in their order.
    grouping_issues : DataFrame
        One row per such image: ``image_id``, ``component_id``,
        ``n_disagreeing_attributes``, ``disagreeing_attributes`` (in the cells'
        order), most attributes first, then by image id.
    """
    min_grouping_attributes = check_int(
        min_grouping_attributes, "min_grouping_attributes", "find_grouping_issues", min_value=1
    )
    counts = label_issues.groupby("image_id", sort=False)["attribute"].transform("size")
    odd = counts.to_numpy() >= min_grouping_attributes
    grouped = label_issues[odd].groupby(["image_id", "component_id"], sort=False)["attribute"]
    issues = grouped.agg(list).reset_index(name="disagreeing_attributes")
    issues.insert(2, "n_disagreeing_attributes", issues["disagreeing_attributes"].map(len))
    issues = issues.astype(
        {
            "image_id": label_issues["image_id"].dtype,
            "component_id": np.int32,
            "n_disagreeing_attributes": np.int64,
        }
    )
    issues = issues.sort_values(
        ["n_disagreeing_attributes", "image_id"], ascending=[False, True], kind="stable"
    ).reset_index(drop=True)
    return label_issues[~odd].reset_index(drop=True), issues


def rank_label_issues(
    label_issues: pd.DataFrame,
    images: pd.DataFrame,
    components: pd.DataFrame,
    component_attributes: pd.DataFrame,
    *,
    min_confidence: float = _DEFAULTS["min_confidence"],
    min_grouping_attributes: int | None = _DEFAULTS["min_grouping_attributes"],
) -> Trust:
    """The trust stage: grouping problems split off, then ``confidence`` and ``is_flagged``.

    Parameters
    ----------
    label_issues, images, components, component_attributes : DataFrame
        The tables of :func:`~clusterclean.scoring.score_components` (``images`` and
        ``components`` as the run reports them, with ``centroid_cosine`` and
        ``mean_edge_cosine`` when known).
    min_confidence : float in [0, 1], default=0.31
        ``is_flagged`` = confidence >= min_confidence.
    min_grouping_attributes : int >= 1 or None, default=None
        An image with at least this many suspected cells goes to ``grouping_issues``;
        None: never.

    Returns
    -------
    Trust
        ``label_issues`` ranked by confidence (highest first; ties by image id,
        then attribute) and ``grouping_issues``.
    """
    func = "rank_label_issues"
    checked = {
        o.name: o.check(value, func)
        for o, value in zip(OPTIONS, (min_confidence, min_grouping_attributes), strict=True)
    }
    # None = never: a threshold above any image's number of cells splits nothing off
    never = len(label_issues) + 1
    kept, grouping = find_grouping_issues(
        label_issues, min_grouping_attributes=checked["min_grouping_attributes"] or never
    )
    confidence = cell_confidence(cell_features(kept, images, components, component_attributes))
    kept = kept.assign(
        confidence=confidence, is_flagged=confidence >= checked["min_confidence"]
    ).sort_values(
        ["confidence", "image_id", "attribute"], ascending=[False, True, True], kind="stable"
    )
    kept = kept.reset_index(drop=True)
    logger.info(
        "trust: %d suspected cells, %d flagged at confidence >= %g, %d grouping problems",
        len(kept),
        int(kept["is_flagged"].sum()),
        checked["min_confidence"],
        len(grouping),
    )
    return Trust(label_issues=kept, grouping_issues=grouping)


#: Below this label agreement (:func:`check_grouping`) the run warns that many
#: components may join different identities. Fixed on the suite's development seeds
#: 0 and 100 before the reported seeds were looked at: the four datasets whose
#: components are mostly one identity scored 0.79-0.88, the four where most linked
#: pairs join two identities 0.25-0.50; 0.65 is midway (docs/suite/grouping_check.md).
MIN_GROUPING_AGREEMENT = 0.65
#: Fewer linked pairs or nearest outside pairs than this: too few to judge.
MIN_CHECK_PAIRS = 20
#: What to do when the check warns (the log and the HTML page say it).
GROUPING_ADVICE = (
    "Improve the grouping first: known identities (a 'group' column with --adapt groups), "
    "a backbone made for your images, or a higher --min-similarity."
)


#: Pairs compared at once: bounds the memory at (chunk, n_attributes) whatever the size.
_PAIR_CHUNK = 200_000


def _mean_differing(labels: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Mean over the pairs (a, b) of the attributes known in both with different values."""
    total = 0
    for start in range(0, len(a), _PAIR_CHUNK):
        x, y = labels[a[start : start + _PAIR_CHUNK]], labels[b[start : start + _PAIR_CHUNK]]
        total += int(((x != y) & ~np.isnan(x) & ~np.isnan(y)).sum())
    return total / len(a)


def check_grouping(
    labels: np.ndarray,
    component_ids: np.ndarray,
    edges: pd.DataFrame,
    neighbors,
    *,
    min_pairs: int = MIN_CHECK_PAIRS,
) -> dict | None:
    """How far the labels agree that the components are single identities.

    Linked images of one identity differ only where an annotator erred; images of
    two look-alike identities differ like an image and its nearest neighbour in
    another component. So::

        agreement = 1 - D_in / D_out

    with ``D_in`` the mean number of attributes, known in both, on which the two
    images of a graph edge inside one component differ, and ``D_out`` the same mean
    between each image and its most similar listed neighbour in another component.
    Near 1: components disagree far less than neighbours across components (what
    single identities with a few label errors do); near 0: they disagree as much, so
    many components join different identities and their suspected cells are
    disagreements between identities, not label errors. Label errors raise ``D_in``,
    so the agreement underestimates how pure the components are.

    Parameters
    ----------
    labels : ndarray of shape (n_images, n_attributes), float, NaN = unknown
        The attributes that identify (the scored ones, without per-image attributes).
    component_ids : ndarray of shape (n_images,)
    edges : pandas.DataFrame
        ``row_a``, ``row_b``: the graph's edges.
    neighbors : Neighbors
        The kNN lists (most similar first; -1 = none).
    min_pairs : int, default 20
        Fewer linked pairs or nearest outside pairs than this: None (too few to judge).

    Returns
    -------
    dict or None
        ``agreement``, ``within_disagreement`` (D_in), ``outside_disagreement``
        (D_out), ``n_within_pairs``, ``n_outside_pairs``, ``min_agreement``
        (:data:`MIN_GROUPING_AGREEMENT`) and ``reliable`` (agreement >= it); None
        when there are no attributes, fewer than ``min_pairs`` pairs of either kind,
        or no outside disagreement at all.
    """
    labels = np.asarray(labels, dtype=np.float32)  # the dataset's own dtype: no copy
    ids = np.asarray(component_ids)
    if labels.ndim != 2 or labels.shape[1] == 0:
        return None
    a, b = edges["row_a"].to_numpy(np.int64), edges["row_b"].to_numpy(np.int64)
    inside = ids[a] == ids[b]
    a, b = a[inside], b[inside]
    rows = np.asarray(neighbors.indices)
    other = (rows >= 0) & (ids[np.maximum(rows, 0)] != ids[:, None])
    has = other.any(axis=1)  # the lists are most similar first: the first one is nearest
    images = np.flatnonzero(has)
    nearest = rows[images, other[has].argmax(axis=1)]
    if min(len(a), len(images)) < min_pairs:
        return None
    within = _mean_differing(labels, a, b)
    outside = _mean_differing(labels, images, nearest)
    if outside == 0:
        return None
    agreement = 1.0 - within / outside
    return {
        "agreement": round(agreement, 4),
        "within_disagreement": round(within, 4),
        "outside_disagreement": round(outside, 4),
        "n_within_pairs": int(len(a)),
        "n_outside_pairs": int(len(images)),
        "min_agreement": MIN_GROUPING_AGREEMENT,
        "reliable": bool(agreement >= MIN_GROUPING_AGREEMENT),
    }
