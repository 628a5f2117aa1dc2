"""Near-duplicate pairs, exact / near duplicate groups and split leakage, on real files."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from clusterclean._contracts import Dataset, as_embeddings
from clusterclean.duplicates import (
    DUPLICATE_COLUMNS,
    exact_decodes,
    find_duplicates,
    find_pairs,
    hash_images,
    pixel_hash_candidates,
)
from clusterclean.errors import InvalidInputError, InvalidTypeError
from clusterclean.pipeline import run
from clusterclean.report import TABLES, read_report

NAN = np.nan


def _pixels(seed: int, shape=(8, 6, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _dataset(rows: list[dict], labels, attributes=("x", "y")) -> Dataset:
    return Dataset(
        table=pd.DataFrame(rows), labels=np.asarray(labels, dtype=np.float32), attributes=attributes
    )


@pytest.fixture
def files(tmp_path):
    """a.png; b.png = a copy of its bytes; c.bmp = a's pixels re-encoded; d.png other pixels."""
    pixels = _pixels(1)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    shutil.copy(tmp_path / "a.png", tmp_path / "b.png")
    Image.fromarray(pixels).save(tmp_path / "c.bmp")
    Image.fromarray(_pixels(2)).save(tmp_path / "d.png")
    return {name: str(tmp_path / name) for name in ("a.png", "b.png", "c.bmp", "d.png")}


def _no_pairs() -> pd.DataFrame:
    return pd.DataFrame({"image_id_a": [], "image_id_b": [], "cosine": []})


def test_find_pairs_describes_each_edge():
    ds = _dataset(
        [
            {"image_id": "a", "split": "train"},
            {"image_id": "b", "split": "val"},
            {"image_id": "c", "split": None},
        ],
        [[1, 0], [0, 0], [1, NAN]],
    )
    edges = pd.DataFrame(
        {"row_a": [0, 0, 1], "row_b": [1, 2, 2], "cosine": np.array([0.95, 0.99, 0.9])}
    )
    pairs = find_pairs(edges, ds)
    assert pairs["image_id_a"].tolist() == ["a", "a", "b"]
    assert pairs["image_id_b"].tolist() == ["b", "c", "c"]
    # a/b differ on x; a/c agree on x, y unknown in c; b/c differ on x
    assert pairs["n_differing_labels"].tolist() == [1, 0, 1]
    assert pairs["differing_attributes"].tolist() == [["x"], [], ["x"]]
    # c has no split: only a/b is a known cross-split pair
    assert pairs["is_cross_split"].tolist() == [True, False, False]
    assert pairs["cosine"].dtype == np.float32


def test_hash_images_bytes_and_pixels(files, tmp_path, caplog):
    (tmp_path / "broken.png").write_bytes(b"not an image")
    paths = [files["a.png"], files["b.png"], files["c.bmp"], None, str(tmp_path / "gone.png")]
    paths.append(str(tmp_path / "broken.png"))
    with caplog.at_level(logging.WARNING, logger="clusterclean.duplicates"):
        hashes = hash_images(paths, n_workers=2)
    file_hash, pixel_hash = hashes["file_hash"].tolist(), hashes["pixel_hash"].tolist()
    assert file_hash[0] == file_hash[1] != file_hash[2]
    assert pixel_hash[0] == pixel_hash[1] == pixel_hash[2]
    assert len(file_hash[0]) == 32  # BLAKE2b-128 in hex
    assert file_hash[3] is None and pixel_hash[3] is None
    assert file_hash[4] is None and pixel_hash[4] is None
    assert file_hash[5] is not None and pixel_hash[5] is None
    assert "gone.png" in caplog.text and "broken.png" in caplog.text


@pytest.mark.parametrize(
    ("size", "mode"), [((5, 3), "RGB"), ((64, 48), "L"), ((4000, 3000), "RGB")]
)
def test_pixel_hash_is_blake2b_of_the_size_and_rgba_bytes(tmp_path, size, mode):
    import hashlib

    rng = np.random.default_rng(1)
    shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
    image = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)
    image.save(tmp_path / "x.png")
    expected = hashlib.blake2b(digest_size=16)
    expected.update(f"{size[0]}x{size[1]}:".encode())
    expected.update(image.convert("RGBA").tobytes())  # the documented content hash
    hashes = hash_images([str(tmp_path / "x.png")])
    assert hashes["pixel_hash"][0] == expected.hexdigest()


