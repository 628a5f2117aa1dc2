"""Augmented views of images, embedded with the backbone: known positives without labels.

Two random, camera-like views of one photo show the same subject; two different
photos usually do not. The views' backbone features are what
:mod:`clusterclean.adapt` trains its projection head on (positives = the views
of one image), and what a calibration compares with random pairs.

The augmentations are generic, not a model of any benchmark: for each view,
drawn independently with a generator seeded by ``(seed, row, view)``

- a random resized crop keeping 60-100% of the area, aspect ratio changed by a
  factor in [3/4, 4/3], resized back to the image's own size, or, for a larger
  image, straight to the size the backbone's transform would shrink it to
  (shorter side ``decode_side``: 256 for a 224 input), so that every later step
  runs on the pixels the backbone sees (about 2x fewer on a 500x375 photo);
- a left-right mirror with probability 1/2;
- colour jitter: brightness, contrast and saturation factors in [0.7, 1.3],
  hue shifted by up to 0.03 of the colour circle, applied together as one
  affine colour transform (:func:`colour_jitter`);
- a degradation: Gaussian blur (sigma in [0.2, 1.2] pixels of the image's own
  size, scaled with it) or JPEG re-compression (quality 40-90), one of the two
  with probability 1/2 each;

then the backbone's own transform (resize, crop, normalise). The result does
not depend on the batch size, the number of worker processes or the order of
the rows. Reading, batching, the device and unreadable images are handled by
:mod:`clusterclean.embed`.
"""

from __future__ import annotations

import io
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ._contracts import Dataset
from ._validation import check_int, check_type
from .embed import (
    EmbeddingCache,
    decode_side,
    file_key,
    image_inputs,
    plan_workers,
    resolve_backbone,
    run_missing,
)
from .engine import Engine, load_engine
from .errors import InvalidInputError

if TYPE_CHECKING:  # pragma: no cover - typing only
    import PIL.Image

    from .backbones import Backbone

__all__ = ["AugmentedViews", "augment_image", "colour_jitter", "embed_views", "sample_rows"]

logger = logging.getLogger(__name__)

#: Share of the image area a crop keeps, and its aspect-ratio change (low, high).
CROP_AREA = (0.6, 1.0)
CROP_ASPECT = (3 / 4, 4 / 3)
#: Brightness, contrast and saturation factors; largest hue shift (fraction of the circle).
JITTER = (0.7, 1.3)
MAX_HUE = 0.03
#: Gaussian blur sigma (pixels) and JPEG quality ranges of the degradation.
BLUR_SIGMA = (0.2, 1.2)
JPEG_QUALITY = (40, 90)


@dataclass(frozen=True)
class AugmentedViews:
    """Backbone features of augmented views of dataset images.

    Attributes
    ----------
    rows : ndarray of shape (m,), dtype int64
        Rows of the dataset (and of its embeddings) whose views these are,
        increasing.
    vectors : ndarray of shape (m, n_views, d), dtype float32
        L2-normalised backbone features; ``vectors[i, v]`` is view ``v`` of row
        ``rows[i]``.
    backbone : str
        Backbone name (the same backbone as the embeddings they go with).
    """

    rows: np.ndarray
    vectors: np.ndarray
    backbone: str

    @property
    def n_views(self) -> int:
        return int(self.vectors.shape[1])


def augment_image(
    image: PIL.Image.Image, rng: np.random.Generator, *, max_short_side: int | None = None
) -> PIL.Image.Image:
    """One random camera-like view of an RGB image, drawn from ``rng``.

    The view has the image's size, or with ``max_short_side`` smaller than the
    image's shorter side, that size scaled so its shorter side is
    ``max_short_side`` (the draws do not depend on it). See the module docstring
    for the distribution of every change.
    """
    from PIL import Image, ImageFilter

    width, height = image.size
    area = rng.uniform(*CROP_AREA)
    aspect = np.exp(rng.uniform(np.log(CROP_ASPECT[0]), np.log(CROP_ASPECT[1])))
    crop_w = int(round(min(width, width * np.sqrt(area * aspect))))
    crop_h = int(round(min(height, height * np.sqrt(area / aspect))))
    crop_w, crop_h = max(crop_w, 1), max(crop_h, 1)
    left = int(rng.integers(0, width - crop_w + 1))
    top = int(rng.integers(0, height - crop_h + 1))
    scale = 1.0
    if max_short_side is not None and min(width, height) > max_short_side:
        scale = max_short_side / min(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    image = image.resize(
        size, Image.Resampling.BILINEAR, box=(left, top, left + crop_w, top + crop_h)
    )
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    brightness, contrast, saturation = rng.uniform(*JITTER, size=3)
    image = colour_jitter(image, brightness, contrast, saturation, rng.uniform(-MAX_HUE, MAX_HUE))
    if rng.random() < 0.5:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(*BLUR_SIGMA) * scale))
    else:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=int(rng.integers(*JPEG_QUALITY, endpoint=True)))
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            image = decoded.convert("RGB")
    return image


