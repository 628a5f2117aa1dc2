"""Calibrate the grouping cut from the data: pair precision and recall per cut, no labels.

Known positives come from augmented views of a sample of images
(:func:`clusterclean.views.embed_views`): two camera-like views of one photo
show one subject.

**Recall.** For each sampled image, its views *replace* it in the data set
(view 0 takes its row, views 1.. become extra rows): a subject photographed
``n_views`` times instead of once, among the data set's own photos. The graph
is then built by the run's own grouper (:class:`clusterclean.group.Grouper`,
with the refinement fitted on the real data: kNN search, link scores, cosine
floor, components, splits), and
``R(t)`` is the share of the views' pairs that end in one component at cut
``t``. At most ``INSERTED_FRACTION`` of the data set is replaced at a time, so
the neighbourhoods stay those of the data.

**Precision.** Random pairs cannot estimate it: above the useful cuts, the
random pairs that pass are mostly true pairs. Pairs are counted instead. The
real data's components at cut ``t`` hold ``G(t) = sum_c n_c (n_c - 1) / 2``
pairs. If the data hold ``T`` same-subject pairs, about ``T R(t)`` of them are
grouped, so the pair precision is ``P(t) = T R(t) / G(t)``. ``T`` is unknown,
but precision is at most 1 at every cut, so ``T <= G(t) / R(t)`` for all
``t``, and

    T_hat = min_t G(t) / R(t)

over the cuts where at least ``min_recalled`` view pairs and a share
``MIN_RECALL`` (one half) of them are grouped. The tail is left out: there
two views of one photo, which share its framing and pose, stay linked at cuts
where two real photos of one subject no longer do, ``R(t)`` is too high and
``T_hat`` would come out too small. ``T_hat`` is too large (the estimated
precision too high) by the share of false pairs at the cut that gives it,
and exact when that cut groups none. The estimated F1 is ``2 P R / (P + R)``.

What the estimate cannot see: where real views of a subject differ more
than the augmentations (another camera, another day), ``R(t)`` is too high
and the precision too low, at every cut. ``MIN_RECALL`` was chosen on the
benchmark's selection seed (docs/grouping), among 0.1, 0.5 and 0.9.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._contracts import Embeddings, Neighbors, check_embeddings
from ._validation import check_float, check_int, check_type
from .errors import InvalidInputError
from .group import Grouper, grouper_links
from .options import Option, declare
from .refine import Refinement
from .views import AugmentedViews

__all__ = [
    "OPTIONS",
    "Calibration",
    "calibrate_cut",
    "estimate_precision",
    "DEFAULT_CUTS",
]

#: The options of the calibrate stage, declared once (:mod:`clusterclean.options`).
OPTIONS = declare(
    "calibrate",
    Option(
        "target_precision",
        None,
        "with min_similarity auto: the lowest cut of at least this estimated pair "
        "precision (none: the cut of best estimated F1)",
        "float",
        low=0.0,
        high=1.0,
        nullable=True,
    ),
    Option(
        "n_calibration_views",
        2,
        "with min_similarity auto: augmented views per sampled image",
        "int",
        low=1,
    ),
    Option(
        "max_calibration_images",
        2000,
        "with min_similarity auto: images sampled for their views",
        "int",
        low=1,
    ),
)

logger = logging.getLogger(__name__)

#: Cuts tried on the link similarity.
DEFAULT_CUTS = np.round(np.arange(0.10, 0.99, 0.02), 2)
#: Largest share of the data set whose images are replaced by views at a time.
INSERTED_FRACTION = 0.1
#: Smallest recall R(t) of a cut that bounds the number of same-subject pairs
#: (chosen on the benchmark's selection seed among 0.1, 0.5 and 0.9).
MIN_RECALL = 0.5


def _f1(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    total = precision + recall
    return np.where(total > 0, 2 * precision * recall / np.maximum(total, 1e-12), 0.0)


@dataclass(frozen=True)
class Calibration:
    """Estimated pair precision and recall of the grouping at each cut.

    Attributes
    ----------
    cuts : ndarray of shape (n_cuts,), dtype float64
        Cuts on the link similarity, increasing.
    precision, recall : ndarray of shape (n_cuts,), dtype float64
        Estimated same-subject pair precision ``P(t)`` and recall ``R(t)``.
    n_grouped_pairs : ndarray of shape (n_cuts,), dtype int64
        ``G(t)``: pairs of images inside one component of the real data.
    n_same_pairs : float
        ``T_hat``: estimated same-subject pairs in the data.
    min_similarity : float
        The chosen cut.
    target_precision : float or None
        The precision asked for (None: the best estimated F1 was chosen).
    n_images : int
        Images whose views were used.
    n_views : int
        Views per image.
    n_view_pairs : int
        Pairs of one image's views (``n_images * C(n_views, 2)``, or one
        view-image pair per image when ``n_views == 1``).
    """

    cuts: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    n_grouped_pairs: np.ndarray
    n_same_pairs: float
    min_similarity: float
    target_precision: float | None
    n_images: int
    n_views: int
    n_view_pairs: int

    @property
    def f1(self) -> np.ndarray:
        """``2 P R / (P + R)`` at each cut (0 where both are 0)."""
        return _f1(self.precision, self.recall)

    def at(self, cut: float) -> dict[str, float]:
        """Estimated precision, recall and F1 at the grid cut nearest to ``cut``."""
        i = int(np.argmin(np.abs(self.cuts - cut)))
        return {
            "precision": float(self.precision[i]),
            "recall": float(self.recall[i]),
            "f1": float(self.f1[i]),
        }

    def summary(self) -> dict[str, Any]:
        """JSON-ready figures (``run.json["calibration"]``)."""
        chosen = self.at(self.min_similarity)
        return {
            "min_similarity": self.min_similarity,
            "estimated_precision": round(chosen["precision"], 4),
            "estimated_recall": round(chosen["recall"], 4),
            "estimated_f1": round(chosen["f1"], 4),
            "target_precision": self.target_precision,
            "n_images": self.n_images,
            "n_views": self.n_views,
            "n_view_pairs": self.n_view_pairs,
            "n_same_pairs": round(self.n_same_pairs, 1),
            "curve": {
                "cut": [round(float(c), 4) for c in self.cuts],
                "precision": [round(float(p), 4) for p in self.precision],
                "recall": [round(float(r), 4) for r in self.recall],
                "grouped_pairs": [int(g) for g in self.n_grouped_pairs],
            },
        }


def estimate_precision(
    recall: np.ndarray,
    n_grouped_pairs: np.ndarray,
    *,
    n_view_pairs: int,
    min_recalled: int = 50,
) -> tuple[np.ndarray, float]:
    """Pair precision from the recall of known positives and the grouped pair counts.

    ``T_hat = min_t G(t) / R(t)`` over the cuts where ``R(t) * n_view_pairs >=
    min_recalled``, ``R(t) >= MIN_RECALL`` and ``G(t) > 0``;
    ``P(t) = min(1, T_hat R(t) / G(t))``, and 1 where nothing is grouped (``G(t) = 0``).

    Parameters
    ----------
    recall : ndarray of shape (n_cuts,)
        ``R(t)``, the share of the views' pairs grouped at each cut.
    n_grouped_pairs : ndarray of shape (n_cuts,)
        ``G(t)``, the pairs inside the real data's components at each cut.
    n_view_pairs : int
        Pairs ``R`` was measured on.
    min_recalled : int, default=50
        Fewest grouped view pairs for a cut to bound ``T``.

    Returns
    -------
    precision : ndarray of shape (n_cuts,), dtype float64
    n_same_pairs : float
        ``T_hat``.
    """
    func = "estimate_precision"
    recall = np.asarray(recall, dtype=np.float64)
    grouped = np.asarray(n_grouped_pairs, dtype=np.float64)
    if recall.shape != grouped.shape or recall.ndim != 1:
        raise InvalidInputError(
            f"The 'recall' and 'n_grouped_pairs' parameters of {func} must be 1-D arrays of one "
            f"length. Got shapes {recall.shape} and {grouped.shape} instead."
        )
    n_view_pairs = check_int(n_view_pairs, "n_view_pairs", func, min_value=1)
    min_recalled = check_int(min_recalled, "min_recalled", func, min_value=1)
    usable = (recall * n_view_pairs >= min_recalled) & (recall >= MIN_RECALL) & (grouped > 0)
    if not usable.any():
        raise InvalidInputError(
            f"The calibration grouped fewer than {min_recalled} (or {MIN_RECALL:.0%}) of its "
            f"{n_view_pairs} view pairs at every cut, too few to estimate the precision. "
            "Calibrate on more images (max_calibration_images, --max-calibration-images) or "
            "give a fixed cut (min_similarity, --min-similarity 0.5)."
        )
    n_same = float(np.min(grouped[usable] / recall[usable]))
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(grouped > 0, np.minimum(1.0, n_same * recall / grouped), 1.0)
    return precision, n_same


def _check_cuts(cuts: Sequence[float] | None, func: str) -> np.ndarray:
    cuts = np.asarray(DEFAULT_CUTS if cuts is None else cuts, dtype=np.float64)
    if cuts.ndim != 1 or len(cuts) == 0 or np.any(np.diff(cuts) <= 0):
        raise InvalidInputError(
            f"The 'cuts' parameter of {func} must be a non-empty increasing sequence of "
            f"floats. Got {cuts.tolist()} instead."
        )
    return cuts


def _grouped_pairs(component_ids: np.ndarray) -> int:
    sizes = np.bincount(component_ids).astype(np.int64)
    return int((sizes * (sizes - 1) // 2).sum())


def _view_rows(views: AugmentedViews, n_images: int, func: str) -> tuple[np.ndarray, np.ndarray]:
    check_type(
        views,
        AugmentedViews,
        "views",
        func,
        "an AugmentedViews (see clusterclean.views.embed_views)",
    )
    rows = np.asarray(views.rows, dtype=np.int64)
    vectors = np.asarray(views.vectors, dtype=np.float32)
    if vectors.ndim != 3 or len(vectors) != len(rows) or vectors.shape[1] < 1:
        raise InvalidInputError(
            f"The views of {func} must hold vectors of shape (n_rows, n_views, dim) with one "
            f"row per entry of 'rows' ({len(rows)}). Got shape {vectors.shape} instead."
        )
    if len(rows) and (rows.min() < 0 or rows.max() >= n_images or len(np.unique(rows)) < len(rows)):
        raise InvalidInputError(
            f"The views' rows of {func} must be distinct rows of the {n_images} embeddings. Got "
            f"values in [{rows.min()}, {rows.max()}] ({len(rows) - len(np.unique(rows))} "
            "repeated); embed the views from the same dataset as the embeddings."
        )
    return rows, vectors


def _inserted(
    raw: np.ndarray, rows: np.ndarray, vectors: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The data with ``rows`` replaced by their views, and the pairs of each row's views.

    View 0 of ``rows[i]`` takes its place; views 1.. are appended. With a
    single view, it is appended and paired with the image itself.
    """
    n_images, (n_rows, n_views, dim) = len(raw), vectors.shape
    data = raw.copy()
    if n_views == 1:
        data = np.vstack([data, vectors[:, 0]])
        return data, np.stack([rows, n_images + np.arange(n_rows)], axis=1)
    data[rows] = vectors[:, 0]
    data = np.vstack([data, vectors[:, 1:].reshape(-1, dim)])
    nodes = np.column_stack(
        [rows, n_images + np.arange(n_rows * (n_views - 1)).reshape(n_rows, n_views - 1)]
    )
    first, second = np.triu_indices(n_views, k=1)
    pairs = np.stack([nodes[:, first].ravel(), nodes[:, second].ravel()], axis=1)
    return data, pairs