def test_hash_images_decodes_only_the_images_asked_for(files):
    paths = [files["a.png"], files["b.png"], files["c.bmp"], files["d.png"]]
    hashes = hash_images(paths, pixels=[True, False, True, False])
    everything = hash_images(paths)
    assert hashes["file_hash"].tolist() == everything["file_hash"].tolist()
    pixel = hashes["pixel_hash"].tolist()
    assert pixel[0] == pixel[2] == everything["pixel_hash"][0]
    assert pixel[1] is None and pixel[3] is None
    with pytest.raises(InvalidInputError, match="'pixels' parameter of hash_images has 2 entries"):
        hash_images(paths, pixels=[True, False])


def test_pixel_hash_candidates_are_both_images_of_each_pair_close_enough_for_twins():
    # rows 0-1 decode exactly, rows 2-4 do not; row 5 exactly again
    indices = np.array([[1, 5], [0, -1], [3, 0], [2, -1], [0, -1], [0, 1]])
    cosine = np.array(
        [[0.996, 0.994], [0.996, 1.0], [0.9, 0.95], [0.9, np.nan], [0.8999, 2.0], [0.994, 0.5]],
        dtype=np.float32,
    )
    exact = np.array([True, True, False, False, False, True])
    # 0-1: both exact, 0.996 >= 0.995; 0-5 and 5-0 at 0.994: both exact, below 0.995;
    # 2-3 at 0.9: row 2 inexact, so the 0.9 cut; 2-0 at 0.95: row 2 inexact, so row 0 too;
    # 4-0 at 0.8999: below 0.9; -1 entries are no pair, whatever their cosine
    assert pixel_hash_candidates(indices, cosine, exact).tolist() == [
        True,
        True,
        True,
        True,
        False,
        False,
    ]
    # without the header check, every pair is held to 0.9: row 5's pair 5-0 at 0.994 too
    assert pixel_hash_candidates(indices, cosine).tolist() == [True, True, True, True, False, True]


def test_pixel_hash_candidates_names_mismatched_inputs():
    indices = np.array([[1], [0]])
    with pytest.raises(InvalidInputError, match=r"got \(2, 1\), \(2, 2\) and \(2,\)"):
        pixel_hash_candidates(indices, np.ones((2, 2)))
    with pytest.raises(InvalidInputError, match=r"and \(3,\)"):
        pixel_hash_candidates(indices, np.ones((2, 1)), np.ones(3, dtype=bool))
    with pytest.raises(InvalidInputError, match="neighbour index 2 but only 2 images"):
        pixel_hash_candidates(np.array([[2], [0]]), np.ones((2, 1)))


def test_exact_decodes_reads_the_header_for_what_read_image_would_change(tmp_path):
    """min_size 256 (a 224 input): a JPEG with both sides >= 512 is decoded at reduced
    scale, EXIF orientation 6 is turned, 16-bit pixels are scaled; the rest is exact."""
    photo = Image.fromarray(_pixels(5, shape=(600, 520, 3)))
    photo.save(tmp_path / "big.jpg")  # 520 x 600: both sides >= 512
    photo.resize((520, 500)).save(tmp_path / "wide.jpg")  # 500 < 512: decoded whole
    photo.save(tmp_path / "big.png")
    small = photo.resize((64, 48))
    for name, orientation in (("turned.jpg", 6), ("upright.jpg", 1), ("turned.png", 3)):
        exif = Image.Exif()
        exif[0x0112] = orientation
        small.save(tmp_path / name, exif=exif)
    Image.fromarray(np.full((8, 8), 40000, dtype=np.uint16)).save(tmp_path / "wide16.png")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    names = ["big.jpg", "wide.jpg", "big.png", "turned.jpg", "upright.jpg", "turned.png"]
    names += ["wide16.png", "broken.png", "missing.png"]
    exact = exact_decodes([str(tmp_path / n) for n in names] + [None], min_size=256, n_workers=2)
    assert dict(zip([*names, None], exact.tolist(), strict=True)) == {
        "big.jpg": False,
        "wide.jpg": True,
        "big.png": True,
        "turned.jpg": False,
        "upright.jpg": True,
        "turned.png": False,
        "wide16.png": False,
        "broken.png": False,
        "missing.png": False,
        None: False,
    }
    with pytest.raises(InvalidInputError, match="min_size"):
        exact_decodes(names, min_size=0)


