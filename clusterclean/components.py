"""Edges -> a component id per image (connected components of the kNN graph)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ._validation import check_int
from .errors import InvalidInputError

__all__ = [
    "find_components",
    "component_edge_stats",
    "split_components",
    "component_hops",
    "renumber",
]

logger = logging.getLogger(__name__)


def _edge_arrays(edges: pd.DataFrame, n_images: int, func: str):
    missing = [c for c in ("row_a", "row_b") if c not in edges.columns]
    if missing:
        raise InvalidInputError(
            f"The 'edges' parameter of {func} must have columns 'row_a' and 'row_b'; "
            f"{missing} missing (found {list(edges.columns)})."
        )
    src = edges["row_a"].to_numpy(dtype=np.int64)
    dst = edges["row_b"].to_numpy(dtype=np.int64)
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
        The edge table (``row_a``, ``row_b`` row indices).
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
        ``n_edges`` (int64), ``mean_edge_cosine`` and ``min_edge_cosine``
        (float32, the weakest edge; NaN for a component without edges) and
        ``n_hops`` (int32, the diameter in edges of :func:`component_hops`:
        a long chain of weak links is the mark of a merge of two subjects).
    """
    component_ids = np.asarray(component_ids)
    n_components = int(component_ids.max()) + 1 if len(component_ids) else 0
    src, _ = _edge_arrays(edges, len(component_ids), "component_edge_stats")
    comp = component_ids[src]
    sim = edges["cosine"].to_numpy(dtype=np.float64)
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
            "mean_edge_cosine": mean.astype(np.float32),
            "min_edge_cosine": weakest.astype(np.float32),
            "n_hops": component_hops(edges, component_ids),
        }
    )


def renumber(labels: np.ndarray) -> np.ndarray:
    """Dense ids 0.. numbered by each block's first row."""
    _, first_row, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(len(first_row), dtype=np.int32)
    rank[np.argsort(first_row, kind="stable")] = np.arange(len(first_row), dtype=np.int32)
    return rank[inverse.ravel()]


def _split_oversized(
    src: np.ndarray, dst: np.ndarray, sim: np.ndarray, labels: np.ndarray, max_size: int
) -> np.ndarray:
    """Re-split each block larger than ``max_size`` at ever higher cuts.

    Builds the single-link merge tree of the oversized blocks (Kruskal, strongest
    edge first); a tree node of at most ``max_size`` images becomes a block,
    a larger one is replaced by its two children -- the two parts it falls into
    when the cut rises just above the edge that joined them.
    """
    sizes = np.bincount(labels)
    inside = (sizes[labels[src]] > max_size) & (labels[src] == labels[dst])
    order = np.argsort(-sim[inside], kind="stable")
    src, dst = src[inside][order], dst[inside][order]
    n_images = len(labels)
    parent = np.arange(n_images)  # union-find over images
    node_of = np.arange(n_images)  # tree node at each union-find root
    children: list[tuple[int, int]] = []
    node_size = [1] * n_images

    def find(x: int) -> int:
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    for a, b in zip(src.tolist(), dst.tolist(), strict=True):
        ra, rb = find(a), find(b)
        if ra == rb:
            continue
        children.append((int(node_of[ra]), int(node_of[rb])))
        node_size.append(node_size[node_of[ra]] + node_size[node_of[rb]])
        parent[rb] = ra
        node_of[ra] = n_images + len(children) - 1
    result = labels.astype(np.int64).copy()
    next_label = int(labels.max()) + 1 if n_images else 0
    oversized = np.flatnonzero(sizes > max_size)
    roots = {int(node_of[find(int(np.flatnonzero(labels == c)[0]))]) for c in oversized}
    stack = sorted(roots)
    while stack:
        node = stack.pop()
        if node_size[node] > max_size and node >= n_images:
            stack.extend(children[node - n_images])
            continue
        leaves, todo = [], [node]
        while todo:
            current = todo.pop()
            if current < n_images:
                leaves.append(current)
            else:
                todo.extend(children[current - n_images])
        result[leaves] = next_label
        next_label += 1
    return result


def _split_communities(
    src: np.ndarray, dst: np.ndarray, sim: np.ndarray, labels: np.ndarray, *, resolution, seed
) -> np.ndarray:
    """Louvain communities inside each block of >= 4 images (weights = similarity)."""
    import networkx as nx

    sizes = np.bincount(labels)
    result = labels.astype(np.int64).copy()
    next_label = int(labels.max()) + 1 if len(labels) else 0
    same = labels[src] == labels[dst]
    block_of_edge = labels[src][same]
    order = np.argsort(block_of_edge, kind="stable")
    e_src, e_dst, e_sim = src[same][order], dst[same][order], sim[same][order]
    bounds = np.searchsorted(block_of_edge[order], np.arange(len(sizes) + 1))
    for block in np.flatnonzero(sizes >= 4):
        lo, hi = bounds[block], bounds[block + 1]
        graph = nx.Graph()
        weights = np.maximum(e_sim[lo:hi], 1e-6).tolist()
        graph.add_weighted_edges_from(
            zip(e_src[lo:hi].tolist(), e_dst[lo:hi].tolist(), weights, strict=True)
        )
        communities = nx.community.louvain_communities(
            graph, weight="weight", resolution=resolution, seed=seed
        )
        if len(communities) < 2:
            continue
        for community in sorted(communities, key=min)[1:]:
            result[sorted(community)] = next_label
            next_label += 1
    return result


