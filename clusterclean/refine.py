"""Embeddings -> refined embeddings, fitted on the dataset itself.

A generic ImageNet embedding spends most of its variance on what all images
share (the "average photo" direction and a few dominant, dataset-wide factors).
Cosine similarities are then high for everything, and the cut between "same
subject" and "similar subject" is thin. Centering removes the shared direction;
PCA whitening rescales the remaining principal directions so that no single
dataset-wide factor dominates the similarity:

    z = diag(s) P^T (x - mu),    x' = z / ||z||

with ``mu`` the mean embedding, ``P`` (dim, n_components) the top principal
directions of the centred embeddings (eigenvectors of their covariance, with
eigenvalues lambda_1 >= lambda_2 >= ...) and ``s_j = (lambda_j + eps)^(-power / 2)``.
``power=1`` is full whitening (unit variance in every kept direction),
``power=0.5`` a softer one (the standard deviations are square-rooted), ``power=0``
plain PCA. The fitted transform is kept in a :class:`Refinement` so new images
get the very same treatment (``Refinement.apply``), and can be saved (``.npz``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._contracts import Embeddings, VectorTransform, check_embeddings
from ._validation import check_float, check_int
from .errors import InvalidInputError
from .options import Option, declare, defaults

__all__ = [
    "OPTIONS",
    "Refinement",
    "fit_refinement",
    "refine_embeddings",
    "choose_dim",
    "load_refinement",
]

#: The options of the refine stage, declared once (:mod:`clusterclean.options`).
OPTIONS = declare(
    "refine",
    Option(
        "refine",
        True,
        "centre + PCA-whiten the embeddings, fitted on this dataset (saved as refinement.npz)",
        "bool",
    ),
    Option(
        "refine_dim",
        None,
        "whitened dimensions kept (none: the fewest holding 90% of the variance)",
        "int",
        low=1,
        nullable=True,
    ),
    Option(
        "refine_variance",
        0.9,
        "with refine_dim none: keep the fewest whitened dimensions holding this share of "
        "the variance",
        "float",
        low=0.01,
        high=1.0,
    ),
    Option(
        "refine_power",
        1.0,
        "whitening power (1 = full whitening)",
        "float",
        low=0.0,
        high=1.0,
    ),
)

logger = logging.getLogger(__name__)

#: Auto dimension: the smallest number of principal directions that holds this
#: share of the centred variance (see :func:`choose_dim`; the option ``refine_variance``).
AUTO_VARIANCE = defaults(OPTIONS)["refine_variance"]
#: Relative floor added to every eigenvalue before rescaling, so a near-zero
#: direction is not blown up: eps = EPS_RELATIVE * lambda_1.
EPS_RELATIVE = 1e-4


@dataclass(frozen=True)
class Refinement(VectorTransform):
    """A fitted centring + PCA-whitening transform.

    Attributes
    ----------
    mean : ndarray of shape (dim_in,), dtype float32
        The mean embedding ``mu`` of the fitted data.
    projection : ndarray of shape (dim_in, dim_out), dtype float32
        Orthonormal principal directions ``P``, by decreasing variance.
    scales : ndarray of shape (dim_out,), dtype float32
        ``s_j = (lambda_j + eps)^(-power / 2)``.
    power : float
        The whitening power used for ``scales``.
    explained_variance : float
        Share of the centred variance held by the kept directions, in [0, 1].
    backbone : str
        Backbone name of the fitted embeddings; refined embeddings are named
        ``"<backbone>+whiten<dim_out>"``.
    """

    mean: np.ndarray
    projection: np.ndarray
    scales: np.ndarray
    power: float
    explained_variance: float
    backbone: str = "user"

    @property
    def dim_in(self) -> int:
        return int(self.projection.shape[0])

    @property
    def dim_out(self) -> int:
        return int(self.projection.shape[1])

    _noun, _verb, _tag = "refinement", "Refine", "whiten"

    def _map(self, vectors: np.ndarray) -> np.ndarray:
        """``diag(s) P^T (x - mu)``; :meth:`transform` normalises the rows after."""
        return ((vectors - self.mean) @ self.projection) * self.scales

    def summary(self) -> dict[str, Any]:
        """The scalars of the transform, for ``run.json``."""
        return {
            "method": "pca_whiten",
            "dim_in": self.dim_in,
            "dim_out": self.dim_out,
            "power": self.power,
            "explained_variance": round(self.explained_variance, 6),
            "backbone": self.backbone,
        }

    def _arrays(self) -> dict[str, Any]:
        return {
            "mean": self.mean,
            "projection": self.projection,
            "scales": self.scales,
            "power": np.float64(self.power),
            "explained_variance": np.float64(self.explained_variance),
            "backbone": np.str_(self.backbone),
        }


def load_refinement(path: str | Path) -> Refinement:
    """Read a transform written by :meth:`Refinement.save`."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            return Refinement(
                mean=data["mean"].astype(np.float32),
                projection=data["projection"].astype(np.float32),
                scales=data["scales"].astype(np.float32),
                power=float(data["power"]),
                explained_variance=float(data["explained_variance"]),
                backbone=str(data["backbone"]),
            )
    except (OSError, KeyError, ValueError) as exc:
        raise InvalidInputError(
            f"{path} is not a refinement file written by Refinement.save ({exc}); "
            "fit it again with clusterclean.fit_refinement."
        ) from exc


