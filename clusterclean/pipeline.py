"""``run``: the stages in order, from images + labels to a written report.

No printing and no exiting here: the CLI formats what :func:`summarize` returns.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from . import __version__
from . import adapt as adapt_stage
from . import calibrate as calibrate_stage
from . import dataset as dataset_stage
from . import duplicates as duplicates_stage
from . import embed as embed_stage
from . import graph as search_stage
from . import group as group_stage
from . import mixed as mixed_stage
from . import refine as refine_stage
from . import scoring as score_stage
from . import trust as trust_stage
from ._contracts import Dataset, Embeddings, Neighbors, as_embeddings
from .components import component_edge_stats
from .duplicates import (
    duplicate_counts,
    exact_decodes,
    find_duplicates,
    find_pairs,
    hash_images,
    pixel_hash_candidates,
)
from .embed import backbone_name, decode_side
from .errors import InvalidInputError, InvalidTypeError
from .graph import check_n_neighbors, search_neighbors
from .group import Grouper, GroupOptions, components_per_cut
from .index import choose_index, index_options
from .mixed import find_mixed_components, mixed_component_columns, split_mixed_components
from .options import SEED, make_options, values_of
from .publish import write_report
from .refine import Refinement, fit_refinement
from .report import (
    ADAPTATION_FILE,
    REFINEMENT_FILE,
    Report,
    check_output_folder,
    edge_table,
    order_columns,
)
from .run_record import RunRecord
from .scoring import count_flags, find_varying_attributes, score_components
from .trust import GROUPING_ADVICE, check_grouping, rank_label_issues

if TYPE_CHECKING:  # pragma: no cover - typing only
    from .adapt import Adaptation
    from .backbones import Backbone
    from .engine import Engine

__all__ = [
    "RUN_OPTIONS",
    "RunConfig",
    "run",
    "summarize",
    "align_embeddings",
    "load_inputs",
    "embed_dataset",
    "adapt_vectors",
    "refine_vectors",
    "search_vectors",
    "finish_run",
    "Prepared",
    "LoadedModel",
    "check_run_arguments",
    "run_inputs",
]

logger = logging.getLogger(__name__)


#: ``adapt="auto"`` trains no head below this many images: too few classes for the
#: contrastive loss to learn more than noise.
MIN_ADAPT_IMAGES = 100


#: Every option of :func:`run`, stage by stage, in the pipeline's order: each is
#: declared once, in its stage's module (``OPTIONS``).
RUN_OPTIONS = (
    *dataset_stage.OPTIONS,
    *embed_stage.OPTIONS,
    *adapt_stage.OPTIONS,
    *refine_stage.OPTIONS,
    *search_stage.OPTIONS,
    *group_stage.OPTIONS,
    *calibrate_stage.OPTIONS,
    *mixed_stage.OPTIONS,
    *score_stage.OPTIONS,
    *trust_stage.OPTIONS,
    *duplicates_stage.OPTIONS,
    SEED,
)


def _check_across(config: Any) -> None:
    """The rules that tie two options together (each alone is checked by its declaration)."""
    if config.adapt in ("views", "groups") and config.min_similarity == "auto":
        raise InvalidInputError(
            "min_similarity='auto' cannot be combined with adapt yet: the calibration "
            "estimates the cut in the backbone's space, not the head's. Give a fixed cut "
            "with --adapt (the default 0.5 was measured with it, docs/grouping/"
            "bench_adapt.json) or calibrate without --adapt."
        )
    if config.rerank and config.n_reciprocal > config.n_neighbors + 1:
        raise InvalidInputError(
            f"The 'n_reciprocal' parameter of run must be at most n_neighbors + 1 = "
            f"{config.n_neighbors + 1}. Got {config.n_reciprocal} instead. Re-ranking (on by "
            "default) needs that many neighbours: raise n_neighbors (--n-neighbors), lower "
            "n_reciprocal (--n-reciprocal), or turn it off (rerank=False, --no-rerank)."
        )


RunConfig = make_options(
    "RunConfig",
    RUN_OPTIONS,
    doc="""Every option of :func:`run`; the CLI flags and ``run.json`` use the same names.

    Generated from the stages' declarations (:data:`RUN_OPTIONS`, see
    :mod:`clusterclean.options` and docs/options.md); checked once, when made, with
    the wording of ``run``.""",
    func="run",
    module=__name__,
    checks=_check_across,
)


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
    timings[stage] = round(timings.get(stage, 0.0) + time.perf_counter() - started, 4)


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
    table["nearest_cosine"] = np.where(has, sims, np.nan).astype(np.float32)
    for column in ("centroid_cosine", "n_rare_labels", "rare_labels", "label_issue_score"):
        if column in scores_images.columns:
            table[column] = scores_images[column].to_numpy()
    return table


def run(
    images: str | Path | Sequence[str | Path] | None = None,
    labels: str | Path | pd.DataFrame | Dataset | None = None,
    *,
    out: str | Path | None = None,
    embeddings: str | Path | Embeddings | np.ndarray | pd.DataFrame | None = None,
    embedding_ids: str | Path | Sequence[str] | None = None,
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
    images : path or list of paths, optional
        Folder of images, or a list of image files (their ids are their paths
        relative to the files' deepest common folder). Optional when
        ``embeddings`` are given.
    labels : path, DataFrame or Dataset, optional
        Labels table (CSV/Parquet, wide or long form) or a loaded Dataset.
    out : path, optional
        Report folder to write (atomically). Nothing is written when omitted.
    embeddings : path, Embeddings, ndarray or DataFrame, optional
        Vectors to use instead of embedding the images: a file (Parquet with
        ``image_id`` + a list column, or ``.npy`` with ``embedding_ids``), an
        :class:`Embeddings`, an ndarray of shape (n_images, dim) with
        ``embedding_ids``, or a pandas DataFrame indexed by image id with one
        numeric column per dimension. Rows are L2-normalised.
    embedding_ids : path or sequence of str, optional
        With a ``.npy`` file: the ids of its rows (a text file with one id per
        line, or a CSV/Parquet file with an ``image_id`` column); with an
        ndarray: the list of its row ids.
    config : RunConfig, optional
        All options at once; ``**options`` override its fields by name.
        ``backbone`` is a name or a :class:`~clusterclean.backbones.Backbone`; a
        torch module of your own goes in as ``Backbone.from_module(module,
        transform)``, recorded in ``run.json`` by its name and ``weights_id``.
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
    # replace, not asdict: a Backbone given as backbone= stays the object it is
    config = replace(config, **options)
    images = dataset_stage.image_files_of(images)  # a torchvision ImageFolder: its files
    embeddings, embedding_ids = check_run_arguments(
        images, labels, out, embeddings, embedding_ids, "run"
    )
    inputs = run_inputs(images, labels, embeddings, embedding_ids, config)
    if out is not None:  # a read-only or foreign --out fails now, not after the work
        out = check_output_folder(out, inputs=inputs)
    timings: dict[str, float] = {}
    started = time.perf_counter()

    with _timed(timings, "load"):
        dataset = load_inputs(images, labels, embeddings, config)
        check_n_neighbors(config.n_neighbors, dataset.n_images, "run")  # before the long work
    model = LoadedModel(config)  # loaded once, by the first stage that runs it
    with _timed(timings, "embed"):
        dataset, vectors, skipped, engine, weights_id = embed_dataset(
            dataset, embeddings, embedding_ids, config, progress, model=model
        )
    with _timed(timings, "adapt"):
        adapted, adaptation = adapt_vectors(
            dataset, vectors, config, adaptation, progress, model=model
        )
    with _timed(timings, "refine"):
        refined, refinement = refine_vectors(adapted, config, refinement)
    with _timed(timings, "graph"):
        index_spec = choose_index(len(refined), refined.dim, **index_options(config), func="run")
        if neighbors is not None and neighbors.indices.shape != (len(vectors), config.n_neighbors):
            raise InvalidInputError(
                f"The 'neighbors' parameter of run must hold {config.n_neighbors} neighbours "
                f"for each of the {len(vectors)} images. Got shape {neighbors.indices.shape} "
                "instead."
            )
        if neighbors is None:
            neighbors = search_vectors(refined, index_spec, config, progress)
    prepared = Prepared(
        dataset, vectors, refined, refinement, adaptation, skipped, engine, weights_id, model
    )
    return finish_run(
        prepared,
        neighbors,
        index_spec,
        config,
        timings=timings,
        started=started,
        progress=progress,
        out=out,
        inputs=inputs,
    )


@dataclass(frozen=True)
class Prepared:
    """The vectors of a run, ready for the graph: what the stages before the search made.

    Attributes
    ----------
    dataset : Dataset
        The images kept (unreadable ones dropped).
    vectors : Embeddings
        The backbone's vectors, row i = dataset row i (their cosines fill the tables).
    refined : Embeddings
        The vectors searched and grouped: adapted, then refined.
    refinement, adaptation : Refinement, Adaptation or None
        The fitted transforms (None when off).
    skipped : DataFrame or None
        The unreadable images (``skipped.parquet``).
    engine : dict or None
        What ran the backbone (:meth:`clusterclean.engine.Engine.describe`), for
        ``run.json``'s ``embedding.engine``; None for vectors given by the user.
    weights_id : str or None
        The backbone's :attr:`~clusterclean.backbones.Backbone.weights_id`, for
        ``run.json``'s ``embedding.weights_id``; None for vectors given by the user.
    model : LoadedModel or None
        The backbone and engine the run loaded, for the calibration's views (None:
        loaded again when needed).
    """

    dataset: Dataset
    vectors: Embeddings
    refined: Embeddings
    refinement: Refinement | None = None
    adaptation: Adaptation | None = None
    skipped: pd.DataFrame | None = None
    engine: dict[str, Any] | None = None
    weights_id: str | None = None
    model: LoadedModel | None = None


class LoadedModel:
    """The run's backbone and the engine that runs it, loaded on first use, then shared.

    The images, the head's augmented views and the calibration's views all go
    through one loaded backbone and one engine (one ONNX model from the export
    cache, one weights hash), instead of loading them once per stage.
    """

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self._loaded: tuple[Backbone, Engine] | None = None
        self._smaller: tuple[Backbone, Engine] | None = None

    def load(self) -> tuple[Backbone, Engine]:
        """``(backbone, engine)`` of the config's backbone, weights, device and engine."""
        if self._loaded is None:
            from .embed import resolve_backbone
            from .engine import load_engine

            config = self.config
            # a name is loaded; a Backbone (Backbone.from_module) is used as it is
            backbone = resolve_backbone(config.backbone, config.weights, config.device, "run")
            self._loaded = backbone, load_engine(backbone, engine=config.engine)
        return self._loaded

    def load_smaller(self, longer_side: int | None) -> tuple[Backbone, Engine]:
        """The backbone with an input whose longer side is ``longer_side``, and its engine.

        The head's views need not be embedded at the images' size: the head learns
        what stays the same across views, and a view at 160x160 costs about half the
        forward pass (and half the augmentation) of one at 224x224. Only a built-in
        backbone whose network takes any size (``ANY_SIZE_BACKBONES``) is shrunk; with
        ``longer_side`` None or not smaller, or any other backbone, :meth:`load`'s.
        """
        from .backbones import ANY_SIZE_BACKBONES, load_backbone, smaller_input
        from .engine import load_engine

        backbone, engine = self.load()
        name = self.config.backbone
        size = None if longer_side is None else smaller_input(backbone.input_size, longer_side)
        if size is None:
            return backbone, engine
        if not (isinstance(name, str) and name in ANY_SIZE_BACKBONES):
            logger.info(
                "views: embedded at the backbone's own size %dx%d (adapt_view_size applies "
                "to the built-in CNN backbones only)",
                *backbone.input_size,
            )
            return backbone, engine
        if self._smaller is None or self._smaller[0].input_size != size:
            config = self.config
            smaller = load_backbone(
                name, weights=config.weights, device=config.device, input_size=size
            )
            self._smaller = smaller, load_engine(smaller, engine=config.engine)
        return self._smaller


