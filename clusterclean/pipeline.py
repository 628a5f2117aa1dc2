"""``run``: the stages in order, from images + labels to a written report.

No printing and no exiting here: the CLI formats what :func:`summarize` returns.
"""

from __future__ import annotations

import logging
import platform
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from . import __version__
from ._contracts import Dataset, Embeddings, Neighbors
from ._validation import check_choice, check_float, check_int
from .components import component_edge_stats, find_components, split_components
from .duplicates import duplicate_counts, find_duplicates, find_pairs
from .engine import ENGINES
from .errors import InvalidInputError, InvalidTypeError
from .graph import link_neighbors, search_neighbors
from .index import INDEX_KINDS, choose_index
from .mixed import find_mixed_components, mixed_component_columns, split_mixed_components
from .refine import Refinement, fit_refinement
from .report import (
    ADAPTATION_FILE,
    REFINEMENT_FILE,
    Report,
    check_output_folder,
    order_columns,
    write_report,
)
from .scoring import find_varying_attributes, parse_threshold, score_components

if TYPE_CHECKING:  # pragma: no cover - typing only
    from .adapt import Adaptation

__all__ = ["RunConfig", "run", "summarize", "align_embeddings"]

logger = logging.getLogger(__name__)

#: The fitted refinement in a report folder (see :func:`clusterclean.refine.load_refinement`).
#: ``adapt`` values: a label-free head when the images are there, no head, a label-free
#: head, a head that also learns known groups.
ADAPT_METHODS = ("auto", "none", "views", "groups")

#: ``adapt="auto"`` trains no head below this many images: too few classes for the
#: contrastive loss to learn more than noise.
MIN_ADAPT_IMAGES = 100


