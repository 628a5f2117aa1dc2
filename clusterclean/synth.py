"""Seeded synthetic data with known truth: camera-like views, planted label noise.

Three things live here, all offline and all deterministic for a given seed:

* :func:`make_views` -- camera-like views of one image (crop, shift, scale,
  flip, brightness, contrast, white balance, sensor noise, JPEG re-encode);
* :func:`make_demo_dataset` -- a small PETA-like folder (~250 JPEGs of 60
  "persons" cut from the photos bundled with scikit-image, each tinted and
  stamped with a scikit-learn digit) with planted annotator disagreements;
* :func:`make_fashion_benchmark` -- a larger PETA-like benchmark built from
  Fashion-MNIST (Debian package ``dataset-fashion-mnist``): one person per
  clothing item, visible attributes derived from the clothing class and
  invisible per-person ones, split by person (and a leaky split by image);
* :func:`inject_noise` -- label noise over a wide label table with known
  groups: ``disagreement`` (a strict minority of one person's views flipped),
  ``uniform`` (random cells flipped) and ``class_conditional`` (an attribute
  swapped with a related one), returning the noisy table and the planted cells.
"""

from __future__ import annotations

import gzip
import io
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ._validation import check_float, check_int, check_type
from .atomic import write_bytes
from .errors import InvalidInputError, MissingDependencyError

__all__ = [
    "NOISE_KINDS",
    "BenchmarkData",
    "DemoData",
    "NoisyLabels",
    "inject_noise",
    "load_fashion_mnist",
    "make_demo_dataset",
    "make_fashion_benchmark",
    "make_views",
]

logger = logging.getLogger(__name__)

NOISE_KINDS = ("disagreement", "uniform", "class_conditional")
PLANTED_COLUMNS = ("image_id", "attribute", "true_label", "given_label")
#: Columns of a wide label table that are not attributes.
NON_ATTRIBUTE_COLUMNS = ("image_id", "image", "path", "group", "split", "split_leaky")
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = (
    "t_shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle_boot",
)
#: Visible benchmark attributes: name -> the Fashion-MNIST classes that have it.
FASHION_VISIBLE = {
    "is_upper_body": (0, 2, 4, 6),
    "is_lower_body": (1,),
    "is_dress": (3,),
    "is_footwear": (5, 7, 9),
    "has_long_sleeves": (2, 4, 6),
    "is_bag": (8,),
    "is_sandal": (5,),
    "covers_ankle": (9,),
}
#: Invisible benchmark attributes (nothing in the image tells them): name -> prior.
FASHION_INVISIBLE = {
    "age_under_30": 0.4,
    "age_over_60": 0.15,
    "is_male": 0.5,
    "is_tourist": 0.2,
    "is_staff": 0.1,
    "on_phone": 0.25,
    "is_commuting": 0.35,
    "visited_before": 0.3,
}
#: Class-conditional confusions of the benchmark: pairs of related attributes.
FASHION_CONFUSIONS = (
    ("is_upper_body", "is_dress"),
    ("is_sandal", "covers_ankle"),
    ("age_under_30", "age_over_60"),
    ("is_tourist", "visited_before"),
)
# Photos bundled inside scikit-image's wheel (no pooch download needed).
DEMO_SOURCES = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "colorwheel",
    "camera",
    "coins",
    "moon",
    "page",
    "brick",
    "grass",
    "gravel",
    "clock",
    "cell",
    "text",
    "microaneurysms",
    "horse",
)
DEMO_AGES = ("young", "adult", "old")
SPLIT_FRACTIONS = (("train", 0.6), ("val", 0.2), ("test", 0.2))


# --------------------------------------------------------------------------- helpers


def _check_size(size, func: str) -> tuple[int, int]:
    if (
        not isinstance(size, (tuple, list))
        or len(size) != 2
        or not all(isinstance(s, (int, np.integer)) and s >= 8 for s in size)
    ):
        raise InvalidInputError(
            f"The 'size' parameter of {func} must be a (width, height) pair of ints >= 8. "
            f"Got {size!r} instead."
        )
    return int(size[0]), int(size[1])


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    write_bytes(path, frame.to_csv(index=False).encode("utf-8"))