def search_vectors(refined: Embeddings, index_spec, config: RunConfig, progress: bool) -> Neighbors:
    """The search stage: the kNN lists of the refined vectors with the chosen index."""
    return search_neighbors(
        refined,
        n_neighbors=config.n_neighbors,
        progress=progress,
        index=index_spec.kind,
        n_lists=index_spec.n_lists,
        n_probe=index_spec.n_probe,
        n_components=index_spec.n_components,
    )


def _content_hashes(dataset: Dataset, neighbors: Neighbors, prepared: Prepared):
    """File hashes of every image; pixel hashes only where a pixel twin is possible.

    When the run computed the vectors from these files, an image in no listed pair
    close enough for twins has none (:func:`pixel_hash_candidates`: cosine 0.995
    where both files decode exactly, :func:`exact_decodes`, else 0.9), so it is not
    decoded a second time. Only the headers of images in a pair at 0.9 are read. With
    vectors given by the user, nothing ties them to the pixels: every image is decoded.
    """
    if "path" not in dataset.table.columns:
        return None
    paths = dataset.table["path"].tolist()
    pixels = None
    if prepared.engine is not None and prepared.vectors.backbone != "user":
        pixels = pixel_hash_candidates(neighbors.indices, neighbors.similarities)
        if prepared.model is not None and pixels.any():
            # only images in a pair at 0.9 can gain from the tighter cut: read their headers
            backbone, _ = prepared.model.load()
            exact = np.zeros(len(paths), dtype=bool)
            exact[pixels] = exact_decodes(
                [p for p, close in zip(paths, pixels, strict=True) if close],
                min_size=decode_side(backbone.input_size),
            )
            pixels = pixel_hash_candidates(neighbors.indices, neighbors.similarities, exact)
    return hash_images(paths, pixels=pixels)


