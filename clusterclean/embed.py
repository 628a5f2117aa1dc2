"""Embedding stage: image files -> :class:`~clusterclean._contracts.Embeddings`.

Batching, the DataLoader, the device and mixed precision live only here. The
models themselves come from :mod:`clusterclean.backbones`. Users who bring
their own vectors skip this stage with :func:`load_embeddings`.

torch is imported inside the functions, so ``import clusterclean`` stays light.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import math
import os
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ._contracts import Dataset, Embeddings, as_embeddings
from ._validation import check_choice, check_int
from .atomic import atomic_write, pid_alive, write_bytes
from .engine import ENGINES, Engine, available_cores, load_engine
from .errors import InvalidInputError, InvalidTypeError, first_line

if TYPE_CHECKING:  # pragma: no cover - typing only
    import PIL.Image

    from .backbones import Backbone

from .options import Option, declare

#: ``tta`` values and ``on_error`` values.
TTA_MODES = ("none", "flip")
ON_ERROR = ("skip", "raise")


def _backbone_names() -> list[str]:
    from .backbones import available_backbones

    return available_backbones()


def _backbone_families() -> list[str]:
    from .backbones import backbone_families

    return backbone_families()


def _check_backbone_option(value, func: str):
    """The ``backbone`` option's check of a value that is not a name (see OPTIONS)."""
    from .backbones import check_backbone

    return check_backbone(value, func)


__all__ = [
    "OPTIONS",
    "EmbeddingCache",
    "SkippedImage",
    "embed_images",
    "file_key",
    "load_embeddings",
    "read_image",
    "image_inputs",
    "resolve_backbone",
    "backbone_name",
    "plan_workers",
    "run_model",
    "run_missing",
]

#: The options of the embed stage, declared once (:mod:`clusterclean.options`).
OPTIONS = declare(
    "embed",
    Option(
        "backbone",
        "efficientnet_lite0",
        "embedding model (clusterclean.available_backbones()), or FAMILY:MODEL from timm or "
        "OpenCLIP: timm:convnext_tiny, open_clip:ViT-B-32/laion2b_s34b_b79k; in Python also a "
        "Backbone, e.g. Backbone.from_module(module, transform) for a torch module of your own",
        "choice",
        choices=_backbone_names,
        prefixes=_backbone_families,
        accepts=(_check_backbone_option, "Backbone"),
    ),
    Option(
        "weights",
        None,
        "local weights file: a state dict (loaded with weights_only=True), the TorchScript "
        "file for --backbone torchscript, the .onnx file for --backbone onnx",
        "str",
        nullable=True,
    ),
    Option(
        "batch_size",
        32,
        "images per batch",
        "int",
        low=1,
    ),
    Option(
        "num_workers",
        None,
        "DataLoader worker processes (none: automatic)",
        "int",
        low=0,
        nullable=True,
        flag="--workers",
    ),
    Option(
        "device",
        None,
        "cpu, cuda, cuda:1 ... (none: automatic)",
        "str",
        nullable=True,
    ),
    Option(
        "engine",
        "auto",
        "what runs the model: auto = ONNX Runtime on CPU when installed and the export "
        "succeeds, else torch",
        "choice",
        choices=ENGINES,
    ),
    Option(
        "tta",
        "none",
        "flip: average each image's features with its mirror's",
        "choice",
        choices=TTA_MODES,
    ),
    Option(
        "cache_dir",
        None,
        "keep each image's vector here, so an interrupted run resumes (none: no cache)",
        "str",
        nullable=True,
    ),
    Option(
        "on_error",
        "skip",
        "unreadable images: skip them and list them in skipped.parquet, or raise",
        "choice",
        choices=ON_ERROR,
    ),
)

logger = logging.getLogger(__name__)

#: Inputs at most this many: no worker processes. Up to here the embedding takes about a
#: second either way: at 256 images two workers were 3-10 % faster but spent 18 % system
#: time against 1 % (docs/perf/workers_s26); at 512 they win by 10 %.
_TINY_INPUT = 256


@dataclass(frozen=True)
class SkippedImage:
    """An image that :func:`embed_images` could not embed, and why."""

    image_id: str
    path: str
    reason: str


# --------------------------------------------------------------------------- reading images


def decode_side(input_size: tuple[int, int]) -> int:
    """The shorter side an image needs before the transform: ``ceil(8/7 * max(input_size))``.

    Every backbone transform shrinks the shorter side to at most 8/7 of its largest
    input side (256 for 224, the ImageNet recipe), so pixels beyond it are never seen.
    """
    return math.ceil(max(input_size) * 8 / 7)


