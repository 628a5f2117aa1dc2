"""New images against an existing report: embed only them, merge them into the kNN lists.

A report folder keeps what this needs: the vectors (``embeddings.parquet``),
the kNN lists (``neighbors.parquet``), the labels (``dataset.parquet``) and the
options and index (``run.json``). :func:`add_images`

1. embeds only the new images, with the backbone and weights recorded in the
   base run (or takes vectors the user brings);
2. searches the new vectors against base + new (``n_new`` queries, on the
   index kind the base run used), and the base vectors against an exact index
   of the new ones only (``n_base`` queries over ``n_new`` vectors);
3. merges: the k nearest of a base image in the union are the k best of its
   saved list and its new-image results, so no base-base search is repeated;
4. runs the remaining stages (edges, components, scores, duplicates) on the
   union with the stages after the search (:func:`clusterclean.pipeline.finish_run`,
   as :func:`~clusterclean.pipeline.run` ends), and lists what each new image
   duplicates or contradicts (``TABLES["additions"]`` in :mod:`clusterclean.report`).

With the exact (``flat``) index the result equals a full run on the union
(same edges, components and scores) -- when the base run refined its
embeddings, a full run on the union with the base run's refinement
(``run(..., refinement=...)``), and with its projection head when it had one
(``adaptation.npz``, ``--adapt``): the new images get the base's treatment, the
fit is not redone. With IVF the candidates are approximate as in any IVF run,
and the cells are the base run's (trained on the base).
Cost: O((n_new * (n_base + n_new) + n_base * n_new) d) for the search instead
of O((n_base + n_new)^2 d), plus the linear stages over the union.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._contracts import Dataset, Embeddings, Neighbors
from .backbones import check_backbone
from .errors import InvalidInputError
from .publish import write_report
from .report import Report, check_output_folder, read_report
from .run_record import RunRecord

__all__ = ["add_images", "merge_neighbors"]

logger = logging.getLogger(__name__)

ADDITIONS_FILE = "additions.parquet"


def merge_neighbors(
    base: Neighbors, extra_indices: np.ndarray, extra_similarities: np.ndarray
) -> Neighbors:
    """The best ``k`` of each row's saved list and its extra candidates, most similar first.

    Parameters
    ----------
    base : Neighbors
        Lists of shape (n_rows, k).
    extra_indices, extra_similarities : ndarray of shape (n_rows, m)
        More candidates per row (-1 / -inf = none), disjoint from the saved ones.

    Returns
    -------
    Neighbors
        Shape (n_rows, k). Ties keep saved entries first (a stable sort).
    """
    width = base.indices.shape[1]
    indices = np.hstack([base.indices, extra_indices.astype(np.int64)])
    sims = np.hstack([base.similarities, extra_similarities.astype(np.float32)])
    sims = np.where(indices >= 0, sims, -np.inf).astype(np.float32)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :width]
    return Neighbors(
        indices=np.take_along_axis(indices, order, axis=1),
        similarities=np.take_along_axis(sims, order, axis=1),
    )


def _read_base(base: str | Path | Report) -> Report:
    report = base if isinstance(base, Report) else read_report(base)
    where = report.folder or "the base report"
    missing = [
        name
        for name, value in (
            ("embeddings.parquet", report.embeddings),
            ("neighbors.parquet", report.neighbors),
        )
        if value is None
    ]
    if missing:
        raise InvalidInputError(
            f"{where} has no {' and no '.join(missing)}, which adding images needs; re-run "
            "`clusterclean run` on the base images with this clusterclean version to write them."
        )
    return report


def _config_of(report: Report, expected: Mapping[str, Any]):
    """The base run's RunConfig; each of ``expected`` must equal the base's value."""
    from .pipeline import RunConfig

    info = RunRecord.from_dict(report.run_info)
    # run.json holds sequences as JSON lists; RunConfig holds them as tuples
    known = {
        k: tuple(v) if isinstance(v, list) else v
        for k, v in info.parameters.items()
        if k in RunConfig.__dataclass_fields__
    }
    unknown = sorted(set(expected) - set(RunConfig.__dataclass_fields__))
    if unknown:
        raise InvalidInputError(
            f"The 'options' parameter of add_images names {unknown}, which are not run "
            f"options; valid ones: {sorted(RunConfig.__dataclass_fields__)}."
        )
    expected = dict(expected)
    if str(known.get("backbone", "")).startswith("module:"):
        known["backbone"] = _base_module(info, expected.pop("backbone", None))
    recorded = RunConfig(**known)
    wanted = replace(recorded, **expected)
    differing = [name for name in expected if getattr(wanted, name) != getattr(recorded, name)]
    if differing:
        flag = {o.name: o.flags[0] for o in RunConfig.OPTIONS}
        flags = ", ".join(
            f"{flag[name]} (base: {_shown(getattr(recorded, name))}, "
            f"given: {_shown(getattr(wanted, name))})"
            for name in differing
        )
        raise InvalidInputError(
            f"With --base the options of the base run are used; drop {flags} "
            "(or run without --base to choose them anew)."
        )
    # the head the base run actually trained (adapt="auto" may have trained none)
    used = info.adaptation
    known["adapt"] = "none" if used is None else used["method"]
    if known.get("min_similarity") == "auto":  # the base run's calibrated cut, not a new one
        known["min_similarity"] = info.calibration["min_similarity"]
    return RunConfig(**known)


def _base_module(info: RunRecord, given: Any):
    """The Backbone of a base run that embedded with ``Backbone.from_module``: run.json
    names it but cannot rebuild it, so the caller passes it again; it must be the same."""
    name, weights_id = info.parameters["backbone"], info.embedding.get("weights_id")
    how = (
        "pass the same module and transform again: options={'backbone': "
        "Backbone.from_module(module, transform)}"
    )
    if given is None or isinstance(given, str):
        raise InvalidInputError(
            f"The base run embedded its images with the torch module {name!r}, which run.json "
            f"names but cannot rebuild; {how}."
        )
    check_backbone(given, "add_images")
    if given.name != name or given.weights_id != weights_id:
        raise InvalidInputError(
            f"The backbone given to add_images ({given.name!r}, weights {given.weights_id}) "
            f"is not the base run's ({name!r}, weights {weights_id}); similarities across "
            f"models mean nothing: {how}."
        )
    return given


def _aligned_labels(base: Dataset, new: Dataset) -> np.ndarray:
    """The new label matrix in the base's columns (one-of-K columns expanded to the base's).

    A batch rarely holds every value of a one-of-K task: a value of the base
    that the new labels lack becomes an all-zero one-hot column (missing where
    the task is missing); a value the base never saw is an error naming it.
    """
    task_of = {m: t for t, members in base.tasks.items() for m in members}
    for task, members in new.tasks.items():
        unseen = [m for m in members if task_of.get(m) != task]
        if unseen and task in base.tasks:
            values = ", ".join(m.partition("=")[2] for m in unseen)
            known = ", ".join(m.partition("=")[2] for m in base.tasks[task])
            raise InvalidInputError(
                f"The new labels' one-of-K column {task!r} holds {values}, a value the base "
                f"report has never seen (its values: {known}). Fix the value, or re-run "
                "`clusterclean run` on all the images so that the value becomes an attribute."
            )
    position = {a: j for j, a in enumerate(new.attributes)}
    expanded = {
        m: task for task, members in base.tasks.items() if task in new.tasks for m in members
    }
    missing = [a for a in base.attributes if a not in position and a not in expanded]
    extra = sorted(set(new.attributes) - set(base.attributes))
    if missing or extra:
        raise InvalidInputError(
            "The new labels must have the base report's attributes. "
            f"Only in the new labels: {extra[:5]}; only in the base: {missing[:5]}. "
            "Use the same labels table layout (and --multiclass columns) as the base run."
        )
    labels = np.empty((new.n_images, len(base.attributes)), dtype=np.float32)
    for j, attribute in enumerate(base.attributes):
        if attribute in position:
            labels[:, j] = new.labels[:, position[attribute]]
        else:  # a value of the task absent from this batch: 0 where the task is known
            known = ~np.isnan(new.labels[:, [position[m] for m in new.tasks[expanded[attribute]]]])
            labels[:, j] = np.where(known.any(axis=1), 0.0, np.nan)
    return labels


def _shown(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _union(base: Dataset, new: Dataset) -> Dataset:
    new_labels = _aligned_labels(base, new)
    overlap = pd.Index(new.ids.astype(str)).intersection(pd.Index(base.ids.astype(str)))
    if len(overlap):
        raise InvalidInputError(
            f"{len(overlap)} new images are already in the base report (first: "
            f"{overlap[0]!r}); give only images the base run has not seen, or rename them."
        )
    columns = [c for c in ("image_id", "path", "split", "group") if c in base.table.columns]
    columns += [c for c in ("path", "split", "group") if c in new.table.columns]
    columns = list(dict.fromkeys(columns))
    table = pd.concat(
        [base.table.reindex(columns=columns), new.table.reindex(columns=columns)],
        ignore_index=True,
    ).astype(object)
    table = table.where(table.notna(), None)
    return Dataset(
        table=table,
        labels=np.vstack([base.labels, new_labels]),
        attributes=base.attributes,
        tasks=base.tasks,
        root=base.root if base.root == new.root else None,
    )


def _base_fitted(report: Report, key: str, load, default_file: str, what: str):
    """The transform the base run fitted (run.json's ``key`` names its file), or None."""
    info = getattr(report.run_info, key)
    if not info:
        return None
    if report.folder is None:
        raise InvalidInputError(
            f"The base run {what}; pass the base as its report folder so that its "
            f"{key} file can be read."
        )
    return load(Path(report.folder) / info.get("file", default_file))


def _base_refinement(report: Report):
    """The refinement the base run fitted (its ``refinement.npz``), or None."""
    from .refine import load_refinement

    return _base_fitted(
        report, "refinement", load_refinement, "refinement.npz", "refined its embeddings"
    )


def _base_adaptation(report: Report):
    """The projection head the base run trained (its ``adaptation.npz``), or None."""
    from .adapt import load_adaptation

    return _base_fitted(
        report, "adaptation", load_adaptation, "adaptation.npz", "trained a projection head"
    )


def _search_union(
    base: Report, base_vectors: np.ndarray, new_vectors: np.ndarray, n_neighbors: int, progress
):
    """kNN lists of base + new, given the base lists, and the index spec used.

    ``base_vectors`` / ``new_vectors`` are in the space the base run searched
    (refined with the base run's refinement when it had one).
    """
    from .graph import drop_self
    from .index import IndexSpec, build_index, choose_index, search_index

    n_base, n_new = len(base_vectors), len(new_vectors)
    union = np.vstack([base_vectors, new_vectors])
    recorded = base.run_info.index
    spec = IndexSpec(**recorded) if recorded else choose_index(n_base, union.shape[1])
    # forward: the new images against everything (trained on the base, as the base run was)
    index = build_index(base_vectors, spec, add=False)
    index.add(union)
    width = min(n_neighbors + 1, n_base + n_new)
    sims, idx = search_index(index, new_vectors, width, database=union, progress=progress)
    idx, sims = drop_self(idx, sims, np.arange(n_base, n_base + n_new))
    new_lists = merge_neighbors(
        Neighbors(
            indices=np.full((n_new, n_neighbors), -1, dtype=np.int64),
            similarities=np.full((n_new, n_neighbors), -np.inf, dtype=np.float32),
        ),
        idx,
        sims,
    )
    # reverse: every base image against the new ones only (exact)
    exact = build_index(new_vectors, choose_index(n_new, union.shape[1], index="flat"))
    back_sims, back_idx = search_index(exact, base_vectors, min(n_neighbors, n_new))
    back_idx = np.where(back_idx >= 0, back_idx + n_base, -1)
    base_lists = merge_neighbors(base.neighbors, back_idx, back_sims)
    merged = Neighbors(
        indices=np.vstack([base_lists.indices, new_lists.indices]),
        similarities=np.vstack([base_lists.similarities, new_lists.similarities]),
    )
    return merged, spec


def _nearest_base(base_vectors: np.ndarray, new_vectors: np.ndarray):
    """Row and cosine of each new image's most similar base image (exact search)."""
    from .index import build_index, choose_index, search_index

    spec = choose_index(len(base_vectors), base_vectors.shape[1], index="flat")
    sims, idx = search_index(build_index(base_vectors, spec), new_vectors, 1)
    return idx[:, 0], sims[:, 0]


def _additions(report: Report, n_base: int, nearest_row, nearest_sim) -> pd.DataFrame:
    """One row per new image: its component, nearest base image, duplicates, contradictions."""
    ids = report.dataset.ids.astype(str)
    new_ids = ids[n_base:]
    component = report.images["component_id"].to_numpy()
    existing = np.bincount(component[:n_base], minlength=int(component.max()) + 1)
    is_new = pd.Index(new_ids)
    duplicate = np.zeros(len(new_ids), dtype=bool)
    if report.duplicates is not None and len(report.duplicates):
        groups = report.duplicates[["kind", "duplicate_group_id", "image_id"]].copy()
        groups["is_base"] = ~groups["image_id"].isin(is_new)
        with_base = groups.groupby(["kind", "duplicate_group_id"])["is_base"].transform("any")
        duplicated = set(groups.loc[with_base & ~groups["is_base"], "image_id"])
        duplicate = np.isin(new_ids, list(duplicated))
    pairs = report.pairs
    a_new, b_new = pairs["image_id_a"].isin(is_new), pairs["image_id_b"].isin(is_new)
    crossing = pairs[(a_new != b_new) & (pairs["n_differing_labels"] > 0)]
    crossing = pd.DataFrame(
        {
            "image_id": np.where(
                crossing["image_id_a"].isin(is_new), crossing["image_id_a"], crossing["image_id_b"]
            ),
            "attributes": crossing["differing_attributes"].to_numpy(),
        }
    )
    counts = crossing.groupby("image_id").size()
    attributes = crossing.groupby("image_id")["attributes"].agg(
        lambda lists: sorted({a for values in lists for a in values})
    )
    has = nearest_row >= 0
    nearest_id = np.full(len(new_ids), None, dtype=object)
    nearest_id[has] = ids[nearest_row[has]]
    return pd.DataFrame(
        {
            "image_id": new_ids,
            "component_id": component[n_base:].astype(np.int32),
            "n_existing_in_component": existing[component[n_base:]].astype(np.int64),
            "nearest_existing_id": nearest_id,
            "nearest_existing_cosine": np.where(has, nearest_sim, np.nan).astype(np.float32),
            "is_duplicate": duplicate,
            "n_contradicting_pairs": counts.reindex(new_ids, fill_value=0).to_numpy(np.int64),
            "contradicted_attributes": [
                list(attributes.get(i, [])) for i in new_ids
            ],  # empty list when none
        }
    )


def add_images(
    base: str | Path | Report,
    images: str | Path | None = None,
    labels: str | Path | pd.DataFrame | Dataset | None = None,
    *,
    out: str | Path | None = None,
    embeddings: str | Path | Embeddings | None = None,
    embedding_ids: str | Path | None = None,
    options: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> tuple[Report, pd.DataFrame]:
    """Add new images to an existing report without re-embedding or re-searching the old ones.

    Parameters
    ----------
    base : path or Report
        A report folder written by ``clusterclean run`` (it must hold
        ``embeddings.parquet`` and ``neighbors.parquet``).
    images : path, optional
        Folder of the new images only.
    labels : path, DataFrame or Dataset, optional
        Labels of the new images, same attributes as the base run.
    out : path, optional
        Folder for the updated report (the base folder itself is allowed: it
        is replaced atomically). ``additions.parquet`` is written into it.
    embeddings, embedding_ids : optional
        Vectors of the new images instead of embedding them (as in ``run``).
    options : mapping of str to value, optional
        Run options the caller expects (e.g. the CLI's flags): the base run's
        options are used, so each must equal the base's value (``--multiclass
        age`` against a base run with ``age`` one-of-K is fine); a different
        one raises InvalidInputError naming both values.
    progress : bool, default=True

    Returns
    -------
    report : Report
        The report of base + new images, rows in that order.
    additions : pandas.DataFrame
        One row per new image, columns ``TABLES["additions"]`` in :mod:`clusterclean.report`.
    """
    from .pipeline import (
        LoadedModel,
        Prepared,
        adapt_vectors,
        check_run_arguments,
        embed_dataset,
        finish_run,
        load_inputs,
        refine_vectors,
    )

    embeddings, embedding_ids = check_run_arguments(
        images, labels, out, embeddings, embedding_ids, "add_images"
    )
    started = time.perf_counter()
    base_report = _read_base(base)
    config = _config_of(base_report, dict(options or {}))
    # the base folder itself may be --out (replaced as a whole); the new inputs may not
    inputs = (images, labels, embeddings, embedding_ids)
    if out is not None:
        out = check_output_folder(out, inputs=inputs)
    new_dataset = load_inputs(images, labels, embeddings, config)
    model = LoadedModel(config)  # the new images and the head's views share one load
    new_dataset, new_vectors, _, engine, weights_id = embed_dataset(
        new_dataset, embeddings, embedding_ids, config, progress, model=model
    )
    base_vectors = base_report.embeddings
    if new_vectors.dim != base_vectors.dim:
        raise InvalidInputError(
            f"The new embeddings have {new_vectors.dim} dimensions but the base report's have "
            f"{base_vectors.dim}; embed the new images with the base run's backbone "
            f"({base_vectors.backbone!r})."
        )
    if base_vectors.backbone != "user" and new_vectors.backbone != base_vectors.backbone:
        raise InvalidInputError(
            f"The new embeddings come from {new_vectors.backbone!r} but the base report's from "
            f"{base_vectors.backbone!r}; similarities across models mean nothing. Embed the new "
            "images with the base backbone (leave --embeddings out to do it here)."
        )
    dataset = _union(base_report.dataset, new_dataset)
    n_base = base_report.dataset.n_images
    vectors = Embeddings(
        ids=dataset.ids,
        vectors=np.vstack([base_vectors.vectors, new_vectors.vectors]),
        backbone=base_vectors.backbone,
    )
    search_started = time.perf_counter()
    refinement = _base_refinement(base_report)
    adaptation = _base_adaptation(base_report)

    def space(embeddings: Embeddings) -> np.ndarray:
        """The vectors in the space the base run searched: adapted, then refined."""
        if adaptation is not None:
            embeddings = adaptation.apply(embeddings)
        return (refinement.apply(embeddings) if refinement else embeddings).vectors

    neighbors, spec = _search_union(
        base_report, space(base_vectors), space(new_vectors), config.n_neighbors, progress
    )
    nearest_row, nearest_sim = _nearest_base(base_vectors.vectors, new_vectors.vectors)
    search_seconds = time.perf_counter() - search_started
    adapted, adaptation = adapt_vectors(dataset, vectors, config, adaptation, progress, model=model)
    refined, refinement = refine_vectors(adapted, config, refinement)
    prepared = Prepared(
        dataset,
        vectors,
        refined,
        refinement,
        adaptation,
        engine=engine,
        weights_id=weights_id,
        model=model,
    )
    report = finish_run(prepared, neighbors, spec, config, progress=progress)
    additions = _additions(report, n_base, nearest_row, nearest_sim)
    run_info = report.run_info.replace(
        timings={**report.run_info.timings, "search_new": round(search_seconds, 4)},
        incremental={
            "base": str(base_report.folder) if base_report.folder else None,
            "n_base_images": n_base,
            "n_new_images": len(additions),
            "n_duplicates": int(additions["is_duplicate"].sum()),
            "n_contradicting": int((additions["n_contradicting_pairs"] > 0).sum()),
            "seconds": round(time.perf_counter() - started, 4),
        },
    )
    report = replace(report, run_info=run_info, additions=additions)
    if out is not None:  # additions.parquet inside the atomic swap, listed in the manifest
        report = replace(report, folder=write_report(report, out, inputs=inputs))
    logger.info(
        "added %d images to %d: %d duplicate, %d contradict base images",
        len(additions),
        n_base,
        run_info.incremental["n_duplicates"],
        run_info.incremental["n_contradicting"],
    )
    return report, additions