def choose_dim(eigenvalues: np.ndarray, *, min_variance: float = AUTO_VARIANCE) -> int:
    """The smallest number of leading directions holding ``min_variance`` of the variance.

    With eigenvalues ``lambda_1 >= ... >= lambda_r`` of the centred
    embeddings' covariance: the smallest k with
    ``sum_{j<=k} lambda_j >= min_variance * sum_j lambda_j``. The trailing
    directions hold little variance each; whitening would magnify them up to
    the level of the leading ones, and they are mostly noise of the backbone
    (JPEG, sensor noise, crop jitter), so they are dropped. Uses no labels.
    """
    eigenvalues = np.clip(np.asarray(eigenvalues, dtype=np.float64), 0.0, None)
    total = eigenvalues.sum()
    if total <= 0:
        return 1
    cumulative = np.cumsum(eigenvalues) / total
    return int(min(np.searchsorted(cumulative, min_variance - 1e-12) + 1, len(eigenvalues)))


def _spectrum(vectors: np.ndarray, mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (decreasing) and eigenvectors of the centred data's covariance."""
    centred = vectors.astype(np.float64) - mean
    n_rows, dim = centred.shape
    if n_rows >= dim:
        covariance = centred.T @ centred / (n_rows - 1)
        eigenvalues, eigenvectors = np.linalg.eigh(covariance)
        order = np.argsort(eigenvalues)[::-1]
        return eigenvalues[order], eigenvectors[:, order]
    # fewer rows than dimensions: the SVD of the rows is cheaper and exact
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    return singular**2 / (n_rows - 1), vt.T


def fit_refinement(
    embeddings: Embeddings,
    *,
    dim: int | None = None,
    power: float = 0.5,
    min_variance: float = AUTO_VARIANCE,
    max_fit_images: int = 100_000,
    seed: int = 0,
) -> Refinement:
    """Fit centring + PCA whitening on the embeddings themselves.

    Parameters
    ----------
    embeddings : Embeddings
        Unit vectors of shape (n_images, dim_in), n_images >= 3.
    dim : int, optional
        Directions kept. Default: chosen from the spectrum by
        :func:`choose_dim` (the fewest directions holding ``min_variance`` of
        the variance). Capped at the rank limit ``min(dim_in, n_images - 1)``.
    power : float in [0, 1], default=0.5
        Whitening power: ``s_j = (lambda_j + eps)^(-power / 2)`` with
        ``eps = 1e-4 * lambda_1``. 1 = full whitening, 0 = plain PCA.
    min_variance : float in (0, 1], default=0.9
        Variance share of the automatic ``dim``.
    max_fit_images : int, default=100000
        Fit on a random sample of this many rows at most (the mean and the
        covariance converge long before), so fitting stays O(max_fit_images * dim_in^2).
    seed : int, default=0
        Seed of that sample.

    Returns
    -------
    Refinement
    """
    func = "fit_refinement"
    embeddings = check_embeddings(embeddings, func)
    power = check_float(power, "power", func, low=0.0, high=1.0)
    min_variance = check_float(min_variance, "min_variance", func, low=1e-6, high=1.0)
    max_fit_images = check_int(max_fit_images, "max_fit_images", func, min_value=3)
    seed = check_int(seed, "seed", func, min_value=0)
    if dim is not None:
        dim = check_int(dim, "dim", func, min_value=1)
    vectors = embeddings.vectors
    if len(vectors) < 3:
        raise InvalidInputError(
            f"fit_refinement needs at least 3 embeddings to estimate a covariance; got "
            f"{len(vectors)}. Run without refinement (refine=False) on so few images."
        )
    started = time.perf_counter()
    if len(vectors) > max_fit_images:
        rows = np.random.default_rng(seed).choice(len(vectors), max_fit_images, replace=False)
        vectors = vectors[np.sort(rows)]
    mean = vectors.astype(np.float64).mean(axis=0)
    eigenvalues, eigenvectors = _spectrum(vectors, mean)
    rank = min(vectors.shape[1], len(vectors) - 1)
    eigenvalues, eigenvectors = np.clip(eigenvalues[:rank], 0.0, None), eigenvectors[:, :rank]
    n_keep = choose_dim(eigenvalues, min_variance=min_variance) if dim is None else dim
    n_keep = min(n_keep, rank)
    eps = EPS_RELATIVE * max(float(eigenvalues[0]), 1e-12)
    scales = (eigenvalues[:n_keep] + eps) ** (-power / 2.0)
    total = float(eigenvalues.sum())
    refinement = Refinement(
        mean=mean.astype(np.float32),
        projection=np.ascontiguousarray(eigenvectors[:, :n_keep], dtype=np.float32),
        scales=scales.astype(np.float32),
        power=power,
        explained_variance=float(eigenvalues[:n_keep].sum() / total) if total > 0 else 1.0,
        backbone=embeddings.backbone,
    )
    logger.info(
        "refine: fitted on %d x %d, kept %d directions (%.1f%% of the variance), power %.2f, "
        "%.2f s",
        len(vectors),
        vectors.shape[1],
        n_keep,
        100 * refinement.explained_variance,
        power,
        time.perf_counter() - started,
    )
    return refinement


def refine_embeddings(embeddings: Embeddings, **options: Any) -> tuple[Embeddings, Refinement]:
    """Fit a :class:`Refinement` on ``embeddings`` and apply it to them.

    ``options`` are those of :func:`fit_refinement`. Returns the refined
    embeddings (unit rows of dimension ``dim_out``) and the transform.
    """
    refinement = fit_refinement(embeddings, **options)
    return refinement.apply(embeddings), refinement
