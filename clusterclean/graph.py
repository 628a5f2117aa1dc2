"""Embeddings -> kNN graph edges, with FAISS.

The search runs on the index :mod:`clusterclean.index` chooses (exact
``IndexFlatIP`` up to a size, IVF above) on unit vectors, so the scores are
cosine similarities. Queries run in batches so memory stays bounded at
``batch_size * n_neighbors`` results on top of the index itself.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd

from ._contracts import Embeddings, Neighbors, check_embeddings
from ._validation import check_float, check_int
from .errors import InvalidInputError
from .index import INDEX_KINDS
from .options import Option, declare

__all__ = [
    "OPTIONS",
    "search_neighbors",
    "drop_self",
    "edges_from_neighbors",
    "build_knn_graph",
    "rerank_neighbors",
    "scale_locally",
    "listed_pairs",
    "score_links",
    "cosine_of_pairs",
    "EDGE_COLUMNS",
]

#: The options of the search stage, declared once (:mod:`clusterclean.options`).
OPTIONS = declare(
    "search",
    Option(
        "n_neighbors",
        10,
        "neighbours searched per image",
        "int",
        low=1,
    ),
    Option(
        "index",
        "auto",
        "kNN index: auto = exact flat up to 100k images, IVF above",
        "choice",
        choices=INDEX_KINDS,
    ),
    Option(
        "n_lists",
        None,
        "IVF cells (none: 4 sqrt N)",
        "int",
        low=1,
        nullable=True,
    ),
    Option(
        "n_probe",
        None,
        "IVF cells scanned per query (none: 16)",
        "int",
        low=1,
        nullable=True,
    ),
    Option(
        "n_components",
        None,
        "search a PCA reduction of this dimension (none: the full vectors)",
        "int",
        low=1,
        nullable=True,
    ),
)

logger = logging.getLogger(__name__)

EDGE_COLUMNS = ("row_a", "row_b", "cosine")


#: The default number of neighbours, accepted (and padded) on datasets smaller than it.
_PADDED_NEIGHBORS = 10


def check_n_neighbors(n_neighbors: int, n_images: int, func: str) -> int:
    """``n_neighbors`` checked against the dataset: at most N (or the default 10).

    (n_images, n_neighbors) lists are allocated, so an absurd value must fail
    with a message, not with an allocation error.
    """
    n_neighbors = check_int(n_neighbors, "n_neighbors", func, min_value=1)
    if n_neighbors > max(n_images, _PADDED_NEIGHBORS):
        raise InvalidInputError(
            f"The 'n_neighbors' parameter of {func} must be at most the number of images, "
            f"{n_images} (the default {_PADDED_NEIGHBORS} is always accepted; missing "
            f"neighbours are padded). Got {n_neighbors} instead."
        )
    return n_neighbors


def search_neighbors(
    embeddings: Embeddings,
    *,
    n_neighbors: int = 10,
    batch_size: int = 16384,
    progress: bool = False,
    index: str = "auto",
    n_lists: int | None = None,
    n_probe: int | None = None,
    n_components: int | None = None,
) -> Neighbors:
    """Find the ``n_neighbors`` most similar other images of every image.

    The index is chosen by :func:`clusterclean.index.choose_index`: exact
    (``flat``) up to ``FLAT_MAX_IMAGES`` images, approximate (``ivf``) above,
    unless ``index`` names one.

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
    index : {"auto", "flat", "ivf", "hnsw"}, default="auto"
        Index kind (see :mod:`clusterclean.index`).
    n_lists, n_probe : int, optional
        IVF cells and cells scanned per query; scaled to N when unset.
    n_components : int, optional
        Search a PCA reduction to this dimension, then re-score the
        candidates with the full vectors (similarities stay exact cosines).

    Returns
    -------
    Neighbors
        ``indices`` (n_images, n_neighbors) int64 and ``similarities``
        (n_images, n_neighbors) float32, most similar first; -1 / -inf pad
        rows that have fewer than ``n_neighbors`` other images.
    """
    from .index import build_index, choose_index, search_index

    func = "search_neighbors"
    embeddings = check_embeddings(embeddings, func)
    n_neighbors = check_n_neighbors(n_neighbors, len(embeddings.ids), func)
    batch_size = check_int(batch_size, "batch_size", func, min_value=1)
    vectors = embeddings.vectors
    n_images = len(vectors)
    spec = choose_index(
        n_images,
        embeddings.dim,
        index=index,
        n_lists=n_lists,
        n_probe=n_probe,
        n_components=n_components,
        func=func,
    )
    started = time.perf_counter()
    indices = np.full((n_images, n_neighbors), -1, dtype=np.int64)
    similarities = np.full((n_images, n_neighbors), -np.inf, dtype=np.float32)
    if n_images > 1:
        faiss_index = build_index(vectors, spec)
        sims, idx = search_index(
            faiss_index,
            vectors,
            min(n_neighbors + 1, n_images),
            database=vectors,
            batch_size=batch_size,
            progress=progress,
        )
        kept_idx, kept_sims = drop_self(idx, sims, np.arange(n_images))
        width = kept_idx.shape[1]
        indices[:, :width] = kept_idx
        similarities[:, :width] = kept_sims
    logger.info(
        "kNN search (%s): %d images, %d neighbours, %.2f s",
        spec.kind,
        n_images,
        n_neighbors,
        time.perf_counter() - started,
    )
    return Neighbors(indices=indices, similarities=similarities)


def drop_self(idx: np.ndarray, sims: np.ndarray, rows: np.ndarray):
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


def listed_pairs(neighbors: Neighbors) -> pd.DataFrame:
    """Every pair {i, j} listed in the kNN lists once, with its two directions' scores.

    The one place kNN lists become undirected pairs (:func:`edges_from_neighbors`
    and :class:`clusterclean.group.Grouper` cut this table).

    Returns
    -------
    pandas.DataFrame
        ``row_a`` < ``row_b`` (int64), sorted by (row_a, row_b); ``high`` and ``low``
        (float32): the larger and the smaller score of the pair's listings
        (``low`` is ``-inf`` when only one of the two lists the other);
        ``n_listed``: 1 or 2.
    """
    indices, sims = neighbors.indices, neighbors.similarities
    n_images, width = indices.shape
    src = np.repeat(np.arange(n_images, dtype=np.int64), width)
    dst = indices.ravel()
    sim = sims.ravel()
    ok = (dst >= 0) & (dst != src) & ~np.isnan(sim)
    src, dst, sim = src[ok], dst[ok], sim[ok]
    low, high = np.minimum(src, dst), np.maximum(src, dst)
    key = low * np.int64(n_images) + high
    order = np.lexsort((-sim, key))  # per pair, the highest similarity first
    key, sim = key[order], sim[order]
    first = np.ones(len(key), dtype=bool)
    first[1:] = key[1:] != key[:-1]
    starts = np.flatnonzero(first)
    counts = np.diff(np.append(starts, len(key)))
    lowest = np.full(len(starts), -np.inf, dtype=np.float32)
    twice = counts >= 2
    lowest[twice] = sim[starts[twice] + 1]
    pair_key = key[first]
    return pd.DataFrame(
        {
            "row_a": pair_key // n_images,
            "row_b": pair_key % n_images,
            "high": sim[first].astype(np.float32),
            "low": lowest,
            "n_listed": counts,
        }
    )


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
        Columns ``row_a`` (int32), ``row_b`` (int32), ``cosine`` (float32, the
        higher of the pair's two listings); ``row_a < row_b``, no duplicates, sorted
        by (row_a, row_b).
    """
    func = "edges_from_neighbors"
    min_similarity = check_float(min_similarity, "min_similarity", func, low=-1.0, high=1.0)
    pairs = listed_pairs(neighbors)
    keep = (pairs["low"] if mutual else pairs["high"]).to_numpy() >= min_similarity
    return pd.DataFrame(
        {
            "row_a": pairs["row_a"].to_numpy()[keep].astype(np.int32),
            "row_b": pairs["row_b"].to_numpy()[keep].astype(np.int32),
            "cosine": pairs["high"].to_numpy()[keep],
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


def cosine_of_pairs(embeddings: Embeddings, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Cosine similarity ``<x_rows[k], x_cols[k]>`` of each pair, float32; -inf where cols < 0."""
    vectors = check_embeddings(embeddings, "cosine_of_pairs").vectors
    rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    out = np.full(rows.shape, -np.inf, dtype=np.float32)
    ok = cols >= 0
    out[ok] = _pair_sims(vectors, rows[ok], cols[ok])
    return out


def score_links(
    neighbors: Neighbors,
    embeddings: Embeddings,
    *,
    rerank: bool = False,
    n_reciprocal: int = 6,
    n_expansion: int = 2,
    n_local: int = 0,
) -> Neighbors:
    """The link similarity of every listed pair, the score ``min_similarity`` cuts.

    The cosine of ``embeddings`` as listed, re-ranked by :func:`rerank_neighbors`
    when ``rerank=True``, then made relative by :func:`scale_locally` when
    ``n_local > 0`` (the order :func:`link_neighbors` applies them in).

    Returns
    -------
    Neighbors
        The same candidate pairs, shape (n_images, n_neighbors), holding link
        similarities, each row sorted by them.
    """
    n_local = check_int(n_local, "n_local", "score_links", min_value=0)
    if rerank:
        neighbors = rerank_neighbors(
            neighbors, embeddings, n_reciprocal=n_reciprocal, n_expansion=n_expansion
        )
    if n_local:
        neighbors = scale_locally(neighbors, n_local=n_local)
    return neighbors


def _neighbor_table(neighbors: Neighbors, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``width`` columns of the kNN lists, with each row itself prepended."""
    n_images = len(neighbors.indices)
    own = np.arange(n_images, dtype=np.int64)[:, None]
    idx = np.hstack([own, neighbors.indices[:, : width - 1]])
    sims = np.hstack([np.ones((n_images, 1), np.float32), neighbors.similarities[:, : width - 1]])
    return idx, sims


def _is_listed(idx: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """For each pair, whether ``rows[i]`` appears in the list ``idx[cols[i]]``."""
    return (idx[cols] == rows[:, None]).any(axis=1)


def _reciprocal_sets(idx: np.ndarray) -> list[np.ndarray]:
    """R(p, k): the members g of p's list (self included) that list p back."""
    n_images, width = idx.shape
    rows = np.repeat(np.arange(n_images), width)
    cols = idx.ravel()
    ok = cols >= 0
    back = np.zeros(len(cols), dtype=bool)
    back[ok] = _is_listed(idx, rows[ok], cols[ok])
    back = back.reshape(n_images, width)
    return [idx[p][back[p]] for p in range(n_images)]


def _expanded_sets(idx: np.ndarray, n_reciprocal: int) -> list[np.ndarray]:
    """R*(p): R(p, k) united with each R(q, k/2), q in R(p, k), that overlaps it by > 2/3."""
    full = _reciprocal_sets(idx[:, :n_reciprocal])
    half = _reciprocal_sets(idx[:, : max(n_reciprocal // 2, 1)])
    expanded = []
    for members in full:
        merged = [members]
        for q in members:
            candidate = half[q]
            overlap = np.intersect1d(candidate, members, assume_unique=True)
            if len(overlap) > 2.0 / 3.0 * len(candidate):
                merged.append(candidate)
        expanded.append(np.unique(np.concatenate(merged)))
    return expanded


def _pair_sims(
    vectors: np.ndarray, rows: np.ndarray, cols: np.ndarray, *, chunk: int = 1024
) -> np.ndarray:
    """<x_rows[k], x_cols[k]> as float64, gathered ``chunk`` pairs at a time.

    Gathering all pairs at once holds 2 * n_pairs * dim floats: 20 GB for the
    10 neighbours of 1M images at d = 256; in chunks it is 2 * chunk * dim. Small
    chunks also reuse the same memory: 65,536 pairs of 1280-d vectors gather up to 670 MB
    of fresh pages per chunk. On 5,000 photos the graph stage went from 0.90 to 0.28 s
    with 1,024 pairs, the same values (docs/perf/duplicates_ab_s27.json).
    """
    out = np.empty(len(rows), dtype=np.float64)
    for start in range(0, len(rows), chunk):
        stop = start + chunk
        out[start:stop] = np.einsum(
            "ij,ij->i", vectors[rows[start:stop]], vectors[cols[start:stop]]
        )
    return out


def _encodings(vectors: np.ndarray, sets: list[np.ndarray], bandwidth: float):
    """The sparse vectors V_p: weight exp(-(2 - 2 cos(p, g)) / h) on g in R*(p), summing to 1."""
    from scipy.sparse import csr_matrix

    n_images = len(sets)
    rows = np.repeat(np.arange(n_images), [len(s) for s in sets])
    cols = np.concatenate(sets) if sets else np.zeros(0, np.int64)
    weights = np.exp(-(2.0 - 2.0 * _pair_sims(vectors, rows, cols)) / bandwidth)
    totals = np.bincount(rows, weights=weights, minlength=n_images)
    weights = weights / totals[rows]
    return csr_matrix((weights, (rows, cols)), shape=(n_images, n_images))


def _sum_of_minimums(encodings, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """sum_i min(V[p, i], V[g, i]) for each pair (p, g) = (rows[k], cols[k]).

    Walks the non-zeros of V[p] and looks each column up in V[g]: O(pairs * nnz per row).
    """
    n_images = encodings.shape[0]
    indptr, indices, data = encodings.indptr, encodings.indices, encodings.data
    keys = np.repeat(np.arange(n_images, dtype=np.int64), np.diff(indptr)) * n_images + indices
    counts = np.diff(indptr)[rows]
    pair_of = np.repeat(np.arange(len(rows)), counts)
    starts = np.repeat(indptr[rows], counts)
    offset = np.arange(len(pair_of)) - np.repeat(np.cumsum(counts) - counts, counts)
    position = starts + offset
    wanted = cols[pair_of].astype(np.int64) * n_images + indices[position]
    found = np.searchsorted(keys, wanted)
    found = np.minimum(found, len(keys) - 1)
    hit = keys[found] == wanted
    mins = np.where(hit, np.minimum(data[position], data[found]), 0.0)
    return np.bincount(pair_of, weights=mins, minlength=len(rows))


def rerank_neighbors(
    neighbors: Neighbors,
    embeddings: Embeddings,
    *,
    n_reciprocal: int = 6,
    n_expansion: int = 2,
    cosine_weight: float = 0.3,
    bandwidth: float = 1.0,
) -> Neighbors:
    """k-reciprocal re-ranking of the kNN lists (Zhong et al., CVPR 2017).

    Two images of one subject tend to be each other's neighbours (k-reciprocal)
    and to share neighbours; two look-alikes of different subjects less so.
    With N(p, k) the k nearest of p (p itself included) and
    R(p, k) = {g in N(p, k) : p in N(g, k)}:

    * R*(p) = R(p, k) united with every R(q, k/2), q in R(p, k), of which more
      than 2/3 lies in R(p, k) (k = ``n_reciprocal``);
    * V_p, a sparse vector over images: V_p[g] = exp(-||x_p - x_g||^2) for g
      in R*(p), 0 elsewhere, divided by its sum; then averaged over p's
      ``n_expansion`` nearest (p included), local query expansion;
    * Jaccard similarity J(p, g) = sum_i min(V_p[i], V_g[i]) / sum_i max(V_p[i], V_g[i]);
    * re-ranked similarity s*(p, g) = (1 - w) J(p, g) + w cos(p, g), w = ``cosine_weight``.

    Only the pairs already in the kNN lists are scored, so the cost is
    O(n_images * n_neighbors * nnz(V_p)), never O(n_images^2).

    Parameters
    ----------
    neighbors : Neighbors
        kNN lists of ``embeddings`` with at least ``n_reciprocal - 1`` columns.
    embeddings : Embeddings
        The vectors the lists were searched on, shape (n_images, dim).
    n_reciprocal : int, default=6
        k of the reciprocal sets, the image itself counted. Small, because a
        subject has few views (Zhong et al. use 20 for galleries of many
        views per person; 6 and 2 measured best on the benchmark's selection
        seed, see docs/grouping).
    n_expansion : int, default=2
        Neighbours averaged in the query expansion (1 = none).
    cosine_weight : float in [0, 1], default=0.3
        Weight w of the original cosine in s*.

    Returns
    -------
    Neighbors
        The same candidate pairs with similarities s* in [-1, 1], each row
        re-sorted by s* (most similar first; -1 / -inf padding kept last).
    """
    func = "rerank_neighbors"
    embeddings = check_embeddings(embeddings, func)
    n_reciprocal = check_int(n_reciprocal, "n_reciprocal", func, min_value=2)
    n_expansion = check_int(n_expansion, "n_expansion", func, min_value=1)
    cosine_weight = check_float(cosine_weight, "cosine_weight", func, low=0.0, high=1.0)
    bandwidth = check_float(bandwidth, "bandwidth", func, low=1e-3, high=100.0)
    n_images, width = neighbors.indices.shape
    if n_images != len(embeddings):
        raise InvalidInputError(
            f"rerank_neighbors got kNN lists of {n_images} images but {len(embeddings)} "
            "embeddings; pass the embeddings the lists were searched on."
        )
    if width + 1 < n_reciprocal:
        raise InvalidInputError(
            f"The 'n_reciprocal' parameter of {func} must be at most n_neighbors + 1 = "
            f"{width + 1}. Got {n_reciprocal} instead. Search more neighbours."
        )
    started = time.perf_counter()
    vectors = embeddings.vectors
    idx, _ = _neighbor_table(neighbors, max(n_reciprocal, n_expansion))
    encodings = _encodings(vectors, _expanded_sets(idx, n_reciprocal), bandwidth)
    if n_expansion > 1:
        from scipy.sparse import csr_matrix

        own = idx[:, :n_expansion]
        ok = own >= 0
        rows = np.repeat(np.arange(n_images), ok.sum(axis=1))
        average = csr_matrix(
            (1.0 / np.repeat(ok.sum(axis=1), ok.sum(axis=1)), (rows, own[ok])),
            shape=(n_images, n_images),
        )
        encodings = (average @ encodings).tocsr()
    encodings.sort_indices()
    rows = np.repeat(np.arange(n_images), width)
    cols = neighbors.indices.ravel()
    ok = cols >= 0
    minimum = _sum_of_minimums(encodings, rows[ok], cols[ok])
    jaccard = minimum / np.maximum(2.0 - minimum, 1e-12)  # sum max = 2 - sum min
    scores = np.full(n_images * width, -np.inf)
    scores[ok] = (1 - cosine_weight) * jaccard + cosine_weight * neighbors.similarities.ravel()[ok]
    scores = scores.reshape(n_images, width)
    order = np.argsort(-scores, axis=1, kind="stable")
    logger.info(
        "re-ranking: %d images, k=%d, %.2f s", n_images, n_reciprocal, time.perf_counter() - started
    )
    return Neighbors(
        indices=np.take_along_axis(neighbors.indices, order, axis=1),
        similarities=np.take_along_axis(scores, order, axis=1).astype(np.float32),
    )


def scale_locally(neighbors: Neighbors, *, n_local: int = 5) -> Neighbors:
    """Make similarities relative to each image's own neighbourhood (CSLS-style).

    With r_i the mean similarity of image i to its ``n_local`` nearest
    neighbours and r~ the median of r over all images:

        s'(i, j) = s(i, j) - (r_i + r_j) / 2 + r~

    An image in a dense region (a common look: all its neighbours are close)
    needs a higher raw similarity to make an edge; an isolated image a lower
    one. The median keeps s' on the scale of the input, so one cut fits both.

    Returns
    -------
    Neighbors
        Same indices, similarities s' (rows re-sorted, padding kept last).
    """
    func = "scale_locally"
    n_local = check_int(n_local, "n_local", func, min_value=1)
    sims = neighbors.similarities
    local = sims[:, :n_local]
    finite = np.isfinite(local)
    counts = finite.sum(axis=1)
    totals = np.where(finite, local, 0.0).sum(axis=1)
    radius = np.where(counts > 0, totals / np.maximum(counts, 1), 0.0)
    centre = float(np.median(radius)) if len(radius) else 0.0
    idx = neighbors.indices
    other = radius[np.maximum(idx, 0)]
    scaled = np.where(idx >= 0, sims - (radius[:, None] + other) / 2 + centre, -np.inf)
    order = np.argsort(-scaled, axis=1, kind="stable")
    return Neighbors(
        indices=np.take_along_axis(idx, order, axis=1),
        similarities=np.take_along_axis(scaled, order, axis=1).astype(np.float32),
    )