def calibrate_cut(
    embeddings: Embeddings,
    views: AugmentedViews,
    *,
    grouper: Grouper | None = None,
    refinement: Refinement | None = None,
    neighbors: Neighbors | None = None,
    target_precision: float | None = None,
    cuts: Sequence[float] | None = None,
    min_recalled: int = 50,
) -> Calibration:
    """Estimate the grouping's pair precision and recall per cut, and choose the cut.

    See the module docstring for the estimates. The cut chosen is the one of
    best estimated F1, or, with ``target_precision``, the lowest cut from which
    the estimated precision stays at or above it (the most recall at that
    precision); when no cut reaches it, the one of highest estimated precision
    (logged as a warning).

    Parameters
    ----------
    embeddings : Embeddings
        Backbone embeddings of the data set, shape (n_images, dim), unrefined.
    views : AugmentedViews
        Views of some of its rows, ``vectors`` of shape (m, n_views, dim), from
        the same backbone (:func:`clusterclean.views.embed_views`).
    refinement : Refinement, optional
        The refinement fitted on ``embeddings``; views get the same transform.
    neighbors : Neighbors, optional
        kNN lists already searched on the refined embeddings (saves one search).
    grouper : Grouper, optional
        The run's grouper (:class:`clusterclean.group.Grouper`; default its
        defaults): the calibration groups exactly as the run does. Its seed also
        orders the rounds of inserted views.
    target_precision : float in (0, 1], optional
        Precision to reach; None = best estimated F1.
    cuts : sequence of float, optional
        Cuts to try on the link similarity (default :data:`DEFAULT_CUTS`).
    min_recalled : int, default=50
        Fewest grouped view pairs for a cut to enter the estimate of ``T``.

    Returns
    -------
    Calibration
    """
    func = "calibrate_cut"
    check_embeddings(embeddings, func)
    rows, vectors = _view_rows(views, len(embeddings), func)
    if len(rows) == 0:
        raise InvalidInputError(f"The 'views' parameter of {func} holds no views; embed some.")
    if vectors.shape[2] != embeddings.dim:
        raise InvalidInputError(
            f"The views of {func} have dimension {vectors.shape[2]} but the embeddings "
            f"{embeddings.dim}: embed the views with the embeddings' backbone "
            f"({embeddings.backbone!r})."
        )
    if target_precision is not None:
        target_precision = check_float(target_precision, "target_precision", func, low=0, high=1)
    cuts = _check_cuts(cuts, func)
    grouper = Grouper() if grouper is None else grouper
    started = time.perf_counter()
    n_images = len(embeddings)
    real = grouper_links(grouper, embeddings, refinement, neighbors, func)
    grouped = np.array([_grouped_pairs(c) for c in grouper.components_per_cut(real, cuts)])

    order = np.random.default_rng(grouper.options.seed).permutation(len(rows))
    per_round = max(1, int(n_images * INSERTED_FRACTION))
    recalled = np.zeros(len(cuts), dtype=np.int64)
    n_pairs = 0
    for start in range(0, len(order), per_round):
        chunk = np.sort(order[start : start + per_round])
        data, pairs = _inserted(embeddings.vectors, rows[chunk], vectors[chunk])
        raw = Embeddings(np.arange(len(data)).astype(str).astype(object), data)
        links = grouper_links(grouper, raw, refinement, None, func)
        for i, component_ids in enumerate(grouper.components_per_cut(links, cuts)):
            recalled[i] += int((component_ids[pairs[:, 0]] == component_ids[pairs[:, 1]]).sum())
        n_pairs += len(pairs)
    recall = recalled / n_pairs
    precision, n_same = estimate_precision(
        recall, grouped, n_view_pairs=n_pairs, min_recalled=min_recalled
    )
    chosen = _choose(cuts, precision, recall, target_precision)
    calibration = Calibration(
        cuts=cuts,
        precision=precision,
        recall=recall,
        n_grouped_pairs=grouped.astype(np.int64),
        n_same_pairs=n_same,
        min_similarity=float(cuts[chosen]),
        target_precision=target_precision,
        n_images=len(rows),
        n_views=vectors.shape[1],
        n_view_pairs=n_pairs,
    )
    estimate = calibration.at(calibration.min_similarity)
    logger.info(
        "calibration: %d images x %d views, %d cuts, %.1f s -> cut %.2f, estimated pair "
        "precision %.3f, recall %.3f",
        len(rows),
        vectors.shape[1],
        len(cuts),
        time.perf_counter() - started,
        calibration.min_similarity,
        estimate["precision"],
        estimate["recall"],
    )
    return calibration


def _choose(
    cuts: np.ndarray, precision: np.ndarray, recall: np.ndarray, target: float | None
) -> int:
    """Index of the chosen cut (see :func:`calibrate_cut`)."""
    if target is None:
        return int(np.argmax(_f1(precision, recall)))
    below = np.flatnonzero(precision < target)
    if len(below) == 0:
        return 0
    if below[-1] == len(cuts) - 1:
        best = int(np.argmax(precision))
        logger.warning(
            "calibration: no cut reaches the target precision %.3f; the highest estimate is "
            "%.3f at cut %.2f",
            target,
            precision[best],
            cuts[best],
        )
        return best
    return int(below[-1] + 1)
