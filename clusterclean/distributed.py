"""The pipeline past one machine, on Ray Data (``pip install "clusterclean[distributed]"``).

The two stages that grow faster than N or cost the most per image run on the
cluster; the linear stages after them run on the driver with the same
functions as :func:`clusterclean.pipeline.run`:

1. **embed** -- Ray Data reads the (image_id, path) rows in blocks; an actor
   pool (``n_embed_actors``, one GPU each when ``use_gpu``) holds the backbone
   and runs :func:`clusterclean.embed.embed_images` on each block. The vectors
   are written as Parquet shards (``SHARDS/embeddings/*.parquet``, by the
   actors themselves). Vectors a user brings skip this and are written as
   shards directly.
   The projection head (``adapt``) and the whitening are then fitted on the
   driver, as ``run`` fits them (the head's augmented views, at most
   ``adapt_views x adapt_max_images``, are embedded there).
2. **index** -- the driver trains the index :func:`clusterclean.index.choose_index`
   picks (IVF above 100k images) on a seeded sample of the shards, fills it,
   and puts it in the object store once.
3. **search** -- a pool of ``n_search_actors`` actors, each holding the index,
   searches the embedding shards one by one and writes each row's kNN list as
   Parquet shards (``SHARDS/neighbors/*.parquet``: ``row``, ``indices``,
   ``similarities``).
4. **graph, components, scores, report** -- the driver reads the kNN shards
   back into :class:`~clusterclean.Neighbors` and calls
   :func:`clusterclean.pipeline.run` with them: the edge table (the cut),
   components, scores, duplicates and the report folder, exactly as the local
   path (``edges.parquet`` is the edge table).

Costs (N images, d dims, k neighbours, W workers): embedding O(N) model
passes split over the actors; index training O(40 n_lists^2 d) on the driver;
search O(N (n_lists + n_probe N / n_lists) d / W); the driver holds the vectors
(4 N d bytes) and kNN lists (12 N k bytes) for the report.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._contracts import Dataset, Embeddings, Neighbors
from .embed import backbone_name
from .errors import InvalidInputError, InvalidTypeError
from .report import Report

__all__ = ["run_distributed"]

logger = logging.getLogger(__name__)


def _require_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "The distributed path needs Ray Data: pip install 'clusterclean[distributed]' "
            "(or pip install 'ray[data]')."
        ) from error
    return ray


def _write_shard(folder: str, rows: np.ndarray, **matrices: np.ndarray) -> pd.DataFrame:
    """Write one Parquet shard (``row`` + fixed-size list columns), atomically; its path."""
    import os
    import uuid

    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {"row": pa.array(rows, type=pa.int64())}
    for name, matrix in matrices.items():
        flat = pa.array(np.ascontiguousarray(matrix).ravel())
        columns[name] = pa.FixedSizeListArray.from_arrays(flat, matrix.shape[1])
    path = Path(folder) / f"shard-{uuid.uuid4().hex}.parquet"
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(pa.table(columns), tmp)
    os.replace(tmp, path)
    return pd.DataFrame({"path": [str(path)], "n_rows": [len(rows)]})


def _read_shards(paths: list[str], n_images: int, column: str, dtype):
    """The ``column`` of the shards as an (n_images, width) matrix in row order, and the
    boolean mask of the rows found."""
    import pyarrow.parquet as pq

    tables = [pq.read_table(p) for p in paths]
    width = tables[0].schema.field(column).type.list_size if tables else 0
    out = np.zeros((n_images, width), dtype=dtype)
    seen = np.zeros(n_images, dtype=bool)
    for table in tables:
        rows = table.column("row").to_numpy()
        values = table.column(column).combine_chunks().flatten().to_numpy()
        out[rows] = values.reshape(len(rows), width)
        seen[rows] = True
    return out, seen


class _Embedder:
    """Ray actor: holds one backbone; embeds a block of (row, path) rows into a shard."""

    def __init__(self, backbone, weights, engine: str, batch_size: int, device: str, folder: str):
        from .embed import resolve_backbone
        from .engine import load_engine

        # a name is loaded here; a Backbone (Backbone.from_module) arrives pickled
        self.model = resolve_backbone(backbone, weights, device, "run_distributed")
        self.engine = load_engine(self.model, engine=engine)  # exported once per actor
        self.batch_size = batch_size
        self.folder = folder

    def __call__(self, block: pd.DataFrame) -> pd.DataFrame:
        from .embed import embed_images

        paths = block["path"].astype(str).tolist()
        found = embed_images(
            paths,
            backbone=self.model,
            engine=self.engine,
            batch_size=self.batch_size,
            num_workers=0,
            progress=False,
        )
        where = pd.Index(paths).get_indexer(found.ids.astype(str))
        return _write_shard(self.folder, block["row"].to_numpy()[where], embedding=found.vectors)


class _Searcher:
    """Ray actor: fetches the index from the object store once; writes each block's kNN lists."""

    def __init__(self, index_ref, transforms, n_results: int, folder: str):
        import faiss
        import ray

        self.index = faiss.deserialize_index(ray.get(index_ref))
        self.transforms = transforms
        self.n_results = n_results
        self.folder = folder

    def __call__(self, block: pd.DataFrame) -> pd.DataFrame:
        import pyarrow.parquet as pq

        from .graph import drop_self
        from .index import search_index

        frames = []
        for path in block["path"]:
            table = pq.read_table(path)
            rows = table.column("row").to_numpy()
            flat = table.column("embedding").combine_chunks().flatten().to_numpy()
            queries = flat.reshape(len(rows), -1).astype(np.float32)
            for transform in self.transforms:  # search where the driver built the index
                queries = transform.transform(queries)
            sims, idx = search_index(self.index, queries, self.n_results)
            idx, sims = drop_self(idx, sims, rows)
            frames.append(_write_shard(self.folder, rows, indices=idx, similarities=sims))
        return pd.concat(frames, ignore_index=True)