#: ITU-R 601 luma weights, as Pillow's ``convert("L")``.
_LUMA = np.array([0.299, 0.587, 0.114])


def _grey_axis_rotation(angle: float) -> np.ndarray:
    """Rotation of RGB space by ``angle`` radians about the grey axis (Rodrigues)."""
    u = np.ones(3) / np.sqrt(3)
    cross = np.array([[0, -u[2], u[1]], [u[2], 0, -u[0]], [-u[1], u[0], 0]])
    return np.cos(angle) * np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * np.outer(u, u)


def colour_jitter(
    image: PIL.Image.Image, brightness: float, contrast: float, saturation: float, hue: float
) -> PIL.Image.Image:
    """Brightness, contrast, saturation and hue changes of an RGB image in one pass.

    With ``x`` a pixel's RGB vector, ``b, c, s`` the factors and ``h`` the hue
    shift (fraction of the colour circle)::

        y = H(h) S(s) (c b x) + (1 - c) b m,   m = mean luma of the image,
        S(s) = s I + (1 - s) 1 w^T,            w = (0.299, 0.587, 0.114),
        H(h) = rotation by 2 pi h about the grey axis (1, 1, 1) / sqrt(3),

    clipped to [0, 255]: brightness scales, contrast blends with the mean grey,
    saturation blends each pixel with its own grey, the hue turns the colour
    about the grey axis (the axis HSV's hue circles, so the HSV hue moves by about
    ``h``). It is torchvision's successive ``adjust_brightness``,
    ``adjust_contrast``, ``adjust_saturation`` and ``adjust_hue`` without their
    intermediate clipping and with a rotation instead of an HSV round trip (a
    few grey levels apart on a photo), as one 3x4 colour matrix
    (``Image.convert``): a whole view's augmentation takes about half the CPU
    it took with the four steps (docs/suite/head.md).
    """
    saturate = saturation * np.eye(3) + (1 - saturation) * np.outer(np.ones(3), _LUMA)
    linear = _grey_axis_rotation(2 * np.pi * hue) @ saturate * (contrast * brightness)
    # S and H leave grey unchanged, so the contrast's grey offset passes through them.
    mean = brightness * float(np.asarray(image.convert("L"), dtype=np.float32).mean())
    offset = np.full((3, 1), (1 - contrast) * mean)
    return image.convert("RGB", tuple(np.hstack([linear, offset]).ravel().tolist()))


#: Bump when augment_image changes in a way that changes the views (the view cache key).
_AUGMENT_VERSION = 3


class _ViewTransform:
    """``(image, index) -> tensor (n_views, 3, H, W)``: the views of ``rows[index]``.

    One decoded image gives all its views. Picklable (DataLoader workers run it);
    the generator of view ``v`` is seeded by ``(seed, row, v)`` alone.
    """

    def __init__(
        self, transform, rows: np.ndarray, seed: int, n_views: int, max_short_side: int
    ) -> None:
        self.transform = transform
        self.rows = rows
        self.seed = seed
        self.n_views = n_views
        self.max_short_side = max_short_side

    def __call__(self, image, index: int):
        import torch

        row = int(self.rows[index])
        return torch.stack(
            [
                self.transform(
                    augment_image(
                        image,
                        np.random.default_rng([self.seed, row, view]),
                        max_short_side=self.max_short_side,
                    )
                )
                for view in range(self.n_views)
            ]
        )


def sample_rows(n_rows: int, max_images: int | None, seed: int) -> np.ndarray:
    """The rows whose views :func:`embed_views` embeds: all ``n_rows``, or a sorted
    random sample of ``max_images`` of them (seeded by ``seed``) when there are more."""
    rows = np.arange(n_rows, dtype=np.int64)
    if max_images is not None and n_rows > max_images:
        rows = np.sort(np.random.default_rng(seed).choice(n_rows, max_images, replace=False))
    return rows