def finish_run(
    prepared: Prepared,
    neighbors: Neighbors,
    index_spec,
    config: RunConfig,
    *,
    timings: dict[str, float] | None = None,
    started: float | None = None,
    progress: bool = False,
    out: Path | None = None,
    inputs: tuple = (),
) -> Report:
    """The stages after the search, with which :func:`run`,
    :func:`~clusterclean.distributed.run_distributed` and
    :func:`~clusterclean.incremental.add_images` all end: group (with the calibration
    when ``min_similarity="auto"``), split mixed components, score, trust (the
    confidence of each suspected cell, :func:`~clusterclean.trust.rank_label_issues`),
    duplicates, the record, and the folder written to ``out`` (already checked) when given.

    ``neighbors`` are the kNN lists of ``prepared.refined``; ``timings`` collects the
    seconds per stage (the caller's earlier stages in it are kept).
    """
    timings = {} if timings is None else timings
    started = time.perf_counter() if started is None else started
    dataset, vectors, refined = prepared.dataset, prepared.vectors, prepared.refined
    refinement, adaptation, skipped = prepared.refinement, prepared.adaptation, prepared.skipped
    with _timed(timings, "graph"):
        searched = neighbors  # saved as neighbors.parquet: what new images merge into
        grouper = Grouper(GroupOptions.of(config))
        calibration = None
        min_similarity = config.min_similarity
        if min_similarity == "auto":
            calibration = _calibrate(
                dataset, vectors, refinement, searched, config, progress, prepared.model
            )
            min_similarity = calibration.min_similarity
        links = grouper.link(neighbors, refined, cosine_of=vectors, func="run")
        neighbors, edges = links.neighbors, links.edges(min_similarity)
    with _timed(timings, "components"):
        component_ids = grouper.components(edges, dataset.n_images)
        # The per-image attributes are found on the grouping by the vectors alone, so
        # the labels weighed as evidence below are the identity attributes only.
        varying, excluded = _excluded_attributes(component_ids, dataset, config)
        identity = [i for i, a in enumerate(dataset.attributes) if a not in excluded]
        if config.label_penalty > 0 and identity:  # no labels: nothing to weigh, no regroup
            links = grouper.weigh_labels(links, dataset.labels[:, identity])
            edges = links.edges(min_similarity)
            component_ids = grouper.components(edges, dataset.n_images)
    with _timed(timings, "scores"):
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
    with _timed(timings, "trust"):
        trust = rank_label_issues(
            scores.label_issues,
            images_table,
            components,
            scores.component_attributes,
            **values_of(trust_stage.OPTIONS, config),
        )
        components["n_label_issues"] = trust.n_label_issues(len(components))
        grouping_check = check_grouping(dataset.labels[:, identity], component_ids, edges, searched)
        _warn_if_unreliable(grouping_check)
    with _timed(timings, "duplicates"):
        duplicates = find_duplicates(
            dataset,
            pairs,
            min_similarity=config.min_duplicate_similarity,
            hashes=_content_hashes(dataset, neighbors, prepared),
        )

    sizes = components["component_size"].to_numpy()
    run_info = RunRecord(
        parameters=run_parameters(config),
        versions=_versions(),
        timings=timings,
        counts={
            "images": dataset.n_images,
            "skipped_images": 0 if skipped is None else len(skipped),
            "attributes": dataset.n_attributes,
            "components": len(components),
            "components_multi": int((sizes >= 2).sum()),
            "largest_component": int(sizes.max()) if len(sizes) else 0,
            "edges": len(edges),
            "label_issues": len(trust.label_issues),
            "flagged_label_issues": int(trust.label_issues["is_flagged"].sum()),
            "grouping_issues": len(trust.grouping_issues),
            "duplicates": duplicate_counts(duplicates),
            "flagged_components": count_flags(
                scores.component_flags, scores.components.attrs.get("thresholds", {})
            ),
        },
        thresholds=scores.components.attrs.get("thresholds", {}),
        # attributes never scored, flagged or changed: the user's plus the detected ones
        excluded_attributes=list(excluded),
        varying_attributes=varying,
        mixed_components=mixed_info,
        embedding={
            "backbone": vectors.backbone,
            "dim": vectors.dim,
            "engine": prepared.engine,
            **({"weights_id": prepared.weights_id} if prepared.weights_id else {}),
        },
        refinement=None
        if refinement is None
        else {**refinement.summary(), "file": REFINEMENT_FILE},
        adaptation=None
        if adaptation is None
        else {**adaptation.summary(), "file": ADAPTATION_FILE},
        index=index_spec.as_dict(),
        calibration=None if calibration is None else calibration.summary(),
        grouping_check=grouping_check,
    )
    report = Report(
        dataset=dataset,
        images=images_table,
        components=components,
        component_attributes=scores.component_attributes,
        label_issues=trust.label_issues,
        grouping_issues=trust.grouping_issues,
        pairs=pairs,
        duplicates=duplicates,
        skipped=skipped,
        edges=edge_table(edges, dataset),
        component_flags=scores.component_flags,
        embeddings=vectors,
        neighbors=searched,
        refinement=refinement,
        adaptation=adaptation,
        run_info=run_info,
    )
    timings["total"] = round(time.perf_counter() - started, 4)
    if out is not None:
        report = replace(report, folder=write_report(report, out, inputs=inputs))
    return report