@dataclass(frozen=True)
class RunConfig:
    """Every option of :func:`run`; the CLI flags and ``run.json`` use the same names.

    Attributes
    ----------
    backbone : str
        Embedding model name (``clusterclean.available_backbones()``).
    weights : str or None
        Local weights file for the backbone.
    n_neighbors : int
        Neighbours searched per image.
    min_similarity : float or "auto"
        Cut on the link similarity of an edge: the cosine of the (refined)
        embeddings, or the re-ranked similarity with ``rerank``. The default
        0.5 is the cut measured for the default ``refine=True, rerank=True``
        (docs/grouping); with both off, a plain cosine cut (0.9 is a sane start).
        ``"auto"``: calibrated on augmented views of the images
        (:mod:`clusterclean.calibrate`; needs the images), the estimates go
        to ``run.json["calibration"]``.
    min_cosine : float
        Floor on the plain cosine of every edge, whatever the link similarity
        (0.5: keeps unrelated images apart where re-ranking alone would not).
    target_precision : float or None
        With ``min_similarity="auto"``: the lowest cut whose estimated pair
        precision reaches this (None: the cut of best estimated F1).
    n_calibration_views : int
        With ``"auto"``: augmented views per sampled image.
    max_calibration_images : int
        With ``"auto"``: images sampled for their views.
    mutual : bool
        Keep only mutual-kNN edges.
    thresholds : tuple of str
        Component flag thresholds (``"p80"`` percentiles or absolute values).
    min_label_agreement : float
        A cell whose agreement is below this is a suspected label issue.
    min_component_size : int
        Smaller components are not scored.
    exclude_attributes : tuple of str
        Attributes never scored or flagged.
    min_duplicate_similarity : float
        Pairs at or above this similarity form near-duplicate groups.
    index : str
        kNN index: ``auto`` (exact up to 100k images, IVF above), ``flat``,
        ``ivf`` or ``hnsw`` (:mod:`clusterclean.index`).
    n_lists, n_probe : int or None
        IVF cells and cells scanned per query (None = scaled to N).
    n_components : int or None
        Search a PCA reduction of this dimension (None = full vectors).
    refine : bool
        Centre and PCA-whiten the embeddings, fitted on the dataset
        (:mod:`clusterclean.refine`), before the graph.
    refine_dim : int or None
        Directions kept (None = the fewest holding 90% of the variance).
    refine_power : float
        Whitening power in [0, 1] (1 = full whitening).
    adapt : str
        ``"auto"`` (default): ``"views"`` when the run has the image files (its
        own backbone's embeddings, at least ``MIN_ADAPT_IMAGES`` images, a fixed
        cut), else ``"none"``, logged; ``run.json``'s ``adaptation`` says which
        head, if any, was trained. ``"none"``: no head. ``"views"``: train a
        projection head on augmented views of the images (label-free,
        :mod:`clusterclean.adapt`) and build the graph on its output (refined
        after, when ``refine``). ``"groups"``: the head also learns the
        identities of the ``group`` column where it is known.
        Needs the image files.
    adapt_views : int
        Augmented views embedded per image.
    adapt_epochs : int
        Training epochs of the head.
    adapt_dim : int
        Output dimension of the head.
    adapt_max_images : int or None
        Views of a random sample of this many images (None = all).
    rerank : bool
        k-reciprocal re-ranking of the kNN lists (:func:`clusterclean.graph.rerank_neighbors`).
    n_reciprocal, n_expansion : int
        Re-ranking's reciprocal-set size k and query-expansion size.
    n_local : int
        Local scaling of similarities over this many neighbours (0 = off).
    communities : bool
        Split components into their Louvain communities.
    max_component_size : int or None
        Re-split larger components at a higher cut (None = no cap).
    detect_varying_attributes : bool
        Find attributes that vary inside components far more often than the
        others (pose, occlusion...) and leave them unscored, reported in
        ``run.json`` (:func:`clusterclean.scoring.find_varying_attributes`).
    consistent_attributes : tuple of str
        Attributes (or tasks) to score even when detected as varying.
    detect_mixed : bool
        Find components that mix two look-alike identities (labels split them
        on ``min_mixed_attributes`` attributes the same way, and the refined
        embedding agrees) and split them in two before scoring, reported as
        "possibly two people" (:mod:`clusterclean.mixed`).
    min_mixed_attributes : int
        Attributes (a one-of-K task counts once) that must split a component
        the same way.
    min_mixed_gap : float
        Smallest gap between the mean cosine similarity inside the two sides
        and across them, on the refined vectors.
    tta : str
        ``"flip"`` averages each image's features with its mirror's.
    engine : str
        What runs the backbone (:func:`clusterclean.engine.load_engine`):
        ``"auto"`` (ONNX Runtime on CPU when installed and the export succeeds,
        else torch), ``"onnxruntime"`` or ``"torch"``; the images and the
        views of the head go through the same one. ``run.json``'s
        ``embedding.engine`` says which ran.
    cache_dir : str or None
        Per-image embedding cache; an interrupted run resumes from it.
    on_error : str
        ``"skip"`` unreadable images (listed in ``skipped.parquet``) or ``"raise"``.
    seed : int
        Seed of every random choice (Louvain communities, the sample a
        refinement is fitted on above 100k images); recorded in ``run.json``.
    """

    backbone: str = "resnet50"
    weights: str | None = None
    batch_size: int = 32
    num_workers: int | None = None
    device: str | None = None
    n_neighbors: int = 10
    min_similarity: float | str = 0.5
    mutual: bool = False
    thresholds: tuple[str, ...] = ("p80",)
    min_label_agreement: float = 0.5
    min_component_size: int = 2
    exclude_attributes: tuple[str, ...] = ()
    image_column: str | None = None
    multiclass_columns: tuple[str, ...] = ()
    allow_unlabeled_images: bool = False

    def __post_init__(self) -> None:
        # Checked here, before any long work starts, with the wording of run().
        func = "run"
        check_int(self.n_neighbors, "n_neighbors", func, min_value=1)
        check_int(self.batch_size, "batch_size", func, min_value=1)
        check_int(self.min_component_size, "min_component_size", func, min_value=1)
        if self.num_workers is not None:
            check_int(self.num_workers, "num_workers", func, min_value=0)
        if isinstance(self.min_similarity, str) and self.min_similarity != "auto":
            raise InvalidInputError(
                "The 'min_similarity' parameter of run must be a float in [-1, 1] or 'auto'. "
                f"Got {self.min_similarity!r} instead."
            )
        if self.min_similarity != "auto":
            check_float(self.min_similarity, "min_similarity", func, low=-1.0, high=1.0)
        if self.target_precision is not None:
            check_float(self.target_precision, "target_precision", func, low=0.0, high=1.0)
        check_int(self.n_calibration_views, "n_calibration_views", func, min_value=1)
        check_int(self.max_calibration_images, "max_calibration_images", func, min_value=1)
        check_float(self.min_label_agreement, "min_label_agreement", func, low=0.0, high=1.0)
        check_float(self.min_cosine, "min_cosine", func, low=-1.0, high=1.0)
        check_int(self.seed, "seed", func, min_value=0)
        check_choice(self.tta, "tta", func, ("none", "flip"))
        check_choice(self.engine, "engine", func, ENGINES)
        check_choice(self.on_error, "on_error", func, ("skip", "raise"))
        if self.cache_dir is not None:
            object.__setattr__(self, "cache_dir", str(self.cache_dir))
        check_float(
            self.min_duplicate_similarity, "min_duplicate_similarity", func, low=-1.0, high=1.0
        )
        for threshold in self.thresholds:
            parse_threshold(threshold)
        check_choice(self.index, "index", func, INDEX_KINDS)
        check_float(self.refine_power, "refine_power", func, low=0.0, high=1.0)
        check_choice(self.adapt, "adapt", func, ADAPT_METHODS)
        for name in ("adapt_views", "adapt_epochs", "adapt_dim"):
            check_int(getattr(self, name), name, func, min_value=1)
        if self.adapt_max_images is not None:
            check_int(self.adapt_max_images, "adapt_max_images", func, min_value=2)
        if self.adapt in ("views", "groups") and self.min_similarity == "auto":
            raise InvalidInputError(
                "min_similarity='auto' cannot be combined with adapt yet: the calibration "
                "estimates the cut in the backbone's space, not the head's. Give a fixed cut "
                "with --adapt (the default 0.5 was measured with it, docs/grouping/"
                "bench_adapt.json) or calibrate without --adapt."
            )
        check_int(self.n_reciprocal, "n_reciprocal", func, min_value=2)
        check_int(self.n_expansion, "n_expansion", func, min_value=1)
        check_int(self.n_local, "n_local", func, min_value=0)
        check_int(self.min_mixed_attributes, "min_mixed_attributes", func, min_value=1)
        check_float(self.min_mixed_gap, "min_mixed_gap", func, low=-2.0, high=2.0)
        if self.rerank and self.n_reciprocal > self.n_neighbors + 1:
            raise InvalidInputError(
                f"The 'n_reciprocal' parameter of run must be at most n_neighbors + 1 = "
                f"{self.n_neighbors + 1}. Got {self.n_reciprocal} instead. Re-ranking (on by "
                "default) needs that many neighbours: raise n_neighbors (--n-neighbors), lower "
                "n_reciprocal (--n-reciprocal), or turn it off (rerank=False, --no-rerank)."
            )
        for name in ("n_lists", "n_probe", "n_components", "refine_dim", "max_component_size"):
            if getattr(self, name) is not None:
                check_int(getattr(self, name), name, func, min_value=1)
        for name in (
            "thresholds",
            "exclude_attributes",
            "multiclass_columns",
            "consistent_attributes",
        ):
            value = getattr(self, name)
            if isinstance(value, str):
                raise InvalidTypeError(
                    f"The {name!r} parameter of run must be a sequence of str. Got {value!r} "
                    f"instead; write ({value!r},)."
                )
            object.__setattr__(self, name, tuple(value))

    min_duplicate_similarity: float = 0.98
    index: str = "auto"
    n_lists: int | None = None
    n_probe: int | None = None
    n_components: int | None = None
    refine: bool = True
    refine_dim: int | None = None
    refine_power: float = 1.0
    adapt: str = "auto"
    adapt_views: int = 2
    adapt_epochs: int = 30
    adapt_dim: int = 128
    adapt_max_images: int | None = 2000
    rerank: bool = True
    min_cosine: float = 0.5
    target_precision: float | None = None
    n_calibration_views: int = 2
    max_calibration_images: int = 2000
    n_reciprocal: int = 6
    n_expansion: int = 2
    n_local: int = 0
    communities: bool = False
    max_component_size: int | None = None
    seed: int = 0
    tta: str = "none"
    engine: str = "auto"
    cache_dir: str | None = None
    on_error: str = "skip"
    detect_varying_attributes: bool = True
    consistent_attributes: tuple[str, ...] = ()
    detect_mixed: bool = True
    min_mixed_attributes: int = 3
    min_mixed_gap: float = 0.05


