"""Fuzz every way embeddings come in: as_embeddings, run(), load_embeddings (.npy, Parquet,
raw bytes) and the CLI. Each input either works -- float32 unit rows in the same directions
-- or raises a ClustercleanError whose message names the problem; the CLI turns it into one
line on stderr and exit code 1, never a traceback.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _tally import record
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from clusterclean import Dataset, Embeddings, as_embeddings, run
from clusterclean.cli import main
from clusterclean.embed import load_embeddings
from clusterclean.errors import ClustercleanError

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SPECIALS = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-40, 1e-13, 1e20, 3.4e38, 1e300, -1.0, 1.0]
NUMERIC = ["float16", "float32", "float64", "int8", "int64", "uint8", "bool"]


def _cast(values: np.ndarray, dtype: str) -> np.ndarray:
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return values.astype(dtype)


@st.composite
def numeric_arrays(draw, *, max_dims: int = 3) -> np.ndarray:
    """Any shape of 0-3 dims, any real dtype; NaN, inf, zeros, tiny and huge values, zero rows."""
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=max_dims, min_side=0, max_side=5))
    elements = st.one_of(  # mostly ordinary values, so that many inputs are valid
        st.floats(-10, 10),
        st.floats(-10, 10),
        st.floats(-10, 10),
        st.sampled_from(SPECIALS),
        st.floats(allow_nan=True, allow_infinity=True),
    )
    values = draw(hnp.arrays(np.float64, shape, elements=elements))
    if values.ndim == 2 and values.shape[0] and draw(st.booleans()):
        values[draw(st.integers(0, values.shape[0] - 1))] = 0.0  # an all-zero row
    return _cast(values, draw(st.sampled_from(NUMERIC)))


# ordinary (n, d) float32 arrays, so that the slower targets also see inputs that work
well_formed = st.tuples(st.integers(1, 5), st.integers(1, 4)).flatmap(
    lambda shape: hnp.arrays(np.float32, shape, elements=st.floats(-10, 10, width=32))
)


odd_values = st.one_of(
    st.lists(st.lists(st.floats(allow_nan=True), max_size=3), max_size=3),  # maybe ragged
    st.lists(st.lists(st.one_of(st.none(), st.text(max_size=2), st.integers()), max_size=3)),
    st.builds(lambda a: _cast(a, "complex64"), numeric_arrays()),
    st.builds(lambda a: a.astype(str), numeric_arrays()),
    st.just(np.array([["2020-01-01"]], dtype="datetime64[D]")),
    st.just(np.array([[2**200, 1]], dtype=object)),
    st.floats(),
    st.none(),
)
id_lists = st.lists(st.sampled_from(["a", "b", "c", "d", "e", "é", "1", ""]), max_size=6)


def _expected_problem(ids: list[str], vectors) -> str | None:
    """The message fragment as_embeddings must give for this input, None when it must work.

    The rules, in order: a numeric 2-D array with dim >= 1; one id per row; unique ids;
    finite float32 values; no row of (near) zero length.
    """
    try:
        raw = np.asarray(vectors)
    except ValueError:
        return "real numbers"
    if raw.dtype.kind not in "biufO":
        return "real numbers"
    try:
        v32 = _cast(raw, "float32")
    except (TypeError, ValueError):
        return "real numbers"
    if v32.ndim != 2 or v32.shape[1] == 0:
        return "2-D array (n_images, dim)"
    if len(ids) != len(v32):
        return f"There are {len(ids)} ids but {len(v32)} embedding rows"
    if len(set(ids)) != len(ids):
        return "Embedding ids must be unique"
    finite = np.isfinite(v32).all(axis=1)
    if not finite.all():
        return f"hold NaN or inf (first: image {ids[int(np.argmin(finite))]!r})"
    with np.errstate(over="ignore"):
        zero = np.linalg.norm(v32, axis=1) <= 1e-12
    if zero.any():
        return f"are all zeros (first: image {ids[int(np.argmax(zero))]!r})"
    return None


def _check_valid(embeddings: Embeddings, ids: list[str], vectors) -> None:
    """Float32, C-contiguous, unit rows pointing where the input rows point."""
    out = embeddings.vectors
    assert out.dtype == np.float32 and out.flags.c_contiguous
    assert list(embeddings.ids) == [str(i) for i in ids]
    v = _cast(np.asarray(vectors), "float32").astype(np.float64)
    v /= np.abs(v).max(axis=1, keepdims=True)  # no overflow in the reference either
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    np.testing.assert_allclose(np.linalg.norm(out.astype(np.float64), axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(out, v, atol=1e-5)


def _outcome(target: str, ids: list[str], vectors, call) -> Embeddings | None:
    """Call, and check the result or the error against ``_expected_problem``."""
    expected = _expected_problem(ids, vectors)
    try:
        result = call()
    except ClustercleanError as error:
        record(target, "rejected")
        assert expected is not None, f"valid input rejected: {error}"
        assert expected in str(error), (expected, str(error))
        return None
    record(target, "ok")
    assert expected is None, f"should have been rejected ({expected})"
    return result


@SETTINGS
@given(data=st.data())
def test_as_embeddings_works_or_names_the_problem(data):
    vectors = data.draw(st.one_of(well_formed, numeric_arrays()))
    n = len(vectors) if vectors.ndim else 0
    ids = data.draw(st.one_of(st.just([f"img{i}" for i in range(n)]), id_lists))
    result = _outcome("as_embeddings", ids, vectors, lambda: as_embeddings(ids, vectors))
    if result is not None:
        _check_valid(result, ids, vectors)


@SETTINGS
@given(vectors=odd_values)
def test_as_embeddings_odd_values_are_rejected_or_read(vectors):
    try:
        n = len(vectors)
    except TypeError:
        n = 0
    ids = [f"img{i}" for i in range(n)]
    result = _outcome(
        "as_embeddings (odd types)", ids, vectors, lambda: as_embeddings(ids, vectors)
    )
    if result is not None:
        _check_valid(result, ids, vectors)


@settings(SETTINGS, max_examples=100)
@given(
    vectors=st.one_of(well_formed, numeric_arrays()),
    ids_text=st.one_of(st.none(), st.text(max_size=20)),
)
def test_npy_files_work_or_name_the_problem(vectors, ids_text):
    with tempfile.TemporaryDirectory() as tmp:
        path, ids_path = Path(tmp) / "v.npy", Path(tmp) / "ids.txt"
        np.save(path, vectors)
        n = len(vectors) if vectors.ndim else 0
        ids = [f"img{i}" for i in range(n)] if ids_text is None else None
        ids_path.write_text("\n".join(ids) if ids is not None else ids_text, encoding="utf-8")
        lines = ids_path.read_text(encoding="utf-8").splitlines()
        while lines and not lines[-1].strip():
            lines.pop()
        lines = [line.strip() for line in lines]  # ids are stripped, like the labels' ids
        if vectors.ndim == 2 and len(lines) != len(vectors):
            with pytest.raises(ClustercleanError, match=r"ids but .* vectors; they must match"):
                load_embeddings(path, ids_path=ids_path)
            record("load_embeddings .npy", "rejected")
            return
        result = _outcome(
            "load_embeddings .npy", lines, vectors, lambda: load_embeddings(path, ids_path=ids_path)
        )
        if result is not None:
            _check_valid(result, lines, vectors)


vector_cells = st.one_of(
    st.none(), st.lists(st.one_of(st.floats(allow_nan=True), st.sampled_from(SPECIALS)), max_size=4)
)


@settings(SETTINGS, max_examples=100)
@given(
    ids=st.one_of(
        st.lists(st.sampled_from(["a", "b", "c", "d", "é"]), min_size=1, max_size=5, unique=True),
        st.lists(st.one_of(st.sampled_from(["a", "b", "c", "d"]), st.none()), max_size=5),
    ),
    cells=st.one_of(
        st.lists(st.lists(st.floats(-9, 9), min_size=3, max_size=3), min_size=5, max_size=5),
        st.lists(vector_cells, min_size=5, max_size=5),
    ),
    value_type=st.sampled_from([pa.float32(), pa.float64(), pa.float16(), pa.int32()]),
)
def test_parquet_files_work_or_raise_clusterclean_error(ids, cells, value_type):
    cells = cells[: len(ids)]
    if value_type == pa.float16():
        cells = [None if c is None else list(_cast(np.array(c), "float16")) for c in cells]
    if pa.types.is_integer(value_type):
        cells = [
            None if c is None else [int(np.clip(x, -9, 9)) for x in c if np.isfinite(x)]
            for c in cells
        ]
    table = pa.table(
        {
            "image_id": pa.array(ids, type=pa.string()),
            "embedding": pa.array(cells, type=pa.list_(value_type)),
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "v.parquet"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pq.write_table(table, path)
        try:
            result = load_embeddings(path)
        except ClustercleanError as error:
            record("load_embeddings .parquet", "rejected")
            assert str(error)
            return
        record("load_embeddings .parquet", "ok")
        assert None not in ids and None not in cells
        _check_valid(result, ids, np.array(cells, dtype=np.float64))


def _valid_file_bytes(suffix: str) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"v{suffix}"
        vectors = np.eye(3, 4, dtype=np.float32)
        if suffix == ".npy":
            np.save(path, vectors)
        else:
            frame = pd.DataFrame({"image_id": ["a", "b", "c"], "embedding": list(vectors)})
            frame.to_parquet(path)
        return path.read_bytes()


@settings(SETTINGS, max_examples=80)
@given(
    suffix=st.sampled_from([".npy", ".parquet"]),
    damage=st.one_of(
        st.binary(max_size=64).map(lambda b: ("replace", b)),
        st.floats(0, 1, exclude_max=True).map(lambda f: ("truncate", f)),
        st.tuples(st.floats(0, 1, exclude_max=True), st.binary(min_size=1, max_size=8)).map(
            lambda t: ("overwrite", t)
        ),
    ),
)
def test_damaged_files_raise_clusterclean_error(suffix, damage):
    """Random bytes, a truncated file, or a few bytes overwritten: never an Arrow/EOF error."""
    good = _valid_file_bytes(suffix)
    kind, arg = damage
    if kind == "replace":
        data = arg
    elif kind == "truncate":
        data = good[: int(arg * len(good))]
    else:
        at, patch = arg
        start = int(at * len(good))
        data = good[:start] + patch + good[start + len(patch) :]
    with tempfile.TemporaryDirectory() as tmp:
        path, ids = Path(tmp) / f"v{suffix}", Path(tmp) / "ids.txt"
        path.write_bytes(data)
        ids.write_text("a\nb\nc\n")
        try:
            load_embeddings(path, ids_path=ids if suffix == ".npy" else None)
        except ClustercleanError as error:
            record(f"damaged {suffix} file", "rejected")
            assert str(path) in str(error) or "mbedding" in str(error), str(error)
            return
        record(f"damaged {suffix} file", "ok")  # a patch in the payload may leave a valid file


def _dataset(ids: list[str]) -> Dataset:
    table = pd.DataFrame({"image_id": ids})
    labels = np.tile(np.array([1.0, 0.0], dtype=np.float32), (len(ids), 1))
    return Dataset(table=table, labels=labels, attributes=("hat", "bag"))


@settings(SETTINGS, max_examples=40)
@given(
    vectors=st.one_of(well_formed, numeric_arrays(max_dims=2)).filter(
        lambda v: v.ndim == 2 and len(v) >= 1
    )
)
def test_run_works_or_names_the_problem(vectors):
    ids = [f"img{i}" for i in range(len(vectors))]
    report = _outcome(
        "run(embeddings=array)",
        ids,
        vectors,
        lambda: run(
            labels=_dataset(ids),
            embeddings=as_embeddings(ids, vectors),
            progress=False,
        ),
    )
    if report is not None:
        assert len(report.images) == len(ids)
        assert report.images["component_id"].notna().all()


def _error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert lines[0].startswith("clusterclean: error: ")
    return lines[0]


@settings(SETTINGS, max_examples=60)
@given(
    vectors=st.one_of(numeric_arrays(max_dims=3), well_formed),
    damage=st.one_of(st.none(), st.binary(max_size=40)),
    suffix=st.sampled_from([".npy", ".parquet", ".txt"]),
)
def test_cli_never_shows_a_traceback(capsys, vectors, damage, suffix):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n = len(vectors) if vectors.ndim else 1
        ids = [f"img{i}" for i in range(n)]
        pd.DataFrame({"image_id": ids, "hat": 1, "bag": 0}).to_csv(tmp / "l.csv", index=False)
        (tmp / "ids.txt").write_text("\n".join(ids) + "\n")
        path = tmp / f"v{suffix}"
        if damage is not None or suffix == ".txt":
            path.write_bytes(damage or b"")
        elif suffix == ".npy":
            np.save(path, vectors)
        else:
            rows = [
                np.ravel(r).astype(np.float64) for r in (vectors if vectors.ndim else [vectors])
            ]
            pd.DataFrame({"image_id": ids[: len(rows)], "embedding": rows}).to_parquet(path)
        argv = ["run", "--labels", str(tmp / "l.csv"), "--embeddings", str(path)]
        argv += ["--out", str(tmp / "out"), "--no-progress", "-q"]
        if suffix == ".npy":
            argv += ["--embedding-ids", str(tmp / "ids.txt")]
        code = main(argv)
        if code == 0:
            record("CLI run --embeddings", "ok")
            assert (tmp / "out" / "run.json").is_file()
            capsys.readouterr()
        else:
            record("CLI run --embeddings", "rejected")
            assert code == 1
            _error_line(capsys)
            assert not (tmp / "out").exists()


def test_cli_subprocess_prints_one_line_for_a_damaged_file(tmp_path):
    """The real entry point, as a user runs it: exit 1, one line, no traceback."""
    pd.DataFrame({"image_id": ["a", "b"], "hat": [1, 0]}).to_csv(tmp_path / "l.csv", index=False)
    (tmp_path / "v.parquet").write_bytes(b"PAR1 not really")
    done = subprocess.run(
        [sys.executable, "-m", "clusterclean.cli", "run", "--labels", str(tmp_path / "l.csv")]
        + ["--embeddings", str(tmp_path / "v.parquet"), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("clusterclean: error: ")
    assert "v.parquet" in done.stderr