def _jpeg_bytes(image: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


def _split_by_unit(n_units: int, rng: np.random.Generator) -> np.ndarray:
    """Assign ``n_units`` units to train/val/test in 60/20/20 proportions, shuffled."""
    counts = [int(math.floor(frac * n_units + 0.5)) for _, frac in SPLIT_FRACTIONS[1:]]
    n_train = n_units - sum(counts)
    names = np.array(
        ["train"] * n_train
        + [
            name for (name, _), c in zip(SPLIT_FRACTIONS[1:], counts, strict=True) for _ in range(c)
        ],
        dtype=object,
    )
    return names[rng.permutation(n_units)]


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


# --------------------------------------------------------------------------- views


def make_views(
    image: Image.Image,
    n_views: int,
    *,
    rng: np.random.Generator,
    size: tuple[int, int] = (64, 128),
) -> list[Image.Image]:
    """Camera-like views of one subject.

    Each view is, in order: a random crop keeping 80-100 % of each side at a
    random offset (shift + scale), resized to ``size``; a horizontal flip with
    probability 1/2; contrast and brightness factors in [0.8, 1.2]; per-channel
    white-balance gains in [0.9, 1.1]; Gaussian sensor noise with a standard
    deviation in [0, 6] grey levels; a JPEG re-encode at quality 60-95. The
    strength is moderate: the views of one subject stay recognisably the same.

    Parameters
    ----------
    image : PIL.Image.Image
        The subject; converted to RGB.
    n_views : int
        Number of views, >= 1.
    rng : numpy.random.Generator
        Source of randomness; the views are a deterministic function of its state.
    size : (int, int)
        Output (width, height) in pixels; the default is a tall pedestrian crop.

    Returns
    -------
    list of PIL.Image.Image
        ``n_views`` RGB images of size ``size``, already JPEG-decoded.
    """
    check_type(image, Image.Image, "image", "make_views", "a PIL.Image.Image")
    check_type(
        rng,
        np.random.Generator,
        "rng",
        "make_views",
        "a numpy.random.Generator (np.random.default_rng(seed))",
    )
    n_views = check_int(n_views, "n_views", "make_views", min_value=1)
    size = _check_size(size, "make_views")
    base = image.convert("RGB")
    return [_one_view(base, rng, size) for _ in range(n_views)]


def _one_view(base: Image.Image, rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    width, height = base.size
    scale = rng.uniform(0.8, 1.0)
    crop_w, crop_h = width * scale, height * scale
    x0 = rng.uniform(0.0, width - crop_w)
    y0 = rng.uniform(0.0, height - crop_h)
    view = base.resize(size, Image.Resampling.BILINEAR, box=(x0, y0, x0 + crop_w, y0 + crop_h))
    if rng.random() < 0.5:
        view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    arr = np.asarray(view, dtype=np.float32)
    contrast, brightness = rng.uniform(0.8, 1.2, size=2)
    mean = arr.mean()
    arr = (arr - mean) * contrast + mean * brightness
    arr = arr * rng.uniform(0.9, 1.1, size=3)
    arr = arr + rng.normal(0.0, rng.uniform(0.0, 6.0), size=arr.shape)
    out = Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), mode="RGB")
    decoded = Image.open(io.BytesIO(_jpeg_bytes(out, int(rng.integers(60, 96)))))
    return decoded.convert("RGB")


# --------------------------------------------------------------------------- noise


@dataclass(frozen=True)
class NoisyLabels:
    """The result of :func:`inject_noise`.

    Attributes
    ----------
    labels : pandas.DataFrame
        A copy of the input table with the planted cells changed.
    planted : pandas.DataFrame
        One row per changed cell: ``image_id``, ``attribute``, ``true_label``
        (the input value), ``given_label`` (the injected value).
    """

    labels: pd.DataFrame
    planted: pd.DataFrame


