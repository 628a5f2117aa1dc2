"""Embeddings -> kNN graph edges, with FAISS.

The search is exact inner product (``IndexFlatIP``) on unit vectors, so the
scores are cosine similarities. Queries run in batches so memory stays bounded
at ``batch_size * n_neighbors`` results on top of the index itself.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd

from ._contracts import Embeddings, Neighbors
from ._validation import check_float, check_int
from .errors import InvalidTypeError

__all__ = ["search_neighbors", "edges_from_neighbors", "build_knn_graph", "EDGE_COLUMNS"]

logger = logging.getLogger(__name__)

EDGE_COLUMNS = ("src", "dst", "similarity")


def _check_embeddings(embeddings: object, func: str) -> Embeddings:
    if not isinstance(embeddings, Embeddings):
        raise InvalidTypeError(
            f"The 'embeddings' parameter of {func} must be an Embeddings (see "
            f"clusterclean.as_embeddings). Got {type(embeddings).__name__} instead."
        )
    return embeddings


def search_neighbors(
    embeddings: Embeddings,
    *,
    n_neighbors: int = 10,
    batch_size: int = 16384,
    progress: bool = False,
) -> Neighbors:
    """Find the ``n_neighbors`` most similar other images of every image.

    Parameters
    ----------
    embeddings : Embeddings
        Unit vectors, ndarray of shape (n_images, dim), dtype float32.
    n_neighbors : int, default=10
        Neighbours kept per image, the image itself excluded.
    batch_size : int, default=16384
        Queries per FAISS call; bounds the memory of the result buffers.
    progress : bool, default=False
        Show a progress bar over the query batches.

    Returns
    -------
    Neighbors
        ``indices`` (n_images, n_neighbors) int64 and ``similarities``
        (n_images, n_neighbors) float32, most similar first; -1 / -inf pad
        rows that have fewer than ``n_neighbors`` other images.
    """
    import faiss

    func = "search_neighbors"
    embeddings = _check_embeddings(embeddings, func)
    n_neighbors = check_int(n_neighbors, "n_neighbors", func, min_value=1)
    batch_size = check_int(batch_size, "batch_size", func, min_value=1)
    vectors = embeddings.vectors
    n_images = len(vectors)
    started = time.perf_counter()
    indices = np.full((n_images, n_neighbors), -1, dtype=np.int64)
    similarities = np.full((n_images, n_neighbors), -np.inf, dtype=np.float32)
    if n_images > 1:
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(vectors)
        n_search = min(n_neighbors + 1, n_images)
        starts = range(0, n_images, batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="kNN search", unit="batch")
        for start in starts:
            stop = min(start + batch_size, n_images)
            sims, idx = index.search(vectors[start:stop], n_search)
            kept_idx, kept_sims = _drop_self(idx, sims, np.arange(start, stop))
            width = kept_idx.shape[1]
            indices[start:stop, :width] = kept_idx
            similarities[start:stop, :width] = kept_sims
    logger.info(
        "kNN search: %d images, %d neighbours, %.2f s",
        n_images,
        n_neighbors,
        time.perf_counter() - started,
    )
    return Neighbors(indices=indices, similarities=similarities)


def _drop_self(idx: np.ndarray, sims: np.ndarray, rows: np.ndarray):
    """Remove each query's own row from its result list.

    When exact duplicates tie, FAISS may rank the query itself anywhere among
    them, or push it out of the list; then the last (least similar) result
    is dropped instead, so every row loses exactly one entry.
    """
    is_self = idx == rows[:, None]
    missing = ~is_self.any(axis=1)
    is_self[missing, -1] = True
    keep = ~is_self
    n_rows, width = idx.shape
    kept_idx = idx[keep].reshape(n_rows, width - 1)
    kept_sims = sims[keep].reshape(n_rows, width - 1).astype(np.float32, copy=False)
    kept_sims[kept_idx < 0] = -np.inf
    return kept_idx, kept_sims


def edges_from_neighbors(
    neighbors: Neighbors,
    *,
    min_similarity: float = 0.9,
    mutual: bool = False,
) -> pd.DataFrame:
    """Turn kNN lists into an undirected, deduplicated edge table.

    An edge {i, j} exists when j is among i's neighbours (or i among j's) and
    their cosine similarity is at least ``min_similarity``. With
    ``mutual=True`` both must list each other (mutual kNN), which cuts the
    hub links that chain unrelated images together.

    Returns
    -------
    pandas.DataFrame
        Columns ``src`` (int32), ``dst`` (int32), ``similarity`` (float32);
        ``src < dst``, no duplicates, sorted by (src, dst).
    """
    func = "edges_from_neighbors"
    min_similarity = check_float(min_similarity, "min_similarity", func, low=-1.0, high=1.0)
    indices, sims = neighbors.indices, neighbors.similarities
    n_images, width = indices.shape
    src = np.repeat(np.arange(n_images, dtype=np.int64), width)
    dst = indices.ravel()
    sim = sims.ravel()
    ok = (dst >= 0) & (sim >= min_similarity) & (dst != src)
    src, dst, sim = src[ok], dst[ok], sim[ok]
    low, high = np.minimum(src, dst), np.maximum(src, dst)
    key = low * np.int64(n_images) + high
    order = np.lexsort((-sim, key))  # per pair, the highest similarity first
    key, sim = key[order], sim[order]
    first = np.ones(len(key), dtype=bool)
    first[1:] = key[1:] != key[:-1]
    if mutual:
        counts = np.diff(np.append(np.flatnonzero(first), len(key)))
        keep_pair = counts >= 2
    else:
        keep_pair = np.ones(int(first.sum()), dtype=bool)
    pair_key = key[first][keep_pair]
    pair_sim = sim[first][keep_pair]
    return pd.DataFrame(
        {
            "src": (pair_key // n_images).astype(np.int32),
            "dst": (pair_key % n_images).astype(np.int32),
            "similarity": pair_sim.astype(np.float32),
        }
    )


def build_knn_graph(
    embeddings: Embeddings,
    *,
    n_neighbors: int = 10,
    min_similarity: float = 0.9,
    mutual: bool = False,
    progress: bool = False,
) -> pd.DataFrame:
    """Search neighbours and return the edge table in one call.

    Same as ``edges_from_neighbors(search_neighbors(embeddings, ...), ...)``;
    see those functions for the parameters and the edge contract.
    """
    neighbors = search_neighbors(embeddings, n_neighbors=n_neighbors, progress=progress)
    return edges_from_neighbors(neighbors, min_similarity=min_similarity, mutual=mutual)
