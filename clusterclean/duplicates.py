"""Near-duplicate pairs, the labels on which they differ, and split leakage."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._contracts import Dataset

__all__ = ["find_pairs"]

_EDGE_CHUNK = 200_000


def find_pairs(edges: pd.DataFrame, dataset: Dataset) -> pd.DataFrame:
    """Describe every graph edge as a near-duplicate pair.

    Parameters
    ----------
    edges : pandas.DataFrame
        The edge table (``src``, ``dst``, ``similarity``).
    dataset : Dataset
        Ids, splits and labels, rows aligned with the edge indices.

    Returns
    -------
    pandas.DataFrame
        ``image_id_a``, ``image_id_b``, ``similarity``, ``split_a``,
        ``split_b``, ``is_cross_split`` (both splits known and different),
        ``n_differing_labels`` (attributes known in both images with different
        values) and ``differing_attributes``; sorted like the edges.
    """
    src = edges["src"].to_numpy(dtype=np.int64)
    dst = edges["dst"].to_numpy(dtype=np.int64)
    ids = dataset.ids.astype(str)
    pairs = pd.DataFrame(
        {
            "image_id_a": ids[src],
            "image_id_b": ids[dst],
            "similarity": edges["similarity"].to_numpy(dtype=np.float32),
        }
    )
    if "split" in dataset.table.columns:
        split = dataset.table["split"].to_numpy(dtype=object)
        split_a, split_b = split[src], split[dst]
        known = pd.notna(split_a) & pd.notna(split_b)
        pairs["split_a"], pairs["split_b"] = split_a, split_b
        pairs["is_cross_split"] = known & (split_a != split_b)
    else:
        pairs["split_a"] = pairs["split_b"] = None
        pairs["is_cross_split"] = False
    counts, lists = _differing_labels(dataset, src, dst)
    pairs["n_differing_labels"] = counts
    pairs["differing_attributes"] = lists
    return pairs


def _differing_labels(dataset: Dataset, src: np.ndarray, dst: np.ndarray):
    """Per pair, the attributes known in both images whose values differ."""
    names = np.asarray(dataset.attributes, dtype=object)
    labels = dataset.labels
    counts = np.zeros(len(src), dtype=np.int64)
    lists: list[list[str]] = []
    for start in range(0, len(src), _EDGE_CHUNK):
        a = labels[src[start : start + _EDGE_CHUNK]]
        b = labels[dst[start : start + _EDGE_CHUNK]]
        differ = (a != b) & ~np.isnan(a) & ~np.isnan(b)
        chunk_counts = differ.sum(axis=1)
        counts[start : start + len(a)] = chunk_counts
        _, cols = np.nonzero(differ)
        split_at = np.cumsum(chunk_counts)[:-1]
        lists.extend(part.tolist() for part in np.split(names[cols], split_at))
    return counts, lists