def _warn_if_unreliable(grouping_check: dict | None) -> None:
    """Say so when the labels suggest that many components join different identities."""
    if grouping_check is None or grouping_check["reliable"]:
        return
    logger.warning(
        "grouping check: linked images disagree on %.2f attributes on average, against %.2f "
        "between an image and its nearest image in another component (agreement %.2f < %.2f). "
        "Many components likely join different identities, so many suspected cells are "
        "differences between identities, not label errors, and flagged cells may be far "
        "less precise than the 0.9 the confidence cut aims at (0.30-0.68 on the benchmark "
        "suite's held-out runs where this warning fired). %s",
        grouping_check["within_disagreement"],
        grouping_check["outside_disagreement"],
        grouping_check["agreement"],
        grouping_check["min_agreement"],
        GROUPING_ADVICE,
    )


def run_parameters(config: RunConfig) -> dict[str, Any]:
    """``run.json``'s ``parameters``: every RunConfig field, a Backbone object by its name."""
    parameters = {f.name: getattr(config, f.name) for f in fields(config)}
    parameters["backbone"] = backbone_name(config.backbone)
    return parameters


def _is_path(value: Any) -> bool:
    return isinstance(value, (str, os.PathLike)) and bool(str(value))


def _is_id_list(value: Any) -> bool:
    return isinstance(value, (list, tuple, np.ndarray, pd.Index, pd.Series))