def _attribute_columns(labels: pd.DataFrame, attributes: Sequence[str] | None) -> list[str]:
    if attributes is None:
        return [c for c in labels.columns if c not in NON_ATTRIBUTE_COLUMNS]
    missing = [a for a in attributes if a not in labels.columns]
    if missing:
        raise InvalidInputError(
            f"The 'attributes' parameter of inject_noise names columns that the label table "
            f"lacks: {missing}. Its columns are {list(labels.columns)}."
        )
    return list(attributes)


def _is_binary(values: pd.Series) -> bool:
    present = values.dropna()
    return pd.api.types.is_numeric_dtype(values) and bool(present.isin([0, 1]).all())


class _Cells:
    """The attribute columns of a label table as mutable arrays, flipped cell by cell."""

    def __init__(self, labels: pd.DataFrame, columns: list[str]) -> None:
        self.columns = columns
        self.values = [labels[c].to_numpy(dtype=object, copy=True) for c in columns]
        self.present = np.column_stack([labels[c].notna().to_numpy() for c in columns])
        self.binary = [_is_binary(labels[c]) for c in columns]
        self.classes = [sorted(set(labels[c].dropna().tolist())) for c in columns]
        self.changed: list[tuple[int, int]] = []

    def wrong_value(self, row: int, c: int, rng: np.random.Generator):
        """1 - x for a binary column, else another class seen in the column (uniformly)."""
        current = self.values[c][row]
        if self.binary[c]:
            return type(current)(1 - current)
        others = [k for k in self.classes[c] if k != current]
        return others[int(rng.integers(len(others)))] if others else current

    def set(self, row: int, c: int, value) -> None:
        self.values[c][row] = value
        self.changed.append((row, c))

    def apply(self, labels: pd.DataFrame) -> pd.DataFrame:
        noisy = labels.copy()
        for c, column in enumerate(self.columns):
            noisy[column] = pd.Series(self.values[c], index=labels.index).astype(
                labels[column].dtype
            )
        return noisy


def inject_noise(
    labels: pd.DataFrame,
    *,
    kind: str,
    rate: float,
    seed: int = 0,
    attributes: Sequence[str] | None = None,
    confusions: Sequence[tuple[str, str]] | None = None,
) -> NoisyLabels:
    """Plant label errors with a known position in a wide label table.

    Parameters
    ----------
    labels : pandas.DataFrame
        One row per image: ``image_id`` (unique), ``group`` (the true identity,
        needed by ``disagreement``) and one column per attribute. A binary
        attribute holds 0/1 (NaN = missing, never touched); any other column is
        one-of-K (e.g. ``age`` in {young, adult, old}) and a flip moves a cell
        to another class seen in that column.
    kind : {"disagreement", "uniform", "class_conditional"}
        ``disagreement``: among the (group, attribute) pairs whose group has
        n >= 3 labelled views, exactly ``round(rate * n_pairs)`` pairs are drawn;
        in each, m views are flipped to one wrong value, m drawn uniformly in
        [1, floor((n - 1) / 2)], so m < n / 2 (a strict minority; a group of 2
        cannot hold one). ``uniform``: exactly ``round(rate * n_cells)`` of the
        labelled cells are flipped. ``class_conditional``: for each confused
        pair (a, b) of binary attributes, among the rows where a != b exactly
        ``round(rate * n_rows)`` rows get a and b swapped (two planted cells
        each). ``round`` rounds halves up.
    rate : float in [0, 0.5]
        Noise level. 0 changes nothing.
    seed : int
        Seed of the generator; the output is a deterministic function of it.
    attributes : sequence of str, optional
        The columns to corrupt; default every column except ``image_id``,
        ``image``, ``path``, ``group``, ``split`` and ``split_leaky``.
    confusions : sequence of (str, str), optional
        For ``class_conditional``: the confused pairs. Default: each binary
        attribute, in column order, paired with its most correlated free
        partner (highest |Pearson r|), each attribute in at most one pair.

    Returns
    -------
    NoisyLabels
        The noisy copy of ``labels`` and the planted cells (``image_id``,
        ``attribute``, ``true_label``, ``given_label``), sorted by row then
        attribute order.
    """
    func = "inject_noise"
    check_type(labels, pd.DataFrame, "labels", func, "a pandas.DataFrame")
    if kind not in NOISE_KINDS:
        raise InvalidInputError(
            f"The 'kind' parameter of {func} must be one of {list(NOISE_KINDS)}. "
            f"Got {kind!r} instead."
        )
    rate = check_float(rate, "rate", func, low=0.0, high=0.5)
    seed = check_int(seed, "seed", func, min_value=0)
    if "image_id" not in labels.columns:
        raise InvalidInputError(
            f"The label table given to {func} needs an 'image_id' column; "
            f"its columns are {list(labels.columns)}."
        )
    if kind == "disagreement" and "group" not in labels.columns:
        raise InvalidInputError(
            f"kind='disagreement' in {func} needs a 'group' column (the true identity of "
            "each image) to flip a minority of one group's views; add it or use kind='uniform'."
        )
    columns = _attribute_columns(labels, attributes)
    rng = np.random.default_rng(seed)
    cells = _Cells(labels, columns)
    if kind == "disagreement":
        _inject_disagreement(cells, labels["group"].to_numpy(dtype=str), rate, rng)
    elif kind == "uniform":
        _inject_uniform(cells, rate, rng)
    else:
        binary = [c for c, is_bin in zip(columns, cells.binary, strict=True) if is_bin]
        pairs = _default_confusions(labels, binary) if confusions is None else list(confusions)
        _check_confusions(pairs, binary)
        _inject_swaps(cells, pairs, rate, rng)
    changed = sorted(cells.changed)
    planted = pd.DataFrame(
        {
            "image_id": [labels["image_id"].iat[r] for r, _ in changed],
            "attribute": [columns[c] for _, c in changed],
            "true_label": pd.Series([labels[columns[c]].iat[r] for r, c in changed], dtype=object),
            "given_label": pd.Series([cells.values[c][r] for r, c in changed], dtype=object),
        },
        columns=list(PLANTED_COLUMNS),
    )
    logger.info("inject_noise: kind=%s rate=%.3f planted %d cells", kind, rate, len(planted))
    return NoisyLabels(labels=cells.apply(labels), planted=planted)