def align_embeddings(embeddings: Embeddings, dataset: Dataset) -> Embeddings:
    """Reorder ``embeddings`` to the dataset's row order; their ids must match exactly."""
    position = pd.Index(embeddings.ids.astype(str))
    wanted = pd.Index(dataset.ids.astype(str))
    if position.equals(wanted):
        return embeddings
    order = position.get_indexer(wanted)  # hash lookups; -1 where absent
    missing = wanted[order < 0]
    extra = position[~position.isin(wanted)]
    if len(missing) or len(extra):
        parts = []
        if len(missing):
            parts.append(
                f"{len(missing)} dataset images have no embedding (first: "
                f"{', '.join(repr(str(m)) for m in missing[:3])})"
            )
        if len(extra):
            parts.append(
                f"{len(extra)} embedding ids are not in the labels table (first: "
                f"{', '.join(repr(str(e)) for e in extra[:3])})"
            )
        raise InvalidInputError(
            "The embeddings do not match the dataset: "
            + "; ".join(parts)
            + ". The embeddings' image_id values must equal the labels table's image ids."
        )
    return Embeddings(
        ids=embeddings.ids[order],
        vectors=np.ascontiguousarray(embeddings.vectors[order]),
        backbone=embeddings.backbone,
    )


@contextmanager
def _timed(timings: dict[str, float], stage: str):
    started = time.perf_counter()
    yield
    timings[stage] = round(time.perf_counter() - started, 4)