def split_components(
    edges: pd.DataFrame,
    component_ids: np.ndarray,
    *,
    max_component_size: int | None = None,
    communities: bool = False,
    resolution: float = 1.0,
    seed: int = 0,
) -> np.ndarray:
    """Split chained or oversized components; the result is a finer partition.

    Single-link components chain: one strong look-alike edge between two
    subjects merges them. Two remedies, applied in this order:

    * ``communities=True``: inside every component of >= 4 images, the
      Louvain communities of its edge graph (edge weight = similarity;
      ``networkx.community.louvain_communities`` with ``resolution`` and
      ``seed``) become components. Louvain maximises the modularity
      Q = sum_c [L_c / m - resolution * (d_c / 2m)^2] (L_c the weight inside c,
      d_c its total degree, m the total weight), so two dense groups joined by
      a thin bridge fall apart while a clique stays whole.
    * ``max_component_size``: a component with more images is re-split at a
      higher similarity cut, recursively: the cut rises just above the edge
      that last joined it (its single-link merge tree), and each part that is
      still too large is split again, until every part has at most
      ``max_component_size`` images.

    Parameters
    ----------
    edges : pandas.DataFrame
        ``row_a``, ``row_b``, ``cosine`` (the graph the components come from).
    component_ids : ndarray of shape (n_images,)
        Components of that graph (e.g. :func:`find_components`).
    max_component_size : int, optional
        Size cap (>= 1); default no cap.
    communities : bool, default=False
        Split components into their Louvain communities.
    resolution : float, default=1.0
        Louvain resolution (> 0); higher gives smaller communities.
    seed : int, default=0
        Louvain's random seed: the result is deterministic for a given input.

    Returns
    -------
    ndarray of shape (n_images,), dtype int32
        Dense component ids, numbered by each component's first row; every
        new component lies inside one input component.
    """
    func = "split_components"
    component_ids = np.asarray(component_ids)
    n_images = len(component_ids)
    if max_component_size is not None:
        max_component_size = check_int(max_component_size, "max_component_size", func, min_value=1)
    if not isinstance(resolution, (int, float)) or isinstance(resolution, bool) or resolution <= 0:
        raise InvalidInputError(
            f"The 'resolution' parameter of {func} must be a float > 0. Got {resolution!r} instead."
        )
    seed = check_int(seed, "seed", func, min_value=0)
    src, dst = _edge_arrays(edges, n_images, func)
    if n_images == 0:
        return np.zeros(0, dtype=np.int32)
    sim = edges["cosine"].to_numpy(dtype=np.float64)
    labels = renumber(component_ids).astype(np.int64)
    if communities:
        labels = renumber(
            _split_communities(src, dst, sim, labels, resolution=resolution, seed=seed)
        ).astype(np.int64)
    if max_component_size is not None and np.bincount(labels).max() > max_component_size:
        labels = _split_oversized(src, dst, sim, labels, max_component_size)
    result = renumber(labels)
    logger.info(
        "split components: %d -> %d components (largest %d)",
        len(np.unique(component_ids)),
        int(result.max()) + 1,
        int(np.bincount(result).max()),
    )
    return result


def component_hops(edges: pd.DataFrame, component_ids: np.ndarray) -> np.ndarray:
    """Diameter of each component in edges (hops), by a double BFS sweep.

    From one image of each component, a breadth-first search finds the
    farthest image; a second search from there gives the eccentricity e of
    that image. e equals the diameter on trees and paths (chains: the case
    that matters) and is a lower bound of it otherwise. All components are
    swept at once, level by level: O(diameter * n_edges).

    Returns
    -------
    ndarray of shape (n_components,), dtype int32
        0 for a singleton, 1 for a pair or a clique.
    """
    from scipy.sparse import coo_matrix

    component_ids = np.asarray(component_ids)
    n_images = len(component_ids)
    src, dst = _edge_arrays(edges, n_images, "component_hops")
    n_components = int(component_ids.max()) + 1 if n_images else 0
    # int32 counts: an int8 product wraps at 128 frontier neighbours and loses the image
    graph = coo_matrix(
        (np.ones(2 * len(src), dtype=np.int32), (np.r_[src, dst], np.r_[dst, src])),
        shape=(n_images, n_images),
    ).tocsr()

    def sweep(sources: np.ndarray) -> np.ndarray:
        distance = np.full(n_images, -1, dtype=np.int64)
        distance[sources] = 0
        frontier = np.zeros(n_images, dtype=bool)
        frontier[sources] = True
        level = 0
        while frontier.any():
            level += 1
            reached = (graph @ frontier.astype(np.int32)) > 0
            frontier = reached & (distance < 0)
            distance[frontier] = level
        return distance

    _, first = np.unique(component_ids, return_index=True)
    distance = sweep(first)
    order = np.lexsort((-distance, component_ids))  # per component, the farthest first
    farthest = order[np.searchsorted(component_ids[order], np.arange(n_components))]
    distance = sweep(farthest)
    hops = np.zeros(n_components, dtype=np.int64)
    np.maximum.at(hops, component_ids, distance)
    return hops.astype(np.int32)
