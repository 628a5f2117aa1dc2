"""Edges -> a component id per image (connected components of the kNN graph)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ._validation import check_int
from .errors import InvalidInputError

__all__ = ["find_components", "component_edge_stats"]

logger = logging.getLogger(__name__)


def _edge_arrays(edges: pd.DataFrame, n_images: int, func: str):
    missing = [c for c in ("src", "dst") if c not in edges.columns]
    if missing:
        raise InvalidInputError(
            f"The 'edges' parameter of {func} must have columns 'src' and 'dst'; "
            f"{missing} missing (found {list(edges.columns)})."
        )
    src = edges["src"].to_numpy(dtype=np.int64)
    dst = edges["dst"].to_numpy(dtype=np.int64)
    if len(src) and (min(src.min(), dst.min()) < 0 or max(src.max(), dst.max()) >= n_images):
        raise InvalidInputError(
            f"Edge endpoints of {func} must be row indices in [0, {n_images}); got "
            f"[{min(src.min(), dst.min())}, {max(src.max(), dst.max())}]."
        )
    return src, dst


def find_components(edges: pd.DataFrame, n_images: int) -> np.ndarray:
    """Label each image with the connected component it belongs to.

    Parameters
    ----------
    edges : pandas.DataFrame
        The edge table (``src``, ``dst`` row indices).
    n_images : int
        Number of images; images without edges become singleton components.

    Returns
    -------
    ndarray of shape (n_images,), dtype int32
        Dense component ids ``0 .. n_components - 1``, numbered in the order
        of each component's first image, so the result depends only on the
        input order.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    func = "find_components"
    n_images = check_int(n_images, "n_images", func, min_value=0)
    src, dst = _edge_arrays(edges, n_images, func)
    if n_images == 0:
        return np.zeros(0, dtype=np.int32)
    graph = coo_matrix(
        (np.ones(len(src), dtype=np.int8), (src, dst)), shape=(n_images, n_images)
    ).tocsr()
    n_components, labels = connected_components(graph, directed=False)
    # Renumber by first appearance: scipy happens to do this today, but the
    # contract should not depend on its traversal order.
    _, first_row = np.unique(labels, return_index=True)
    rank = np.empty(n_components, dtype=np.int32)
    rank[np.argsort(first_row, kind="stable")] = np.arange(n_components, dtype=np.int32)
    component_ids = rank[labels]
    sizes = np.bincount(component_ids)
    logger.info(
        "components: %d images -> %d components (%d with >= 2 images, largest %d)",
        n_images,
        n_components,
        int((sizes >= 2).sum()),
        int(sizes.max()),
    )
    return component_ids


def component_edge_stats(edges: pd.DataFrame, component_ids: np.ndarray) -> pd.DataFrame:
    """Per-component edge diagnostics.

    Returns
    -------
    pandas.DataFrame
        One row per component id (all of them, singletons included):
        ``n_edges`` (int64), ``mean_similarity`` and ``min_similarity``
        (float32, the weakest edge; NaN for a component without edges).
    """
    component_ids = np.asarray(component_ids)
    n_components = int(component_ids.max()) + 1 if len(component_ids) else 0
    src, _ = _edge_arrays(edges, len(component_ids), "component_edge_stats")
    comp = component_ids[src]
    sim = edges["similarity"].to_numpy(dtype=np.float64)
    n_edges = np.bincount(comp, minlength=n_components)
    total = np.bincount(comp, weights=sim, minlength=n_components)
    weakest = np.full(n_components, np.inf)
    np.minimum.at(weakest, comp, sim)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n_edges > 0, total / np.maximum(n_edges, 1), np.nan)
    weakest[n_edges == 0] = np.nan
    return pd.DataFrame(
        {
            "n_edges": n_edges.astype(np.int64),
            "mean_similarity": mean.astype(np.float32),
            "min_similarity": weakest.astype(np.float32),
        }
    )
