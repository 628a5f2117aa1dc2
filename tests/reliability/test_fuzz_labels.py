"""Fuzz load_dataset: any labels table either loads or raises a ClustercleanError.

Hypothesis generates tables with mixed cell types, NaN, empty strings, duplicate
ids, unicode ids and column names, unhashable cells and huge numbers; every
outcome must be a valid Dataset or a ClustercleanError whose message says what
is wrong -- never a KeyError, TypeError, OverflowError, ... from deep inside.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from clusterclean._contracts import Dataset
from clusterclean.dataset import IMAGE_EXTENSIONS, load_dataset, load_peta
from clusterclean.errors import ClustercleanError

SETTINGS = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

texts = st.text(max_size=8)
weird_cells = st.one_of(
    st.integers(-2, 3),
    st.integers(min_value=10**300, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["nan", "NA", " ", "-1", "yes", "2"]),
    texts,
    st.binary(max_size=4),
    st.lists(st.integers(0, 1), max_size=2),
)
valid_cells = st.sampled_from(
    [0, 1, True, False, 0.0, 1.0, "0", "1", " 1 ", "true", "FALSE", "", None, np.nan, pd.NA]
)
# mostly valid cells, so that most tables load and the later stages are exercised too
cells = st.one_of(valid_cells, valid_cells, valid_cells, weird_cells)
category_cells = st.one_of(st.sampled_from(["left", "right", "front", "", None]), cells)
split_cells = st.one_of(st.sampled_from(["train", "val", "test", " TEST", "bogus", None]), cells)
image_cells = st.one_of(st.integers(0, 30).map(str), st.integers(0, 30), texts, cells)
names = st.one_of(
    st.sampled_from(["image_id", "image", "path", "filename", "split", "group", "attribute"]),
    st.sampled_from(["value", "pose", "x", "é属性", "a=b", " padded ", "pose=left"]),
    texts,
    st.integers(-3, 3),
)


@st.composite
def tables(draw: st.DrawFn) -> pd.DataFrame:
    """Mostly wide tables with an image column first, sometimes long form or anything.

    Half the tables are clean (valid cells, unique ids) so that loading gets far
    enough to exercise the later steps; the rest mix in anything.
    """
    n_rows = draw(st.integers(0, 6))
    clean = draw(st.booleans())
    any_cell = valid_cells if clean else cells
    shape = draw(st.sampled_from(["wide", "wide", "wide", "long", "long+value", "any"]))
    if shape == "any":
        columns = draw(st.lists(names, max_size=6))
        data = {i: [draw(any_cell) for _ in range(n_rows)] for i in range(len(columns))}
        return pd.DataFrame(data, dtype=object).set_axis(columns, axis=1)
    image = draw(st.sampled_from(["image_id", "image", "path", "filename", "ñame"]))
    ids = st.lists(
        texts.filter(str.strip) if clean else image_cells,
        min_size=n_rows,
        max_size=n_rows,
        unique_by=lambda v: str(v).strip() if clean and shape == "wide" else id(v),
    )
    columns = {image: draw(ids)}
    if shape == "wide":
        kinds = {"binary": any_cell, "category": category_cells, "split": split_cells}
        for name in draw(st.lists(names, max_size=5, unique_by=str)):
            kind = "split" if name == "split" else draw(st.sampled_from(sorted(kinds)))
            columns.setdefault(str(name), [draw(kinds[kind]) for _ in range(n_rows)])
    else:
        columns["attribute"] = [draw(st.one_of(names, any_cell)) for _ in range(n_rows)]
        if shape == "long+value":
            columns["value"] = [draw(any_cell) for _ in range(n_rows)]
    return pd.DataFrame(columns, dtype=object)


@st.composite
def options(draw: st.DrawFn, frame: pd.DataFrame) -> dict:
    pool = [str(c) for c in frame.columns] + ["missing_column"]
    return {
        "image_column": draw(st.one_of(st.none(), st.none(), st.sampled_from(pool))),
        "multiclass_columns": draw(st.lists(st.sampled_from(pool), max_size=2)),
        "split_column": draw(st.sampled_from(["split", "split", None, "group", "missing_column"])),
        "group_column": draw(st.sampled_from(["group", "group", None, "x"])),
    }


def check_outcome(call) -> Dataset | None:
    """Run ``call``: a Dataset must be valid, an error a ClustercleanError with a message."""
    try:
        ds = call()
    except ClustercleanError as err:
        message = str(err)
        assert len(message) > 20, message
        short = re.sub(r"'/[^']*'", "'PATH'", " ".join(message.split()[:9]))
        event(f"{type(err).__name__}: {short}")
        return None
    event("loaded")
    assert isinstance(ds, Dataset)
    labels = ds.labels
    assert labels.dtype == np.float32 and labels.shape == (ds.n_images, ds.n_attributes)
    assert np.all(np.isnan(labels) | (labels == 0) | (labels == 1))
    ids = ds.ids.tolist()
    assert all(isinstance(i, str) and i and i == i.strip() for i in ids)
    assert len(set(ids)) == len(ids)
    assert len(set(ds.attributes)) == len(ds.attributes)
    for task, one_hot in ds.tasks.items():
        columns = [ds.attributes.index(a) for a in one_hot]
        block = labels[:, columns]
        known = ~np.isnan(block).any(axis=1)
        assert np.all(block[known].sum(axis=1) == 1), task
    return ds


@SETTINGS
@given(data=st.data())
def test_dataframe_either_loads_or_raises_clusterclean_error(data: st.DataObject) -> None:
    frame = data.draw(tables())
    kwargs = data.draw(options(frame))
    check_outcome(lambda: load_dataset(frame, **kwargs))


@SETTINGS
@given(data=st.data())
def test_csv_either_loads_or_raises_clusterclean_error(tmp_path: Path, data: st.DataObject) -> None:
    frame = data.draw(tables())
    kwargs = data.draw(options(frame))
    path = tmp_path / "labels.csv"
    frame.to_csv(path, index=False)
    check_outcome(lambda: load_dataset(path, **kwargs))


@SETTINGS
@given(data=st.data())
def test_parquet_either_loads_or_raises_clusterclean_error(
    tmp_path: Path, data: st.DataObject
) -> None:
    frame = data.draw(tables())
    frame.columns = [str(c) for c in frame.columns]
    path = tmp_path / "labels.parquet"
    try:  # mixed-type object columns often cannot be written; the reader is what is under test
        frame.infer_objects().to_parquet(path)
    except Exception:  # noqa: BLE001 -- pyarrow raises many types for unwritable frames
        return
    check_outcome(lambda: load_dataset(path, **data.draw(options(frame))))


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz_images")
    for rel in ["a.png", "b.jpg", "sub/a.png", "sub/c.gif"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (2, 2)).save(root / rel)
    return root


image_values = st.one_of(
    st.sampled_from(["a", "a.png", "b", "sub/c", "sub/a.png", "c.gif", "../a.png", "/etc/x.png"]),
    st.sampled_from(
        ["sub\\c.gif", "./b.jpg", "sub/../a.png", "", " ", "a\x00.png", "/x\x00.png", "//", "."]
    ),
    texts,
)


@SETTINGS
@given(values=st.lists(image_values, min_size=1, max_size=5), allow=st.booleans())
def test_image_matching_either_loads_or_raises_clusterclean_error(
    image_folder: Path, values: list[str], allow: bool
) -> None:
    frame = pd.DataFrame({"image_id": values, "x": [1] * len(values)})
    ds = check_outcome(
        lambda: load_dataset(frame, images=image_folder, allow_unlabeled_images=allow)
    )
    if ds is not None:
        paths = ds.table["path"].tolist()
        assert len(set(paths)) == len(paths) == 4
        assert all(Path(p).is_file() and Path(p).is_relative_to(image_folder) for p in paths)


@SETTINGS
@given(ids=st.lists(st.text(min_size=1, max_size=5), min_size=2, max_size=6))
def test_duplicate_and_unicode_ids(ids: list[str]) -> None:
    frame = pd.DataFrame({"image_id": ids, "attr_é": [1] * len(ids)})
    stripped = [i.strip() for i in ids]
    problem, seen = None, set()
    for image_id in stripped:  # the first problem in row order is the one reported
        if not image_id or image_id in seen:
            problem = "is empty at row" if not image_id else "appears twice"
            break
        seen.add(image_id)
    if problem is None and any("\x00" in i for i in stripped):
        problem = "holds a NUL character"  # Dataset rejects it once the table is read
    if problem:
        with pytest.raises(ClustercleanError, match=problem):
            load_dataset(frame)
    else:
        assert load_dataset(frame).ids.tolist() == stripped


def test_ten_thousand_attribute_wide_table(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    matrix = rng.integers(0, 2, (3, 10_000)).astype(np.float32)
    matrix[rng.random(matrix.shape) < 0.1] = np.nan
    frame = pd.DataFrame(matrix, columns=[f"a{j}" for j in range(10_000)])
    frame.insert(0, "image_id", ["x", "y", "z"])
    frame.to_csv(tmp_path / "wide.csv", index=False)
    ds = load_dataset(tmp_path / "wide.csv")
    assert ds.attributes == tuple(f"a{j}" for j in range(10_000))
    np.testing.assert_array_equal(ds.labels, matrix)


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (pd.DataFrame({"image_id": ["only"]}), np.zeros((1, 0), np.float32)),
        (pd.DataFrame({"image_id": ["only"], "a": [""]}), np.array([[np.nan]], np.float32)),
        (pd.DataFrame({"image": ["only"], "attribute": ["a"]}), np.array([[1]], np.float32)),
        (pd.DataFrame({"image": ["o"], "p": ["l"]}), np.array([[1]], np.float32)),
    ],
)
def test_one_row_tables(frame: pd.DataFrame, expected: np.ndarray) -> None:
    multiclass = ["p"] if "p" in frame.columns else []
    ds = load_dataset(frame, multiclass_columns=multiclass)
    np.testing.assert_array_equal(ds.labels, expected)
    assert ds.n_images == 1


# --- PETA layouts ---
PETA_DATA = np.array([[1, 7, 0, 0, 1, 0], [2, 7, 0, 0, 0, 1], [3, 8, 0, 0, 1, 1]], dtype=float)
GOOD_PARTITIONS = np.array([{"train": [1.0, 2.0], "val": [3.0], "test": []}], dtype=object)


def mostly(good: object, *bad: object) -> st.SearchStrategy:
    """``good`` three times out of four, else one of ``bad``."""
    return st.one_of(st.just(good), st.just(good), st.just(good), st.sampled_from(bad))


peta_fields = st.fixed_dictionaries(
    {
        "data": mostly(
            PETA_DATA,
            *(PETA_DATA[:, :5], PETA_DATA[0], np.zeros((0, 6)), "text", PETA_DATA * 2),
            *(np.where(PETA_DATA == 7, np.nan, PETA_DATA), PETA_DATA - 1, np.ones((2, 2, 2))),
        ),
        "attribute": mostly(
            np.array(["a", "b"], dtype=object), ["a", "b"], np.array([1.0, 2.0]), "ab", []
        ),
        "partion": mostly(
            GOOD_PARTITIONS,
            {"trainval": [1.0], "test": [2.0, 3.0]},
            {"train": [0.5], "test": [9.0]},
            {"train": ["x"], "test": [1.0]},
            {"train": [1.0, 2.0], "test": [2.0]},
            np.array([1.0, 2.0]),
            {"val": [[1.0, 2.0], [3.0, np.inf]]},
        ),
    }
)


@settings(max_examples=60, deadline=None)
@given(
    fields=peta_fields,
    dropped=st.sampled_from([None, None, None, "data", "attribute", "partion"]),
    partition=mostly(0, -1, 1, 2),
    n_images=mostly(3, 0, 2),
)
def test_peta_mat_either_loads_or_raises_clusterclean_error(
    tmp_path_factory: pytest.TempPathFactory,
    fields: dict,
    dropped: str | None,
    partition: int,
    n_images: int,
) -> None:
    import scipy.io

    root = tmp_path_factory.mktemp("peta")
    fields = {k: v for k, v in fields.items() if k != dropped}
    scipy.io.savemat(root / "PETA.mat", {"peta": fields})
    for i in range(1, n_images + 1):
        (root / "images").mkdir(exist_ok=True)
        Image.new("RGB", (2, 2)).save(root / "images" / f"{i:05d}.png")
    ds = check_outcome(lambda: load_peta(root, partition=partition))
    if ds is not None:
        assert ds.n_images == 3 and ds.attributes == ("a", "b")
        np.testing.assert_array_equal(ds.labels, PETA_DATA[:, 4:])


lines_pool = st.sampled_from(["1 a b", "01 a b", "2.png a", "x_1 a", "", "   ", "3", "\t2 a\r"])
label_lines = st.one_of(lines_pool, lines_pool, lines_pool, st.text(max_size=12), st.just("1 c"))
archive_files = st.sampled_from(
    ["1.png", "001_a.png", "2.png", "2_b.jpg", "x_1_c.png", "3.bmp", "._1.png", "1", "9_9.gif"]
)


@settings(max_examples=60, deadline=None)
@given(
    lines=st.lists(label_lines, max_size=5),
    files=st.lists(archive_files, min_size=1, max_size=5, unique=True),
)
def test_peta_archive_either_loads_or_raises_clusterclean_error(
    tmp_path_factory: pytest.TempPathFactory, lines: list[str], files: list[str]
) -> None:
    root = tmp_path_factory.mktemp("archive")
    archive = root / "GRID" / "archive"
    archive.mkdir(parents=True)
    (archive / "Label.txt").write_text("\n".join(lines), encoding="utf-8", errors="replace")
    for name in files:
        (archive / name).write_bytes(b"")
    ds = check_outcome(lambda: load_peta(root))
    if ds is not None:  # every image carries exactly its person's attributes
        persons: dict[str, set[str]] = {}
        for tokens in (line.split() for line in lines):
            if tokens:
                stem = tokens[0]
                if stem.lower().endswith(IMAGE_EXTENSIONS):
                    stem = stem.rsplit(".", 1)[0]
                persons.setdefault(stem, set(tokens[1:]))
        for group, row in zip(ds.table["group"], ds.labels, strict=True):
            positives = {a for a, v in zip(ds.attributes, row, strict=True) if v == 1}
            assert positives == persons[group.split("/", 1)[1]]
