"""A cleanlab-style entry point: which rows of my labels are probably wrong?

:func:`find_label_issues` runs the whole pipeline (:func:`clusterclean.run`) on
in-memory or on-disk data and returns what cleanlab's ``find_label_issues``
returns: a boolean mask over the rows of the labels, or their indices ranked by
how likely they hold a wrong label. The :class:`~clusterclean.report.Report` with
every table stays one call away (``cc.run`` with the same arguments).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ._validation import check_choice, check_type
from .dataset import image_files_of
from .pipeline import RunConfig, load_inputs, run

__all__ = ["find_label_issues"]

logger = logging.getLogger(__name__)

#: What ``return_indices_ranked_by`` may ask for.
RANKINGS = ("confidence", "n_issues")


def find_label_issues(
    labels: Any,
    embeddings: Any = None,
    *,
    images: Any = None,
    embedding_ids: Any = None,
    return_indices_ranked_by: str | None = None,
    flagged_only: bool = True,
    **options: Any,
) -> np.ndarray:
    """Rows of ``labels`` that hold a suspected wrong label.

    Parameters
    ----------
    labels : path, pandas.DataFrame or Dataset
        The labels table (an ``image_id`` column + one column per attribute).
    embeddings : ndarray, DataFrame, Embeddings or path, optional
        Vectors you made yourself (an ndarray needs ``embedding_ids``; a
        DataFrame is indexed by image id). Else ``images`` are embedded.
    images : path, optional
        The images folder to embed when ``embeddings`` are not given.
    embedding_ids : sequence of str or path, optional
        The ids of an ndarray's rows.
    return_indices_ranked_by : {None, "confidence", "n_issues"}, default=None
        None: return a boolean mask. ``"confidence"``: the indices of the rows
        with an issue, the row whose most likely wrong cell has the highest
        confidence first; ``"n_issues"``: most suspected cells first (ties by
        confidence). Ties keep row order.
    flagged_only : bool, default=True
        Count only the flagged cells (confidence >= ``min_confidence``, the
        precision-first cut); False counts every suspected cell.
    **options
        Any option of :func:`clusterclean.run` (``backbone``, ``min_similarity``,
        ``min_confidence``, ...); ``backbone`` is a name or a Backbone, e.g.
        ``Backbone.from_module(module, transform)`` for a torch module of your own.

    Returns
    -------
    ndarray
        bool of shape (n_rows,) aligned with the rows of ``labels``, or int64
        indices into them. A row whose image could not be read is never an issue
        (it is listed in ``cc.run(...).skipped``).

    Examples
    --------
    >>> mask = cc.find_label_issues(labels_df, vectors, embedding_ids=ids)  # doctest: +SKIP
    >>> ranked = cc.find_label_issues(labels_df, vectors, embedding_ids=ids,
    ...                               return_indices_ranked_by="confidence")  # doctest: +SKIP
    """
    func = "find_label_issues"
    if return_indices_ranked_by is not None:
        check_choice(return_indices_ranked_by, "return_indices_ranked_by", func, RANKINGS)
    check_type(flagged_only, bool, "flagged_only", func, "a bool")
    report = run(
        images,
        labels,
        embeddings=embeddings,
        embedding_ids=embedding_ids,
        progress=False,
        **options,
    )
    issues = report.label_issues
    if flagged_only:
        issues = issues[issues["is_flagged"]]
    ids = report.dataset.ids
    if report.skipped is not None and len(report.skipped):
        # the rows as given, unreadable images included: the mask is aligned with them
        files = image_files_of(images)  # as run() reads them (an ImageFolder: its files)
        ids = load_inputs(files, labels, embeddings, RunConfig(**options)).ids
    row_of = {image_id: row for row, image_id in enumerate(ids)}
    per_row = issues.groupby("image_id", sort=False).agg(
        confidence=("confidence", "max"), n_issues=("confidence", "size")
    )
    rows = np.array([row_of[i] for i in per_row.index], dtype=np.int64)
    if return_indices_ranked_by is None:
        mask = np.zeros(len(ids), dtype=bool)
        mask[rows] = True
        return mask
    first, second = (
        ("confidence", "n_issues")
        if return_indices_ranked_by == "confidence"
        else ("n_issues", "confidence")
    )
    # np.lexsort sorts by its last key first; negate for descending, rows for ties
    order = np.lexsort(
        (rows, -per_row[second].to_numpy(), -per_row[first].to_numpy()),
    )
    return rows[order]