def _versions() -> dict[str, str]:
    import sys

    versions = {
        "clusterclean": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
    }
    for name in ("pyarrow", "scipy", "faiss", "torch", "torchvision"):
        module = sys.modules.get(name)
        if module is not None:
            versions[name] = str(getattr(module, "__version__", "unknown"))
    return versions


def _images_table(dataset: Dataset, scores_images: pd.DataFrame, neighbors) -> pd.DataFrame:
    table = pd.DataFrame({"image_id": dataset.ids.astype(str)})
    for column in ("path", "split", "group"):
        table[column] = (
            dataset.table[column].to_numpy(dtype=object)
            if column in dataset.table.columns
            else None
        )
    for column in ("component_id", "component_size"):
        table[column] = scores_images[column].to_numpy()
    nearest = neighbors.indices[:, 0] if neighbors.indices.shape[1] else np.full(len(table), -1)
    has = nearest >= 0
    nearest_id = np.full(len(table), None, dtype=object)
    nearest_id[has] = dataset.ids[nearest[has]]
    table["nearest_id"] = nearest_id
    sims = neighbors.similarities[:, 0] if neighbors.similarities.shape[1] else np.zeros(len(table))
    table["nearest_similarity"] = np.where(has, sims, np.nan).astype(np.float32)
    for column in ("centroid_similarity", "n_rare_labels", "rare_labels", "label_issue_score"):
        if column in scores_images.columns:
            table[column] = scores_images[column].to_numpy()
    return table


