"""Near-duplicate pairs, exact and near duplicate groups, and split leakage.

Three kinds of duplicate groups (the ``kind`` column of ``duplicates.parquet``):

* ``exact_file``: the files have the same bytes (BLAKE2b-128 of the file);
* ``exact_pixels``: the decoded images have the same size and the same RGBA
  pixels (BLAKE2b-128 of them), so a lossless re-encode (PNG <-> BMP/TIFF,
  stripped metadata, another PNG compression level) is caught; a lossy
  re-encode changes the pixels and is caught as ``near`` instead. Every
  ``exact_file`` group is also (part of) an ``exact_pixels`` group;
* ``near``: connected components of the pairs whose cosine similarity is
  >= ``min_similarity`` (0.98 by default, higher than the graph's cut).

Split leakage: a group whose members sit in at least two known splits. The
*home split* of a group is its best-ranked split under ``split_priority``
(``train`` > ``val`` > ``test`` by default; a split not in the list ranks
after them, in order of first appearance). Copies in the home split stay;
every member in another known split is a leak (``is_leak``) and should be
dropped from that split, so the evaluation splits hold no copy of a training
image and the training set keeps all its images. Without a split column no
image is a leak.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

from ._contracts import Dataset
from ._validation import check_float, check_int, check_type
from .embed import WIDE_MODES, check_regular_file
from .errors import InvalidInputError, InvalidTypeError
from .options import Option, declare, defaults

__all__ = [
    "OPTIONS",
    "EXACT_TWIN_MIN_COSINE",
    "PIXEL_HASH_MIN_COSINE",
    "exact_decodes",
    "duplicate_counts",
    "DEFAULT_MIN_DUPLICATE_SIMILARITY",
    "DEFAULT_SPLIT_PRIORITY",
    "DUPLICATE_KINDS",
    "find_duplicates",
    "find_pairs",
    "hash_images",
    "pixel_hash_candidates",
]

#: The options of the duplicates stage, declared once (:mod:`clusterclean.options`).
OPTIONS = declare(
    "duplicates",
    Option(
        "min_duplicate_similarity",
        0.98,
        "pairs at or above this similarity form near-duplicate groups",
        "float",
        low=-1.0,
        high=1.0,
    ),
)

logger = logging.getLogger(__name__)

_EDGE_CHUNK = 200_000
DUPLICATE_KINDS = ("exact_file", "exact_pixels", "near")
DEFAULT_SPLIT_PRIORITY = ("train", "val", "test")
DEFAULT_MIN_DUPLICATE_SIMILARITY = defaults(OPTIONS)["min_duplicate_similarity"]
_HASH_BYTES = 16
#: Columns of the duplicates table, in order (documented in find_duplicates).
DUPLICATE_COLUMNS = (
    "kind",
    "duplicate_group_id",
    "duplicate_group_size",
    "image_id",
    "path",
    "split",
    "content_hash",
    "is_kept",
    "home_split",
    "is_cross_split",
    "is_leak",
    "n_differing_labels",
    "differing_attributes",
)


def find_pairs(edges: pd.DataFrame, dataset: Dataset) -> pd.DataFrame:
    """Describe every graph edge as a near-duplicate pair.

    Parameters
    ----------
    edges : pandas.DataFrame
        The edge table (``row_a``, ``row_b``, ``cosine``).
    dataset : Dataset
        Ids, splits and labels, rows aligned with the edge indices.

    Returns
    -------
    pandas.DataFrame
        ``image_id_a``, ``image_id_b``, ``cosine``, ``split_a``,
        ``split_b``, ``is_cross_split`` (both splits known and different),
        ``n_differing_labels`` (attributes known in both images with different
        values) and ``differing_attributes``; sorted like the edges.
    """
    src = edges["row_a"].to_numpy(dtype=np.int64)
    dst = edges["row_b"].to_numpy(dtype=np.int64)
    ids = dataset.ids.astype(str)
    pairs = pd.DataFrame(
        {
            "image_id_a": ids[src],
            "image_id_b": ids[dst],
            "cosine": edges["cosine"].to_numpy(dtype=np.float32),
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


def _hash_one(path: str | None, pixels: bool = True) -> tuple[str | None, str | None]:
    """BLAKE2b-128 of the file bytes and (with ``pixels``) of the decoded RGBA pixels.

    None where the file cannot be read or decoded, or its pixels were not asked for.
    """
    if path is None:
        return None, None
    from PIL import Image, UnidentifiedImageError

    try:
        check_regular_file(path)
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        logger.warning("duplicates: cannot read %s (%s); left out of exact duplicates", path, error)
        return None, None
    file_hash = hashlib.blake2b(data, digest_size=_HASH_BYTES).hexdigest()
    if not pixels:
        return file_hash, None
    try:
        with Image.open(io.BytesIO(data)) as image:
            pixels = image.convert("RGBA")
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as error:
        logger.warning(
            "duplicates: cannot decode %s (%s); only its bytes are compared", path, error
        )
        return file_hash, None
    digest = hashlib.blake2b(digest_size=_HASH_BYTES)
    digest.update(f"{pixels.width}x{pixels.height}:".encode())
    digest.update(pixels.tobytes())
    return file_hash, digest.hexdigest()


def hash_images(
    paths: Sequence[str | None],
    *,
    n_workers: int | None = None,
    pixels: Sequence[bool] | np.ndarray | None = None,
) -> pd.DataFrame:
    """Content hashes of image files, for exact-duplicate detection.

    Parameters
    ----------
    paths : sequence of str or None, length n_images
        Image files; ``None`` where an image has no file.
    n_workers : int, optional
        Threads reading and decoding files (default: ``min(8, os.cpu_count())``).
    pixels : sequence of bool, length n_images, optional
        Which images to decode for their pixel hash (default: all). Decoding is
        the cost (about 2.5 ms for a 500x375 JPEG, against 0.1 ms for the bytes);
        :func:`pixel_hash_candidates` says which images can share pixels at all.

    Returns
    -------
    pandas.DataFrame
        One row per path, in order: ``file_hash`` (hex BLAKE2b-128 of the file
        bytes) and ``pixel_hash`` (hex BLAKE2b-128 of the image size and its
        pixels decoded to RGBA), ``None`` where the file is missing or cannot
        be decoded (a warning is logged), and ``pixel_hash`` None where
        ``pixels`` is False.
    """
    paths = [None if p is None or pd.isna(p) else str(p) for p in paths]
    decode = [True] * len(paths) if pixels is None else [bool(p) for p in pixels]
    if len(decode) != len(paths):
        raise InvalidInputError(
            f"The 'pixels' parameter of hash_images has {len(decode)} entries but there are "
            f"{len(paths)} paths; give one True/False per path."
        )
    workers = n_workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        hashes = list(pool.map(_hash_one, paths, decode, chunksize=64))
    return pd.DataFrame(hashes, columns=["file_hash", "pixel_hash"], dtype=object)


#: Two images with the same pixels reach the backbone as nearly the same tensor: a large
#: JPEG decoded at reduced scale against the PNG of its pixels was at cosine >= 0.976
#: (``scripts/check_pixel_twins.py``). Where either image may be decoded that way (or
#: turned by its EXIF orientation, or scaled from 16 bits), a pair this close may be twins;
#: 0.9 leaves a wide margin.
PIXEL_HASH_MIN_COSINE = 0.9
#: Two images with the same pixels that both decode exactly (:func:`exact_decodes`) reach
#: the backbone as the same tensor: their vectors differ only by the engine's rounding
#: (cosine 1 - 1e-6; 1e-5 between engines), so a pair below this cut is no pair of twins.
EXACT_TWIN_MIN_COSINE = 0.995
#: EXIF tag of the orientation that :func:`clusterclean.embed.read_image` applies.
_ORIENTATION = 0x0112
#: Modes read_image cannot give as stored: scaled to 8 bits, or 32-bit floats clipped.
_INEXACT_MODES = (*WIDE_MODES, "F")


def _decodes_exactly(path: str | None, min_size: int) -> bool:
    """Whether ``read_image(path, min_size=min_size)`` gives the file's stored pixels,
    as they are, from its header alone (False when unsure or unreadable)."""
    if path is None:
        return False
    from PIL import Image

    try:
        check_regular_file(path)
        with Image.open(path) as image:
            if image.format == "JPEG" and min(image.size) >= 2 * min_size:
                return False  # decoded at 1/2 scale or less (read_image's draft)
            if image.mode in _INEXACT_MODES:
                return False  # scaled to 8 bits, or clipped
            if image.format == "PNG":  # Pillow's PNG getexif decodes the pixels
                exif = Image.Exif()
                if isinstance(image.info.get("exif"), bytes):
                    exif.load(image.info["exif"])
            else:
                exif = image.getexif()
            return exif.get(_ORIENTATION, 1) == 1
    except Exception:  # a file the header check cannot read keeps the wide cut
        return False


def exact_decodes(
    paths: Sequence[str | None], *, min_size: int, n_workers: int | None = None
) -> np.ndarray:
    """Which image files the run's reader decodes to their stored pixels unchanged.

    Read from each file's header only (about 0.1 ms). An image decodes exactly
    unless it is a JPEG whose shorter side is at least ``2 * min_size`` (decoded at
    reduced scale), it has an EXIF orientation other than 1 (turned), or it has
    16- or 32-bit pixels (scaled to 8 bits): :func:`clusterclean.embed.read_image`.
    A PNG's EXIF orientation is read only where it comes before the pixel data.

    Parameters
    ----------
    paths : sequence of str or None
        Image files (None: no file, not exact).
    min_size : int
        The ``min_size`` the run reads the images with:
        ``clusterclean.embed.decode_side(backbone.input_size)``.
    n_workers : int, optional
        Threads reading headers (default: ``min(8, os.cpu_count())``).

    Returns
    -------
    ndarray of bool, shape (len(paths),)
    """
    min_size = check_int(min_size, "min_size", "exact_decodes", min_value=1)
    paths = [None if p is None or pd.isna(p) else str(p) for p in paths]
    workers = n_workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        exact = list(pool.map(_decodes_exactly, paths, [min_size] * len(paths), chunksize=64))
    return np.array(exact, dtype=bool)


def pixel_hash_candidates(
    indices: np.ndarray, similarities: np.ndarray, exact: np.ndarray | None = None
) -> np.ndarray:
    """Which images need their pixels hashed: those in a listed pair close enough for twins.

    A pair ``(i, indices[i, k])`` is close enough at cosine ``similarities[i, k] >=
    EXACT_TWIN_MIN_COSINE`` (0.995) when both images decode exactly, and at
    ``>= PIXEL_HASH_MIN_COSINE`` (0.9) otherwise; both of its images are candidates.
    An image in no such pair has no pixel twin among the images searched, so decoding
    it again for :func:`hash_images` cannot find a group.

    Parameters
    ----------
    indices, similarities : ndarray of shape (n_images, k)
        Each image's listed neighbours (-1: none) and their cosines, the vectors
        computed from these very files.
    exact : ndarray of bool, shape (n_images,), optional
        :func:`exact_decodes` of the files; None = no image decodes exactly (every
        pair at 0.9).

    Returns
    -------
    ndarray of bool, shape (n_images,)
    """
    indices = np.asarray(indices, dtype=np.int64)
    cosine = np.nan_to_num(np.asarray(similarities, dtype=np.float32), nan=-1.0)
    n_images = len(indices)
    exact = np.zeros(n_images, dtype=bool) if exact is None else np.asarray(exact, dtype=bool)
    if indices.ndim != 2 or cosine.shape != indices.shape or exact.shape != (n_images,):
        raise InvalidInputError(
            "pixel_hash_candidates needs 'indices' and 'similarities' of one shape "
            f"(n_images, k) and 'exact' of length n_images; got {indices.shape}, "
            f"{cosine.shape} and {exact.shape}. Pass a Neighbors' indices and similarities."
        )
    if indices.size and indices.max() >= n_images:
        raise InvalidInputError(
            f"pixel_hash_candidates got a neighbour index {int(indices.max())} but only "
            f"{n_images} images; 'indices' must be rows of the same images (-1: none)."
        )
    listed = indices >= 0
    both_exact = exact[:, None] & np.where(listed, exact[np.maximum(indices, 0)], False)
    # the tables' precision: a cosine stored as float32 compares as it is stored
    cut = np.where(both_exact, np.float32(EXACT_TWIN_MIN_COSINE), np.float32(PIXEL_HASH_MIN_COSINE))
    close = listed & (cosine >= cut)
    candidates = close.any(axis=1)
    candidates[indices[close]] = True
    return candidates


def _check_split_priority(split_priority, func: str) -> tuple[str, ...]:
    if isinstance(split_priority, str) or not all(isinstance(s, str) for s in split_priority):
        raise InvalidTypeError(
            f"The 'split_priority' parameter of {func} must be a sequence of split names "
            f"such as ('train', 'val', 'test'). Got {split_priority!r} instead."
        )
    priority = tuple(split_priority)
    if len(set(priority)) != len(priority):
        raise InvalidInputError(
            f"The 'split_priority' parameter of {func} must not repeat a split. "
            f"Got {split_priority!r} instead."
        )
    return priority


def _exact_groups(hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows sharing a hash with another row, and a group label per such row (the hash)."""
    known = pd.Series(hashes, dtype=object).dropna()
    shared = known[known.duplicated(keep=False)]
    return shared.index.to_numpy(dtype=np.int64), shared.to_numpy(dtype=object)


