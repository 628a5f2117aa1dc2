"""Load images and their labels into a :class:`~clusterclean._contracts.Dataset`.

Three entry points:

- :func:`load_dataset`: a labels table (CSV, TSV, Parquet or a DataFrame, in
  wide or long form) and/or a folder of images;
- :func:`list_images`: the image files under a folder;
- :func:`load_peta`: the PETA pedestrian-attribute dataset, in either of its
  two common layouts (``PETA.mat`` + ``images/`` or the original archive).

Labels are float32 with 1.0 = present, 0.0 = absent and NaN = missing.
"""

from __future__ import annotations

import collections
import logging
import math
import numbers
import os
import posixpath
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._contracts import Dataset
from ._validation import check_type
from .errors import InvalidInputError, InvalidTypeError
from .options import Option, declare

__all__ = [
    "OPTIONS",
    "IMAGE_COLUMN_CANDIDATES",
    "IMAGE_EXTENSIONS",
    "image_list_root",
    "common_folder",
    "image_files_of",
    "is_path_list",
    "SPLITS",
    "list_images",
    "LABELS_FORMATS",
    "is_peta_labels",
    "load_dataset",
    "load_peta",
]

#: How a labels argument is read (the ``labels_format`` option).
LABELS_FORMATS = ("auto", "table", "peta")

#: The options of the load stage, declared once (:mod:`clusterclean.options`).
OPTIONS = declare(
    "load",
    Option(
        "image_column",
        None,
        "column naming the image (none: image_id, image, path or filename)",
        "str",
        nullable=True,
    ),
    Option(
        "multiclass_columns",
        (),
        "columns holding one value of several (pose=left/right), expanded to one-of-K attributes",
        "strs",
        flag="--multiclass",
    ),
    Option(
        "allow_unlabeled_images",
        False,
        "keep images that have no labels row (their labels are missing)",
        "bool",
        flag="--allow-unlabeled",
    ),
    Option(
        "labels_format",
        "auto",
        "how --labels is read: table (CSV/TSV/Parquet, wide or long), peta (a PETA "
        "Label.txt with its images next to it, or a PETA folder), auto (peta for a file named "
        "Label.txt or a PETA folder, else table)",
        "choice",
        choices=LABELS_FORMATS,
    ),
    Option(
        "labels_from_folders",
        False,
        "with no labels table, read an ImageFolder layout (DIR/<class>/image) as a one-of-K "
        "'class' label per image, so a component joining two classes is reported (without "
        "it, such a layout is only mentioned and the run finds duplicates)",
        "bool",
    ),
    Option(
        "follow_symlinks",
        False,
        "read symbolic links in the images folder that point outside it (refused by "
        "default, like ../ paths in the labels)",
        "bool",
    ),
)

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")
IMAGE_COLUMN_CANDIDATES = ("image_id", "image", "path", "filename")
SPLITS = ("train", "val", "test")

_TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t", ".parquet": None, ".pq": None}
_TRUE_STRINGS = frozenset({"1", "1.0", "true"})
_FALSE_STRINGS = frozenset({"0", "0.0", "false"})
_MISSING_STRINGS = frozenset({"", "nan", "na"})
_MAX_LISTED = 5
_MAX_CATEGORIES = 20


# --------------------------------------------------------------------------- #
# Reading the labels table
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class _Table:
    """A labels table as read, with what is needed to point at one of its rows.

    ``frame`` has str column names and a default RangeIndex; data row ``i``
    (0-based) is line ``i + first_line`` of a CSV file (the header is line 1)
    and row ``i + first_line`` (1-based) of a Parquet file or DataFrame.
    """

    frame: pd.DataFrame
    name: str
    first_line: int
    is_text: bool

    @property
    def title(self) -> str:
        return self.name[0].upper() + self.name[1:]

    def at(self, row: int) -> str:
        """``line 3`` (text file, header = line 1) or ``row 2`` (1-based data row)."""
        return f"{'line' if self.is_text else 'row'} {row + self.first_line}"

    def where(self, row: int) -> str:
        return f"{self.at(row)} of {self.name}"


def _read_table(labels: str | Path | pd.DataFrame) -> _Table:
    if isinstance(labels, pd.DataFrame):
        frame = labels.reset_index(drop=True)
        table = _Table(frame, "the labels DataFrame", 1, False)
        names = [str(c) for c in frame.columns]
    else:
        path = Path(labels).expanduser()
        suffix = path.suffix.lower()
        if suffix not in _TABLE_SUFFIXES:
            raise InvalidInputError(
                f"The labels file '{path}' has the suffix {suffix!r}, which clusterclean cannot "
                f"read; use one of {', '.join(sorted(_TABLE_SUFFIXES))} (or pass a pandas "
                "DataFrame)."
            )
        if not path.is_file():
            what = "is a folder" if path.is_dir() else "does not exist"
            raise InvalidInputError(f"The labels file '{path}' {what}; pass the path of a file.")
        try:
            if _TABLE_SUFFIXES[suffix] is None:
                frame = pd.read_parquet(path)
                names = [str(c) for c in frame.columns]
                table = _Table(frame.reset_index(drop=True), f"the labels file '{path}'", 1, False)
            else:
                raw = pd.read_csv(
                    path,
                    sep=_TABLE_SUFFIXES[suffix],
                    header=None,
                    dtype=object,
                    keep_default_na=False,
                    encoding="utf-8-sig",
                )
                names = raw.iloc[0].tolist() if len(raw) else []
                frame = raw.iloc[1:].reset_index(drop=True)
                table = _Table(frame, f"the labels file '{path}'", 2, True)
        except pd.errors.EmptyDataError:
            names, table = [], _Table(pd.DataFrame(), f"the labels file '{path}'", 2, True)
        except (OSError, ValueError, UnicodeDecodeError, ImportError) as exc:
            # pandas / pyarrow raise ParserError, ArrowInvalid (ValueErrors) or OSError.
            raise InvalidInputError(
                f"Could not read the labels file '{path}' as {suffix[1:].upper()}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
    names = [_check_utf8(n.strip(), "A column name") for n in names]
    if not names:
        raise InvalidInputError(f"{table.title} is empty: it has no columns.")
    for i, n in enumerate(names):
        if not n:
            raise InvalidInputError(
                f"Column {i + 1} of {table.name} has no name. If it is an "
                "index written by DataFrame.to_csv, write the table with index=False or drop "
                "that column."
            )
    seen: dict[str, int] = {}
    for i, n in enumerate(names):
        if n in seen:
            raise InvalidInputError(
                f"{table.title} has two columns named {_show(n)} (columns "
                f"{seen[n] + 1} and {i + 1}); column names must be unique."
            )
        seen[n] = i
    frame = table.frame.set_axis(names, axis=1)
    if len(frame) == 0:
        raise InvalidInputError(f"{table.title} has no rows.")
    return _Table(frame, table.name, table.first_line, table.is_text)


def _find_image_column(table: _Table, image_column: str | None) -> str:
    columns = list(table.frame.columns)
    if image_column is not None:
        if image_column not in columns:
            raise InvalidInputError(
                f"The image column {image_column!r} is not in {table.name}; "
                f"its columns are: {_list(columns)}."
            )
        return image_column
    found = [c for c in IMAGE_COLUMN_CANDIDATES if c in columns]
    if len(found) > 1:
        # guessing could pair every label with the wrong file: the user says which one
        raise InvalidInputError(
            f"{table.title} has {len(found)} columns that could name the image "
            f"({_list(found)}); say which one with image_column=... (CLI: --image-column "
            "COLUMN), or drop the others."
        )
    if found:
        return found[0]
    raise InvalidInputError(
        f"{table.title} has no image column: none of "
        f"{_list(IMAGE_COLUMN_CANDIDATES)} is among its columns ({_list(columns)}). Name the "
        "column with image_column=... (CLI: --image-column COLUMN)."
    )


def _show(value: object, width: int = 60) -> str:
    """``repr`` of a user value, cut to ``width`` characters for error messages."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _check_utf8(text: str, what: str) -> str:
    """Reject text that cannot be written as UTF-8 (lone surrogates from mis-decoded bytes)."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidInputError(
                f"{what} is not valid Unicode text ({_show(text)} holds a lone surrogate, "
                "usually a byte that was not decoded as UTF-8); re-save or rename it as UTF-8."
            ) from exc
    return text