def test_a_run_from_files_finds_pixel_twins_across_formats_among_other_images(
    tmp_path, monkeypatch
):
    """The run decodes again only images in a pair close enough for twins; pixel twins
    are still found: a PNG and a BMP of one photo, and a small JPEG and a copy with a
    comment (both pairs decoded exactly: cosine ~1), and the hardest pair, a large JPEG
    (decoded at half scale for the backbone) and the PNG of its pixels (decoded whole)."""
    import clusterclean.pipeline as pipeline

    hashed_again = []

    def hash_and_record(paths, pixels=None, **options):
        hashed_again.extend(Path(p).name for p, again in zip(paths, pixels, strict=True) if again)
        return hash_images(paths, pixels=pixels, **options)

    monkeypatch.setattr(pipeline, "hash_images", hash_and_record)
    import skimage.data

    folder = tmp_path / "images"
    folder.mkdir()
    photo = Image.fromarray(skimage.data.astronaut()).resize((320, 300))
    photo.save(folder / "twin.png")
    photo.save(folder / "twin.bmp")
    # a near duplicate, not a twin: backbone cosine about 0.98 to twin.png
    brighter = np.clip(np.asarray(photo).astype(np.int16) + 12, 0, 255).astype(np.uint8)
    Image.fromarray(brighter).save(folder / "brighter.png")
    Image.fromarray(skimage.data.rocket()).resize((720, 540)).save(folder / "big.jpg")
    with Image.open(folder / "big.jpg") as decoded:
        decoded.convert("RGB").save(folder / "big.png")
    # a small JPEG and a copy with a comment segment: other bytes, the same pixels
    Image.fromarray(skimage.data.coffee()).resize((300, 200)).save(folder / "cup.jpg")
    data = (folder / "cup.jpg").read_bytes()
    comment = b"\xff\xfe" + (2 + 8).to_bytes(2, "big") + b"a remark"
    (folder / "cup_noted.jpg").write_bytes(data[:2] + comment + data[2:])
    for name in ("chelsea", "immunohistochemistry"):
        Image.fromarray(getattr(skimage.data, name)()).save(folder / f"{name}.jpg")
    report = run(images=folder, adapt="none", progress=False)
    pixels = report.duplicates.query("kind == 'exact_pixels'")
    groups = sorted(sorted(g) for g in pixels.groupby("duplicate_group_id")["image_id"].agg(list))
    assert groups == [
        ["big.jpg", "big.png"],
        ["cup.jpg", "cup_noted.jpg"],
        ["twin.bmp", "twin.png"],
    ]
    assert report.duplicates.query("kind == 'exact_file'").empty
    twins = ["big.jpg", "big.png", "cup.jpg", "cup_noted.jpg", "twin.bmp", "twin.png"]
    assert sorted(hashed_again) == twins


def test_hashes_and_headers_skip_a_named_pipe_without_opening_it(files, tmp_path, caplog):
    """Opening a FIFO blocks until a writer comes; both readers must not open it."""
    import os
    import threading

    os.mkfifo(tmp_path / "fifo.png")
    paths = [files["a.png"], str(tmp_path / "fifo.png")]
    results = {}
    worker = threading.Thread(
        target=lambda: results.update(
            hashes=hash_images(paths, n_workers=1),
            exact=exact_decodes(paths, min_size=256, n_workers=1),
        ),
        daemon=True,
    )
    with caplog.at_level(logging.WARNING, logger="clusterclean.duplicates"):
        worker.start()
        worker.join(timeout=30)
    assert not worker.is_alive(), "a reader blocked on the named pipe"
    assert results["hashes"].iloc[1].isna().all()
    assert results["hashes"].iloc[0].notna().all()
    assert results["exact"].tolist() == [True, False]
    assert "fifo.png is a named pipe, not an image file" in caplog.text


def test_grayscale_and_rgb_copies_share_pixels_but_lossy_jpeg_does_not(tmp_path):
    gray = _pixels(3, shape=(10, 10))
    Image.fromarray(gray).save(tmp_path / "gray.png")
    Image.fromarray(gray).convert("RGB").save(tmp_path / "rgb.png")
    photo = _pixels(4, shape=(32, 32, 3))
    Image.fromarray(photo).save(tmp_path / "q95.jpg", quality=95)
    Image.open(tmp_path / "q95.jpg").save(tmp_path / "q50.jpg", quality=50)
    hashes = hash_images([str(tmp_path / n) for n in ("gray.png", "rgb.png", "q95.jpg", "q50.jpg")])
    pixel = hashes["pixel_hash"].tolist()
    assert pixel[0] == pixel[1]
    assert pixel[2] != pixel[3]  # a lossy re-encode is a near duplicate, not an exact one