def _near_groups(
    pairs: pd.DataFrame, dataset: Dataset, min_similarity: float
) -> tuple[np.ndarray, np.ndarray]:
    """Rows in a connected component (>= 2 rows) of the pairs above ``min_similarity``."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    strong = pairs[pairs["cosine"].to_numpy(dtype=np.float64) >= min_similarity]
    index = pd.Index(dataset.ids.astype(str))
    src = index.get_indexer(strong["image_id_a"].astype(str))
    dst = index.get_indexer(strong["image_id_b"].astype(str))
    if (src < 0).any() or (dst < 0).any():
        raise InvalidInputError(
            "The pairs name image ids that are not in the dataset; build the pairs with "
            "find_pairs(edges, dataset) on the same dataset."
        )
    n = dataset.n_images
    graph = coo_matrix((np.ones(len(src), dtype=np.int8), (src, dst)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    sizes = np.bincount(labels, minlength=n)
    rows = np.flatnonzero(sizes[labels] >= 2)
    return rows, labels[rows]


def _group_frame(
    kind: str, rows: np.ndarray, keys: np.ndarray, dataset: Dataset, priority: tuple[str, ...]
) -> pd.DataFrame:
    """One row per member: dense group ids (by first member row), kept copy, leaks, labels."""
    order = np.argsort(rows, kind="stable")
    rows, keys = rows[order], keys[order]
    codes, _ = pd.factorize(pd.Series(keys, dtype=object), sort=False)
    regroup = np.lexsort((rows, codes))
    rows, codes, keys = rows[regroup], codes[regroup], keys[regroup]
    table = dataset.table
    split = (
        table["split"].to_numpy(dtype=object)[rows]
        if "split" in table.columns
        else np.full(len(rows), None, dtype=object)
    )
    known = pd.notna(split)
    ranking = {name: i for i, name in enumerate(priority)}
    for name in pd.unique(split[known]):
        ranking.setdefault(name, len(ranking))
    rank = np.array([ranking[s] if k else len(ranking) for s, k in zip(split, known, strict=True)])
    frame = pd.DataFrame(
        {
            "kind": kind,
            "duplicate_group_id": codes.astype(np.int32),
            "image_id": dataset.ids[rows].astype(str),
            "path": (
                table["path"].to_numpy(dtype=object)[rows] if "path" in table.columns else None
            ),
            "split": split,
            "content_hash": keys.astype(str) if kind != "near" else None,
        }
    )
    frame["duplicate_group_size"] = (
        frame.groupby("duplicate_group_id")["image_id"].transform("size").astype(np.int64)
    )
    best = pd.Series(rank).groupby(codes).transform("min").to_numpy()
    first_best = pd.Series(np.where(rank == best, np.arange(len(rows)), len(rows)))
    kept_pos = first_best.groupby(codes).transform("min").to_numpy()
    frame["is_kept"] = np.arange(len(rows)) == kept_pos
    inverse = {v: k for k, v in ranking.items()}
    home = np.array([inverse.get(r) for r in best], dtype=object)
    frame["home_split"] = home
    n_splits = pd.Series(np.where(known, split, None)).groupby(codes).transform("nunique")
    frame["is_cross_split"] = n_splits.to_numpy() >= 2
    frame["is_leak"] = frame["is_cross_split"].to_numpy() & known & (split != home)
    counts, lists = _group_differing_labels(dataset, rows, codes)
    frame["n_differing_labels"] = counts
    frame["differing_attributes"] = pd.Series(lists, dtype=object)
    return frame[list(DUPLICATE_COLUMNS)]


def _group_differing_labels(dataset: Dataset, rows: np.ndarray, codes: np.ndarray):
    """Per member row, the attributes whose known values differ inside its group."""
    names = np.asarray(dataset.attributes, dtype=object)
    if len(rows) == 0:
        return np.zeros(0, dtype=np.int64), []
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    labels = dataset.labels[rows]
    with np.errstate(invalid="ignore"):
        low = np.fmin.reduceat(labels, starts, axis=0)
        high = np.fmax.reduceat(labels, starts, axis=0)
    differ = high > low
    group_counts = differ.sum(axis=1).astype(np.int64)
    group_lists = [names[d].tolist() for d in differ]
    return group_counts[codes], [group_lists[c] for c in codes]


def find_duplicates(
    dataset: Dataset,
    pairs: pd.DataFrame,
    *,
    min_similarity: float = DEFAULT_MIN_DUPLICATE_SIMILARITY,
    split_priority: Sequence[str] = DEFAULT_SPLIT_PRIORITY,
    hashes: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Group exact and near duplicates and mark the copies that leak across splits.

    Parameters
    ----------
    dataset : Dataset
        Ids, paths (``path`` column; images without one are left out of the
        exact kinds), splits and labels.
    pairs : pandas.DataFrame
        Near-duplicate pairs from :func:`find_pairs` (``image_id_a``,
        ``image_id_b``, ``cosine``).
    min_similarity : float in [-1, 1], default=0.98
        Pairs at or above this cosine similarity join a ``near`` group.
    split_priority : sequence of str, default=("train", "val", "test")
        Which split keeps a copy when a group spans splits; the first listed
        split present in the group is its home split (see the module docstring).
    hashes : pandas.DataFrame, optional
        Precomputed :func:`hash_images` of the dataset's paths, row-aligned.

    Returns
    -------
    pandas.DataFrame
        One row per (kind, group, member image), ordered by kind
        (``exact_file``, ``exact_pixels``, ``near``), ``duplicate_group_id`` and dataset
        row. Columns: ``kind``; ``duplicate_group_id`` (int32, dense within a kind, in
        order of the group's first image); ``duplicate_group_size``; ``image_id``;
        ``path``; ``split``; ``content_hash`` (the shared hash, null for
        ``near``); ``is_kept`` (the one member to keep when deduplicating:
        the first image of the home split, or the first image when no split
        is known); ``home_split``; ``is_cross_split`` (the group spans >= 2
        known splits); ``is_leak`` (cross-split group and this image is in a
        known split other than the home split: drop it from its split);
        ``n_differing_labels`` and ``differing_attributes`` (attributes known
        in at least two members whose values differ in the group).
    """
    func = "find_duplicates"
    min_similarity = check_float(min_similarity, "min_similarity", func, low=-1.0, high=1.0)
    priority = _check_split_priority(split_priority, func)
    check_type(pairs, pd.DataFrame, "pairs", func, "a pandas DataFrame from find_pairs")
    started = time.perf_counter()
    if hashes is None:
        paths = (
            dataset.table["path"].tolist()
            if "path" in dataset.table.columns
            else [None] * dataset.n_images
        )
        hashes = hash_images(paths)
    if len(hashes) != dataset.n_images:
        raise InvalidInputError(
            f"hashes has {len(hashes)} rows but the dataset has {dataset.n_images} images; "
            "compute them with hash_images(dataset.table['path'])."
        )
    frames = [
        _group_frame(kind, *_exact_groups(hashes[column].to_numpy(dtype=object)), dataset, priority)
        for kind, column in (("exact_file", "file_hash"), ("exact_pixels", "pixel_hash"))
    ]
    frames.append(
        _group_frame("near", *_near_groups(pairs, dataset, min_similarity), dataset, priority)
    )
    result = pd.concat(frames, ignore_index=True)
    logger.info(
        "duplicates: %s groups, %d leaking copies, %.2f s",
        {
            k: int(f["duplicate_group_id"].nunique())
            for k, f in zip(DUPLICATE_KINDS, frames, strict=True)
        },
        int(result.loc[result["is_leak"], "image_id"].nunique()),
        time.perf_counter() - started,
    )
    return result


def duplicate_counts(duplicates: pd.DataFrame | None) -> dict[str, int]:
    """Groups per kind and images leaking across splits (each counted once); {} if not computed."""
    if duplicates is None:
        return {}
    groups = duplicates.drop_duplicates(["kind", "duplicate_group_id"])["kind"].value_counts()
    counts = {f"{kind}_groups": int(groups.get(kind, 0)) for kind in DUPLICATE_KINDS}
    counts["leaked_images"] = int(duplicates.loc[duplicates["is_leak"], "image_id"].nunique())
    return counts