def read_image(path: str | Path, *, min_size: int | None = None) -> PIL.Image.Image:
    """Open an image file as an 8-bit RGB PIL image, the way every backbone sees it.

    - with ``min_size``, a JPEG is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's
      DCT scaling) when both sides stay >= ``min_size``: several times faster
      on large photos that the transform would shrink anyway;
    - the EXIF orientation is applied (a phone photo stored sideways comes upright);
    - 16-bit and 32-bit integer grayscale is scaled to 8 bits (``value / 257``)
      instead of being clipped to white;
    - transparency (RGBA, LA, palette with a transparent colour) is composited
      over white;
    - CMYK, YCbCr, palette and grayscale are converted to RGB.

    Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) is applied
    as written: an image of more pixels raises ``PIL.Image.DecompressionBombError``
    before its pixels are decoded (Pillow alone only warns up to twice the limit).
    A path that is not a regular file (a named pipe, a socket, a device) is refused
    before it is opened, so it cannot block the run.

    Raises
    ------
    OSError
        Missing, empty, truncated or unreadable file (``PIL.UnidentifiedImageError``
        is an ``OSError``), a symbolic-link loop, or not a regular file
        (:class:`NotARegularFile`).
    """
    from PIL import Image, ImageOps

    check_regular_file(path)
    with Image.open(path) as opened:
        width, height = opened.size
        if Image.MAX_IMAGE_PIXELS is not None and width * height > Image.MAX_IMAGE_PIXELS:
            raise Image.DecompressionBombError(
                f"Image size ({width * height} pixels) exceeds limit of "
                f"{Image.MAX_IMAGE_PIXELS} pixels (PIL.Image.MAX_IMAGE_PIXELS)"
            )
        if min_size is not None and opened.format == "JPEG":
            opened.draft(None, (min_size, min_size))
        image = ImageOps.exif_transpose(opened)  # loads the pixels; a copy, file closed after
    if image.mode in WIDE_MODES:
        scaled = np.asarray(image, dtype=np.float64) / 257.0
        image = Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8), mode="L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


#: Integer pixel modes of more than 8 bits that :func:`read_image` scales to 8 bits (/ 257).
WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def check_regular_file(path: str | Path) -> None:
    """Raise :class:`NotARegularFile` unless ``path`` (links followed) is a regular file.

    Every reader of the images calls it before opening one: opening a named pipe
    blocks until something writes to it.
    """
    mode = os.stat(path).st_mode  # follows links; ELOOP on a link loop
    if not stat.S_ISREG(mode):
        raise NotARegularFile(path, mode)


class NotARegularFile(OSError):
    """An image path that names a named pipe, socket or device: never opened."""

    _KINDS = (
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a folder"),
    )

    def __init__(self, path: str | Path, mode: int) -> None:
        kind = next((name for test, name in self._KINDS if test(mode)), "not a regular file")
        super().__init__(f"{path} is {kind}, not an image file; it was not opened")
        self.kind = kind