def _inject_disagreement(
    cells: _Cells, groups: np.ndarray, rate: float, rng: np.random.Generator
) -> None:
    _, inverse = np.unique(groups, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.flatnonzero(np.diff(inverse[order])) + 1
    eligible = []  # (column position, labelled rows of the group), groups in sorted order
    for group_rows in np.split(order, bounds) if len(order) else []:
        for c in range(len(cells.columns)):
            rows = group_rows[cells.present[group_rows, c]]
            if len(rows) >= 3:
                eligible.append((c, rows))
    n_pick = _round_half_up(rate * len(eligible))
    for index in np.sort(rng.choice(len(eligible), size=n_pick, replace=False)):
        c, rows = eligible[index]
        n_flip = int(rng.integers(1, (len(rows) - 1) // 2 + 1))
        flipped = np.sort(rng.choice(rows, size=n_flip, replace=False))
        wrong = cells.wrong_value(int(flipped[0]), c, rng)
        for row in flipped:
            cells.set(int(row), c, wrong)


def _inject_uniform(cells: _Cells, rate: float, rng: np.random.Generator) -> None:
    candidates = np.argwhere(cells.present)  # row-major order
    n_pick = _round_half_up(rate * len(candidates))
    for index in np.sort(rng.choice(len(candidates), size=n_pick, replace=False)):
        row, c = (int(v) for v in candidates[index])
        cells.set(row, c, cells.wrong_value(row, c, rng))


def _default_confusions(labels: pd.DataFrame, binary: list[str]) -> list[tuple[str, str]]:
    corr = np.nan_to_num(labels[binary].astype(float).corr().abs().to_numpy(), nan=0.0)
    free = list(range(len(binary)))
    pairs = []
    while len(free) >= 2:
        i = free.pop(0)
        j = max(free, key=lambda p: (corr[i, p], -p))
        free.remove(j)
        pairs.append((binary[i], binary[j]))
    return pairs


def _check_confusions(pairs: list[tuple[str, str]], binary: list[str]) -> None:
    seen: set[str] = set()
    for pair in pairs:
        if len(pair) != 2 or pair[0] == pair[1] or not set(pair) <= set(binary):
            raise InvalidInputError(
                f"Each confusion of inject_noise must pair two different binary (0/1) attribute "
                f"columns among {binary}. Got {pair!r} instead."
            )
        if seen & set(pair):
            raise InvalidInputError(
                f"An attribute may appear in one confusion pair only; {pair!r} repeats one."
            )
        seen |= set(pair)


def _inject_swaps(
    cells: _Cells, pairs: list[tuple[str, str]], rate: float, rng: np.random.Generator
) -> None:
    for a, b in pairs:
        ca, cb = cells.columns.index(a), cells.columns.index(b)
        va, vb = cells.values[ca].copy(), cells.values[cb].copy()
        both = cells.present[:, ca] & cells.present[:, cb]
        rows = np.flatnonzero(both & (va != vb))
        n_pick = _round_half_up(rate * len(rows))
        for row in np.sort(rng.choice(rows, size=n_pick, replace=False)):
            cells.set(int(row), ca, vb[row])
            cells.set(int(row), cb, va[row])


# --------------------------------------------------------------------------- demo


@dataclass(frozen=True)
class DemoData:
    """Paths and truth of a dataset written by :func:`make_demo_dataset`.

    Attributes
    ----------
    root, images_dir, labels_path, planted_path : Path
        The output folder, ``images/``, ``labels.csv`` (the noisy labels a user
        would have) and ``planted.csv``.
    labels : pandas.DataFrame
        ``labels.csv`` as written (``image``, ``split``, ``group``, attributes, ``age``).
    truth : pandas.DataFrame
        The same table before noise (every view of a person agrees).
    planted : pandas.DataFrame
        ``image_id`` (= the ``image`` column), ``attribute``, ``true_label``, ``given_label``.
    """

    root: Path
    images_dir: Path
    labels_path: Path
    planted_path: Path
    labels: pd.DataFrame
    truth: pd.DataFrame
    planted: pd.DataFrame


def _load_source(name: str) -> np.ndarray:
    """An RGB uint8 photo bundled with scikit-image (no download)."""
    from skimage import data

    arr = np.asarray(getattr(data, name)())
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    return np.ascontiguousarray(arr[:, :, :3].astype(np.uint8))


def _demo_person(
    photo: np.ndarray,
    digit: np.ndarray,
    rng: np.random.Generator,
    size: tuple[int, int],
) -> tuple[Image.Image, dict[str, int]]:
    """One demo "person": a tall region of a photo, tinted, with a digit stamped on it."""
    height, width = photo.shape[:2]
    box_h = int(rng.uniform(0.45, 0.9) * height)
    box_w = min(width, box_h // 2)
    top = int(rng.integers(0, height - box_h + 1))
    left = int(rng.integers(0, width - box_w + 1))
    region = Image.fromarray(photo[top : top + box_h, left : left + box_w]).resize(
        size, Image.Resampling.BILINEAR
    )
    tint = rng.uniform(0.2, 1.0, size=3)
    arr = np.asarray(region, dtype=np.float32) * (0.55 + 0.45 * tint)
    glyph = (
        np.asarray(
            Image.fromarray((digit * 255 / 16).astype(np.uint8)).resize(
                (size[0] // 2, size[0] // 2), Image.Resampling.BILINEAR
            ),
            dtype=np.float32,
        )[:, :, None]
        / 255.0
    )
    gy = int(rng.integers(size[1] // 3, size[1] - glyph.shape[0]))
    gx = int(rng.integers(0, size[0] - glyph.shape[1]))
    ink = rng.uniform(0, 255, size=3)
    patch = arr[gy : gy + glyph.shape[0], gx : gx + glyph.shape[1]]
    arr[gy : gy + glyph.shape[0], gx : gx + glyph.shape[1]] = patch * (1 - glyph) + ink * glyph
    visible = {
        "is_warm_tint": int(tint[0] > tint[2]),
        "is_from_top": int(top + box_h / 2 < height / 2),
        "has_digit_low": int(gy < size[1] * 0.55),
    }
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)), visible


class DemoPersons:
    """The demo's subjects: scikit-image photos x scikit-learn digits (nothing downloaded).

    ``draw(person, rng)`` returns one person's base image (96 x 192) and its 6
    visible + 6 invisible binary attributes; person ``p`` uses photo
    ``DEMO_SOURCES[p % len(DEMO_SOURCES)]``.
    """

    def __init__(self, n_persons: int) -> None:
        from sklearn.datasets import load_digits

        self.digits = load_digits()
        self.photos = {name: _load_source(name) for name in DEMO_SOURCES[:n_persons]}
        self.color = {
            name: int(np.ptp(photo.astype(np.int16), axis=2).mean() > 4)
            for name, photo in self.photos.items()
        }

    def draw(self, person: int, rng: np.random.Generator) -> tuple[Image.Image, dict[str, int]]:
        source = DEMO_SOURCES[person % len(DEMO_SOURCES)]
        d = int(rng.integers(len(self.digits.images)))
        base, visible = _demo_person(self.photos[source], self.digits.images[d], rng, (96, 192))
        label = int(self.digits.target[d])
        attrs = {
            "is_color_source": self.color[source],
            **visible,
            "digit_is_even": int(label % 2 == 0),
            "digit_over_4": int(label > 4),
        }
        for i, prior in enumerate((0.5, 0.3, 0.2, 0.4, 0.15, 0.35)):
            attrs[f"hidden_{i}"] = int(rng.random() < prior)
        return base, attrs


def make_demo_dataset(
    out: str | Path,
    *,
    n_persons: int = 60,
    seed: int = 0,
    disagreement_rate: float = 0.1,
) -> DemoData:
    """Write a small PETA-like dataset with planted annotator disagreements.

    Every "person" is a tall region of one of the photos bundled with
    scikit-image (astronaut, chelsea, coffee, rocket, camera, coins, ...),
    tinted with its own colour and stamped with a digit from
    ``sklearn.datasets.load_digits``; nothing is downloaded. 10 % of the
    persons have a single view (singletons), the others 3 to 6 views made by
    :func:`make_views`. Each person has 12 binary attributes -- 6 visible
    (``is_color_source``, ``is_warm_tint``, ``is_from_top``, ``has_digit_low``,
    ``digit_is_even``, ``digit_over_4``) and 6 invisible random ones -- and the
    one-of-K ``age`` in {young, adult, old}. Noise is planted with
    :func:`inject_noise` (``kind="disagreement"``).

    Parameters
    ----------
    out : str or Path
        Output folder; ``images/*.jpg``, ``labels.csv`` and ``planted.csv`` are written in it.
    n_persons : int
        Number of persons, >= 2.
    seed : int
        Seed of everything random.
    disagreement_rate : float in [0, 0.5]
        Share of the (multi-view person, attribute) pairs that get a strict
        minority of their views flipped.

    Returns
    -------
    DemoData
    """
    func = "make_demo_dataset"
    n_persons = check_int(n_persons, "n_persons", func, min_value=2)
    seed = check_int(seed, "seed", func, min_value=0)
    disagreement_rate = check_float(disagreement_rate, "disagreement_rate", func, low=0.0, high=0.5)
    root = Path(out)
    images_dir = root / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    persons = DemoPersons(n_persons)
    splits = _split_by_unit(n_persons, rng)
    rows = []
    for person in range(n_persons):
        base, attrs = persons.draw(person, rng)
        attrs["age"] = DEMO_AGES[int(rng.integers(len(DEMO_AGES)))]
        n_views = 1 if rng.random() < 0.1 else int(rng.integers(3, 7))
        for v, view in enumerate(make_views(base, n_views, rng=rng, size=(64, 128))):
            image = f"p{person:03d}_v{v}.jpg"
            write_bytes(images_dir / image, _jpeg_bytes(view, 95))
            rows.append(
                {"image_id": image, "split": splits[person], "group": f"p{person:03d}", **attrs}
            )
    truth = pd.DataFrame(rows)
    noisy = inject_noise(truth, kind="disagreement", rate=disagreement_rate, seed=seed)
    labels = noisy.labels.rename(columns={"image_id": "image"})
    truth = truth.rename(columns={"image_id": "image"})
    labels_path, planted_path = root / "labels.csv", root / "planted.csv"
    _write_csv(labels, labels_path)
    _write_csv(noisy.planted, planted_path)
    logger.info(
        "make_demo_dataset: %d images of %d persons, %d planted cells in %s",
        len(labels),
        n_persons,
        len(noisy.planted),
        root,
    )
    return DemoData(
        root=root,
        images_dir=images_dir,
        labels_path=labels_path,
        planted_path=planted_path,
        labels=labels,
        truth=truth,
        planted=noisy.planted,
    )


# --------------------------------------------------------------------------- benchmark


@dataclass(frozen=True)
class BenchmarkData:
    """Paths and truth of a benchmark written by :func:`make_fashion_benchmark`.

    Attributes
    ----------
    root, images_dir : Path
        The output folder and its ``images/``.
    labels_path : Path
        ``labels.csv``: ``image``, ``split`` (by person), ``group``, attributes
        -- the TRUE labels; inject noise with :func:`inject_noise`.
    leaky_labels_path : Path
        ``labels_leaky.csv``: the same with ``split`` drawn per image, so that
        views of one person leak across train/val/test.
    persons_path : Path
        ``persons.csv``: ``group``, ``fashion_index``, ``fashion_class``,
        ``n_views``, ``split``, attributes.
    labels, persons : pandas.DataFrame
        The two tables as written.
    visible, invisible : tuple of str
        Attribute names derived from the clothing class / drawn per person.
    confusions : tuple of (str, str)
        Related attribute pairs for ``inject_noise(kind="class_conditional")``.
    """

    root: Path
    images_dir: Path
    labels_path: Path
    leaky_labels_path: Path
    persons_path: Path
    labels: pd.DataFrame
    persons: pd.DataFrame
    visible: tuple[str, ...]
    invisible: tuple[str, ...]
    confusions: tuple[tuple[str, str], ...]


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    magic = int.from_bytes(raw[:4], "big")
    n_dims = magic & 0xFF
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(n_dims))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * n_dims).reshape(shape)


def load_fashion_mnist(
    *, subset: str = "train", root: str | Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Read Fashion-MNIST from the Debian package ``dataset-fashion-mnist``.

    Parameters
    ----------
    subset : {"train", "t10k"}
        The 60,000-image training set or the 10,000-image test set.
    root : str or Path, optional
        Folder holding the ``*-idx?-ubyte.gz`` files; default
        ``/usr/share/datasets/fashion-mnist``.

    Returns
    -------
    images : ndarray of shape (n, 28, 28), dtype uint8
    classes : ndarray of shape (n,), dtype uint8
        Class index into :data:`FASHION_CLASSES`.
    """
    if subset not in ("train", "t10k"):
        raise InvalidInputError(
            f"The 'subset' parameter of load_fashion_mnist must be 'train' or 't10k'. "
            f"Got {subset!r} instead."
        )
    folder = FASHION_MNIST_DIR if root is None else Path(root)
    images_path = folder / f"{subset}-images-idx3-ubyte.gz"
    classes_path = folder / f"{subset}-labels-idx1-ubyte.gz"
    if not images_path.is_file() or not classes_path.is_file():
        raise MissingDependencyError(
            f"Fashion-MNIST was not found in {folder} (looked for {images_path.name} and "
            f"{classes_path.name}). Install it with `apt-get install dataset-fashion-mnist` "
            "(Debian/Ubuntu package dataset-fashion-mnist; scripts/setup.sh does it) or pass "
            "root= to a folder holding those files."
        )
    return _read_idx(images_path), _read_idx(classes_path)


def _fashion_person(
    item: np.ndarray, rng: np.random.Generator, size: tuple[int, int]
) -> Image.Image:
    """A clothing item coloured with its own garment and background colours."""
    garment = rng.uniform(40, 255, size=3)
    background = rng.uniform(0, 90, size=3)
    alpha = item.astype(np.float32)[:, :, None] / 255.0
    arr = background * (1 - alpha) + garment * alpha
    canvas = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="RGB")
    return canvas.resize(size, Image.Resampling.BILINEAR)


def make_fashion_benchmark(
    out: str | Path,
    *,
    n_persons: int = 2000,
    min_views: int = 1,
    max_views: int = 6,
    seed: int = 0,
    size: tuple[int, int] = (64, 64),
    fashion_root: str | Path | None = None,
) -> BenchmarkData:
    """Write a PETA-like benchmark from Fashion-MNIST with known persons and labels.

    Each person is one Fashion-MNIST training item (many persons share a
    clothing class: hard negatives), given its own garment and background
    colour, photographed ``n_views`` times with :func:`make_views` (``n_views``
    uniform in [min_views, max_views]). Attributes: the 8 visible ones of
    :data:`FASHION_VISIBLE` (1 when the clothing class has it) and the 8
    invisible ones of :data:`FASHION_INVISIBLE` (Bernoulli with the listed
    prior, per person). Labels written are the TRUE labels.

    Parameters
    ----------
    out : str or Path
        Output folder.
    n_persons : int
        Number of persons, in [5, 60000].
    min_views, max_views : int
        Bounds of the number of views per person, 1 <= min_views <= max_views.
    seed : int
        Seed of everything random.
    size : (int, int)
        (width, height) of the written images.
    fashion_root : str or Path, optional
        Where the Fashion-MNIST files are (see :func:`load_fashion_mnist`).

    Returns
    -------
    BenchmarkData
    """
    func = "make_fashion_benchmark"
    n_persons = check_int(n_persons, "n_persons", func, min_value=5, max_value=60000)
    min_views = check_int(min_views, "min_views", func, min_value=1)
    max_views = check_int(max_views, "max_views", func, min_value=min_views)
    seed = check_int(seed, "seed", func, min_value=0)
    size = _check_size(size, func)
    items, classes = load_fashion_mnist(root=fashion_root)
    root = Path(out)
    images_dir = root / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(items), size=n_persons, replace=False))
    splits = _split_by_unit(n_persons, rng)
    persons, rows = [], []
    for p, index in enumerate(chosen):
        cls = int(classes[index])
        attrs = {name: int(cls in members) for name, members in FASHION_VISIBLE.items()}
        attrs.update({name: int(rng.random() < prior) for name, prior in FASHION_INVISIBLE.items()})
        n_views = int(rng.integers(min_views, max_views + 1))
        group = f"p{p:05d}"
        persons.append(
            {
                "group": group,
                "fashion_index": int(index),
                "fashion_class": FASHION_CLASSES[cls],
                "n_views": n_views,
                "split": splits[p],
                **attrs,
            }
        )
        base = _fashion_person(items[index], rng, (size[0] * 5 // 4, size[1] * 5 // 4))
        for v, view in enumerate(make_views(base, n_views, rng=rng, size=size)):
            image = f"{group}_v{v}.jpg"
            write_bytes(images_dir / image, _jpeg_bytes(view, 95))
            rows.append({"image": image, "split": splits[p], "group": group, **attrs})
    labels = pd.DataFrame(rows)
    leaky = labels.assign(split=_split_by_unit(len(labels), rng))
    persons_frame = pd.DataFrame(persons)
    paths = root / "labels.csv", root / "labels_leaky.csv", root / "persons.csv"
    for frame, path in zip((labels, leaky, persons_frame), paths, strict=True):
        _write_csv(frame, path)
    logger.info(
        "make_fashion_benchmark: %d images of %d persons in %s", len(labels), n_persons, root
    )
    return BenchmarkData(
        root=root,
        images_dir=images_dir,
        labels_path=paths[0],
        leaky_labels_path=paths[1],
        persons_path=paths[2],
        labels=labels,
        persons=persons_frame,
        visible=tuple(FASHION_VISIBLE),
        invisible=tuple(FASHION_INVISIBLE),
        confusions=FASHION_CONFUSIONS,
    )
