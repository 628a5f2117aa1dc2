"""The data contracts that flow between stages (see DESIGN.md).

They live in one small module so that every stage can import them without
importing another stage (and without importing torch or faiss).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._validation import check_type
from .errors import InvalidInputError

__all__ = [
    "Dataset",
    "Embeddings",
    "Neighbors",
    "VectorTransform",
    "as_embeddings",
    "check_embeddings",
    "check_known_attributes",
    "unit_rows",
]


@dataclass(frozen=True)
class Dataset:
    """Images and their multi-label annotations.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per image, in a fixed order that every later stage keeps:
        ``image_id`` (str, unique), ``path`` (str, absolute, or ``None`` when
        there are no image files, e.g. the user brought embeddings), and
        optionally ``split`` (``train``/``val``/``test``) and ``group`` (a known
        identity such as a PETA person id).
    labels : ndarray of shape (n_images, n_attributes), dtype float32
        1.0 = attribute present, 0.0 = absent, NaN = missing (unknown).
    attributes : tuple of str
        Attribute (column) names, one per column of ``labels``. A multi-class
        task ``pose`` with values ``left``/``right`` appears as the one-hot
        attributes ``pose=left`` and ``pose=right``.
    tasks : mapping of str to tuple of str
        One-of-K tasks: task name -> the one-hot attribute names that belong
        to it. Votes on these stay one-of-K.
    root : Path or None
        The images folder, when there is one.
    """

    table: pd.DataFrame
    labels: np.ndarray
    attributes: tuple[str, ...]
    tasks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    root: Path | None = None

    def __post_init__(self) -> None:
        labels = np.asarray(self.labels, dtype=np.float32)
        if labels.ndim != 2:
            raise InvalidInputError(
                f"labels must be a 2-D matrix (n_images, n_attributes); got shape {labels.shape}."
            )
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "attributes", tuple(str(a) for a in self.attributes))
        if labels.shape != (len(self.table), len(self.attributes)):
            raise InvalidInputError(
                f"labels have shape {labels.shape} but the dataset has {len(self.table)} "
                f"images and {len(self.attributes)} attributes."
            )
        if "image_id" not in self.table.columns:
            raise InvalidInputError("The dataset table needs an 'image_id' column.")
        # numpy's str arrays drop trailing NULs, so such ids would silently change
        for kind, values in (("image id", self.table["image_id"]), ("attribute", self.attributes)):
            with_nul = [v for v in values if "\x00" in str(v)]
            if with_nul:
                raise InvalidInputError(
                    f"The {kind} {with_nul[0]!r} holds a NUL character; remove it from the "
                    "labels table."
                )
        bad = ~np.isnan(labels) & (labels != 0) & (labels != 1)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise InvalidInputError(
                f"Label of image {self.table['image_id'].iloc[row]!r}, attribute "
                f"{self.attributes[col]!r} is {float(labels[row, col])!r}; labels must be 1, 0 or "
                "missing (NaN)."
            )

    @property
    def ids(self) -> np.ndarray:
        """Image ids, ndarray of shape (n_images,), dtype object (str)."""
        return self.table["image_id"].to_numpy(dtype=object)

    @property
    def n_images(self) -> int:
        return len(self.table)

    @property
    def n_attributes(self) -> int:
        return len(self.attributes)


@dataclass(frozen=True)
class Embeddings:
    """L2-normalised image vectors, row i belongs to ``ids[i]``.

    Attributes
    ----------
    ids : ndarray of shape (n_images,), dtype object
        Unique image ids (str).
    vectors : ndarray of shape (n_images, dim), dtype float32
        C-contiguous, unit rows, so an inner product is a cosine similarity.
    backbone : str
        The name of the model that made them (``"user"`` for brought vectors).
    """

    ids: np.ndarray
    vectors: np.ndarray
    backbone: str = "user"

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return int(self.vectors.shape[0])


def as_embeddings(ids, vectors, backbone: str = "user", *, normalize: bool = True) -> Embeddings:
    """Validate and coerce raw vectors into :class:`Embeddings`.

    Rows are L2-normalised (``normalize=True``). A row that is all zeros or
    holds NaN/inf cannot be normalised and is rejected with its image id.
    """
    ids = np.asarray([str(i) for i in ids], dtype=object)
    try:
        raw = np.asarray(vectors)
        if raw.dtype.kind not in "biufO":  # complex, text, dates ... are not coordinates
            raise TypeError(f"dtype {raw.dtype} is not a real number type")
        with np.errstate(over="ignore"):  # float64 beyond float32's range -> inf, named below
            vectors = np.ascontiguousarray(raw, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"Embeddings must be a 2-D array (n_images, dim) of real numbers; could not read "
            f"them as float32 ({exc})."
        ) from exc
    if vectors.ndim != 2 or vectors.shape[1] == 0:
        raise InvalidInputError(
            f"Embeddings must be a 2-D array (n_images, dim) with dim >= 1; got shape "
            f"{vectors.shape}."
        )
    if len(ids) != len(vectors):
        raise InvalidInputError(
            f"There are {len(ids)} ids but {len(vectors)} embedding rows; they must match."
        )
    if len(ids) and len(set(ids.tolist())) != len(ids):
        dup = pd.Series(ids).loc[pd.Series(ids).duplicated()].iloc[0]
        raise InvalidInputError(f"Embedding ids must be unique; {dup!r} appears more than once.")
    finite = np.isfinite(vectors).all(axis=1)
    if not finite.all():
        bad = ids[~finite]
        raise InvalidInputError(
            f"{len(bad)} embedding rows hold NaN or inf (first: image {bad[0]!r}); "
            "re-embed those images or drop them (values beyond float32's range, about "
            "+-3.4e38, count as inf)."
        )
    with np.errstate(over="ignore"):
        norms = np.linalg.norm(vectors, axis=1)
    zero = norms <= 1e-12
    if zero.any():
        bad = ids[zero]
        raise InvalidInputError(
            f"{len(bad)} embedding rows are all zeros (first: image {bad[0]!r}); a zero vector "
            "has no direction, so it cannot be compared. Re-embed those images or drop them."
        )
    if normalize:
        huge = np.isinf(norms)  # finite rows whose squares overflow: scale them down first
        if huge.any():
            vectors = vectors.copy()
            vectors[huge] /= np.abs(vectors[huge]).max(axis=1, keepdims=True)
            norms[huge] = np.linalg.norm(vectors[huge], axis=1)
        vectors = np.ascontiguousarray(vectors / norms[:, None], dtype=np.float32)
    return Embeddings(ids=ids, vectors=vectors, backbone=str(backbone))


@dataclass(frozen=True)
class Neighbors:
    """The k nearest neighbours of every image (self excluded).

    Attributes
    ----------
    indices : ndarray of shape (n_images, n_neighbors), dtype int64
        Row indices of the neighbours, most similar first; -1 where fewer
        than ``n_neighbors`` other images exist.
    similarities : ndarray of shape (n_images, n_neighbors), dtype float32
        Cosine similarities matching ``indices`` (``-inf`` where the index is -1).
    """

    indices: np.ndarray
    similarities: np.ndarray


def check_embeddings(embeddings: object, func: str) -> Embeddings:
    """``embeddings`` when it is an :class:`Embeddings`; else the library's TypeError."""
    check_type(
        embeddings, Embeddings, "embeddings", func, "an Embeddings (see clusterclean.as_embeddings)"
    )
    return embeddings


