"""The nearest-neighbour index: which FAISS index for how many images, and batched search.

Three kinds, chosen by :func:`choose_index` (``index="auto"``) or by name:

* ``flat`` -- ``IndexFlatIP``, exact. Cost O(N^2 d) for the whole graph, so it
  is the automatic choice up to ``FLAT_MAX_IMAGES`` images.
* ``ivf`` -- ``IndexIVFFlat``: k-means cells (``n_lists`` ~ 4 sqrt(N)), each
  query scans the ``n_probe`` nearest cells. Similarities are exact inner
  products; only the candidate set is approximate. Cost O(N (n_lists +
  n_probe N / n_lists) d) = O(N^1.5 d). The automatic choice above the
  threshold: on near-duplicate data (tight groups) it keeps more of the true
  edges per second than HNSW, whose graph links stay inside the tight groups
  (measured by ``scripts/bench_scale.py``; see ``docs/scale/``).
* ``hnsw`` -- ``IndexHNSWFlat`` (``hnsw_m`` links, ``ef_search`` scaled with
  log N), for data without tight groups.

An optional PCA (``n_components``) searches a reduced copy of the vectors and
re-scores the candidates with the full vectors, so similarities stay exact
cosines. Everything is deterministic for a given input: k-means and PCA are
trained on a seeded sample.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass

import numpy as np

from ._validation import check_choice, check_int
from .errors import InvalidInputError

__all__ = [
    "INDEX_OPTIONS",
    "index_options",
    "INDEX_KINDS",
    "FLAT_MAX_IMAGES",
    "IndexSpec",
    "choose_index",
    "build_index",
    "search_index",
]

logger = logging.getLogger(__name__)

INDEX_KINDS = ("auto", "flat", "ivf", "hnsw")

#: The options of :func:`choose_index` a run carries (declared in the search stage).
INDEX_OPTIONS = ("index", "n_lists", "n_probe", "n_components")


def index_options(config) -> dict:
    """The :func:`choose_index` keywords from a ``RunConfig`` (or any object with them)."""
    return {name: getattr(config, name) for name in INDEX_OPTIONS}


FLAT_MAX_IMAGES = 100_000
_TRAIN_PER_LIST = 40  # k-means training points per IVF cell (FAISS warns below 39)
_KMEANS_ITERATIONS = 10
_DEFAULT_PROBES = 16
_PCA_TRAIN_MAX = 100_000


@dataclass(frozen=True)
class IndexSpec:
    """A resolved index choice; what ``run.json`` records under ``"index"``.

    Attributes
    ----------
    kind : str
        ``"flat"``, ``"ivf"`` or ``"hnsw"``.
    n_lists, n_probe : int or None
        IVF cells and cells scanned per query (``ivf`` only).
    hnsw_m, ef_search : int or None
        HNSW links per node and search beam width (``hnsw`` only).
    n_components : int or None
        PCA dimension searched (None = the full vectors).
    seed : int
        Seed of the training samples (k-means, PCA).
    """

    kind: str
    n_lists: int | None = None
    n_probe: int | None = None
    hnsw_m: int | None = None
    ef_search: int | None = None
    n_components: int | None = None
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def choose_index(
    n_images: int,
    dim: int,
    *,
    index: str = "auto",
    n_lists: int | None = None,
    n_probe: int | None = None,
    n_components: int | None = None,
    func: str = "choose_index",
) -> IndexSpec:
    """Resolve ``index="auto"`` and the unset parameters for ``n_images`` vectors of ``dim``.

    Parameters
    ----------
    n_images, dim : int
        Size of the database, shape (n_images, dim).
    index : {"auto", "flat", "ivf", "hnsw"}, default="auto"
        ``auto`` = ``flat`` up to ``FLAT_MAX_IMAGES`` images, ``ivf`` above.
    n_lists : int, optional
        IVF cells; default ``4 * sqrt(n_images)`` clipped to [1, n_images / 40]
        so each cell gets its 40 training points.
    n_probe : int, optional
        IVF cells scanned per query, at most ``n_lists``; default 16. On the
        benchmark's planted groups (docs/scale) 16 finds 98.6% of the true
        edges at 300k images (4: 93%, and 85% at 1M).
    n_components : int, optional
        PCA dimension to search in, in [1, dim); None = no reduction.
    func : str
        Name used in error messages (the public function the user called).

    Returns
    -------
    IndexSpec
    """
    index = check_choice(index, "index", func, INDEX_KINDS)
    n_images = check_int(n_images, "n_images", func, min_value=0)
    dim = check_int(dim, "dim", func, min_value=1)
    if n_components is not None:
        n_components = check_int(n_components, "n_components", func, min_value=1)
        if n_components >= dim:
            raise InvalidInputError(
                f"The 'n_components' parameter of {func} must be an int in [1, {dim - 1}] "
                f"(below the embedding dimension). Got {n_components} instead; leave it unset "
                "to search the full vectors."
            )
    for name, value in (("n_lists", n_lists), ("n_probe", n_probe)):
        if value is not None:
            check_int(value, name, func, min_value=1)
            if index not in ("ivf", "auto"):
                raise InvalidInputError(
                    f"The {name!r} parameter of {func} applies to index='ivf' only. Got "
                    f"{name}={value} with index={index!r}; drop it or use index='ivf'."
                )
    kind = index
    if kind == "auto":
        kind = "flat" if n_images <= FLAT_MAX_IMAGES else "ivf"
    if kind == "flat":
        return IndexSpec(kind="flat", n_components=n_components)
    if kind == "hnsw":
        ef_search = int(16 * math.ceil(math.log2(max(n_images, 2))))
        return IndexSpec(kind="hnsw", hnsw_m=32, ef_search=ef_search, n_components=n_components)
    max_lists = max(1, n_images // _TRAIN_PER_LIST)
    if n_lists is None:
        n_lists = min(max(1, round(4 * math.sqrt(n_images))), max_lists)
    elif n_lists > max(max_lists, 1) and n_images > 0:
        raise InvalidInputError(
            f"The 'n_lists' parameter of {func} must be an int in [1, {max_lists}] for "
            f"{n_images} images ({_TRAIN_PER_LIST} training points per cell). Got {n_lists} "
            "instead."
        )
    n_probe = min(_DEFAULT_PROBES if n_probe is None else n_probe, n_lists)
    return IndexSpec(kind="ivf", n_lists=n_lists, n_probe=n_probe, n_components=n_components)


def _sample(n_images: int, size: int, seed: int) -> np.ndarray:
    if size >= n_images:
        return np.arange(n_images)
    return np.sort(np.random.default_rng(seed).choice(n_images, size, replace=False))


def build_index(vectors: np.ndarray, spec: IndexSpec, *, add: bool = True):
    """Build (train, and unless ``add=False`` fill) the FAISS index ``spec`` describes.

    Parameters
    ----------
    vectors : ndarray of shape (n_images, dim), float32
        Unit rows; the database.
    spec : IndexSpec
        From :func:`choose_index`.
    add : bool, default=True
        Add ``vectors`` after training. ``False`` returns the trained, empty
        index (what a report saves; the vectors are in ``embeddings.parquet``).

    Returns
    -------
    faiss.Index
        Inner-product index; with PCA an ``IndexPreTransform``.
    """
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n_images, dim = vectors.shape
    started = time.perf_counter()
    search_dim = spec.n_components or dim
    if spec.kind == "flat":
        index = faiss.IndexFlatIP(search_dim)
    elif spec.kind == "hnsw":
        index = faiss.IndexHNSWFlat(search_dim, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 40
        index.hnsw.efSearch = spec.ef_search
    else:
        quantizer = faiss.IndexFlatIP(search_dim)
        index = faiss.IndexIVFFlat(quantizer, search_dim, spec.n_lists, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = spec.seed
        index.cp.niter = _KMEANS_ITERATIONS
        index.cp.max_points_per_centroid = _TRAIN_PER_LIST
        index.nprobe = spec.n_probe
    if spec.n_components:
        pca = faiss.PCAMatrix(dim, spec.n_components)
        index = faiss.IndexPreTransform(pca, index)
    if not index.is_trained:
        train_size = max(_TRAIN_PER_LIST * (spec.n_lists or 0), _PCA_TRAIN_MAX)
        index.train(vectors[_sample(n_images, train_size, spec.seed)])
    if add:
        index.add(vectors)
    logger.info(
        "%s index over %d vectors (d=%d) built in %.2f s",
        spec.kind,
        n_images,
        search_dim,
        time.perf_counter() - started,
    )
    return index


def search_index(
    index,
    queries: np.ndarray,
    n_results: int,
    *,
    database: np.ndarray | None = None,
    batch_size: int = 16384,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Search ``queries`` in batches; memory is ``batch_size * n_results`` results at a time.

    Parameters
    ----------
    index : faiss.Index
        From :func:`build_index`.
    queries : ndarray of shape (n_queries, dim), float32
    n_results : int
        Results per query.
    database : ndarray of shape (n_images, dim), optional
        The full vectors the index holds. Required with PCA: the reduced-space
        candidates (2 * ``n_results``) are re-scored with exact inner products
        and the best ``n_results`` kept.
    batch_size : int, default=16384
    progress : bool, default=False

    Returns
    -------
    similarities : ndarray of shape (n_queries, n_results), float32
        Inner products, most similar first; -inf where the index is -1.
    indices : ndarray of shape (n_queries, n_results), int64
        Database rows; -1 where fewer results exist.
    """
    import faiss

    reduced = isinstance(index, faiss.IndexPreTransform)
    if reduced and database is None:
        raise InvalidInputError(
            "search_index needs the full vectors (database=...) to re-score a PCA index."
        )
    n_queries = len(queries)
    sims = np.full((n_queries, n_results), -np.inf, dtype=np.float32)
    idx = np.full((n_queries, n_results), -1, dtype=np.int64)
    n_candidates = min(2 * n_results if reduced else n_results, max(index.ntotal, 1))
    starts = range(0, n_queries, batch_size)
    if progress and len(starts) > 1:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="kNN search", unit="batch")
    for start in starts:
        stop = min(start + batch_size, n_queries)
        batch = np.ascontiguousarray(queries[start:stop], dtype=np.float32)
        found_sims, found_idx = index.search(batch, n_candidates)
        if reduced:
            found_sims, found_idx = _rescore(batch, database, found_idx, n_results)
        width = min(n_results, found_idx.shape[1])
        idx[start:stop, :width] = found_idx[:, :width]
        sims[start:stop, :width] = found_sims[:, :width]
    sims[idx < 0] = -np.inf
    return sims, idx


def _rescore(batch: np.ndarray, database: np.ndarray, found: np.ndarray, n_results: int):
    """Exact inner products of the candidate rows, best ``n_results`` first (ties by row)."""
    safe = np.maximum(found, 0)
    exact = np.einsum("qd,qkd->qk", batch, database[safe]).astype(np.float32)
    exact[found < 0] = -np.inf
    order = np.lexsort((found, -exact), axis=1)[:, :n_results]
    return np.take_along_axis(exact, order, axis=1), np.take_along_axis(found, order, axis=1)