def run(
    images: str | Path | None = None,
    labels: str | Path | pd.DataFrame | Dataset | None = None,
    *,
    out: str | Path | None = None,
    embeddings: str | Path | Embeddings | None = None,
    embedding_ids: str | Path | None = None,
    config: RunConfig | None = None,
    progress: bool = True,
    neighbors: Neighbors | None = None,
    refinement: Refinement | None = None,
    adaptation: Adaptation | None = None,
    **options: Any,
) -> Report:
    """Run the whole pipeline: load, embed, kNN graph, components, scores, report.

    Parameters
    ----------
    images : path, optional
        Folder of images. Optional when ``embeddings`` are given.
    labels : path, DataFrame or Dataset, optional
        Labels table (CSV/Parquet, wide or long form) or a loaded Dataset.
    out : path, optional
        Report folder to write (atomically). Nothing is written when omitted.
    embeddings : path or Embeddings, optional
        Vectors to use instead of embedding the images (Parquet with
        ``image_id`` + a list column, or ``.npy`` with ``embedding_ids``).
    embedding_ids : path, optional
        With a ``.npy`` file: the ids of its rows (a text file with one id per
        line, or a CSV/Parquet file with an ``image_id`` column).
    config : RunConfig, optional
        All options at once; ``**options`` override its fields by name.
    progress : bool, default=True
        Progress bars on the long stages.
    neighbors : Neighbors, optional
        kNN lists already searched on these embeddings, in the dataset's row
        order (``clusterclean.incremental`` merges them); the search is skipped.
        They are the lists of the refined vectors, before re-ranking.
    refinement : Refinement, optional
        A fitted refinement to apply instead of fitting one on this dataset
        (``clusterclean.incremental`` passes the base run's); needs ``refine``.
    adaptation : Adaptation, optional
        A trained projection head to apply instead of training one
        (``clusterclean.incremental`` passes the base run's); needs ``adapt``.

    Returns
    -------
    Report
        The tables, also written to ``out`` when given.
    """
    config = config or RunConfig()
    unknown = sorted(set(options) - set(RunConfig.__dataclass_fields__))
    if unknown:
        raise InvalidTypeError(
            f"run() got unknown options {unknown}; valid options are "
            f"{sorted(RunConfig.__dataclass_fields__)}."
        )
    config = RunConfig(**{**asdict(config), **options})
    if out is not None:
        check_output_folder(out)  # a read-only or foreign --out fails now, not after the work
    timings: dict[str, float] = {}
    started = time.perf_counter()

    with _timed(timings, "load"):
        dataset = _load(images, labels, embeddings, config)
    with _timed(timings, "embed"):
        dataset, vectors, skipped, engine_used = _embed(
            dataset, embeddings, embedding_ids, config, progress
        )
    with _timed(timings, "adapt"):
        adapted, adaptation = _adapt(dataset, vectors, config, adaptation, progress)
    with _timed(timings, "refine"):
        refined, refinement = _refine(adapted, config, refinement)
    with _timed(timings, "graph"):
        index_spec = choose_index(
            len(refined),
            refined.dim,
            index=config.index,
            n_lists=config.n_lists,
            n_probe=config.n_probe,
            n_components=config.n_components,
            func="run",
        )
        if neighbors is not None and neighbors.indices.shape != (len(vectors), config.n_neighbors):
            raise InvalidInputError(
                f"The 'neighbors' parameter of run must hold {config.n_neighbors} neighbours "
                f"for each of the {len(vectors)} images. Got shape {neighbors.indices.shape} "
                "instead."
            )
        if neighbors is None:
            neighbors = search_neighbors(
                refined,
                n_neighbors=config.n_neighbors,
                progress=progress,
                index=index_spec.kind,
                n_lists=index_spec.n_lists,
                n_probe=index_spec.n_probe,
                n_components=index_spec.n_components,
            )
        searched = neighbors  # saved as neighbors.parquet: what new images merge into
        calibration = None
        min_similarity = config.min_similarity
        if min_similarity == "auto":
            calibration = _calibrate(dataset, vectors, refinement, searched, config, progress)
            min_similarity = calibration.min_similarity
        neighbors, edges = link_neighbors(
            neighbors,
            refined,
            cosine_of=vectors,
            min_similarity=min_similarity,
            mutual=config.mutual,
            rerank=config.rerank,
            n_reciprocal=config.n_reciprocal,
            n_expansion=config.n_expansion,
            n_local=config.n_local,
            min_cosine=config.min_cosine,
        )
    with _timed(timings, "components"):
        component_ids = split_components(
            edges,
            find_components(edges, dataset.n_images),
            max_component_size=config.max_component_size,
            communities=config.communities,
            seed=config.seed,
        )
    with _timed(timings, "scores"):
        varying, excluded = _excluded_attributes(component_ids, dataset, config)
        component_ids, mixed, mixed_info = _split_mixed(
            component_ids, dataset, refined, excluded, config
        )
        scores = score_components(
            component_ids,
            dataset,
            embeddings=vectors,
            thresholds=config.thresholds,
            min_label_agreement=config.min_label_agreement,
            min_component_size=config.min_component_size,
            exclude_attributes=excluded,
        )
        components = order_columns(
            "components",
            pd.concat(
                [
                    scores.components,
                    component_edge_stats(edges, component_ids),
                    mixed_component_columns(mixed, len(scores.components)),
                ],
                axis=1,
            ),
        )
        pairs = find_pairs(edges, dataset)
        images_table = _images_table(dataset, scores.images, neighbors)
    with _timed(timings, "duplicates"):
        duplicates = find_duplicates(dataset, pairs, min_similarity=config.min_duplicate_similarity)

    sizes = components["size"].to_numpy()
    run_info: dict[str, Any] = {
        "parameters": asdict(config),
        "versions": _versions(),
        "timings": timings,
        "counts": {
            "images": dataset.n_images,
            "skipped_images": 0 if skipped is None else len(skipped),
            "attributes": dataset.n_attributes,
            "components": len(components),
            "components_multi": int((sizes >= 2).sum()),
            "largest_component": int(sizes.max()) if len(sizes) else 0,
            "edges": len(edges),
            "label_issues": len(scores.label_issues),
            "duplicates": duplicate_counts(duplicates),
            "flagged_components": {
                c: int(components[c].sum())
                for c in components.columns
                if c.startswith("is_bad_component_")
            },
        },
        "thresholds": scores.components.attrs.get("thresholds", {}),
        # attributes never scored, flagged or changed: the user's plus the detected ones
        "excluded_attributes": list(excluded),
        "varying_attributes": varying,
        "mixed_components": mixed_info,
        "embedding": {"backbone": vectors.backbone, "dim": vectors.dim, "engine": engine_used},
        "refinement": None
        if refinement is None
        else {**refinement.summary(), "file": REFINEMENT_FILE},
        "adaptation": None
        if adaptation is None
        else {**adaptation.summary(), "file": ADAPTATION_FILE},
        "index": index_spec.as_dict(),
        "calibration": None if calibration is None else calibration.summary(),
    }
    report = Report(
        dataset=dataset,
        images=images_table,
        components=components,
        component_attributes=scores.component_attributes,
        label_issues=scores.label_issues,
        pairs=pairs,
        duplicates=duplicates,
        skipped=skipped,
        edges=edges,
        embeddings=vectors,
        neighbors=searched,
        refinement=refinement,
        adaptation=adaptation,
        run_info=run_info,
    )
    timings["total"] = round(time.perf_counter() - started, 4)
    if out is not None:
        report = replace(report, folder=write_report(report, out))
    return report