def check_known_attributes(names, dataset: Dataset, parameter: str, func: str) -> None:
    """Raise when ``names`` holds attributes that ``dataset`` does not have."""
    unknown = sorted(set(names) - set(dataset.attributes))
    if unknown:
        raise InvalidInputError(
            f"The {parameter!r} parameter of {func} names unknown attributes {unknown}; "
            f"known attributes are {list(dataset.attributes)[:20]}."
        )


def unit_rows(z: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), C-contiguous float32."""
    norms = np.linalg.norm(z, axis=1, keepdims=True)
    return np.ascontiguousarray(z / np.maximum(norms, 1e-12), dtype=np.float32)


class VectorTransform:
    """The interface of a fitted embedding transform (:class:`~clusterclean.refine.Refinement`,
    :class:`~clusterclean.adapt.Adaptation`): fit elsewhere, then ``transform`` /
    ``apply`` / ``save`` / ``summary``, saved so that new images get the same treatment.

    A subclass gives ``dim_in``, ``dim_out``, ``_map(vectors)`` (the map before the rows
    are normalised), ``_arrays()`` (what ``save`` writes), ``summary()`` and the words
    of its messages: ``_noun`` ("refinement"), ``_verb`` ("Refine"), ``_tag`` (the
    backbone suffix, followed by ``dim_out``).
    """

    _noun = "transform"
    _verb = "Transform"
    _tag = "transform"

    @property
    def dim_in(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def dim_out(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def _map(self, vectors: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _arrays(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def summary(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        """Rows of shape (n, dim_in) -> unit rows of shape (n, dim_out), float32."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim_in:
            raise InvalidInputError(
                f"This {self._noun} was fitted on {self.dim_in}-dimensional embeddings; got "
                f"shape {vectors.shape}. {self._verb} embeddings of the same backbone only."
            )
        return unit_rows(self._map(vectors))

    def apply(self, embeddings: Embeddings) -> Embeddings:
        """``embeddings`` transformed: same ids, unit rows of dimension ``dim_out``."""
        embeddings = check_embeddings(embeddings, f"{type(self).__name__}.apply")
        return Embeddings(
            ids=embeddings.ids,
            vectors=self.transform(embeddings.vectors),
            backbone=f"{embeddings.backbone}+{self._tag}{self.dim_out}",
        )

    def save(self, path) -> Any:
        """Write the transform to an ``.npz`` file atomically; returns the path."""
        from .atomic import save_npz

        return save_npz(path, self._arrays())