def check_run_arguments(
    images, labels, out, embeddings, embedding_ids, func: str
) -> tuple[Any, Any]:
    """The data arguments of a run checked for type at the door, with the library's errors.

    Returns ``(embeddings, embedding_ids)`` with in-memory vectors made an
    :class:`Embeddings` once, here: an ndarray of shape (n_images, dim) with
    ``embedding_ids`` its row ids (a list), or a pandas DataFrame whose index is
    the image ids and whose columns are the numeric coordinates.
    """
    array, frame = isinstance(embeddings, np.ndarray), isinstance(embeddings, pd.DataFrame)
    expected = {
        "images": (
            "a folder path (str or os.PathLike), a list of image file paths or a torchvision "
            "ImageFolder (a Dataset of tensors has no files to embed: pass embeddings you "
            "computed with it instead)",
            _is_path(images) or dataset_stage.is_path_list(images),
        ),
        "labels": (
            "a table path, a pandas DataFrame or a Dataset",
            _is_path(labels) or isinstance(labels, (pd.DataFrame, Dataset)),
        ),
        "out": ("a folder path (str or os.PathLike)", _is_path(out)),
        "embeddings": (
            "a file path, an Embeddings, an ndarray (n_images, dim) with embedding_ids, or a "
            "pandas DataFrame indexed by image id with one numeric column per dimension",
            _is_path(embeddings) or isinstance(embeddings, Embeddings) or array or frame,
        ),
        "embedding_ids": (
            "a file path, or a list of ids (one per row) with an ndarray of embeddings",
            _is_path(embedding_ids) or (array and _is_id_list(embedding_ids)),
        ),
    }
    given = {
        "images": images,
        "labels": labels,
        "out": out,
        "embeddings": embeddings,
        "embedding_ids": embedding_ids,
    }
    for name, (what, ok) in expected.items():
        if given[name] is not None and not ok:
            raise InvalidTypeError(
                f"The {name!r} parameter of {func} must be {what}. Got "
                f"{type(given[name]).__name__} {given[name]!r:.60} instead."
            )
    if array:
        if embedding_ids is None:
            raise InvalidInputError(
                f"The 'embeddings' parameter of {func} is an array without ids; give the image "
                "id of each row with embedding_ids=[...] (or a DataFrame indexed by image id)."
            )
        return as_embeddings(list(embedding_ids), embeddings), None
    if frame:
        if embedding_ids is not None:
            raise InvalidInputError(
                f"The 'embeddings' DataFrame of {func} carries its ids in its index; drop "
                "embedding_ids."
            )
        numeric = embeddings.apply(pd.api.types.is_numeric_dtype)
        if not numeric.all():
            raise InvalidInputError(
                f"The 'embeddings' DataFrame of {func} must hold one numeric column per "
                f"dimension; column {numeric.index[~numeric.to_numpy()][0]!r} is not numeric. "
                "Move the image ids into the index (frame.set_index('image_id'))."
            )
        return as_embeddings(embeddings.index, embeddings.to_numpy()), None
    return embeddings, embedding_ids