def _skip_reason(path: str, exc: BaseException) -> str:
    """A short, user-facing reason for an image that could not be read."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, NotARegularFile):
        return f"{exc.kind}, not a regular file (skipped without opening it)"
    if isinstance(exc, OSError) and exc.errno == errno.ELOOP:
        return "symbolic link loop (the link points back to itself)"
    if isinstance(exc, Image.DecompressionBombError):
        return f"decompression bomb refused by Pillow's MAX_IMAGE_PIXELS limit: {exc}"
    if isinstance(exc, UnidentifiedImageError):
        try:
            if os.path.getsize(path) == 0:
                return "empty file (0 bytes)"
        except OSError:
            pass
        return "not an image Pillow can read"
    if isinstance(exc, OSError):
        return f"truncated or corrupt image: {exc}"
    return f"{type(exc).__name__}: {exc}"


class _ImageFiles:
    """Map-style dataset: index -> ``(index, tensor or None, reason)``.

    A file that cannot be read yields ``None`` and the reason instead of
    raising, so one bad image never kills a worker or the run. With
    ``indexed``, the transform is called as ``transform(image, index)`` (a
    per-item seeded augmentation, see :mod:`clusterclean.views`).
    """

    def __init__(
        self, paths: Sequence[str], transform, min_size: int, *, indexed: bool = False
    ) -> None:
        self.paths = paths
        self.transform = transform
        self.min_size = min_size
        self.indexed = indexed

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        path = self.paths[index]
        try:
            image = read_image(path, min_size=self.min_size)
            tensor = self.transform(image, index) if self.indexed else self.transform(image)
            return index, tensor, ""
        except Exception as exc:  # any decoder failure becomes a skip with its reason
            return index, None, _skip_reason(path, exc)


def _collate(items):
    """Stack the readable images; pass the unreadable ones through with their reasons.

    An item's tensor is one image ``(3, H, W)`` or several views of it ``(n, 3, H, W)``;
    the batch holds them in item order, an item's views consecutive.
    """
    import torch

    good = [(i, t) for i, t, _ in items if t is not None]
    failed = [(i, reason) for i, t, reason in items if t is None]
    indices = [i for i, _ in good]
    batch = torch.cat([t.reshape(-1, *t.shape[-3:]) for _, t in good]) if good else None
    return indices, batch, failed


# --------------------------------------------------------------------------- embedding


def image_inputs(data, func: str) -> tuple[list[str], list[str]]:
    """(ids, paths) from a Dataset or a sequence of paths, checked."""
    if isinstance(data, Dataset):
        table = data.table
        if "path" not in table.columns:
            raise InvalidInputError(
                "The dataset has no 'path' column, so there are no image files to embed. "
                "Load vectors you already have with load_embeddings (CLI: --embeddings FILE)."
            )
        ids = [str(i) for i in table["image_id"].tolist()]
        paths = table["path"].tolist()
        for image_id, path in zip(ids, paths, strict=True):
            if path is None or (np.ndim(path) == 0 and pd.isna(path)):
                raise InvalidInputError(
                    f"Image {image_id!r} has no path, so it cannot be embedded. Give every row "
                    "a path, or load vectors you already have with load_embeddings."
                )
        paths = [str(p) for p in paths]
    elif isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        bad = [p for p in data if not isinstance(p, (str, os.PathLike))]
        if bad:
            raise InvalidTypeError(
                f"The 'data' parameter of {func} must be a Dataset or a sequence of image paths "
                f"(str or Path). Got an element of type {type(bad[0]).__name__} instead."
            )
        paths = [str(p) for p in data]
        ids = paths
    else:
        raise InvalidTypeError(
            f"The 'data' parameter of {func} must be a Dataset or a sequence of image paths "
            f"(str or Path). Got {type(data).__name__} instead."
        )
    seen: set[str] = set()
    for image_id in ids:
        if image_id in seen:
            raise InvalidInputError(
                f"Image id {image_id!r} appears more than once in the input of {func}; "
                "ids (paths, for a list of paths) must be unique."
            )
        seen.add(image_id)
    return ids, paths


def resolve_backbone(backbone, weights, device, func: str) -> Backbone:
    """The :class:`~clusterclean.backbones.Backbone` that ``backbone`` (a name or a
    Backbone) stands for, on ``device``; a torch module alone is refused with how to give it
    (:meth:`~clusterclean.backbones.Backbone.from_module`)."""
    from .backbones import check_backbone, load_backbone, resolve_device

    backbone = check_backbone(backbone, func)
    if isinstance(backbone, str):
        return load_backbone(backbone, weights=weights, device=device)
    if weights is not None:
        raise InvalidInputError(
            f"The 'weights' parameter of {func} applies to a backbone given by name; "
            "this backbone is already loaded. Pass one or the other."
        )
    if device is not None and backbone.model is not None:
        backbone.model.to(resolve_device(device))
    return backbone


def backbone_name(backbone: str | Backbone) -> str:
    """The name of a backbone given by name or as a Backbone (what Embeddings record)."""
    return backbone if isinstance(backbone, str) else backbone.name


def plan_workers(n_images: int, engine: Engine, *, num_workers: int | None = None) -> int:
    """Decoding worker processes for ``n_images`` images run by ``engine``.

    ``num_workers`` when given; else none for at most 256 inputs (starting a worker
    costs about what it saves), else:

    - an engine that workers may run themselves (ONNX Runtime): one worker per engine
      thread (by default one per core). Each worker decodes its batch, transforms it and
      runs the model on it with ``engine.threads // workers`` threads (1 when every core
      has a worker), and sends back only the features: decoding and model never compete
      for a core, no thread waits on another, and only ``(batch, dim)`` floats cross
      between processes. Measured on 2 cores (EfficientNet-Lite0, 224 px): 12 ms of CPU
      per image, against 14.6 ms with one decoding worker beside a 2-thread engine
      (scripts/bench_embed.py);
    - otherwise (torch): ``min(4, cores - 1)`` workers decode, and the model runs
      in this process.
    """
    if num_workers is not None:
        return num_workers
    if n_images <= _TINY_INPUT:
        return 0
    cores = available_cores()
    if engine.runs_in_workers:  # the engine's threads, spread one per worker
        return min(cores, max(1, engine.threads))
    return max(0, min(4, cores - 1))


class _Forward:
    """``collate_fn`` of a worker that runs the engine itself: items -> features.

    Picklable (the engine drops its session and opens one in the worker).
    """

    def __init__(self, engine: Engine, tta: str) -> None:
        self.engine = engine
        self.tta = tta

    def __call__(self, items):
        indices, batch, failed = _collate(items)
        if batch is None:
            return indices, None, failed
        return indices, _forward(self.engine, batch, self.tta), failed


def _forward(engine: Engine, batch, tta: str) -> np.ndarray:
    """Raw features of a batch, float32; with ``tta="flip"`` the mean with the mirror's."""
    out = engine(batch)
    if tta == "flip":
        out = (out + engine(batch.flip(-1))) / 2
    return np.asarray(out, dtype=np.float32)


def run_missing(
    model: Backbone,
    runner: Engine,
    files: list,
    todo: np.ndarray,
    on_batch: Callable[[list[int], np.ndarray], None],
    *,
    cache: EmbeddingCache | None,
    **options: Any,
) -> dict[int, str]:
    """:func:`run_model` over ``files``, the ones at positions ``todo`` of a larger list.

    The cache is flushed however the run ends, so an interrupted run (Ctrl-C) keeps
    what was embedded. Returns the reasons of the unreadable files, keyed by their
    position in the larger list (``todo[i]``); none when ``todo`` is empty.
    """
    if not len(todo):
        return {}
    try:
        local = run_model(model, runner, files, on_batch, **options)
    finally:  # keep what was embedded, even on Ctrl-C
        if cache:
            cache.flush()
    return {int(todo[i]): reason for i, reason in local.items()}