def test_find_duplicates_groups_kinds_and_leaks(files):
    ds = _dataset(
        [
            {"image_id": "a", "path": files["a.png"], "split": "val"},
            {"image_id": "b", "path": files["b.png"], "split": "train"},
            {"image_id": "c", "path": files["c.bmp"], "split": "test"},
            {"image_id": "d", "path": files["d.png"], "split": "train"},
            {"image_id": "e", "path": None, "split": None},
        ],
        [[1, 0], [1, 1], [0, NAN], [1, 0], [0, 0]],
    )
    pairs = pd.DataFrame(
        {
            "image_id_a": ["d", "a"],
            "image_id_b": ["e", "d"],
            "cosine": np.array([0.99, 0.95], dtype=np.float32),
        }
    )
    dup = find_duplicates(ds, pairs, min_similarity=0.98)
    assert tuple(dup.columns) == DUPLICATE_COLUMNS == tuple(TABLES["duplicates"])
    by_kind = {kind: part for kind, part in dup.groupby("kind")}

    exact = by_kind["exact_file"]
    assert exact["image_id"].tolist() == ["a", "b"]
    assert exact["duplicate_group_size"].tolist() == [2, 2]
    assert exact["is_kept"].tolist() == [False, True]  # b sits in train, the home split
    assert exact["home_split"].tolist() == ["train", "train"]
    assert exact["is_leak"].tolist() == [True, False]  # drop a from val
    assert exact["differing_attributes"].tolist() == [["y"], ["y"]]
    assert exact["content_hash"].nunique() == 1

    pixels = by_kind["exact_pixels"]
    assert pixels["image_id"].tolist() == ["a", "b", "c"]
    assert pixels["is_leak"].tolist() == [True, False, True]
    # x: 1, 1, 0 differ; y: 0, 1, missing differ
    assert pixels["n_differing_labels"].tolist() == [2, 2, 2]

    near = by_kind["near"]  # only d-e is >= 0.98
    assert near["image_id"].tolist() == ["d", "e"]
    assert near["content_hash"].isna().all()
    # e has no split: one known split, so not cross-split and no leak
    assert near["is_cross_split"].tolist() == [False, False]
    assert near["is_leak"].tolist() == [False, False]
    assert near["is_kept"].tolist() == [True, False]
    assert near["n_differing_labels"].tolist() == [1, 1]


def test_split_priority_is_configurable_and_unlisted_splits_rank_last(files):
    rows = [
        {"image_id": "a", "path": files["a.png"], "split": "extra"},
        {"image_id": "b", "path": files["b.png"], "split": "holdout"},
        {"image_id": "c", "path": files["c.bmp"], "split": "test"},
    ]
    ds = _dataset(rows, [[1, 0], [1, 0], [1, 0]])
    pixels = find_duplicates(ds, _no_pairs()).query("kind == 'exact_pixels'")
    # test is listed: it is home; extra and holdout are not listed
    assert pixels["home_split"].unique().tolist() == ["test"]
    assert pixels["is_leak"].tolist() == [True, True, False]
    assert pixels["is_kept"].tolist() == [False, False, True]
    custom = find_duplicates(ds, _no_pairs(), split_priority=("holdout",))
    custom = custom.query("kind == 'exact_pixels'")
    assert custom["is_leak"].tolist() == [True, False, True]
    # no listed split: the first split seen (row order) is home
    only_unlisted = find_duplicates(ds, _no_pairs(), split_priority=())
    assert only_unlisted.query("kind == 'exact_pixels'")["home_split"].iloc[0] == "extra"


def test_no_paths_and_no_splits_gives_only_near_groups_without_leaks():
    ds = _dataset([{"image_id": i} for i in "abc"], [[1, 0], [1, 0], [0, 0]])
    pairs = pd.DataFrame({"image_id_a": ["a"], "image_id_b": ["c"], "cosine": [0.99]})
    dup = find_duplicates(ds, pairs)
    assert dup["kind"].tolist() == ["near", "near"]
    assert dup["split"].isna().all() and dup["home_split"].isna().all()
    assert not dup["is_leak"].any()
    assert dup["differing_attributes"].tolist() == [["x"], ["x"]]
    empty = find_duplicates(ds, _no_pairs())
    assert empty.empty and tuple(empty.columns) == DUPLICATE_COLUMNS


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"min_similarity": 1.5},
            InvalidInputError,
            "The 'min_similarity' parameter of find_duplicates must be a float in [-1, 1]. "
            "Got 1.5 instead.",
        ),
        (
            {"split_priority": "train"},
            InvalidTypeError,
            "The 'split_priority' parameter of find_duplicates must be a sequence of split "
            "names such as ('train', 'val', 'test'). Got 'train' instead.",
        ),
        (
            {"split_priority": ("train", "train")},
            InvalidInputError,
            "The 'split_priority' parameter of find_duplicates must not repeat a split. "
            "Got ('train', 'train') instead.",
        ),
        (
            {"hashes": pd.DataFrame({"file_hash": [None], "pixel_hash": [None]})},
            InvalidInputError,
            "hashes has 1 rows but the dataset has 2 images; compute them with "
            "hash_images(dataset.table['path']).",
        ),
    ],
)
def test_find_duplicates_rejects_bad_options(kwargs, error, message):
    ds = _dataset([{"image_id": "a"}, {"image_id": "b"}], [[1, 0], [0, 0]])
    with pytest.raises(error) as info:
        find_duplicates(ds, _no_pairs(), **kwargs)
    assert str(info.value) == message