def run_inputs(images, labels, embeddings, embedding_ids, config: RunConfig) -> tuple:
    """The files and folders a run reads (or keeps, the cache): ``--out`` may touch none."""
    if dataset_stage.is_path_list(images) and images:  # files one by one: their folder
        images = dataset_stage.common_folder(images)
    return (images, labels, embeddings, embedding_ids, config.weights, config.cache_dir)


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


def adapt_vectors(
    dataset: Dataset,
    vectors: Embeddings,
    config: RunConfig,
    fitted: Adaptation | None,
    progress: bool,
    *,
    model: LoadedModel | None = None,
) -> tuple[Embeddings, Adaptation | None]:
    """Train (or take ``fitted``) and apply the projection head; unchanged when off.

    The views go through ``model`` (the run's loaded backbone and engine; loaded
    here when None). Returns the vectors for the graph and the head (None when off).
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
    backbone = backbone_name(config.backbone)
    if vectors.backbone != backbone:
        raise InvalidInputError(
            f"adapt={config.adapt!r} embeds augmented views with the backbone "
            f"{backbone!r}, but the embeddings come from {vectors.backbone!r}; "
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
    views = _embed_views(
        dataset,
        config,
        config.adapt_views,
        config.adapt_max_images,
        progress,
        model,
        view_size=config.adapt_view_size,
    )
    adaptation = fit_adaptation(
        vectors,
        views,
        groups=groups,
        related=_related(vectors, views.rows, config),
        dim=config.adapt_dim,
        epochs=config.adapt_epochs,
        temperature=config.adapt_temperature,
        hidden=config.adapt_hidden,
        seed=config.seed,
    )
    return adaptation.apply(vectors), adaptation


def _embed_views(
    dataset: Dataset,
    config: RunConfig,
    n_views: int,
    max_images,
    progress: bool,
    model: LoadedModel | None,
    *,
    view_size: int | None = None,
):
    """Augmented views of the images through the run's loaded backbone and engine, with its
    embedding options (and its embedding cache); with ``view_size``, the backbone at that
    smaller input (:meth:`LoadedModel.load_smaller`)."""
    from .views import embed_views

    backbone, engine = (model or LoadedModel(config)).load_smaller(view_size)
    return embed_views(
        dataset,
        backbone=backbone,
        n_views=n_views,
        max_images=max_images,
        seed=config.seed,
        batch_size=config.batch_size,
        num_workers=config.num_workers,
        progress=progress,
        engine=engine,
        cache_dir=config.cache_dir,
    )


def _related(vectors: Embeddings, rows: np.ndarray, config: RunConfig) -> np.ndarray:
    """The run's grouping without a head, over the images with views (None elsewhere).

    Images it already joins are likely one subject, so the head's training does not
    push them apart (``fit_adaptation``'s ``related``). Only images with views are
    trained on, so only they are grouped: the cost stays that of the sample
    (``adapt_max_images``) whatever the dataset's size.
    """
    sample = Embeddings(
        ids=vectors.ids[rows], vectors=vectors.vectors[rows], backbone=vectors.backbone
    )
    _, refinement = refine_vectors(sample, config)
    related = np.full(len(vectors), None, dtype=object)
    related[rows] = components_per_cut(
        sample,
        grouper=Grouper(GroupOptions.of(config)),
        refinement=refinement,
        cuts=[config.min_similarity],
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
    elif vectors.backbone != backbone_name(config.backbone):
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


def refine_vectors(
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
        vectors,
        dim=config.refine_dim,
        power=config.refine_power,
        min_variance=config.refine_variance,
        seed=config.seed,
    )
    return refinement.apply(vectors), refinement


def _calibrate(
    dataset: Dataset,
    vectors: Embeddings,
    refinement: Refinement | None,
    neighbors: Neighbors,
    config: RunConfig,
    progress: bool,
    model: LoadedModel | None = None,
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
        dataset,
        config,
        config.n_calibration_views,
        config.max_calibration_images,
        progress,
        model,
    )
    return calibrate_cut(
        vectors,
        views,
        refinement=refinement,
        neighbors=neighbors,
        grouper=Grouper(GroupOptions.of(config)),
        target_precision=config.target_precision,
    )


def load_inputs(images, labels, embeddings, config: RunConfig) -> Dataset:
    from .dataset import load_dataset

    if isinstance(labels, Dataset):
        return labels
    if images is None and labels is None:
        raise InvalidInputError("Give images (a folder), labels (a table), or both.")
    located = dataset_stage.is_peta_labels(labels, config.labels_format)  # images beside it
    if images is None and embeddings is None and not located:
        raise InvalidInputError(
            "Without an images folder there is nothing to embed: give --images DIR, or "
            "--embeddings FILE with vectors you made yourself."
        )
    # the load stage's declared options, by the names load_dataset takes
    return load_dataset(labels, images=images, **values_of(dataset_stage.OPTIONS, config))


def embed_dataset(
    dataset: Dataset,
    embeddings,
    embedding_ids,
    config: RunConfig,
    progress: bool,
    *,
    model: LoadedModel | None = None,
) -> tuple[Dataset, Embeddings, pd.DataFrame | None, dict[str, Any] | None, str | None]:
    """Vectors for the dataset; images that cannot be read are dropped and listed.

    The images go through ``model`` (loaded here when None). Also returns what ran
    the model (:meth:`~clusterclean.engine.Engine.describe`) and the backbone's
    ``weights_id``; both None for given vectors.
    """
    from .embed import embed_images, load_embeddings

    if embeddings is not None:
        vectors = (
            embeddings
            if isinstance(embeddings, Embeddings)
            else load_embeddings(embeddings, ids_path=embedding_ids)
        )
        return dataset, align_embeddings(vectors, dataset), None, None, None
    skipped: list = []
    backbone, engine = (model or LoadedModel(config)).load()
    vectors = embed_images(
        dataset,
        backbone=backbone,
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
    return (
        dataset,
        align_embeddings(vectors, dataset),
        table,
        engine.describe(),
        backbone.weights_id,
    )


def summarize(report: Report, *, n_attributes: int = 5) -> dict[str, Any]:
    """The figures a person wants first: sizes, flagged components, worst attributes."""
    components = report.components
    multi = components[components["component_size"] >= 2]
    disagree = (
        report.component_attributes.loc[
            report.component_attributes["minority_fraction"] > 0, "attribute"
        ]
        .value_counts()
        .head(n_attributes)
    )
    return {
        "images": report.dataset.n_images,
        "attributes": report.dataset.n_attributes,
        "skipped_images": 0 if report.skipped is None else len(report.skipped),
        "components": len(components),
        "components_multi": len(multi),
        "largest_component": int(components["component_size"].max()) if len(components) else 0,
        "inconsistent_components": int((multi["n_disagreeing_attributes"] > 0).sum()),
        "flagged_components": count_flags(report.component_flags, report.run_info.thresholds),
        "label_issues": len(report.label_issues),
        # None on a report written before the trust stage (no confidence column)
        "flagged_label_issues": int(report.label_issues["is_flagged"].sum())
        if "is_flagged" in report.label_issues.columns
        else None,
        "min_confidence": report.run_info.parameters.get("min_confidence"),
        "grouping_issues": None if report.grouping_issues is None else len(report.grouping_issues),
        "top_attributes": [(str(a), int(n)) for a, n in disagree.items()],
        "possibly_two_people": int(report.run_info.mixed_components.get("count", 0)),
        "duplicates": duplicate_counts(report.duplicates),
        "per_image_attributes": list(report.run_info.varying_attributes.get("proposed", []))
        + list(report.run_info.parameters.get("exclude_attributes", [])),
        "calibration": report.run_info.calibration,
        "grouping_check": report.run_info.grouping_check,
        "folder": str(report.folder) if report.folder else None,
    }