def embed_views(
    dataset: Dataset,
    *,
    backbone: str | Backbone = "efficientnet_lite0",
    weights: str | Path | None = None,
    n_views: int = 2,
    max_images: int | None = 2000,
    seed: int = 0,
    batch_size: int = 32,
    num_workers: int | None = None,
    device: str | None = None,
    progress: bool = True,
    engine: str | Engine = "auto",
    threads: int | None = None,
    cache_dir: str | Path | None = None,
) -> AugmentedViews:
    """Embed ``n_views`` random augmented views of (a sample of) the dataset's images.

    Parameters
    ----------
    dataset : Dataset
        Images with a ``path`` column.
    backbone : str or Backbone, default "efficientnet_lite0"
        As in :func:`clusterclean.embed_images`; use the backbone of the
        embeddings the views go with. A loaded Backbone (with a loaded ``engine``)
        is used as it is: :func:`clusterclean.run` passes the ones that embedded
        the images, so nothing is loaded twice.
    weights : str or Path, optional
        Local weights for a backbone given by name.
    n_views : int, default 2
        Views per image (>= 1). Each image is decoded once for all its views.
    max_images : int or None, default 2000
        Embed the views of a random sample (seeded by ``seed``) of this many
        rows when the dataset is larger; None = every row.
    seed : int, default 0
        Seed of the sample and of every augmentation.
    batch_size, num_workers, device, progress, engine, threads
        As in :func:`clusterclean.embed_images`: the views run through the same
        engine, and the same exported ONNX model, as the images. A batch holds
        ``batch_size // n_views`` images (at least 1), so ``batch_size`` views.
    cache_dir : str or Path, optional
        The embedding cache of :func:`clusterclean.embed_images`: the views are
        kept there too, in a folder of their own keyed by the backbone setup,
        ``n_views``, ``seed`` and the augmentation version, one entry per (image
        file, dataset row), so a rerun on the same files embeds no view again.
        None (default) = no cache.

    Returns
    -------
    AugmentedViews
        ``rows`` (m,) of the readable sampled images (an image that cannot be
        read is left out, with a warning), ``vectors`` (m, n_views, d) with
        ``vectors[i, v] = f(a_v(x)) / ||f(a_v(x))||_2``, ``f`` the backbone and
        ``a_v`` the view's augmentation.

    Raises
    ------
    InvalidInputError
        Bad parameter, a dataset without image paths, or no readable image.
    """
    func = "embed_views"
    check_type(dataset, Dataset, "dataset", func, "a Dataset (see clusterclean.load_dataset)")
    n_views = check_int(n_views, "n_views", func, min_value=1)
    if max_images is not None:
        max_images = check_int(max_images, "max_images", func, min_value=1)
    seed = check_int(seed, "seed", func, min_value=0)
    batch_size = check_int(batch_size, "batch_size", func, min_value=1)
    if num_workers is not None:
        num_workers = check_int(num_workers, "num_workers", func, min_value=0)
    if cache_dir is not None:
        check_type(cache_dir, (str, os.PathLike), "cache_dir", func, "a folder path (str or Path)")
    _, paths = image_inputs(dataset, func)
    if not paths:
        raise InvalidInputError(f"{func} got a dataset with no images.")
    model = resolve_backbone(backbone, weights, device, func)

    rows = sample_rows(len(paths), max_images, seed)
    if threads is not None:
        threads = check_int(threads, "threads", func, min_value=1)
    runner = load_engine(model, engine=engine, threads=threads)
    started = time.perf_counter()
    features = np.zeros((len(rows), n_views, model.dim), dtype=np.float32)
    done = np.zeros(len(rows), dtype=bool)
    cache = None
    if cache_dir is not None:
        setup = {"n_views": n_views, "seed": seed, "augment_version": _AUGMENT_VERSION}
        cache = EmbeddingCache(Path(cache_dir), model, runner, "none", views=setup)
        keys = [file_key(paths[r]) for r in rows]
        keys = [None if k is None else (*k, int(r)) for k, r in zip(keys, rows, strict=True)]
        cached = cache.read()
        for i, key in enumerate(keys):
            if key in cached:
                features[i], done[i] = cached[key].reshape(n_views, model.dim), True
        logger.info("views: %d of %d images' views from the cache", int(done.sum()), len(rows))
    todo = np.flatnonzero(~done)

    def store(indices: list[int], batch: np.ndarray) -> None:
        found = todo[indices]
        features[found] = batch.reshape(len(found), n_views, model.dim)
        if cache:
            cache.add([keys[i] for i in found], batch.reshape(len(found), -1))

    reasons = run_missing(
        model,
        runner,
        [paths[r] for r in rows[todo]],
        todo,
        store,
        cache=cache,
        batch_size=max(1, batch_size // n_views),
        num_workers=plan_workers(len(todo) * n_views, runner, num_workers=num_workers),
        tta="none",
        progress=progress,
        view_transform=_ViewTransform(
            model.transform, rows[todo], seed, n_views, decode_side(model.input_size)
        ),
        desc="Embedding views",
    )
    readable = np.ones(len(rows), dtype=bool)
    readable[list(reasons)] = False
    if not readable.any():
        first = min(reasons)
        raise InvalidInputError(
            f"None of the {len(rows)} sampled images could be read (first: "
            f"{paths[rows[first]]!r}: {reasons[first]}). Fix or remove these files."
        )
    if not readable.all():
        first = min(reasons)
        logger.warning(
            "views: skipped %d of %d images that could not be read (first: %s: %s)",
            int((~readable).sum()),
            len(rows),
            paths[rows[first]],
            reasons[first],
        )
    vectors = features[readable]
    norms = np.linalg.norm(vectors, axis=2, keepdims=True)
    vectors = np.ascontiguousarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)
    logger.info(
        "views: embedded %d views of %d images with %s in %.1f s (engine %s)",
        n_views,
        int(readable.sum()),
        model.name,
        time.perf_counter() - started,
        runner.name,
    )
    return AugmentedViews(rows=rows[readable], vectors=vectors, backbone=model.name)