def _list(values: Sequence[object], limit: int | None = None) -> str:
    shown = [_show(v) for v in list(values)[:limit]]
    more = len(values) - len(shown)
    return ", ".join(shown) + (f", ... ({more} more)" if more > 0 else "")


# --------------------------------------------------------------------------- #
# Cell parsing
# --------------------------------------------------------------------------- #
def _is_missing(value: object) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float | np.floating) and math.isnan(value)


def _cell_str(value: object) -> str | None:
    """A cell as a stripped string, ``None`` when it is missing or empty.

    Integral floats lose their ``.0`` so that an integer column stored as float
    (because it has gaps) gives the same ids and categories as an integer one.
    """
    if _is_missing(value):
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, float | np.floating) and float(value).is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def _binary_value(value: object) -> float | None:
    """1.0, 0.0 or NaN for a valid label cell; ``None`` for anything else."""
    if _is_missing(value):
        return math.nan
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE_STRINGS:
            return 1.0
        if text in _FALSE_STRINGS:
            return 0.0
        return math.nan if text in _MISSING_STRINGS else None
    if isinstance(value, bool | np.bool_ | numbers.Real):
        try:
            number = float(value)
        except (OverflowError, ValueError):
            return None
        return number if number in (0.0, 1.0) else None
    return None