def test_find_duplicates_rejects_bad_pairs():
    ds = _dataset([{"image_id": "a"}, {"image_id": "b"}], [[1, 0], [0, 0]])
    with pytest.raises(InvalidTypeError, match="must be a pandas DataFrame from find_pairs"):
        find_duplicates(ds, [("a", "b", 0.99)])
    pairs = pd.DataFrame({"image_id_a": ["a"], "image_id_b": ["zz"], "cosine": [0.99]})
    with pytest.raises(InvalidInputError, match="not in the dataset"):
        find_duplicates(ds, pairs)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 4), st.sampled_from(["train", "val", "test", "other", None])),
        min_size=1,
        max_size=14,
    )
)
def test_groups_are_hash_classes_with_one_kept_copy(members):
    """Invariants on precomputed hashes: groups = equal-hash classes of 2+, one kept per
    group, leaks never in the home split, a group within one known split never leaks."""
    hashes = [f"h{h}" for h, _ in members]
    splits = [s for _, s in members]
    ds = _dataset(
        [{"image_id": f"i{n}", "split": s} for n, s in enumerate(splits)],
        np.zeros((len(members), 2)),
    )
    precomputed = pd.DataFrame({"file_hash": hashes, "pixel_hash": hashes}, dtype=object)
    dup = find_duplicates(ds, _no_pairs(), hashes=precomputed)
    exact = dup[dup["kind"] == "exact_file"]
    expected = {h for h in hashes if hashes.count(h) >= 2}
    assert set(exact["content_hash"]) == expected
    assert len(exact) == sum(hashes.count(h) for h in expected)
    for _, group in exact.groupby("duplicate_group_id"):
        assert group["is_kept"].sum() == 1
        assert (group["duplicate_group_size"] == len(group)).all()
        known = group["split"].dropna()
        kept = group[group["is_kept"]].iloc[0]
        if len(known):
            assert kept["split"] == kept["home_split"]
        assert group["is_cross_split"].all() == (known.nunique() >= 2)
        leaks = group[group["is_leak"]]
        assert (leaks["split"] != leaks["home_split"]).all()
        if known.nunique() < 2:
            assert leaks.empty
    assert (
        dup[dup["kind"] == "exact_pixels"]
        .drop(columns="kind")
        .reset_index(drop=True)
        .equals(exact.drop(columns="kind").reset_index(drop=True))
    )


def test_run_writes_and_reads_back_the_duplicates_table(files, tmp_path):
    ds = _dataset(
        [
            {"image_id": "a", "path": files["a.png"], "split": "val"},
            {"image_id": "b", "path": files["b.png"], "split": "train"},
            {"image_id": "d", "path": files["d.png"], "split": "train"},
        ],
        [[1, 0], [1, 1], [0, 0]],
    )
    vectors = np.array([[1, 0, 0], [1, 0.001, 0], [0, 0, 1]], dtype=np.float32)
    embeddings = as_embeddings(["a", "b", "d"], vectors)
    report = run(labels=ds, embeddings=embeddings, out=tmp_path / "out", progress=False)
    assert report.run_info["parameters"]["min_duplicate_similarity"] == 0.98
    dup = report.duplicates
    assert dup.groupby("kind")["image_id"].agg(list).to_dict() == {
        "exact_file": ["a", "b"],
        "exact_pixels": ["a", "b"],
        "near": ["a", "b"],
    }
    assert dup.loc[dup["is_leak"], "image_id"].unique().tolist() == ["a"]
    back = read_report(tmp_path / "out").duplicates
    back["differing_attributes"] = back["differing_attributes"].map(list)

    def plain(frame):
        frame = frame.astype(object)
        return frame.where(frame.notna(), None)

    pd.testing.assert_frame_equal(plain(back), plain(dup), check_index_type=False)