def balanced_batches(n_items: int, batch_size: int, n_workers: int) -> list[list[int]]:
    """Consecutive batches of at most ``batch_size`` items, as many per worker.

    ``ceil(n / batch_size)`` batches, rounded up to a multiple of the worker count
    (when there are that many items), with sizes that differ by at most one: the
    DataLoader deals batches to its workers in turn, so every worker gets the same
    work and none idles while another decodes a last full batch (with plain
    batching, 63 batches for 2 workers leave one idle for a whole batch).
    """
    if n_items == 0:
        return []
    n_batches = -(-n_items // batch_size)
    workers = max(1, n_workers)
    n_batches = min(n_items, -(-n_batches // workers) * workers)
    bounds = np.linspace(0, n_items, n_batches + 1).round().astype(np.int64)
    return [list(range(a, b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def run_model(
    backbone: Backbone,
    engine: Engine,
    paths: Sequence[str],
    on_batch: Callable[[list[int], np.ndarray], None],
    *,
    batch_size: int,
    num_workers: int,
    tta: str,
    progress: bool,
    view_transform: Callable[[PIL.Image.Image, int], object] | None = None,
    desc: str = "Embedding",
) -> dict[int, str]:
    """Embed ``paths`` with ``engine``, handing each batch's raw features to
    ``on_batch(indices, features)``.

    ``num_workers`` worker processes (0 = this process) decode and transform the
    images; with an engine that workers may run (ONNX Runtime), each worker also
    runs the model on its batch (see :func:`plan_workers`), else the model runs
    here while the workers prepare the next batches.
    ``view_transform(image, index)``, when given, replaces the backbone's
    transform (it must end with it): a picklable callable that knows the item's
    index into ``paths``. It may return several views of the image, a tensor of
    shape ``(n, 3, H, W)``: the file is decoded once, and ``on_batch`` then gets
    ``n`` consecutive feature rows per index. Returns the reasons of the
    unreadable images, by index into ``paths``.

    Worker processes receive the transform pickled: one that cannot be pickled (a
    lambda, a local function) runs in this process instead (``num_workers`` 0), with
    a warning; the vectors are the same.
    """
    import torch
    from tqdm.auto import tqdm

    transform = backbone.transform if view_transform is None else view_transform
    if num_workers > 0:
        # serialised only, never loaded: the pickler multiprocessing sends it to workers with
        from multiprocessing.reduction import ForkingPickler

        try:
            ForkingPickler.dumps(transform)
        except Exception as exc:  # PicklingError, AttributeError, TypeError: all mean "no"
            logger.warning(
                "The transform of backbone %s cannot be sent to worker processes (%s: %s); "
                "decoding the images in this process instead of %d workers. Define the "
                "transform at module level (not a lambda or a local function) to use workers.",
                backbone.name,
                type(exc).__name__,
                first_line(exc),
                num_workers,
            )
            num_workers = 0
    on_gpu = engine.on_gpu
    in_workers = num_workers > 0 and engine.runs_in_workers
    min_size = decode_side(backbone.input_size)
    loader = torch.utils.data.DataLoader(
        _ImageFiles(
            paths,
            transform,
            min_size,
            indexed=view_transform is not None,
        ),
        batch_sampler=balanced_batches(len(paths), batch_size, num_workers),
        num_workers=num_workers,
        collate_fn=_Forward(engine.for_workers(num_workers), tta) if in_workers else _collate,
        pin_memory=on_gpu,
    )
    reasons: dict[int, str] = {}
    with tqdm(total=len(paths), disable=not progress, unit="img", desc=desc) as bar:
        for indices, batch, failed in loader:
            reasons.update(failed)
            if batch is not None:
                on_batch(indices, batch if in_workers else _forward(engine, batch, tta))
            bar.update(len(indices) + len(failed))
    return reasons


#: Bump when read_image or the transforms change in a way that changes vectors.
_PREPROCESS_VERSION = 2  # 2: ResizeCrop resamples the crop box only
#: A cache shard is written once this many new vectors are pending, or ...
_SHARD_ROWS = 1024
#: ... once this many seconds have passed since the last shard, so a kill loses little.
_SHARD_SECONDS = 30.0

#: ``(absolute path, size, mtime_ns)`` of an image; views add the dataset row they were drawn for.
FileKey = tuple[str, int, int] | tuple[str, int, int, int]


def file_key(path: str) -> FileKey | None:
    """``(absolute path, size, mtime_ns)``: what the cache trusts to say a file is unchanged."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return os.path.abspath(path), stat.st_size, stat.st_mtime_ns


class EmbeddingCache:
    """Raw feature vectors of one model setup, one row per image file, in Parquet shards.

    Layout: ``cache_dir/<backbone>-<setup hash>/shard-*.parquet`` with columns
    ``path`` (absolute), ``size``, ``mtime_ns`` and ``vector`` (fixed-size list of
    float32). The setup hash covers the backbone name, its ``weights_id``, the
    input size, the TTA mode, the engine, the precision (float16 on GPU) and the
    preprocessing version; ``setup.json``
    beside the shards says what it is. Shards are written to a temporary file and
    renamed into place, so a killed run leaves only whole shards.

    With ``views`` (a dict: what draws the augmented views, :mod:`clusterclean.views`),
    the cache holds views instead of images, in a folder of its own (``views`` is part
    of the setup hash): one row per (image file, dataset ``row``), its ``vector`` the
    ``views["n_views"]`` raw feature vectors of that row one after the other.
    """

    def __init__(
        self,
        cache_dir: Path,
        backbone: Backbone,
        engine: Engine,
        tta: str,
        *,
        views: dict | None = None,
    ) -> None:
        setup = {
            "backbone": backbone.name,
            "weights_id": backbone.weights_id,
            "input_size": list(backbone.input_size),
            "dim": backbone.dim,
            "tta": tta,
            "preprocess_version": _PREPROCESS_VERSION,
            # GPU runs use float16 autocast: their vectors differ from CPU ones in the 3rd digit
            "precision": "float16" if engine.on_gpu else "float32",
            # ONNX Runtime and torch agree to a cosine >= 0.9999 but not bit for bit: one
            # engine's vectors never stand in for the other's
            "engine": engine.name,
        }
        if views is not None:  # absent for images, so their caches keep their folders
            setup["views"] = views
        text = json.dumps(setup, sort_keys=True, indent=1)
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        from .atomic import file_stem

        self.folder = Path(cache_dir) / f"{file_stem(backbone.name)}-{digest}"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InvalidInputError(
                f"Cannot create the embedding cache folder {str(self.folder)!r} ({exc}). "
                "Pass a writable cache_dir (CLI: --cache-dir), or none to disable the cache."
            ) from exc
        if not (self.folder / "setup.json").exists():
            write_bytes(self.folder / "setup.json", text.encode(), tag=str(os.getpid()))
        self.dim = backbone.dim * (1 if views is None else int(views["n_views"]))
        self.has_rows = views is not None
        self._keys: list[FileKey] = []
        self._vectors: list[np.ndarray] = []
        self._last_write = time.monotonic()
        self._n_shards = 0
        self._remove_orphans()

    def _remove_orphans(self) -> None:
        """Delete the temporary files of runs that died while writing (``.NAME.PID.tmp``)."""
        for tmp in self.folder.glob(".*.tmp"):
            pid = tmp.name.rsplit(".", 2)[-2]
            if pid.isdigit() and not pid_alive(int(pid)):
                tmp.unlink(missing_ok=True)

    def read(self) -> dict[FileKey, np.ndarray]:
        """Every cached vector by file key (a later shard wins)."""
        import pyarrow.parquet as pq

        found: dict[FileKey, np.ndarray] = {}
        for shard in sorted(self.folder.glob("shard-*.parquet")):
            try:
                table = pq.read_table(shard)
                vectors = _list_column_to_numpy(table.column("vector"), self.dim)
            except Exception as exc:  # a damaged shard costs its images a re-embed, no more
                logger.warning("Ignoring unreadable cache shard %s (%s)", shard, exc)
                continue
            columns = (
                ("path", "size", "mtime_ns", "row")
                if self.has_rows
                else ("path", "size", "mtime_ns")
            )
            keys = zip(*(table.column(c).to_pylist() for c in columns), strict=True)
            found.update(zip(keys, vectors, strict=True))
        return found

    def add(self, keys: Sequence[FileKey | None], vectors: np.ndarray) -> None:
        """Keep ``vectors`` (one row per key) for the next shard; a row whose key is None
        (a file that could not be stat'ed) is not cached."""
        known = [j for j, key in enumerate(keys) if key is not None]
        if len(known) < len(keys):
            keys, vectors = [keys[j] for j in known], vectors[known]
        self._keys.extend(keys)
        self._vectors.append(vectors)
        pending = len(self._keys)
        if pending >= _SHARD_ROWS or time.monotonic() - self._last_write >= _SHARD_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Write the pending vectors as one shard (atomically)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._last_write = time.monotonic()
        if not self._keys:
            return
        paths, sizes, mtimes, *rows = zip(*self._keys, strict=True)
        flat = pa.array(np.concatenate(self._vectors).reshape(-1), type=pa.float32())
        columns = {
            "path": pa.array(paths, type=pa.string()),
            "size": pa.array(sizes, type=pa.int64()),
            "mtime_ns": pa.array(mtimes, type=pa.int64()),
        }
        if self.has_rows:
            columns["row"] = pa.array(rows[0], type=pa.int64())
        columns["vector"] = pa.FixedSizeListArray.from_arrays(flat, self.dim)
        table = pa.table(columns)
        name = f"shard-{time.time_ns()}-{os.getpid()}-{self._n_shards}.parquet"
        atomic_write(
            self.folder / name, lambda tmp: pq.write_table(table, tmp), tag=str(os.getpid())
        )
        self._n_shards += 1
        self._keys, self._vectors = [], []


def _list_column_to_numpy(column, dim: int) -> np.ndarray:
    """An Arrow list column (chunked or not) of ``dim`` numbers per row -> float32 (n, dim)."""
    if hasattr(column, "combine_chunks"):
        column = column.combine_chunks()
    flat = column.flatten().to_numpy(zero_copy_only=False)
    return flat.astype(np.float32, copy=False).reshape(len(column), dim)


def embed_images(
    data: Dataset | Sequence[str | Path],
    *,
    backbone: str | Backbone = "efficientnet_lite0",
    weights: str | Path | None = None,
    batch_size: int = 32,
    num_workers: int | None = None,
    device: str | None = None,
    tta: str = "none",
    cache_dir: str | Path | None = None,
    on_error: str = "skip",
    skipped: list[SkippedImage] | None = None,
    progress: bool = True,
    engine: str | Engine = "auto",
    threads: int | None = None,
) -> Embeddings:
    """Embed image files with a backbone; one unit vector per readable image.

    Parameters
    ----------
    data : Dataset or sequence of str or Path
        A :class:`Dataset` (its ``path`` column; ids = its ``image_id``), or
        image paths (ids = the paths as given, as str).
    backbone : str or Backbone, default "efficientnet_lite0"
        A name from :func:`clusterclean.backbones.available_backbones`, or a
        loaded :class:`~clusterclean.backbones.Backbone`: a torch module of your
        own goes in as ``Backbone.from_module(module, transform)`` (a module
        alone raises InvalidTypeError saying so).
    weights : str or Path, optional
        Local weights for a backbone given by name (see
        :func:`~clusterclean.backbones.load_backbone`).
    batch_size : int, default 32
        Images per forward pass.
    num_workers : int, optional
        Worker processes that decode images (and, with ONNX Runtime, run the
        model on them). Default (:func:`plan_workers`): one per core with ONNX
        Runtime, ``min(4, cores - 1)`` with torch, and 0 for at most 256 images.
    device : str, optional
        ``"cpu"``, ``"cuda"``, ...; default the GPU when there is one. On a GPU
        the forward pass runs under float16 autocast.
    tta : {"none", "flip"}, default "none"
        Test-time augmentation. ``"flip"``: ``f(x) = (g(x) + g(mirror(x))) / 2``,
        the mean of the features of the image and of its left-right mirror
        (common in person re-identification); twice the compute.
    cache_dir : str or Path, optional
        Keep every image's vector in Parquet shards under this folder, keyed by
        the file's (absolute path, size, mtime_ns) and by the backbone, its
        weights, input size, ``tta`` and precision (float16 on GPU, else
        float32). A later run embeds only the images not in the cache (new or
        changed files), and a killed run resumes where its last shard ended
        (shards are written every 1,024 images or 30 s).
        Files are trusted by size and modification time, not by content: a
        file rewritten with the same size within the same nanosecond is not
        noticed. Unreadable images are not cached; they are retried.
        ``None`` (default) = no cache.
    on_error : {"skip", "raise"}, default "skip"
        What to do with an image that cannot be read (missing, empty,
        truncated, not an image, decompression bomb): ``"skip"`` leaves it out
        of the result, logs a warning with the count and records it in
        ``skipped``; ``"raise"`` raises :class:`~clusterclean.errors.InvalidInputError`
        naming the first such file.
    skipped : list, optional
        When given, one :class:`SkippedImage` ``(image_id, path, reason)`` is
        appended per skipped image, in input order.
    progress : bool, default True
        Show a tqdm progress bar.
    engine : {"auto", "onnxruntime", "torch"} or Engine, default "auto"
        What runs the model (:func:`clusterclean.engine.load_engine`): ``"auto"``
        = ONNX Runtime on CPU (the backbone exported once to ONNX, cached
        in :func:`~clusterclean.engine.default_engine_cache`) when onnxruntime is
        installed and the export succeeds, torch otherwise (and on a GPU).
        Or an engine already loaded.
        ONNX Runtime's vectors agree with torch's to a cosine >= 0.9999
        (measured >= 0.9999998), not bit for bit; the embedding cache keeps
        the two apart.
    threads : int, optional
        Threads of the ONNX Runtime engine, shared by its worker processes
        (``threads // num_workers`` each, at least 1). Default: the cores.

    Returns
    -------
    Embeddings
        ``ids`` of shape (n_readable,) in input order (skipped images left out),
        ``vectors`` of shape (n_readable, dim), dtype float32, unit rows:
        ``v_i = f(x_i) / ||f(x_i)||_2`` where ``f`` is the backbone.

    Raises
    ------
    InvalidInputError
        Bad parameter, duplicate ids, a dataset row without a path, no
        readable image at all, or an unreadable image with ``on_error="raise"``.
    InvalidTypeError
        A parameter of the wrong type, e.g. a torch module as ``backbone``.
    WeightsUnavailableError
        The backbone's default weights can be neither found nor downloaded.
    """
    func = "embed_images"
    ids, paths = image_inputs(data, func)
    batch_size = check_int(batch_size, "batch_size", func, min_value=1)
    if num_workers is not None:
        num_workers = check_int(num_workers, "num_workers", func, min_value=0)
    check_choice(tta, "tta", func, ("none", "flip"))
    check_choice(on_error, "on_error", func, ("skip", "raise"))
    if cache_dir is not None and not isinstance(cache_dir, (str, os.PathLike)):
        raise InvalidTypeError(
            f"The 'cache_dir' parameter of {func} must be a folder path (str or Path) or None. "
            f"Got {type(cache_dir).__name__} instead."
        )
    if skipped is not None and not isinstance(skipped, list):
        raise InvalidTypeError(
            f"The 'skipped' parameter of {func} must be a list or None. "
            f"Got {type(skipped).__name__} instead."
        )
    if not ids:
        raise InvalidInputError(f"{func} got no images; give at least one image path.")
    if not isinstance(engine, Engine):
        check_choice(engine, "engine", func, ENGINES)
    model = resolve_backbone(backbone, weights, device, func)
    if threads is not None:
        threads = check_int(threads, "threads", func, min_value=1)
    runner = load_engine(model, engine=engine, threads=threads)

    start = time.perf_counter()
    features = np.zeros((len(paths), model.dim), dtype=np.float32)
    readable = np.zeros(len(paths), dtype=bool)
    cache = None if cache_dir is None else EmbeddingCache(Path(cache_dir), model, runner, tta)
    keys = [file_key(p) for p in paths] if cache else [None] * len(paths)
    if cache:
        cached = cache.read()
        for i, key in enumerate(keys):
            if key in cached:
                features[i], readable[i] = cached[key], True
        n_missing = int((~readable).sum())
        logger.info(
            "Embedding cache %s: %d of %d images found; %s",
            cache.folder,
            len(paths) - n_missing,
            len(paths),
            f"embedding {n_missing}" if n_missing else "nothing to embed",
        )
    todo = np.flatnonzero(~readable)

    def store(indices: list[int], batch: np.ndarray) -> None:
        rows = todo[indices]
        features[rows], readable[rows] = batch, True
        if cache:
            cache.add([keys[row] for row in rows], batch)

    reasons = run_missing(
        model,
        runner,
        [paths[i] for i in todo],
        todo,
        store,
        cache=cache,
        batch_size=batch_size,
        num_workers=plan_workers(len(todo), runner, num_workers=num_workers),
        tta=tta,
        progress=progress,
    )
    seconds = time.perf_counter() - start

    bad = [SkippedImage(ids[i], paths[i], reasons[i]) for i in sorted(reasons)]
    if bad and (on_error == "raise" or len(bad) == len(ids)):
        first = bad[0]
        what = (
            f"None of the {len(ids)} images could be read"
            if len(bad) == len(ids)
            else f"{len(bad)} of {len(ids)} images could not be read"
        )
        raise InvalidInputError(
            f"{what} (first: {first.path!r}: {first.reason}). Fix or remove these files"
            + (", or pass on_error='skip' to leave them out." if on_error == "raise" else ".")
        )
    if bad:
        logger.warning(
            "Skipped %d of %d images that could not be read (first: %s: %s)",
            len(bad),
            len(ids),
            bad[0].path,
            bad[0].reason,
        )
        if skipped is not None:
            skipped.extend(bad)
    keep = np.flatnonzero(readable)
    logger.info(
        "Embedded %d images with %s in %.1f s (%.1f images/s, %d from the cache; engine %s)",
        len(keep),
        model.name,
        seconds,
        len(ids) / seconds if seconds > 0 else float("inf"),
        len(ids) - len(todo),
        runner.name,
    )
    return as_embeddings([ids[i] for i in keep], features[keep], backbone=model.name)


# --------------------------------------------------------------------------- bringing vectors


def _read_ids(ids_path: Path) -> list[str]:
    """Ids from a text file (one per line), or a CSV / Parquet with an ``image_id`` column."""
    import pandas as pd

    if not ids_path.is_file():
        raise InvalidInputError(f"The ids file {str(ids_path)!r} does not exist.")
    suffix = ids_path.suffix.lower()
    if suffix in (".csv", ".parquet", ".pq"):
        try:
            if suffix == ".csv":
                table = pd.read_csv(ids_path, dtype=str, keep_default_na=False)
            else:
                table = pd.read_parquet(ids_path)
        except ValueError as exc:  # pandas / Arrow parse errors, bad encodings
            raise InvalidInputError(
                f"Could not read the ids file {str(ids_path)!r} ({type(exc).__name__}: {exc})."
            ) from exc
        if "image_id" not in table.columns:
            raise InvalidInputError(
                f"The ids file {str(ids_path)!r} has no 'image_id' column (columns: "
                f"{', '.join(map(str, table.columns))}). Name the id column 'image_id'."
            )
        return [str(i) for i in table["image_id"].tolist()]
    try:
        with open(ids_path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except UnicodeDecodeError as exc:
        raise InvalidInputError(
            f"The ids file {str(ids_path)!r} is not UTF-8 text ({exc}); write one id per line."
        ) from exc
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def _vector_column(table, path: Path, column: str | None) -> str:
    """The one list-of-floats column of a Parquet table (or ``column``, checked)."""
    import pyarrow as pa

    def is_vector(field) -> bool:
        t = field.type
        is_list = pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
        return is_list and (pa.types.is_floating(t.value_type) or pa.types.is_integer(t.value_type))

    candidates = [f.name for f in table.schema if f.name != "image_id" and is_vector(f)]
    if column is not None:
        if column not in candidates:
            raise InvalidInputError(
                f"The Parquet file {str(path)!r} has no list-of-floats column {column!r}; "
                f"its vector columns are {candidates}."
            )
        return column
    if len(candidates) != 1:
        found = "none" if not candidates else ", ".join(repr(c) for c in candidates)
        raise InvalidInputError(
            f"The Parquet file {str(path)!r} needs exactly one list-of-floats column holding the "
            f"vectors; found {found} among columns {table.column_names}."
            + (" Pass column=NAME to pick one." if candidates else "")
        )
    return candidates[0]


def _parquet_vectors(path: Path, column: str | None) -> tuple[list[str], np.ndarray]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
        table.column_names  # noqa: B018  decodes the names: a damaged one raises here
    except (ValueError, OSError) as exc:  # ArrowInvalid / OSError: not Parquet, cut short, damaged
        raise InvalidInputError(
            f"Could not read the embeddings file {str(path)!r} as Parquet "
            f"({' '.join(str(exc).split())})."
        ) from exc
    if table.num_rows == 0:
        raise InvalidInputError(f"The embeddings file {str(path)!r} holds no rows.")
    if "image_id" not in table.column_names:
        raise InvalidInputError(
            f"The Parquet file {str(path)!r} has no 'image_id' column (columns: "
            f"{table.column_names}). Name the id column 'image_id'."
        )
    name = _vector_column(table, path, column)
    try:
        ids = table.column("image_id").to_pylist()
    except UnicodeDecodeError as exc:  # Arrow does not validate UTF-8 until it decodes
        raise InvalidInputError(
            f"The image_id column of {str(path)!r} holds bytes that are not UTF-8 text "
            f"({exc}); the file is damaged or was written with another encoding."
        ) from exc
    if any(i is None for i in ids):
        raise InvalidInputError(
            f"Row {ids.index(None)} of {str(path)!r} has no image_id; every row needs one."
        )
    col = table.column(name).combine_chunks()
    if col.null_count:
        row = col.is_null().to_pylist().index(True)
        raise InvalidInputError(
            f"The vector of image {ids[row]!r} in {str(path)!r} (column {name!r}) is null."
        )
    lengths = np.asarray(col.value_lengths()) if hasattr(col, "value_lengths") else None
    if lengths is not None and len(lengths) and (lengths != lengths[0]).any():
        row = int(np.flatnonzero(lengths != lengths[0])[0])
        raise InvalidInputError(
            f"The vector of image {ids[row]!r} in {str(path)!r} has {lengths[row]} values but "
            f"the first has {lengths[0]}; all vectors must have the same length."
        )
    dim = int(lengths[0]) if lengths is not None and len(lengths) else col.type.list_size
    return [str(i) for i in ids], _list_column_to_numpy(col, dim)


def load_embeddings(
    path: str | Path,
    *,
    ids_path: str | Path | None = None,
    column: str | None = None,
) -> Embeddings:
    """Read vectors made elsewhere, to skip the embedding stage.

    Parameters
    ----------
    path : str or Path
        ``.parquet``: an ``image_id`` column and one list (or fixed-size list)
        column of floats, found automatically (``column`` picks one when there
        are several). ``.npy``: a 2-D array (n_images, dim); its ids come from
        ``ids_path``.
    ids_path : str or Path, optional
        Required with ``.npy``: a text file with one id per line, or a CSV /
        Parquet file with an ``image_id`` column; row i names vector i.
    column : str, optional
        The vector column of a Parquet file.

    Returns
    -------
    Embeddings
        ``vectors`` of shape (n_images, dim), dtype float32, rows L2-normalised;
        ``backbone`` = ``"user"``.

    Raises
    ------
    InvalidInputError
        Missing file or column, several candidate columns, id / row count
        mismatch, duplicate ids, or a zero / NaN vector (its id is named).
    InvalidTypeError
        ``path`` or ``ids_path`` is not a file path.
    """
    for name, value in (("path", path), ("ids_path", ids_path)):
        if not isinstance(value, (str, os.PathLike)) and not (name == "ids_path" and value is None):
            raise InvalidTypeError(
                f"The {name!r} parameter of load_embeddings must be a file path (str or "
                f"os.PathLike). Got {type(value).__name__} instead; in-memory vectors go in "
                "as clusterclean.as_embeddings(ids, vectors)."
            )
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"The embeddings file {str(path)!r} does not exist.")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        if ids_path is not None:
            raise InvalidInputError(
                "The 'ids_path' parameter of load_embeddings applies to .npy files; a Parquet "
                "file carries its own image_id column."
            )
        ids, vectors = _parquet_vectors(path, column)
    elif suffix == ".npy":
        if ids_path is None:
            raise InvalidInputError(
                f"{str(path)!r} is a .npy file, which holds no image ids: pass ids_path (CLI: "
                "--embedding-ids FILE), a text file with one id per line or a CSV/Parquet file "
                "with an image_id column."
            )
        try:
            vectors = np.load(path, allow_pickle=False)
        except Exception as exc:  # ValueError, EOFError, SyntaxError, TokenError: a bad file
            raise InvalidInputError(
                f"Could not read {str(path)!r} as a numeric .npy array ({exc})."
            ) from exc
        ids = _read_ids(Path(ids_path))
        if vectors.ndim == 2 and len(ids) != len(vectors):
            raise InvalidInputError(
                f"{str(ids_path)!r} holds {len(ids)} ids but {str(path)!r} holds {len(vectors)} "
                "vectors; they must match row for row."
            )
    else:
        raise InvalidInputError(
            f"The embeddings file {str(path)!r} must be .parquet or .npy; got {suffix or 'none'}."
        )
    # ids are stripped like the labels table's, so " a.jpg" matches "a.jpg" in both
    ids = [i.strip() if isinstance(i, str) else i for i in ids]
    embeddings = as_embeddings(ids, vectors, backbone="user")
    logger.info("Loaded %d embeddings of dim %d from %s", len(embeddings), embeddings.dim, path)
    return embeddings