def _binary_cells(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Parse label cells (any shape, dtype object) in one pass over their distinct values.

    Returns
    -------
    labels : ndarray of the same shape, dtype float32
        1.0 / 0.0 / NaN; NaN where the cell is invalid too.
    invalid : ndarray of the same shape, dtype bool
        True where the cell is not a valid label.
    """
    flat = cells.ravel()
    try:
        codes, uniques = pd.factorize(flat, use_na_sentinel=True)
    except TypeError:  # unhashable cells (lists, dicts) in a DataFrame: parse each one
        codes, uniques = np.arange(flat.size), flat
    parsed = [_binary_value(v) for v in uniques]
    lookup = np.array([math.nan if p is None else p for p in parsed] + [math.nan], np.float32)
    bad = np.array([p is None for p in parsed] + [False], dtype=bool)
    # code -1 (a missing cell) picks the trailing NaN / False
    return lookup[codes].reshape(cells.shape), bad[codes].reshape(cells.shape)


def _cell_strings(table: _Table, column: str) -> list[str | None]:
    """The cells of a text column (ids, groups, categories), via :func:`_cell_str`."""
    out = [_cell_str(v) for v in table.frame[column].to_numpy(dtype=object)]
    for row, text in enumerate(out):
        if text is not None:
            _check_utf8(text, f"The value at {table.where(row)}, column {column!r},")
    return out


# --------------------------------------------------------------------------- #
# Wide and long forms
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class _Labels:
    """What a labels table says: ids (labels order), their rows, matrix, names, tasks."""

    ids: list[str]
    rows: list[int]
    labels: np.ndarray
    attributes: tuple[str, ...]
    tasks: dict[str, tuple[str, ...]]
    split: list[str | None] | None
    group: list[str | None] | None


def _image_ids(table: _Table, column: str, *, unique: bool) -> list[str]:
    ids = _cell_strings(table, column)
    first_row: dict[str, int] = {}
    for row, image_id in enumerate(ids):
        if image_id is None:
            raise InvalidInputError(
                f"The image column {column!r} is empty at {table.where(row)}; every row needs "
                "an image id."
            )
        if unique and image_id in first_row:
            raise InvalidInputError(
                f"The image id {_show(image_id)} appears twice in {table.name}: at "
                f"{table.at(first_row[image_id])} and {table.at(row)}. Each image must "
                "have one row; merge or drop the duplicate."
            )
        first_row.setdefault(image_id, row)
    return ids  # type: ignore[return-value]


def _bad_value_error(table: _Table, column: str, row: int, *, hint: str = "") -> InvalidInputError:
    value = table.frame[column].iloc[row]
    value = value.item() if isinstance(value, np.generic) else value
    return InvalidInputError(
        f"{table.title} has the value {_show(value)} in column {column!r} at "
        f"{table.at(row)}; attribute values must be 1, 0 or empty (missing). {hint}".rstrip()
    )


def _categorical_hint(table: _Table, column: str) -> str:
    if column in ("attribute", "value"):
        return (
            "A long-form table has exactly the columns (image, 'attribute') or (image, "
            "'attribute', 'value'); drop the other columns to read it as one."
        )
    strings = {s for s in _cell_strings(table, column) if s is not None}
    if len(strings) > _MAX_CATEGORIES:
        return (
            "If the column is not an attribute, drop it from the table or choose it as "
            "the image column."
        )
    return (
        f"The column looks categorical ({len(strings)} distinct "
        f"value{'s' if len(strings) != 1 else ''}); if it is a "
        f"multi-class attribute, declare it with --multiclass {column} "
        f"(multiclass_columns=[{column!r}] in Python)."
    )


def _one_hot(table: _Table, column: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Expand a multi-class column into one-hot attributes ``column=value``."""
    values = _cell_strings(table, column)
    categories = sorted({v for v in values if v is not None})
    if not categories:
        raise InvalidInputError(
            f"The multi-class column {column!r} of {table.name} holds no values at all; fill "
            "it or drop it from multiclass_columns (--multiclass)."
        )
    index = {c: j for j, c in enumerate(categories)}
    block = np.zeros((len(values), len(categories)), dtype=np.float32)
    for row, value in enumerate(values):
        if value is None:
            block[row] = np.nan
        else:
            block[row, index[value]] = 1.0
    return block, tuple(f"{column}={c}" for c in categories)


def _split_values(table: _Table, column: str) -> list[str | None]:
    """Split names, lower case; ``None`` where the cell is empty."""
    out: list[str | None] = []
    for row, value in enumerate(_cell_strings(table, column)):
        norm = None if value is None else value.lower()
        if norm is not None and norm not in SPLITS:
            raise InvalidInputError(
                f"The split column {column!r} of {table.name} holds {_show(value)} at "
                f"{table.at(row)}; a split must be one of {', '.join(SPLITS)}. Fix the "
                "value, or pass split_column=None if the column is not a split."
            )
        out.append(norm)
    return out


def _wide_labels(
    table: _Table,
    image_column: str,
    multiclass_columns: Sequence[str],
    split_column: str | None,
    group_column: str | None,
) -> _Labels:
    frame = table.frame
    ids = _image_ids(table, image_column, unique=True)
    for name, role in ((split_column, "split"), (group_column, "group")):
        if name is not None and name != role and name not in frame.columns:
            raise InvalidInputError(
                f"The {role} column {_show(name)} is not in {table.name}; its "
                f"columns are: {_list(list(frame.columns))}."
            )
    meta = {image_column} | {c for c in (split_column, group_column) if c in frame.columns}
    for column in multiclass_columns:
        if column not in frame.columns:
            raise InvalidInputError(
                f"The multi-class column {column!r} is not in {table.name}; "
                f"its columns are: {_list(list(frame.columns))}."
            )
        if column in meta:
            raise InvalidInputError(
                f"The column {column!r} of {table.name} is the image, split or group column; "
                "it cannot also be a multi-class attribute."
            )
    columns = [c for c in frame.columns if c not in meta]
    binary_columns = [c for c in columns if c not in multiclass_columns]
    binary, invalid = _binary_cells(frame[binary_columns].to_numpy(dtype=object))
    if invalid.any():
        column = binary_columns[int(np.argmax(invalid.any(axis=0)))]
        row = int(np.argmax(invalid[:, binary_columns.index(column)]))
        hint = _categorical_hint(table, column)
        raise _bad_value_error(table, column, row, hint=hint)
    position = {c: j for j, c in enumerate(binary_columns)}
    blocks: list[np.ndarray] = []
    attributes: list[str] = []
    tasks: dict[str, tuple[str, ...]] = {}
    for column in columns:
        if column in multiclass_columns:
            block, names = _one_hot(table, column)
            tasks[column] = names
        else:
            block, names = binary[:, position[column], None], (column,)
        blocks.append(block)
        attributes.extend(names)
    if len(set(attributes)) != len(attributes):
        clash = pd.Series(attributes)[pd.Series(attributes).duplicated()].iloc[0]
        raise InvalidInputError(
            f"The attribute name {_show(clash)} of {table.name} is both a column and a one-hot "
            "attribute of a multi-class column; rename that column."
        )
    labels = np.hstack(blocks) if blocks else np.zeros((len(ids), 0), dtype=np.float32)
    return _Labels(
        ids=ids,
        rows=list(range(len(ids))),
        labels=labels,
        attributes=tuple(attributes),
        tasks=tasks,
        split=_split_values(table, split_column) if split_column in frame.columns else None,
        group=_cell_strings(table, group_column) if group_column in frame.columns else None,
    )


def _long_labels(table: _Table, image_column: str) -> _Labels:
    """Long form: one row per (image, attribute[, value]).

    Without a ``value`` column each row is a positive label and an attribute
    absent for an image is 0; with one, an absent attribute is missing.
    """
    frame = table.frame
    ids = _image_ids(table, image_column, unique=False)
    names = _cell_strings(table, "attribute")
    has_value = "value" in frame.columns
    if has_value:
        values, invalid = _binary_cells(frame["value"].to_numpy(dtype=object))
        if invalid.any():
            raise _bad_value_error(table, "value", int(np.argmax(invalid)))
    else:
        values = np.ones(len(frame), dtype=np.float32)
    for row, name in enumerate(names):
        if name is None:
            raise InvalidInputError(
                f"The 'attribute' column is empty at {table.where(row)}; every row of a "
                "long-form table names one attribute."
            )
    order = list(dict.fromkeys(ids))
    attributes = tuple(sorted(set(names)))  # type: ignore[arg-type]
    row_of = {image_id: i for i, image_id in enumerate(order)}
    col_of = {a: j for j, a in enumerate(attributes)}
    fill = np.nan if has_value else 0.0
    labels = np.full((len(order), len(attributes)), fill, dtype=np.float32)
    seen: dict[tuple[str, str], int] = {}
    for row, (image_id, name) in enumerate(zip(ids, names, strict=True)):
        key = (image_id, name)
        if key in seen and not _same_label(values[seen[key]], values[row]):
            raise InvalidInputError(
                f"The image {_show(image_id)} has two different values for attribute "
                f"{_show(name)} in {table.name}: at {table.at(seen[key])} and {table.at(row)}."
            )
        seen.setdefault(key, row)
        labels[row_of[image_id], col_of[name]] = values[row]  # type: ignore[index]
    first_row: dict[str, int] = {}
    for row, image_id in enumerate(ids):
        first_row.setdefault(image_id, row)
    return _Labels(
        ids=order,
        rows=[first_row[i] for i in order],
        labels=labels,
        attributes=attributes,
        tasks={},
        split=None,
        group=None,
    )


def _same_label(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def _is_long_form(columns: Sequence[str], image_column: str) -> bool:
    return set(columns) - {image_column} in ({"attribute"}, {"attribute", "value"})


# --------------------------------------------------------------------------- #
# Images
# --------------------------------------------------------------------------- #
def _images_root(root: str | Path) -> Path:
    path = Path(root).expanduser()
    if not path.exists():
        raise InvalidInputError(f"The images folder '{path}' does not exist.")
    if not path.is_dir():
        raise InvalidInputError(f"The images path '{path}' is not a folder; pass a folder.")
    return path.resolve()


def is_path_list(value: object) -> bool:
    """True for a list or tuple of str / os.PathLike (image files given one by one)."""
    return isinstance(value, list | tuple) and all(isinstance(v, str | os.PathLike) for v in value)


def image_files_of(images: Any) -> Any:
    """A torchvision ``ImageFolder`` / ``DatasetFolder`` as the list of its image files.

    Its ``samples`` hold ``(path, class_index)``; the files' folders are the classes,
    so ``labels_from_folders=True`` reads them as the one-of-K ``class`` label, as it
    does for the folder itself. Anything else is returned unchanged.
    """
    samples = getattr(images, "samples", None)
    if (
        not isinstance(images, str | os.PathLike | list | tuple)
        and isinstance(samples, list)
        and all(isinstance(s, tuple) and s and isinstance(s[0], str) for s in samples)
    ):
        return [s[0] for s in samples]
    return images


def image_list_root(paths: Sequence[str | os.PathLike]) -> tuple[Path, list[str]]:
    """Image files given one by one as (their deepest common folder, paths relative to it).

    Each must be an existing image file (suffix in :data:`IMAGE_EXTENSIONS`), listed once;
    their ids are the relative paths, as for a folder.
    """
    if not paths:
        raise InvalidInputError("The 'images' list is empty; give at least one image file.")
    resolved = []
    for value in paths:
        path = Path(value).expanduser().resolve()
        if not path.is_file():
            raise InvalidInputError(f"The image file '{value}' in 'images' does not exist.")
        if not path.name.lower().endswith(IMAGE_EXTENSIONS):
            raise InvalidInputError(
                f"'{value}' in 'images' is not an image file (its suffix is not one of "
                f"{', '.join(IMAGE_EXTENSIONS)})."
            )
        resolved.append(path)
    counts = collections.Counter(resolved)
    twice = sorted(str(p) for p, n in counts.items() if n > 1)
    if twice:
        raise InvalidInputError(f"'images' lists {_list(twice, _MAX_LISTED)} more than once.")
    root = common_folder(resolved)
    return root, sorted(p.relative_to(root).as_posix() for p in resolved)


def common_folder(paths: Sequence[str | os.PathLike]) -> Path:
    """The deepest folder holding every one of ``paths`` (absolute; no file is opened)."""
    parents = [os.path.dirname(os.path.abspath(os.path.expanduser(p))) for p in paths]
    return Path(os.path.commonpath(parents))


def list_images(root: str | Path, *, follow_symlinks: bool = False) -> list[str]:
    """List the image files under a folder, recursively.

    Parameters
    ----------
    root : str or Path
        The images folder.
    follow_symlinks : bool, default=False
        Accept symbolic links to files outside ``root``. Without it they are
        refused, like a ``../`` path in a labels table: a folder handed to
        clusterclean is read, not whatever its links point to.

    Returns
    -------
    list of str
        Paths relative to ``root`` in POSIX form (``"cam1/0001.png"``), sorted.
        A file counts as an image when its suffix (any case) is one of
        :data:`IMAGE_EXTENSIONS`. Hidden files and folders (name starting with
        ``.``, e.g. macOS ``._x.jpg`` resource forks) are skipped.

    Raises
    ------
    InvalidInputError
        When the folder does not exist, is not a folder, holds no image, or
        holds links to files outside it (without ``follow_symlinks``).
    """
    base = _images_root(root)
    _check_utf8(str(base), f"The images folder path '{base}'")
    found: list[str] = []
    outside: list[str] = []
    for folder, dirs, files in os.walk(base):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel = Path(folder).relative_to(base).as_posix()
        for name in files:
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                path = name if rel == "." else f"{rel}/{name}"
                full = os.path.join(folder, name)
                if not follow_symlinks and os.path.islink(full):
                    real = os.path.realpath(full)
                    if os.path.commonpath([str(base), real]) != str(base):
                        outside.append(f"{path} -> {real}")
                        continue
                found.append(_check_utf8(path, f"The file name of {path!r} in '{base}'"))
    if outside:
        raise InvalidInputError(
            f"{len(outside)} image file(s) in '{base}' are symbolic links to files outside it: "
            f"{_list(outside, _MAX_LISTED)}. Pass --follow-symlinks (API: "
            "follow_symlinks=True) to read them, or copy the files into the folder."
        )
    if not found:
        raise InvalidInputError(
            f"The images folder '{base}' holds no image files (looked recursively for "
            f"{', '.join(IMAGE_EXTENSIONS)})."
        )
    return sorted(found)


class _ImageIndex:
    """Find the file a labels value refers to, among the files under a root."""

    def __init__(self, root: Path, files: list[str]) -> None:
        self.root = root
        self.files = set(files)
        self.by_key: dict[str, dict[str, list[str]]] = {"stem_path": {}, "name": {}, "stem": {}}
        for rel in files:
            stem_path = posixpath.splitext(rel)[0]
            name = posixpath.basename(rel)
            for kind, key in (
                ("stem_path", stem_path),
                ("name", name),
                ("stem", posixpath.basename(stem_path)),
            ):
                self.by_key[kind].setdefault(key, []).append(rel)

    def relative(self, value: str, where: str) -> str:
        """The value as a normalised path relative to the root; errors if it leaves it."""
        if "\x00" in value:
            raise InvalidInputError(
                f"The image {_show(value)} at {where} holds a NUL character, which no file "
                "name can hold; fix the image column."
            )
        text = value.replace("\\", "/")
        if posixpath.isabs(text):
            # As written, or with symlinks resolved (the root itself is resolved).
            base = str(self.root)
            for absolute in (os.path.normpath(text), os.path.realpath(text)):
                if os.path.commonpath([base, absolute]) == base:
                    return Path(os.path.relpath(absolute, base)).as_posix()
            return self._outside(value, where)
        rel = posixpath.normpath(text)
        if rel == ".." or rel.startswith("../"):
            return self._outside(value, where)
        return rel

    def _outside(self, value: str, where: str) -> str:
        raise InvalidInputError(
            f"The image {_show(value)} at {where} resolves outside the images folder "
            f"'{self.root}'; image paths must be relative to that folder (or absolute paths "
            "inside it)."
        )

    def find(self, value: str, where: str) -> str | None:
        rel = self.relative(value, where)
        if rel in self.files:
            return rel
        has_ext = rel.lower().endswith(IMAGE_EXTENSIONS)
        has_dir = "/" in rel
        candidates: list[str] = []
        if not has_ext:
            candidates = self.by_key["stem_path"].get(rel, [])
            if not candidates and not has_dir:
                candidates = self.by_key["stem"].get(rel, [])
        elif not has_dir:
            candidates = self.by_key["name"].get(rel, [])
        if len(candidates) > 1:
            raise InvalidInputError(
                f"The image {_show(value)} at {where} matches {len(candidates)} files in "
                f"'{self.root}': {_list(candidates, _MAX_LISTED)}. Write its path relative to "
                "the images folder to pick one."
            )
        return candidates[0] if candidates else None


def _match_images(parsed: _Labels, table: _Table, index: _ImageIndex) -> list[str]:
    """The file of every labelled image, in labels order."""
    matched: list[str | None] = []
    owner: dict[str, tuple[int, str]] = {}
    for image_id, row in zip(parsed.ids, parsed.rows, strict=True):
        rel = index.find(image_id, table.where(row))
        if rel is not None and rel in owner:
            first_row, first_id = owner[rel]
            raise InvalidInputError(
                f"{_show(first_id)} ({table.where(first_row)}) and {_show(image_id)} "
                f"({table.where(row)}) both refer to the image file {rel!r}; each image must "
                "have one row."
            )
        if rel is not None:
            owner[rel] = (row, image_id)
        matched.append(rel)
    missing = [
        (row, i) for row, i, m in zip(parsed.rows, parsed.ids, matched, strict=True) if m is None
    ]
    if missing:
        shown = "; ".join(f"{_show(i)} ({table.at(row)})" for row, i in missing[:_MAX_LISTED])
        more = f" and {len(missing) - _MAX_LISTED} more" if len(missing) > _MAX_LISTED else ""
        raise InvalidInputError(
            f"{len(missing)} image(s) of {table.name} are not in the images "
            f"folder '{index.root}': {shown}{more}. Fix the image column or add the files."
        )
    return matched  # type: ignore[return-value]


# --------------------------------------------------------------------------- #
# Public API
# --------------------------------------------------------------------------- #
def _check_arguments(
    labels: object,
    images: object,
    image_column: object,
    multiclass_columns: object,
    split_column: object,
    group_column: object,
    allow_unlabeled_images: object,
) -> tuple[str, ...]:
    """Check the argument types of load_dataset; return multiclass_columns as a tuple."""
    if labels is not None and not isinstance(labels, str | os.PathLike | pd.DataFrame):
        raise InvalidTypeError(
            "The 'labels' parameter of load_dataset must be a str, a Path, a pandas DataFrame "
            f"or None. Got {type(labels).__name__} instead."
        )
    if images is not None and not (isinstance(images, str | os.PathLike) or is_path_list(images)):
        raise InvalidTypeError(
            "The 'images' parameter of load_dataset must be a folder (str or Path), a list of "
            f"image file paths, or None. Got {type(images).__name__} instead."
        )
    if labels is None and images is None:
        raise InvalidInputError(
            "load_dataset needs a labels table, an images folder, or both; got neither."
        )
    for name, value in (
        ("image_column", image_column),
        ("split_column", split_column),
        ("group_column", group_column),
    ):
        if value is not None and not isinstance(value, str):
            raise InvalidTypeError(
                f"The {name!r} parameter of load_dataset must be a str or None. Got "
                f"{type(value).__name__} instead."
            )
    if not isinstance(allow_unlabeled_images, bool | np.bool_):
        raise InvalidTypeError(
            "The 'allow_unlabeled_images' parameter of load_dataset must be a bool. Got "
            f"{type(allow_unlabeled_images).__name__} instead."
        )
    columns = (
        tuple(multiclass_columns)
        if isinstance(multiclass_columns, Iterable) and not isinstance(multiclass_columns, str)
        else None
    )
    if columns is None or not all(isinstance(c, str) for c in columns):
        raise InvalidTypeError(
            "The 'multiclass_columns' parameter of load_dataset must be a sequence of column "
            f"names (str), e.g. ['pose', 'age']. Got {_show(multiclass_columns)} instead."
        )
    return columns


def _folder_classes(files: Sequence[str]) -> list[str] | None:
    """Each file's folder when every file is exactly one folder deep in >= 2 folders, else None."""
    parts = [f.split("/") for f in files]
    if not parts or any(len(p) != 2 for p in parts):
        return None
    classes = [p[0] for p in parts]
    return classes if len(set(classes)) >= 2 else None


def load_dataset(
    labels: str | Path | pd.DataFrame | None = None,
    *,
    images: str | Path | Sequence[str | Path] | None = None,
    image_column: str | None = None,
    multiclass_columns: Sequence[str] = (),
    split_column: str | None = "split",
    group_column: str | None = "group",
    allow_unlabeled_images: bool = False,
    labels_format: str = "auto",
    labels_from_folders: bool = False,
    follow_symlinks: bool = False,
) -> Dataset:
    """Load a labels table and/or an images folder into a :class:`Dataset`.

    Parameters
    ----------
    labels : str, Path, DataFrame or None
        A ``.csv``, ``.tsv`` or ``.parquet`` file, or a DataFrame, in one of two
        forms:

        - wide: one image column and one column per attribute holding 1 / 0 /
          empty (also ``true``/``false``, ``1.0``/``0.0``, booleans; empty or
          NaN = missing). Columns named ``split_column`` and ``group_column``
          are metadata, not attributes.
        - long: exactly the columns (image, ``attribute``) or (image,
          ``attribute``, ``value``). Each row is one label (value 1 when there
          is no ``value`` column). An attribute absent for an image is 0
          without a ``value`` column and missing with one.

        ``None`` with ``images``: every image, no attributes (duplicate
        finding only).
    images : str, Path, list of paths or None
        The images folder, searched recursively (see :func:`list_images`), or
        a list of image files (:func:`image_list_root`: ids relative to their
        deepest common folder). A
        labels value matches a file by its relative path; a value without a
        folder or without an extension may also match a unique file name or
        stem. ``None`` when the user brings embeddings: ``path`` is ``None``.
    image_column : str or None
        The column naming the image; by default the first of
        :data:`IMAGE_COLUMN_CANDIDATES` present.
    multiclass_columns : sequence of str
        Wide-form columns holding one class per image (``pose``: ``left`` /
        ``right`` / ...). Each becomes one-hot attributes ``pose=left``, ... (values
        sorted) recorded in ``Dataset.tasks``; a missing value makes all its
        one-hot cells missing.
    split_column, group_column : str or None
        Metadata columns (``None`` disables). Splits must be ``train``, ``val``
        or ``test`` (any case), or empty (no split).
    allow_unlabeled_images : bool
        Keep images of the folder that have no labels row, with all labels
        missing, appended after the labelled ones in sorted order. Without it,
        such images are an error.
    labels_format : {"auto", "table", "peta"}
        ``peta``: ``labels`` is a PETA ``Label.txt`` (lines ``<person_id>
        attribute ...``) whose images lie next to it, or a PETA folder, read
        as :func:`load_peta` reads it (``images``, if given, must be that
        folder). ``auto``: ``peta`` for a file named ``Label.txt`` or a
        PETA folder (:func:`is_peta_labels`), else ``table``.
    labels_from_folders : bool, default=False
        Without ``labels``: read a torchvision ``ImageFolder`` layout (every image
        exactly one folder deep, at least two folders) as a one-of-K task ``class``
        (attributes ``class=<folder>``). When False, such a layout is logged (with
        how to read it) and the images load without labels.

    Returns
    -------
    Dataset
        ``table`` has ``image_id`` (the image column's value, stripped), ``path``
        (absolute str or ``None``), and ``split`` / ``group`` when present; rows
        in the labels table's order. ``labels`` is float32 of shape
        (n_images, n_attributes) with 1 / 0 / NaN.

    Raises
    ------
    InvalidInputError
        On any problem with the table or the folder; the message names the
        file, the row (CSV line numbers count the header as line 1) and the
        column, and says how to fix it.
    InvalidTypeError
        When an argument has the wrong type.
    """
    multiclass_columns = _check_arguments(
        labels,
        images,
        image_column,
        multiclass_columns,
        split_column,
        group_column,
        allow_unlabeled_images,
    )
    if is_peta_labels(labels, labels_format):
        if multiclass_columns or image_column is not None:
            raise InvalidInputError(
                "image_column and multiclass_columns (--multiclass) describe a labels table; "
                f"'{labels}' is read as PETA labels (--labels-format peta), which have neither."
            )
        return _load_peta_labels(Path(labels), images)
    if not isinstance(follow_symlinks, bool):
        raise InvalidTypeError(
            "The 'follow_symlinks' parameter of load_dataset must be a bool. Got "
            f"{follow_symlinks!r} instead."
        )
    if is_path_list(images):
        root, files = image_list_root(images)
    else:
        root = _images_root(images) if images is not None else None
        files = list_images(root, follow_symlinks=follow_symlinks) if root is not None else []
    table: _Table | None = None
    check_type(labels_from_folders, bool, "labels_from_folders", "load_dataset", "a bool")
    classes = _folder_classes(files) if labels is None else None
    if classes is not None and not labels_from_folders:
        logger.warning(
            "No labels table: the images folder has the ImageFolder layout (%d class folders); "
            "to read each image's folder as its one-of-K 'class' label (and find images "
            "grouped across classes), pass labels_from_folders=True (--labels-from-folders)",
            len(set(classes)),
        )
    elif classes is not None:
        logger.info(
            "No labels table: each image's folder is its one-of-K 'class' label (%d class folders)",
            len(set(classes)),
        )
        frame = pd.DataFrame({"image_id": files, "class": classes})
        return load_dataset(
            frame,
            images=images,
            multiclass_columns=("class",),
            split_column=None,
            group_column=None,
            follow_symlinks=follow_symlinks,
        )
    if labels is None:
        if multiclass_columns or image_column is not None:
            raise InvalidInputError(
                "image_column and multiclass_columns describe a labels table; pass labels=..."
            )
        parsed = _Labels([], [], np.zeros((0, 0), np.float32), (), {}, None, None)
    else:
        table = _read_table(labels)
        column = _find_image_column(table, image_column)
        if _is_long_form(list(table.frame.columns), column):
            if multiclass_columns:
                raise InvalidInputError(
                    f"{table.title} is in long form (image, attribute[, value]); "
                    "multiclass_columns applies to wide tables only. Write one-hot attribute "
                    "names such as 'pose=left' instead."
                )
            parsed = _long_labels(table, column)
        else:
            parsed = _wide_labels(table, column, multiclass_columns, split_column, group_column)
    ids = list(parsed.ids)
    matrix = parsed.labels
    split, group = parsed.split, parsed.group
    paths: list[str | None] = [None] * len(ids)
    if root is not None:
        matched = _match_images(parsed, table, _ImageIndex(root, files)) if table else []
        used = set(matched)
        unlabeled = [f for f in files if f not in used]
        if unlabeled and table is not None and not allow_unlabeled_images:
            raise InvalidInputError(
                f"{len(unlabeled)} image(s) in '{root}' have no row in {table.name}: "
                f"{_list(unlabeled, _MAX_LISTED)}. Add rows for them, or keep "
                "them with all labels missing with allow_unlabeled_images=True "
                "(CLI: --allow-unlabeled)."
            )
        if unlabeled and table is not None:
            logger.warning(
                "%d images in %s have no labels row; they are kept with all labels missing.",
                len(unlabeled),
                root,
            )
        ids += unlabeled
        paths = [str(root / rel) for rel in matched + unlabeled]
        pad = np.full((len(unlabeled), matrix.shape[1]), np.nan, dtype=np.float32)
        matrix = np.vstack([matrix, pad])
        split = None if split is None else split + [None] * len(unlabeled)
        group = None if group is None else group + [None] * len(unlabeled)
    columns: dict[str, list] = {"image_id": ids, "path": paths}
    if split is not None:
        columns["split"] = split
    if group is not None:
        columns["group"] = group
    frame = pd.DataFrame(columns)
    frame["path"] = frame["path"].astype(object)
    dataset = Dataset(
        table=frame, labels=matrix, attributes=parsed.attributes, tasks=parsed.tasks, root=root
    )
    _log_summary(dataset)
    return dataset


def is_peta_labels(labels: object, labels_format: str = "auto") -> bool:
    """Whether ``load_dataset(labels, labels_format=...)`` reads ``labels`` as PETA labels.

    ``peta``: always (for a path); ``table``: never; ``auto``: a file named
    ``Label.txt`` (any case), or a folder holding ``PETA.mat`` or
    ``<subset>/archive/Label.txt``.
    """
    if labels_format not in LABELS_FORMATS:
        raise InvalidInputError(
            f"The 'labels_format' parameter of load_dataset must be one of "
            f"{', '.join(map(repr, LABELS_FORMATS))}. Got {_show(labels_format)} instead."
        )
    if not isinstance(labels, str | os.PathLike):
        if labels_format == "peta" and labels is not None:
            raise InvalidTypeError(
                "labels_format='peta' reads a Label.txt file or a PETA folder; the 'labels' "
                f"parameter is a {type(labels).__name__}. Pass the path, or leave "
                "labels_format at 'auto'."
            )
        return False
    if labels_format == "table":
        return False
    path = Path(labels)
    if labels_format == "peta" or path.name.lower() == "label.txt":
        return True
    return path.is_dir() and (
        (path / "PETA.mat").is_file() or any(path.glob("*/archive/Label.txt"))
    )


def _load_peta_labels(path: Path, images: str | Path | None) -> Dataset:
    """A PETA ``Label.txt`` (images next to it) or a PETA folder, as load_dataset reads it."""
    path = path.expanduser()
    if not path.exists():
        raise InvalidInputError(
            f"The PETA labels file '{path}' does not exist; give a Label.txt (lines "
            "'<person_id> attribute ...', images next to it) or a PETA folder."
        )
    path = path.resolve()
    if path.is_dir():
        folder, places = path, {path}
    else:
        # <root>/<subset>/archive/Label.txt: the ids load_peta(<root>) gives
        folder = path.parent.parent.parent if path.parent.name == "archive" else path.parent
        places = {folder, path.parent}
    if images is not None and Path(images).expanduser().resolve() not in places:
        raise InvalidInputError(
            f"PETA labels locate their own images (in '{path.parent if path.is_file() else path}'"
            f"); the images folder '{images}' is another one. Drop --images, or give the "
            "Label.txt of that folder."
        )
    if path.is_dir():
        return load_peta(folder)
    dataset = _load_peta_archive(folder, [path])
    _log_summary(dataset)
    return dataset


def _log_summary(dataset: Dataset) -> None:
    logger.info(
        "Loaded %d images, %d attributes, %d multi-class tasks, %d missing label cells.",
        dataset.n_images,
        dataset.n_attributes,
        len(dataset.tasks),
        int(np.isnan(dataset.labels).sum()),
    )


# --------------------------------------------------------------------------- #
# PETA
# --------------------------------------------------------------------------- #
def load_peta(root: str | Path, *, partition: int = 0) -> Dataset:
    """Load the PETA pedestrian-attribute dataset, detecting its layout.

    Two layouts are understood:

    - ``PETA.mat`` + ``images/00001.png ...`` (the form used by common
      pedestrian-attribute code). ``peta.data`` is (N, 4 + A): image index,
      person id, two more id columns, then A 0/1 attributes named by
      ``peta.attribute``; ``peta.partion{i}`` holds 1-based image indices
      ``train`` / ``val`` / ``test`` (or ``trainval``, read as ``train``).
      ``group`` is the person id; ``split`` comes from partition ``partition``.
      ``image_id`` is the file name (``00001.png``) under ``root/images``.
    - the original archive: ``<root>/<subset>/archive/Label.txt`` whose lines
      read ``<person_id> attribute attribute ...``, images
      ``<person_id>_<anything>.<ext>`` or ``<person_id>.<ext>`` next to it
      (CUHK's lines start with an image file name, ``0001.png``, instead).
      Numeric ids match across zero padding (``001`` == ``1``).
      Every image of a person gets the person's labels (1 for the names on its
      line, 0 otherwise); attributes are the sorted union of all names;
      ``group`` is ``<subset>/<person_id>``; there is no split. ``image_id`` is
      the path relative to ``root``.

    Parameters
    ----------
    root : str or Path
        The PETA folder.
    partition : int
        Which of the ``.mat`` file's partitions (0-based) gives the split.

    Returns
    -------
    Dataset

    Raises
    ------
    InvalidInputError
        When the folder matches neither layout (the message says which file is
        missing) or a file is malformed.
    """
    if isinstance(partition, bool) or not isinstance(partition, numbers.Integral):
        raise InvalidTypeError(
            "The 'partition' parameter of load_peta must be an int. Got "
            f"{type(partition).__name__} instead."
        )
    base = Path(root).expanduser()
    if not base.is_dir():
        raise InvalidInputError(f"The PETA folder '{base}' does not exist or is not a folder.")
    base = base.resolve()
    if (base / "PETA.mat").is_file():
        dataset = _load_peta_mat(base, int(partition))
    else:
        labels_files = sorted(base.glob("*/archive/Label.txt"))
        if not labels_files:
            raise InvalidInputError(
                f"'{base}' is not a PETA folder: '{base / 'PETA.mat'}' is missing (layout "
                "PETA.mat + images/00001.png ...), and so is '<subset>/archive/Label.txt' for "
                "every subset (original archive layout, e.g. VIPeR/archive/Label.txt)."
            )
        dataset = _load_peta_archive(base, labels_files)
    _log_summary(dataset)
    return dataset


def _mat_field(obj: object, name: str, mat: Path, *aliases: str) -> object:
    for key in (name, *aliases):
        if hasattr(obj, "_fieldnames") and key in obj._fieldnames:  # scipy mat_struct
            return getattr(obj, key)
    raise InvalidInputError(f"'{mat}' has no field {name!r} in its 'peta' struct.")


def _mat_items(value: object) -> list:
    """A MATLAB cell array / struct array as a list (a squeezed single item too)."""
    return list(value.ravel()) if isinstance(value, np.ndarray) else [value]


def _mat_numbers(value: object, where: str) -> np.ndarray:
    """A MATLAB numeric array as float64; an error naming ``where`` for anything else."""
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{where} must be numeric; it holds {_show(value)}.") from exc


def _mat_indices(value: object, where: str) -> np.ndarray:
    """1-based image indices, ndarray of shape (n,), dtype int64."""
    indices = np.atleast_1d(_mat_numbers(value, where)).ravel()
    if indices.size and (
        not np.all(np.isfinite(indices))
        or not np.all(indices == np.round(indices))
        or indices.min() < 1
    ):
        raise InvalidInputError(
            f"{where} must hold 1-based image indices (integers >= 1); it holds values "
            f"from {indices.min()} to {indices.max()}."
        )
    return indices.astype(np.int64)


def _load_peta_mat(base: Path, partition: int) -> Dataset:
    from scipy.io import loadmat

    mat = base / "PETA.mat"
    try:
        content = loadmat(mat, squeeze_me=True, struct_as_record=False)
    except (OSError, ValueError, NotImplementedError, TypeError) as exc:
        raise InvalidInputError(
            f"Could not read '{mat}': {type(exc).__name__}: {exc}. A MATLAB v7.3 file must be "
            "re-saved with save(..., '-v7')."
        ) from exc
    if "peta" not in content:
        raise InvalidInputError(f"'{mat}' holds no variable 'peta'.")
    peta = content["peta"]
    data = np.atleast_2d(_mat_numbers(_mat_field(peta, "data", mat), f"'{mat}': peta.data"))
    if data.ndim != 2 or len(data) == 0:
        raise InvalidInputError(
            f"'{mat}': peta.data must be a non-empty (images, 4 + attributes) matrix; it has "
            f"shape {data.shape}."
        )
    items = _mat_items(_mat_field(peta, "attribute", mat))
    if not all(isinstance(n, str) for n in items):
        raise InvalidInputError(
            f"'{mat}': peta.attribute must be a cell array of attribute names (text); it holds "
            f"{_show(items)}."
        )
    names = [n.strip() for n in items]
    if data.shape[1] != 4 + len(names):
        raise InvalidInputError(
            f"'{mat}': peta.data has {data.shape[1]} columns but peta.attribute names "
            f"{len(names)} attributes; expected 4 id columns + one column per attribute."
        )
    labels = data[:, 4:]
    if not np.all((labels == 0) | (labels == 1)):
        raise InvalidInputError(f"'{mat}': peta.data attribute columns must hold only 0 and 1.")
    image_index = _mat_indices(data[:, 0], f"'{mat}': peta.data column 1")
    if len(np.unique(image_index)) != len(image_index):
        raise InvalidInputError(f"'{mat}': peta.data column 1 (image index) repeats an image.")
    partitions = _mat_items(_mat_field(peta, "partion", mat, "partition"))
    if not 0 <= partition < len(partitions):
        raise InvalidInputError(
            f"The 'partition' parameter of load_peta must be an int in [0, "
            f"{len(partitions) - 1}]. Got {partition} instead."
        )
    split_of: dict[int, str] = {}
    chosen = partitions[partition]
    fields = getattr(chosen, "_fieldnames", None)
    if fields is None:
        raise InvalidInputError(
            f"'{mat}': peta.partion{{{partition + 1}}} must be a struct with the fields train, "
            "val and test."
        )
    # trainval (= train + val) stands in for train only when there is no train field
    split_fields = {"train": "train", "val": "val", "test": "test"}
    if "train" not in fields:
        split_fields["trainval"] = "train"
    known = set(image_index.tolist())
    for field_name, split in split_fields.items():
        if field_name not in fields:
            continue
        where = f"'{mat}': peta.partion{{{partition + 1}}}.{field_name}"
        for index in _mat_indices(_mat_field(chosen, field_name, mat), where).tolist():
            if index not in known:
                raise InvalidInputError(f"{where}: image {index} is not in peta.data.")
            if split_of.setdefault(index, split) != split:
                raise InvalidInputError(f"{where}: image {index} is in two splits.")
    files = [f"{int(i):05d}.png" for i in image_index]
    images = base / "images"
    available = set(list_images(images))
    missing = [f for f in files if f not in available]
    if missing:
        raise InvalidInputError(
            f"{len(missing)} image(s) named in '{mat}' are missing from '{images}': "
            f"{_list(missing, _MAX_LISTED)}."
        )
    table = pd.DataFrame(
        {
            "image_id": files,
            "path": [str(images / f) for f in files],
            "split": [split_of.get(int(i)) for i in image_index],
            "group": [_cell_str(p) for p in data[:, 1]],
        }
    )
    return Dataset(table=table, labels=labels, attributes=tuple(names), root=images)


def _person_stem(token: str) -> str:
    """A Label.txt person token without an image extension.

    Most subsets name a person (``0001``) whose images are ``0001_*.ext``; CUHK
    names one image file per line (``0001.png``).
    """
    return posixpath.splitext(token)[0] if token.lower().endswith(IMAGE_EXTENSIONS) else token


def _person_key(token: str) -> str:
    """Person ids compare as numbers when they are numbers (``0001`` == ``1``)."""
    return str(int(token)) if token.isascii() and token.isdigit() else token


def _load_peta_archive(base: Path, labels_files: list[Path]) -> Dataset:
    ids: list[str] = []
    groups: list[str] = []
    positives: list[list[str]] = []
    for labels_file in labels_files:
        archive = labels_file.parent
        subset = archive.parent.name if archive.name == "archive" else archive.name
        persons: dict[str, tuple[str, list[str], int]] = {}
        text = labels_file.read_text(encoding="utf-8", errors="replace")
        # Lines end at "\n" (or "\r\n") only: str.splitlines() would also end one at
        # \x85 or U+2028, cutting a person's attributes in two and numbering lines
        # differently from every editor.
        for line_number, line in enumerate(text.split("\n"), start=1):
            tokens = line.split()
            if not tokens:
                continue
            person = _person_stem(tokens[0])
            key = _person_key(person)
            if key in persons and sorted(persons[key][1]) != sorted(tokens[1:]):
                raise InvalidInputError(
                    f"'{labels_file}' lists person {_show(tokens[0])} twice with different "
                    f"attributes (lines {persons[key][2]} and {line_number})."
                )
            persons.setdefault(key, (person, tokens[1:], line_number))
        relative = archive.relative_to(base).as_posix()
        names = sorted(
            p.name
            for p in archive.iterdir()
            if p.is_file() and p.name.lower().endswith(IMAGE_EXTENSIONS)
        )
        unlabeled = 0
        seen: set[str] = set()
        for name in names:
            key = _person_key(posixpath.splitext(name)[0].split("_", 1)[0])
            if key not in persons:
                unlabeled += 1
                continue
            seen.add(key)
            person, attrs, _ = persons[key]
            ids.append(name if relative == "." else f"{relative}/{name}")
            groups.append(f"{subset}/{person}")
            positives.append(attrs)
        if unlabeled:
            logger.warning(
                "%d images in %s have no line in %s; they are skipped.",
                unlabeled,
                archive,
                labels_file.name,
            )
        if len(seen) < len(persons):
            logger.warning(
                "%d persons of %s have no image; they are skipped.",
                len(persons) - len(seen),
                labels_file,
            )
    if not ids:
        raise InvalidInputError(
            f"No image in the PETA archive folders under '{base}' matches a person of its "
            "Label.txt (images must be named <person_id>_<anything>.<ext> or <person_id>.<ext>)."
        )
    attributes = tuple(sorted({a for attrs in positives for a in attrs}))
    col = {a: j for j, a in enumerate(attributes)}
    labels = np.zeros((len(ids), len(attributes)), dtype=np.float32)
    for row, attrs in enumerate(positives):
        labels[row, [col[a] for a in attrs]] = 1.0
    table = pd.DataFrame({"image_id": ids, "path": [str(base / i) for i in ids], "group": groups})
    return Dataset(table=table, labels=labels, attributes=attributes, root=base)