def _excluded_attributes(
    component_ids: np.ndarray, dataset: Dataset, config: RunConfig
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The attribute columns not to score: the user's, plus the per-image ones found.

    Returns the detection's figures (for ``run.json``) and the column names.
    """
    excluded = list(config.exclude_attributes)
    figures: dict[str, Any] = {"detected": False}
    if config.detect_varying_attributes and dataset.n_attributes:
        table = find_varying_attributes(
            component_ids, dataset, min_component_size=config.min_component_size
        )
        proposed = table.loc[table["is_per_image"], "attribute"].tolist()
        kept = [a for a in proposed if a in config.consistent_attributes]
        for columns in table.loc[table["is_per_image"] & ~table["attribute"].isin(kept), "columns"]:
            excluded += [c for c in columns if c not in excluded]
        figures = {
            "detected": True,
            "proposed": proposed,
            "kept_by_user": kept,
            "table": table.drop(columns=["columns"]).round(4).to_dict(orient="records"),
        }
        if proposed:
            logger.warning(
                "attributes that vary inside components far more than the rest, treated as "
                "per-image (not scored): %s; keep them with consistent_attributes "
                "(--consistent-attributes)",
                ", ".join(a for a in proposed if a not in kept) or "none",
            )
    return figures, tuple(excluded)


def _adapt(
    dataset: Dataset,
    vectors: Embeddings,
    config: RunConfig,
    fitted: Adaptation | None,
    progress: bool,
) -> tuple[Embeddings, Adaptation | None]:
    """Train (or take ``fitted``) and apply the projection head; unchanged when off.

    Returns the vectors for the graph and the head (None when off).
    """
    if fitted is not None:
        if config.adapt == "none":
            raise InvalidInputError(
                "A fitted adaptation was given but adapt is 'none'; pass adapt='views' or "
                "'groups' (the method it was trained with) to apply it."
            )
        return fitted.apply(vectors), fitted
    if _adapt_method(dataset, vectors, config) == "none":
        return vectors, None
    from .adapt import fit_adaptation

    paths = dataset.table["path"] if "path" in dataset.table.columns else None
    if paths is None or paths.isna().any():
        raise InvalidInputError(
            f"adapt={config.adapt!r} (--adapt) trains on augmented views of the images, so it "
            "needs the image files: give --images DIR (with the embeddings made by the same "
            "--backbone), or run without --adapt."
        )
    if vectors.backbone != config.backbone:
        raise InvalidInputError(
            f"adapt={config.adapt!r} embeds augmented views with the backbone "
            f"{config.backbone!r}, but the embeddings come from {vectors.backbone!r}; "
            "features of different models do not mix. Let the run embed the images, or "
            "pass --backbone with the embeddings' model."
        )
    groups = None
    if config.adapt == "groups":
        if "group" not in dataset.table.columns or dataset.table["group"].isna().all():
            raise InvalidInputError(
                "adapt='groups' learns from known identities, but the labels table has no "
                "'group' values; add a 'group' column (empty where unknown) or use "
                "adapt='views'."
            )
        groups = dataset.table["group"].to_numpy(dtype=object)
    views = _embed_views(dataset, config, config.adapt_views, config.adapt_max_images, progress)
    adaptation = fit_adaptation(
        vectors,
        views,
        groups=groups,
        related=_related(vectors, views.rows, config),
        dim=config.adapt_dim,
        epochs=config.adapt_epochs,
        seed=config.seed,
    )
    return adaptation.apply(vectors), adaptation


def _link_options(config: RunConfig) -> dict[str, Any]:
    """The grouping options of ``config``, by the names :mod:`.calibrate` takes."""
    from .calibrate import _LinkOptions

    return {name: getattr(config, name) for name in _LinkOptions.__dataclass_fields__}


def _embed_views(dataset: Dataset, config: RunConfig, n_views: int, max_images, progress: bool):
    """Augmented views of the images with the run's backbone and embedding options."""
    from .views import embed_views

    return embed_views(
        dataset,
        backbone=config.backbone,
        weights=config.weights,
        n_views=n_views,
        max_images=max_images,
        seed=config.seed,
        batch_size=config.batch_size,
        num_workers=config.num_workers,
        device=config.device,
        progress=progress,
        engine=config.engine,
    )


def _related(vectors: Embeddings, rows: np.ndarray, config: RunConfig) -> np.ndarray:
    """The run's grouping without a head, over the images with views (None elsewhere).

    Images it already joins are likely one subject, so the head's training does not
    push them apart (``fit_adaptation``'s ``related``). Only images with views are
    trained on, so only they are grouped: the cost stays that of the sample
    (``adapt_max_images``) whatever the dataset's size.
    """
    from .calibrate import components_per_cut

    sample = Embeddings(
        ids=vectors.ids[rows], vectors=vectors.vectors[rows], backbone=vectors.backbone
    )
    _, refinement = _refine(sample, config)
    related = np.full(len(vectors), None, dtype=object)
    related[rows] = components_per_cut(
        sample,
        refinement=refinement,
        cuts=[config.min_similarity],
        **_link_options(config),
    )[0]
    return related


def _adapt_method(dataset: Dataset, vectors: Embeddings, config: RunConfig) -> str:
    """``config.adapt``, with ``"auto"`` resolved to ``"views"`` or ``"none"`` (logged)."""
    if config.adapt != "auto":
        return config.adapt
    paths = dataset.table["path"] if "path" in dataset.table.columns else None
    reason = None
    if config.min_similarity == "auto":
        reason = "min_similarity='auto' calibrates the cut in the backbone's space"
    elif paths is None or paths.isna().any():
        reason = "it trains on augmented views of the image files, and the run has none"
    elif vectors.backbone != config.backbone:
        reason = f"the embeddings come from {vectors.backbone!r}, not from --backbone"
    elif len(vectors) < MIN_ADAPT_IMAGES:
        reason = f"{len(vectors)} images, fewer than the {MIN_ADAPT_IMAGES} it needs"
    if reason is not None:
        logger.info("adapt='auto': no projection head (%s)", reason)
        return "none"
    return "views"


def _split_mixed(
    component_ids: np.ndarray,
    dataset: Dataset,
    refined: Embeddings,
    excluded: tuple[str, ...],
    config: RunConfig,
) -> tuple[np.ndarray, pd.DataFrame, dict[str, Any]]:
    """Split the components that look like two people (``detect_mixed``); else unchanged.

    Returns the component ids to score, the splits (:func:`split_mixed_components`)
    and ``run.json``'s ``mixed_components``: whether it ran, the count, how many
    components the labels alone would split (the embedding vetoed the rest), each split.
    """
    found = None
    if config.detect_mixed:
        found = find_mixed_components(
            component_ids,
            dataset,
            refined,
            exclude_attributes=excluded,
            min_attributes=config.min_mixed_attributes,
            min_similarity_gap=config.min_mixed_gap,
        )
    new_ids, sides = split_mixed_components(component_ids, found)
    if len(sides):
        logger.warning(
            "%d component(s) look like two people (labels and embedding both split them); "
            "each is split in two before scoring, see components.parquet "
            "is_possibly_two_people; turn off with detect_mixed=False (--no-detect-mixed)",
            len(sides),
        )
    summary = {
        "detected": config.detect_mixed,
        "count": len(sides),
        "n_label_candidates": 0 if found is None else len(found),
        "components": sides.drop(columns=["rows_b"]).round(4).to_dict(orient="records"),
    }
    return new_ids, sides, summary


def _refine(
    vectors: Embeddings, config: RunConfig, fitted: Refinement | None = None
) -> tuple[Embeddings, Refinement | None]:
    """Fit (or take ``fitted``) and apply the refinement; unchanged when off or N < 3."""
    if fitted is not None and config.refine:
        return fitted.apply(vectors), fitted
    if not config.refine:
        return vectors, None
    if len(vectors) < 3:
        logger.warning("refinement skipped: whitening needs >= 3 images, got %d", len(vectors))
        return vectors, None
    if float(vectors.vectors.var(axis=0).sum()) < 1e-10:
        # identical vectors: centring would turn them into zeros with no direction
        logger.warning("refinement skipped: the %d embeddings are all identical", len(vectors))
        return vectors, None
    refinement = fit_refinement(
        vectors, dim=config.refine_dim, power=config.refine_power, seed=config.seed
    )
    return refinement.apply(vectors), refinement


def _calibrate(
    dataset: Dataset,
    vectors: Embeddings,
    refinement: Refinement | None,
    neighbors: Neighbors,
    config: RunConfig,
    progress: bool,
):
    """``min_similarity="auto"``: the cut chosen on augmented views (:mod:`.calibrate`)."""
    paths = dataset.table["path"] if "path" in dataset.table.columns else pd.Series([None])
    if paths.isna().all():
        raise InvalidInputError(
            "min_similarity='auto' (--min-similarity auto) calibrates the cut on augmented "
            "views of the images, and this run has no images: the embeddings were given "
            "without an images folder. Give the images too (--images DIR) or a fixed cut "
            "(--min-similarity 0.5)."
        )
    from .calibrate import calibrate_cut

    views = _embed_views(
        dataset, config, config.n_calibration_views, config.max_calibration_images, progress
    )
    return calibrate_cut(
        vectors,
        views,
        refinement=refinement,
        neighbors=neighbors,
        target_precision=config.target_precision,
        **_link_options(config),
    )


def _load(images, labels, embeddings, config: RunConfig) -> Dataset:
    from .dataset import load_dataset

    if isinstance(labels, Dataset):
        return labels
    if images is None and labels is None:
        raise InvalidInputError("Give images (a folder), labels (a table), or both.")
    if images is None and embeddings is None:
        raise InvalidInputError(
            "Without an images folder there is nothing to embed: give --images DIR, or "
            "--embeddings FILE with vectors you made yourself."
        )
    return load_dataset(
        labels,
        images=images,
        image_column=config.image_column,
        multiclass_columns=config.multiclass_columns,
        allow_unlabeled_images=config.allow_unlabeled_images,
    )


def _embed(
    dataset: Dataset, embeddings, embedding_ids, config: RunConfig, progress: bool
) -> tuple[Dataset, Embeddings, pd.DataFrame | None, dict[str, Any] | None]:
    """Vectors for the dataset; images that cannot be read are dropped and listed.

    Also returns what ran the model (:meth:`Engine.describe`; None for given vectors).
    """
    from .backbones import load_backbone
    from .embed import embed_images, load_embeddings
    from .engine import load_engine

    if embeddings is not None:
        vectors = (
            embeddings
            if isinstance(embeddings, Embeddings)
            else load_embeddings(embeddings, ids_path=embedding_ids)
        )
        return dataset, align_embeddings(vectors, dataset), None, None
    skipped: list = []
    model = load_backbone(config.backbone, weights=config.weights, device=config.device)
    engine = load_engine(model, engine=config.engine)
    vectors = embed_images(
        dataset,
        backbone=model,
        engine=engine,
        batch_size=config.batch_size,
        num_workers=config.num_workers,
        tta=config.tta,
        cache_dir=config.cache_dir,
        on_error=config.on_error,
        skipped=skipped,
        progress=progress,
    )
    table = pd.DataFrame(
        [(s.image_id, str(s.path), s.reason) for s in skipped],
        columns=["image_id", "path", "reason"],
    )
    if len(table):
        keep = ~dataset.table["image_id"].isin(table["image_id"]).to_numpy()
        dataset = replace(
            dataset,
            table=dataset.table[keep].reset_index(drop=True),
            labels=dataset.labels[keep],
        )
    return dataset, align_embeddings(vectors, dataset), table, engine.describe()


def _per_image_attributes(run_info: dict[str, Any]) -> list[str]:
    """The user's per-image attributes, then the detected ones the user did not keep."""
    varying = run_info.get("varying_attributes", {})
    detected = [a for a in varying.get("proposed", []) if a not in varying.get("kept_by_user", [])]
    return list(run_info.get("parameters", {}).get("exclude_attributes", [])) + detected


def summarize(report: Report, *, n_attributes: int = 5) -> dict[str, Any]:
    """The figures a person wants first: sizes, flagged components, worst attributes."""
    components = report.components
    multi = components[components["size"] >= 2]
    disagree = (
        report.component_attributes.loc[
            report.component_attributes["minority_fraction"] > 0, "attribute"
        ]
        .value_counts()
        .head(n_attributes)
    )
    flag_columns = [c for c in components.columns if c.startswith("is_bad_component_")]
    return {
        "images": report.dataset.n_images,
        "skipped_images": 0 if report.skipped is None else len(report.skipped),
        "components": len(components),
        "components_multi": len(multi),
        "largest_component": int(components["size"].max()) if len(components) else 0,
        "inconsistent_components": int((multi["n_disagreeing_attributes"] > 0).sum()),
        "flagged_components": {c: int(components[c].sum()) for c in flag_columns},
        "label_issues": len(report.label_issues),
        "top_attributes": [(str(a), int(n)) for a, n in disagree.items()],
        "possibly_two_people": int(report.run_info.get("mixed_components", {}).get("count", 0)),
        "duplicates": duplicate_counts(report.duplicates),
        "per_image_attributes": list(
            report.run_info.get("varying_attributes", {}).get("proposed", [])
        )
        + [a for a in report.run_info.get("parameters", {}).get("exclude_attributes", [])],
        "calibration": report.run_info.get("calibration"),
        "folder": str(report.folder) if report.folder else None,
    }
