"""Tests of clusterclean.dataset.load_peta on tiny replicas of both PETA layouts."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from clusterclean.dataset import load_peta
from clusterclean.errors import InvalidInputError, InvalidTypeError

ATTRIBUTES = ["personalMale", "hatNo", "upperBodyBlack"]
# image index, person id, two more id columns, then the 3 attributes
DATA = np.array(
    [
        [1, 10, 0, 0, 1, 1, 0],
        [2, 10, 0, 0, 1, 1, 0],
        [3, 11, 0, 0, 0, 0, 1],
        [4, 12, 0, 0, 1, 0, 0],
        [5, 12, 0, 0, 1, 0, 1],
        [6, 12, 0, 0, 0, 1, 1],
    ],
    dtype=np.float64,
)


# --- PETA fixtures (H1) ---
def write_png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4)).save(path)


def partitions(*parts: dict) -> np.ndarray:
    """A MATLAB cell array of structs, as scipy.io.savemat writes an object array of dicts."""
    cell = np.empty(len(parts), dtype=object)
    for i, part in enumerate(parts):
        cell[i] = {k: np.asarray(v, dtype=np.float64) for k, v in part.items()}
    return cell


def write_peta_mat(
    root: Path, *, attribute: object = None, n_images: int = 6, **overrides: object
) -> Path:
    peta = {
        "data": DATA,
        "attribute": np.array(ATTRIBUTES, dtype=object) if attribute is None else attribute,
        "partion_attribute": np.arange(1, 3, dtype=np.float64),
        "partion": partitions(
            {"train": [1, 2, 3], "val": [4], "test": [5, 6]},
            {"trainval": [4, 5, 6], "test": [1, 2, 3]},
            {"train": [1], "val": [2], "trainval": [1, 2], "test": [3, 4, 5, 6]},
        ),
    }
    peta.update(overrides)
    peta = {k: v for k, v in peta.items() if v is not None}
    root.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(root / "PETA.mat", {"peta": peta})
    for i in range(1, n_images + 1):
        write_png(root / "images" / f"{i:05d}.png")
    return root


def test_mat_layout_labels_groups_splits(tmp_path: Path) -> None:
    root = write_peta_mat(tmp_path / "PETA")
    ds = load_peta(root)
    assert ds.attributes == tuple(ATTRIBUTES)
    np.testing.assert_array_equal(ds.labels, DATA[:, 4:].astype(np.float32))
    assert ds.labels.dtype == np.float32
    assert ds.ids.tolist() == [f"{i:05d}.png" for i in range(1, 7)]
    assert ds.table["group"].tolist() == ["10", "10", "11", "12", "12", "12"]
    assert ds.table["split"].tolist() == ["train", "train", "train", "val", "test", "test"]
    assert ds.root == (root / "images").resolve()
    assert ds.table["path"].tolist() == [str(ds.root / f"{i:05d}.png") for i in range(1, 7)]
    assert dict(ds.tasks) == {}


def test_mat_layout_second_partition_reads_trainval(tmp_path: Path) -> None:
    ds = load_peta(write_peta_mat(tmp_path / "PETA"), partition=1)
    assert ds.table["split"].tolist() == ["test", "test", "test", "train", "train", "train"]


def test_mat_layout_trainval_ignored_next_to_train(tmp_path: Path) -> None:
    ds = load_peta(write_peta_mat(tmp_path / "PETA"), partition=2)
    assert ds.table["split"].tolist() == ["train", "val", "test", "test", "test", "test"]


def test_mat_layout_image_in_two_splits(tmp_path: Path) -> None:
    root = write_peta_mat(tmp_path / "PETA", partion=partitions({"train": [1, 2], "test": [2]}))
    with pytest.raises(
        InvalidInputError, match=r"peta.partion\{1\}.test: image 2 is in two splits"
    ):
        load_peta(root)


def test_mat_layout_char_matrix_names_and_single_partition(tmp_path: Path) -> None:
    # A list of str is saved as a space-padded char matrix; one partition squeezes to a struct.
    root = write_peta_mat(
        tmp_path / "PETA",
        attribute=["personalMale", "hatNo", "upperBodyBlack"],
        partion=partitions({"train": [1, 2, 3, 4, 5], "val": [6], "test": []})[0],
    )
    ds = load_peta(root)
    assert ds.attributes == tuple(ATTRIBUTES)
    assert ds.table["split"].tolist() == ["train"] * 5 + ["val"]


def test_mat_layout_errors(tmp_path: Path) -> None:
    root = write_peta_mat(tmp_path / "PETA")
    with pytest.raises(InvalidInputError, match=r"'partition' parameter of load_peta .* \[0, 2\]"):
        load_peta(root, partition=3)
    with pytest.raises(InvalidTypeError, match=r"'partition' .* must be an int. Got str"):
        load_peta(root, partition="0")  # type: ignore[arg-type]
    (root / "images" / "00006.png").unlink()
    with pytest.raises(
        InvalidInputError, match=r"1 image\(s\) named in '.*PETA.mat' .*'00006.png'"
    ):
        load_peta(root)
    for f in (root / "images").iterdir():
        f.unlink()
    (root / "images").rmdir()
    with pytest.raises(InvalidInputError, match=r"images folder '.*images' does not exist"):
        load_peta(root)


def test_mat_layout_missing_field_and_bad_shape(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"PETA.mat' has no field 'partion'"):
        load_peta(write_peta_mat(tmp_path / "a", partion=None))
    root = write_peta_mat(tmp_path / "b", attribute=np.array(["x", "y"], dtype=object))
    with pytest.raises(InvalidInputError, match=r"7 columns but peta.attribute names 2"):
        load_peta(root)
    bad = DATA.copy()
    bad[0, 5] = 2
    with pytest.raises(InvalidInputError, match=r"must hold only 0 and 1"):
        load_peta(write_peta_mat(tmp_path / "c", data=bad))


def test_unreadable_mat_file(tmp_path: Path) -> None:
    root = write_peta_mat(tmp_path / "PETA")
    (root / "PETA.mat").write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(InvalidInputError, match=r"Could not read '.*PETA.mat'"):
        load_peta(root)


def test_not_a_peta_folder_names_missing_files(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    with pytest.raises(InvalidInputError) as err:
        load_peta(tmp_path / "x")
    assert "PETA.mat' is missing" in str(err.value)
    assert "archive/Label.txt" in str(err.value)
    with pytest.raises(InvalidInputError, match="does not exist or is not a folder"):
        load_peta(tmp_path / "nope")


def write_archive(root: Path) -> Path:
    viper = root / "VIPeR" / "archive"
    cuhk = root / "CUHK" / "archive"
    viper.mkdir(parents=True)
    cuhk.mkdir(parents=True)
    (viper / "Label.txt").write_text("1 personalMale hatNo\n\n2 upperBodyBlack\r\n")
    # CUHK names one image file per line instead of a person
    (cuhk / "Label.txt").write_text("0007.png hatNo personalMale\n0008.png upperBodyBlack\n")
    for name in ["001_45.png", "1_90.png", "2.png", "99_x.png"]:
        write_png(viper / name)
    for name in ["0007.png", "0008.png"]:
        write_png(cuhk / name)
    return root


def test_archive_layout(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = write_archive(tmp_path / "PETA dataset")
    with caplog.at_level(logging.WARNING, logger="clusterclean.dataset"):
        ds = load_peta(root)
    assert ds.attributes == ("hatNo", "personalMale", "upperBodyBlack")
    assert ds.ids.tolist() == [
        "CUHK/archive/0007.png",
        "CUHK/archive/0008.png",
        "VIPeR/archive/001_45.png",
        "VIPeR/archive/1_90.png",
        "VIPeR/archive/2.png",
    ]
    np.testing.assert_array_equal(
        ds.labels,
        np.array([[1, 1, 0], [0, 0, 1], [1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=np.float32),
    )
    assert ds.table["group"].tolist() == ["CUHK/0007", "CUHK/0008", "VIPeR/1", "VIPeR/1", "VIPeR/2"]
    assert "split" not in ds.table.columns
    assert ds.root == root.resolve()
    assert all(Path(p).is_file() for p in ds.table["path"])
    assert "1 images in" in caplog.text and "no line in Label.txt" in caplog.text


def test_archive_conflicting_person_lines(tmp_path: Path) -> None:
    root = write_archive(tmp_path / "P")
    (root / "VIPeR" / "archive" / "Label.txt").write_text("1 hatNo\n01 personalMale\n")
    with pytest.raises(
        InvalidInputError, match=r"Label.txt' lists person '01' twice .*lines 1 and 2"
    ):
        load_peta(root)


def test_archive_lines_end_at_newline_only_not_at_unicode_line_separators(tmp_path):
    # str.splitlines() ends lines at \x85 and U+2028 too; Label.txt lines end at \n.
    archive = tmp_path / "GRID" / "archive"
    archive.mkdir(parents=True)
    (archive / "Label.txt").write_text("1 a\x85b\r\n2 c\u2028d\n", encoding="utf-8")
    for name in ("1.png", "2.png"):
        (archive / name).write_bytes(b"")
    ds = load_peta(tmp_path)
    assert ds.attributes == ("a", "b", "c", "d")
    assert ds.labels.tolist() == [[1, 1, 0, 0], [0, 0, 1, 1]]