def _on_actors(ray, rows: pd.DataFrame, actor, n_actors: int, num_gpus: float, **kwargs):
    """Run ``actor`` over ``rows`` split in blocks on a pool of ``n_actors``; the shard paths.

    The input is materialized first and the actors write their own shards, so
    no read or write task has to wait for a CPU the pool holds (with
    ``n_actors`` = the cluster's CPUs that would deadlock).
    """
    data = ray.data.from_pandas(rows).repartition(kwargs.pop("n_blocks")).materialize()
    written = data.map_batches(
        actor,
        fn_constructor_kwargs=kwargs,
        batch_format="pandas",
        batch_size=None,
        concurrency=n_actors,
        num_gpus=num_gpus,
    ).take_all()
    return sorted(row["path"] for row in written)


def run_distributed(
    images: str | Path | None = None,
    labels: str | Path | pd.DataFrame | Dataset | None = None,
    *,
    shards: str | Path,
    out: str | Path | None = None,
    embeddings: str | Path | Embeddings | None = None,
    embedding_ids: str | Path | None = None,
    n_embed_actors: int = 2,
    n_search_actors: int = 2,
    use_gpu: bool | None = None,
    rows_per_block: int = 4096,
    progress: bool = False,
    **options: Any,
) -> Report:
    """:func:`clusterclean.pipeline.run` with embedding and kNN search on a Ray cluster.

    Connects to the running cluster (``ray.init()`` honours ``RAY_ADDRESS``)
    unless ``ray.init`` was already called.

    Parameters
    ----------
    images, labels, embeddings, embedding_ids, out, options
        As in :func:`clusterclean.pipeline.run` (``options`` are RunConfig fields).
    shards : path
        Folder shared by all nodes (NFS, or an object store URI Ray can write)
        for the embedding and kNN Parquet shards.
    n_embed_actors, n_search_actors : int, default=2
        Actors holding a backbone / the index.
    use_gpu : bool, optional
        One GPU per embedding actor; default: when the cluster has GPUs.
    rows_per_block : int, default=4096
        Rows per Ray Data block handed to an actor.
    progress : bool, default=False
        Ray Data's progress bars.

    Returns
    -------
    Report
        Same tables as the local path; ``run.json`` adds ``distributed``.
    """
    from .index import build_index, choose_index, index_options
    from .pipeline import (
        Prepared,
        RunConfig,
        adapt_vectors,
        check_run_arguments,
        embed_dataset,
        finish_run,
        load_inputs,
        refine_vectors,
        run_inputs,
    )
    from .publish import write_report
    from .report import check_output_folder

    ray = _require_ray()
    import faiss

    unknown = sorted(set(options) - set(RunConfig.__dataclass_fields__))
    if unknown:
        raise InvalidTypeError(
            f"run_distributed() got unknown options {unknown}; valid options are "
            f"{sorted(RunConfig.__dataclass_fields__)}."
        )
    config = RunConfig(**options)
    embeddings, embedding_ids = check_run_arguments(
        images, labels, out, embeddings, embedding_ids, "run_distributed"
    )
    inputs = run_inputs(images, labels, embeddings, embedding_ids, config)
    if out is not None:
        out = check_output_folder(out, inputs=inputs)
    started = time.perf_counter()
    if not ray.is_initialized():
        ray.init()
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = progress
    shards = Path(shards)
    for part in ("embeddings", "neighbors"):  # ours: a rerun must not mix in old shards
        shutil.rmtree(shards / part, ignore_errors=True)
    dataset = load_inputs(images, labels, embeddings, config)
    n_images = dataset.n_images
    n_blocks = max(1, -(-n_images // rows_per_block))
    rows = pd.DataFrame(
        {
            "row": np.arange(n_images),
            "image_id": dataset.ids.astype(str),
            "path": dataset.table["path"].astype(object) if "path" in dataset.table else None,
        }
    )
    timings: dict[str, float] = {}

    step = time.perf_counter()
    for part in ("embeddings", "neighbors"):
        (shards / part).mkdir(parents=True, exist_ok=True)
    if embeddings is not None:
        dataset, vectors, _, _, _ = embed_dataset(
            dataset, embeddings, embedding_ids, config, progress=False
        )
        vector_paths = [
            _write_shard(str(shards / "embeddings"), rows, embedding=vectors.vectors[rows])[
                "path"
            ].iloc[0]
            for rows in np.array_split(np.arange(n_images), n_blocks)
        ]
        backbone = vectors.backbone
    else:
        if use_gpu is None:
            use_gpu = ray.cluster_resources().get("GPU", 0) > 0
        vector_paths = _on_actors(
            ray,
            rows,
            _Embedder,
            n_embed_actors,
            1 if use_gpu else 0,
            n_blocks=n_blocks,
            backbone=config.backbone,
            weights=config.weights,
            engine=config.engine,
            batch_size=config.batch_size,
            device="cuda" if use_gpu else "cpu",
            folder=str(shards / "embeddings"),
        )
        backbone = backbone_name(config.backbone)
    timings["embed"] = round(time.perf_counter() - step, 4)

    step = time.perf_counter()
    matrix, embedded = _read_shards(vector_paths, n_images, "embedding", np.float32)
    if not embedded.all():
        lost = np.flatnonzero(~embedded)
        raise InvalidInputError(
            f"{len(lost)} images could not be read (first: "
            f"{dataset.table['path'].iloc[lost[0]]!r}); remove them from the labels table or "
            "fix the files."
        )
    # the head and the refinement (when on) are fitted on the driver, as run() would fit
    # them; the head's views (at most adapt_views x adapt_max_images) are embedded here
    adapted, adaptation = adapt_vectors(
        dataset,
        Embeddings(ids=dataset.ids, vectors=matrix, backbone=backbone),
        config,
        None,
        progress,
    )
    refined, refinement = refine_vectors(adapted, config)
    spec = choose_index(n_images, refined.dim, **index_options(config), func="run_distributed")
    if spec.n_components:
        raise InvalidInputError(
            "The 'n_components' parameter of run_distributed is not supported (the search "
            "actors hold no full vectors to re-score with); leave it unset."
        )
    index_ref = ray.put(faiss.serialize_index(build_index(refined.vectors, spec)))
    timings["index"] = round(time.perf_counter() - step, 4)

    step = time.perf_counter()
    neighbor_paths = _on_actors(
        ray,
        pd.DataFrame({"path": vector_paths}),
        _Searcher,
        n_search_actors,
        0,
        n_blocks=len(vector_paths),
        index_ref=index_ref,
        transforms=[t for t in (adaptation, refinement) if t is not None],
        n_results=min(config.n_neighbors + 1, n_images),
        folder=str(shards / "neighbors"),
    )
    indices, _ = _read_shards(neighbor_paths, n_images, "indices", np.int64)
    sims, _ = _read_shards(neighbor_paths, n_images, "similarities", np.float32)
    timings["search"] = round(time.perf_counter() - step, 4)
    neighbors = _neighbors(indices, sims, config.n_neighbors)

    vectors = Embeddings(ids=dataset.ids, vectors=matrix, backbone=backbone)
    prepared = Prepared(dataset, vectors, refined, refinement, adaptation)
    report = finish_run(prepared, neighbors, spec, config, progress=progress)
    run_info = report.run_info.replace(
        timings={**report.run_info.timings, **{f"ray_{k}": v for k, v in timings.items()}},
        distributed={
            "engine": f"ray {ray.__version__}",
            "shards": str(shards),
            "n_embed_actors": n_embed_actors,
            "n_search_actors": n_search_actors,
            "use_gpu": bool(use_gpu),
            "seconds": round(time.perf_counter() - started, 4),
        },
    )
    report = replace(report, run_info=run_info)
    if out is not None:
        report = replace(report, folder=write_report(report, out, inputs=inputs))
    return report


def _neighbors(indices: np.ndarray, sims: np.ndarray, n_neighbors: int) -> Neighbors:
    """Pad or cut the searched lists (self dropped) to width ``n_neighbors``."""
    n_images, width = indices.shape
    out_idx = np.full((n_images, n_neighbors), -1, dtype=np.int64)
    out_sims = np.full((n_images, n_neighbors), -np.inf, dtype=np.float32)
    width = min(width, n_neighbors)
    out_idx[:, :width] = indices[:, :width]
    out_sims[:, :width] = sims[:, :width]
    return Neighbors(indices=out_idx, similarities=out_sims)
