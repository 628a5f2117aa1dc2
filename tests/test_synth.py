"""Tests of clusterclean.synth: views, planted noise, demo data and the benchmark."""

from __future__ import annotations

import gzip
import time

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from clusterclean.errors import InvalidInputError, InvalidTypeError, MissingDependencyError
from clusterclean.synth import (
    FASHION_MNIST_DIR,
    FASHION_VISIBLE,
    inject_noise,
    load_fashion_mnist,
    make_demo_dataset,
    make_fashion_benchmark,
    make_views,
)

# --------------------------------------------------------------------------- helpers


def _table(groups, **columns) -> pd.DataFrame:
    ids = [f"i{k}" for k in range(len(groups))]
    return pd.DataFrame({"image_id": ids, "group": groups, **columns})


def _changed_cells(before: pd.DataFrame, after: pd.DataFrame, columns) -> set[tuple[str, str]]:
    cells = set()
    for column in columns:
        diff = before[column].astype(object).to_numpy() != after[column].astype(object).to_numpy()
        both_nan = before[column].isna().to_numpy() & after[column].isna().to_numpy()
        for row in np.flatnonzero(diff & ~both_nan):
            cells.add((before["image_id"].iat[row], column))
    return cells


def _gradient(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(8, 4, 3), dtype=np.uint8)
    return Image.fromarray(arr, mode="RGB").resize((96, 192), Image.Resampling.BILINEAR)


# --------------------------------------------------------------------------- inject_noise


def test_uniform_flips_exact_count_and_only_labelled_cells():
    # 8 cells, 3 missing -> 5 labelled; rate 0.2 -> round(1.0) = 1 flipped cell.
    labels = _table(
        ["g0", "g0", "g1", "g1"],
        a=[1.0, np.nan, 0.0, 1.0],
        b=[np.nan, 0.0, np.nan, 1.0],
    )
    noisy = inject_noise(labels, kind="uniform", rate=0.2, seed=3)
    assert len(noisy.planted) == 1
    row = noisy.planted.iloc[0]
    assert row["given_label"] == 1 - row["true_label"]
    assert _changed_cells(labels, noisy.labels, ["a", "b"]) == {(row["image_id"], row["attribute"])}
    assert noisy.labels[["a", "b"]].isna().sum().sum() == 3


def test_uniform_rounds_half_up():
    # 6 labelled cells, rate 0.25 -> 1.5 -> 2 cells.
    labels = _table(["g0", "g1", "g2"], a=[0, 1, 0], b=[1, 1, 0])
    assert len(inject_noise(labels, kind="uniform", rate=0.25, seed=0).planted) == 2


@pytest.mark.parametrize("kind", ["uniform", "disagreement", "class_conditional"])
def test_rate_zero_changes_nothing(kind):
    labels = _table(["g0"] * 4 + ["g1"] * 3, a=[1, 1, 1, 1, 0, 0, 0], b=[0, 0, 1, 1, 0, 1, 0])
    noisy = inject_noise(labels, kind=kind, rate=0.0, seed=1)
    pd.testing.assert_frame_equal(noisy.labels, labels)
    assert noisy.planted.empty
    assert list(noisy.planted.columns) == ["image_id", "attribute", "true_label", "given_label"]


def test_disagreement_flips_one_view_of_three_and_skips_small_groups():
    # Groups of 3 views: (g0, a), (g0, b), (g1, a), (g1, b) are the 4 eligible pairs;
    # g2 (2 views) and g3 (1 view) cannot hold a strict minority. rate 0.5 -> 2 pairs,
    # and a group of 3 flips exactly floor((3 - 1) / 2) = 1 view -> exactly 2 cells.
    groups = ["g0"] * 3 + ["g1"] * 3 + ["g2"] * 2 + ["g3"]
    labels = _table(groups, a=[1, 1, 1, 0, 0, 0, 1, 1, 0], b=[0, 0, 0, 1, 1, 1, 0, 0, 1])
    noisy = inject_noise(labels, kind="disagreement", rate=0.5, seed=0)
    assert len(noisy.planted) == 2
    assert set(noisy.planted["image_id"]) <= {f"i{k}" for k in range(6)}
    per_pair = noisy.planted.merge(labels[["image_id", "group"]]).groupby(["group", "attribute"])
    assert per_pair.size().tolist() == [1, 1]
    assert (noisy.planted["given_label"] == 1 - noisy.planted["true_label"]).all()
    untouched = labels.iloc[6:].reset_index(drop=True)
    pd.testing.assert_frame_equal(noisy.labels.iloc[6:].reset_index(drop=True), untouched)


def test_disagreement_one_of_k_moves_to_another_seen_class():
    labels = _table(["g0"] * 5, age=["old"] * 5)
    labels.loc[:, "age"] = ["old", "old", "old", "old", "old"]
    labels = pd.concat([labels, _table(["g1"], age=["young"]).assign(image_id="j0")])
    noisy = inject_noise(labels, kind="disagreement", rate=0.5, seed=2)
    # One eligible pair (g0, age); rate 0.5 -> round(0.5) = 1 pair; 1 or 2 of 5 views flipped.
    assert 1 <= len(noisy.planted) <= 2
    assert set(noisy.planted["given_label"]) == {"young"}
    assert set(noisy.planted["true_label"]) == {"old"}


def test_disagreement_keeps_missing_cells_and_counts_labelled_views_only():
    # g0 has 4 views but only 2 labelled for 'a' -> not eligible; 'b' has 4 labelled.
    labels = _table(["g0"] * 4, a=[1.0, np.nan, np.nan, 1.0], b=[0.0, 0.0, 0.0, 0.0])
    noisy = inject_noise(labels, kind="disagreement", rate=0.5, seed=0)
    assert set(noisy.planted["attribute"]) == {"b"}
    assert len(noisy.planted) == 1  # floor((4 - 1) / 2) = 1 view of 4
    assert noisy.labels["a"].isna().sum() == 2


def test_class_conditional_swaps_exact_rows_of_the_pair():
    # a != b on rows 0, 1, 2, 3; rate 0.5 -> 2 rows swapped -> 4 planted cells.
    labels = _table(["g"] * 6, a=[1, 1, 0, 0, 1, 0], b=[0, 0, 1, 1, 1, 0], c=[1, 0, 1, 0, 1, 0])
    noisy = inject_noise(
        labels, kind="class_conditional", rate=0.5, seed=4, confusions=[("a", "b")]
    )
    assert len(noisy.planted) == 4
    rows = noisy.planted.groupby("image_id")["attribute"].apply(sorted)
    assert rows.tolist() == [["a", "b"], ["a", "b"]]
    assert set(rows.index) <= {"i0", "i1", "i2", "i3"}
    swapped = labels["image_id"].isin(rows.index).to_numpy()
    np.testing.assert_array_equal(noisy.labels["a"].to_numpy()[swapped], labels["b"][swapped])
    np.testing.assert_array_equal(noisy.labels["b"].to_numpy()[swapped], labels["a"][swapped])
    pd.testing.assert_series_equal(noisy.labels["c"], labels["c"])


def test_class_conditional_default_pairs_the_most_correlated_attributes():
    # phi(a, c) = phi(b, d) = (2 * 3 - 1 * 0) / sqrt(3 * 3 * 2 * 4) = 0.707;
    # |phi| of a-b = 1/3, a-d = 0, c-b = 0, c-d = 0.5 -> pairs (a, c) and (b, d).
    labels = _table(
        ["g"] * 6,
        a=[1, 1, 1, 0, 0, 0],
        b=[1, 0, 1, 0, 1, 0],
        c=[1, 1, 0, 0, 0, 0],
        d=[1, 0, 1, 0, 0, 0],
    )
    corr = labels[list("abcd")].astype(float).corr()
    assert corr.loc["a", "c"] == pytest.approx(np.sqrt(1 / 2))
    noisy = inject_noise(labels, kind="class_conditional", rate=0.5, seed=0)
    pairs = set(noisy.planted.groupby("image_id")["attribute"].apply(lambda s: "".join(sorted(s))))
    assert pairs == {"ac", "bd"}


def test_noise_is_deterministic_by_seed():
    rng = np.random.default_rng(0)
    groups = np.repeat([f"g{k}" for k in range(20)], 5)
    labels = _table(groups, **{f"a{j}": rng.integers(0, 2, 100) for j in range(4)})
    for kind in ("uniform", "disagreement", "class_conditional"):
        first = inject_noise(labels, kind=kind, rate=0.3, seed=7)
        again = inject_noise(labels, kind=kind, rate=0.3, seed=7)
        other = inject_noise(labels, kind=kind, rate=0.3, seed=8)
        pd.testing.assert_frame_equal(first.planted, again.planted)
        pd.testing.assert_frame_equal(first.labels, again.labels)
        assert not first.planted.equals(other.planted)


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 7), min_size=1, max_size=12),
    rate=st.floats(0.0, 0.5),
    seed=st.integers(0, 2**16),
)
def test_disagreement_always_flips_a_strict_minority(sizes, rate, seed):
    groups = np.repeat([f"g{k}" for k in range(len(sizes))], sizes)
    rng = np.random.default_rng(seed)
    labels = _table(groups, a=np.repeat(rng.integers(0, 2, len(sizes)), sizes), b=[1] * len(groups))
    noisy = inject_noise(labels, kind="disagreement", rate=rate, seed=seed)
    eligible = 2 * sum(1 for s in sizes if s >= 3)
    flipped = noisy.planted.merge(labels[["image_id", "group"]]).groupby(["group", "attribute"])
    assert flipped.ngroups == int(np.floor(rate * eligible + 0.5))
    size_of = dict(zip([f"g{k}" for k in range(len(sizes))], sizes, strict=True))
    for (group, _), count in flipped.size().items():
        assert 1 <= count < size_of[group] / 2
    assert _changed_cells(labels, noisy.labels, ["a", "b"]) == set(
        zip(noisy.planted["image_id"], noisy.planted["attribute"], strict=True)
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"kind": "uniform", "rate": 0.6},
            InvalidInputError,
            "The 'rate' parameter of inject_noise must be a float in [0, 0.5]. Got 0.6 instead.",
        ),
        (
            {"kind": "typo", "rate": 0.1},
            InvalidInputError,
            "The 'kind' parameter of inject_noise must be one of ['disagreement', 'uniform', "
            "'class_conditional']. Got 'typo' instead.",
        ),
        (
            {"kind": "uniform", "rate": 0.1, "seed": -1},
            InvalidInputError,
            "The 'seed' parameter of inject_noise must be an int >= 0. Got -1 instead.",
        ),
        (
            {"kind": "uniform", "rate": 0.1, "attributes": ["zzz"]},
            InvalidInputError,
            "names columns that the label table lacks: ['zzz']",
        ),
        (
            {"kind": "class_conditional", "rate": 0.1, "confusions": [("a", "a")]},
            InvalidInputError,
            "must pair two different binary (0/1) attribute columns among ['a', 'b']. "
            "Got ('a', 'a') instead.",
        ),
        (
            {"kind": "uniform", "rate": "0.1"},
            InvalidTypeError,
            "The 'rate' parameter of inject_noise must be a float in [0, 0.5]. Got '0.1' instead.",
        ),
    ],
)
def test_inject_noise_rejects_bad_options(kwargs, error, message):
    labels = _table(["g0", "g0"], a=[1, 0], b=[0, 1])
    with pytest.raises(error) as info:
        inject_noise(labels, **kwargs)
    assert message in str(info.value)


def test_inject_noise_needs_ids_and_groups():
    with pytest.raises(InvalidInputError, match="needs an 'image_id' column"):
        inject_noise(pd.DataFrame({"a": [1]}), kind="uniform", rate=0.1)
    with pytest.raises(InvalidInputError, match="needs a 'group' column"):
        inject_noise(pd.DataFrame({"image_id": ["x"], "a": [1]}), kind="disagreement", rate=0.1)
    with pytest.raises(InvalidTypeError, match="must be a pandas.DataFrame. Got ndarray instead"):
        inject_noise(np.zeros((2, 2)), kind="uniform", rate=0.1)


# --------------------------------------------------------------------------- make_views


def test_make_views_shape_mode_and_determinism():
    views = make_views(_gradient(0), 4, rng=np.random.default_rng(5), size=(32, 64))
    again = make_views(_gradient(0), 4, rng=np.random.default_rng(5), size=(32, 64))
    assert len(views) == 4
    assert all(v.size == (32, 64) and v.mode == "RGB" for v in views)
    for a, b in zip(views, again, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(views[0]), np.asarray(views[1]))


def test_views_of_one_subject_are_closer_than_views_of_another():
    from skimage import data

    astronaut = Image.fromarray(data.astronaut()[:, 128:384]).resize((96, 192))
    coffee = Image.fromarray(data.coffee()[:, 200:400]).resize((96, 192))

    def flat(image: Image.Image) -> np.ndarray:
        arr = np.asarray(image.convert("L").resize((8, 16)), dtype=np.float64).ravel()
        return (arr - arr.mean()) / (arr.std() + 1e-9)

    def corr(x: Image.Image, y: Image.Image) -> float:
        """Pixel correlation at 8x16, the better of y and its mirror (views may be flipped)."""
        mirrored = y.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return max(float(flat(x) @ flat(z)) / flat(x).size for z in (y, mirrored))

    rng = np.random.default_rng(1)
    a, b = make_views(astronaut, 4, rng=rng), make_views(coffee, 4, rng=rng)
    same = [corr(x, y) for v in (a, b) for i, x in enumerate(v) for y in v[i + 1 :]]
    other = [corr(x, y) for x in a for y in b]
    assert np.mean(same) > 0.65
    assert np.mean(same) > np.mean(other) + 0.3


def test_make_views_rejects_bad_input():
    rng = np.random.default_rng(0)
    with pytest.raises(
        InvalidInputError, match="'n_views' parameter of make_views must be an int >= 1. Got 0"
    ):
        make_views(_gradient(0), 0, rng=rng)
    with pytest.raises(InvalidTypeError, match="must be a numpy.random.Generator"):
        make_views(_gradient(0), 1, rng=0)
    with pytest.raises(InvalidTypeError, match="must be a PIL.Image.Image. Got ndarray instead"):
        make_views(np.zeros((4, 4)), 1, rng=rng)
    with pytest.raises(InvalidInputError, match=r"'size' parameter of make_views .* Got \(4, 4\)"):
        make_views(_gradient(0), 1, rng=rng, size=(4, 4))


# --------------------------------------------------------------------------- demo


def test_demo_dataset_files_truth_and_planted_cells_agree(tmp_path):
    start = time.perf_counter()
    demo = make_demo_dataset(tmp_path, n_persons=60, seed=0, disagreement_rate=0.1)
    assert time.perf_counter() - start < 15
    written = pd.read_csv(demo.labels_path)
    assert list(written.columns[:3]) == ["image", "split", "group"]
    assert written.columns[-1] == "age" and set(written["age"]) <= {"young", "adult", "old"}
    assert len(written.columns) == 3 + 12 + 1
    assert sorted(p.name for p in demo.images_dir.glob("*.jpg")) == sorted(written["image"])
    with Image.open(demo.images_dir / written["image"].iat[0]) as first:
        assert first.size == (64, 128)
    sizes = written.groupby("group").size()
    assert sizes.between(1, 6).all() and (sizes == 1).any() and (sizes >= 3).sum() >= 40
    assert written.groupby("group")["split"].nunique().eq(1).all()
    assert demo.truth.drop(columns="image").groupby("group").nunique().eq(1).all().all()
    attributes = [c for c in written.columns if c not in ("image", "split", "group")]
    changed = _changed_cells(
        demo.truth.rename(columns={"image": "image_id"}),
        demo.labels.rename(columns={"image": "image_id"}),
        attributes,
    )
    planted = pd.read_csv(demo.planted_path)
    assert set(zip(planted["image_id"], planted["attribute"], strict=True)) == changed
    # 10 % of the eligible (person, attribute) pairs, one wrong value per pair.
    groups = written.set_index("image")["group"]
    eligible = int((sizes >= 3).sum()) * len(attributes)
    pairs = planted.assign(group=planted["image_id"].map(groups)).groupby(["group", "attribute"])
    assert pairs.ngroups == int(np.floor(0.1 * eligible + 0.5))
    assert all(n < sizes[g] / 2 for (g, _), n in pairs.size().items())


def test_demo_dataset_is_deterministic(tmp_path):
    first = make_demo_dataset(tmp_path / "a", n_persons=4, seed=3)
    again = make_demo_dataset(tmp_path / "b", n_persons=4, seed=3)
    pd.testing.assert_frame_equal(first.labels, again.labels)
    name = first.labels["image"].iat[0]
    assert (first.images_dir / name).read_bytes() == (again.images_dir / name).read_bytes()


def test_demo_dataset_rejects_bad_rate(tmp_path):
    with pytest.raises(InvalidInputError, match="'disagreement_rate' parameter of make_demo"):
        make_demo_dataset(tmp_path, disagreement_rate=0.9)


# --------------------------------------------------------------------------- benchmark


def _write_idx(path, array: np.ndarray) -> None:
    header = (0x0800 | array.ndim).to_bytes(4, "big") + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def test_load_fashion_mnist_reads_idx_files(tmp_path):
    images = np.arange(2 * 28 * 28, dtype=np.int64).reshape(2, 28, 28) % 256
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.array([9, 3]))
    got_images, got_classes = load_fashion_mnist(root=tmp_path)
    np.testing.assert_array_equal(got_images, images)
    assert got_classes.tolist() == [9, 3]


def test_load_fashion_mnist_names_the_package_when_absent(tmp_path):
    with pytest.raises(MissingDependencyError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(root=tmp_path)


def test_fashion_benchmark_from_tiny_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    items = rng.integers(0, 256, size=(30, 28, 28))
    classes = np.arange(30) % 10
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", items)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", classes)
    bench = make_fashion_benchmark(
        tmp_path / "out", n_persons=10, min_views=2, max_views=3, seed=1, fashion_root=tmp_path
    )
    persons = pd.read_csv(bench.persons_path)
    labels = pd.read_csv(bench.labels_path)
    leaky = pd.read_csv(bench.leaky_labels_path)
    assert persons["split"].value_counts().to_dict() == {"train": 6, "val": 2, "test": 2}
    assert labels.groupby("group")["split"].nunique().eq(1).all()
    assert leaky.drop(columns="split").equals(labels.drop(columns="split"))
    assert leaky["split"].value_counts().sum() == len(labels)
    assert persons["n_views"].between(2, 3).all() and persons["n_views"].sum() == len(labels)
    assert len(bench.visible) == 8 and len(bench.invisible) == 8
    for _, person in persons.iterrows():
        cls = int(classes[person["fashion_index"]])
        for name, members in FASHION_VISIBLE.items():
            assert person[name] == int(cls in members)
    with Image.open(bench.images_dir / labels["image"].iat[0]) as image:
        assert image.size == (64, 64)


@pytest.mark.skipif(
    not FASHION_MNIST_DIR.is_dir(), reason="Debian package dataset-fashion-mnist not installed"
)
def test_fashion_benchmark_from_the_debian_package(tmp_path):
    bench = make_fashion_benchmark(tmp_path, n_persons=20, seed=0)
    assert bench.persons["fashion_class"].nunique() > 3
    assert len(bench.labels) == bench.persons["n_views"].sum()


def test_inject_noise_exact_output_for_seed_0():
    """Golden output: the planted cells of a small table are pinned for seed 0."""
    labels = _table(["g0"] * 5 + ["g1"] * 3, a=[1, 1, 1, 1, 1, 0, 0, 0], b=[0, 0, 0, 0, 0, 1, 1, 1])

    def cells(kind, **options):
        planted = inject_noise(labels, kind=kind, rate=0.5, seed=0, **options).planted
        return [tuple(r) for r in planted.itertuples(index=False)]

    # 4 eligible pairs -> 2 drawn (both of g1), 1 of 3 views each.
    assert cells("disagreement") == [("i5", "a", 0, 1), ("i5", "b", 1, 0)]
    # 16 cells -> 8 flipped.
    assert cells("uniform") == [
        ("i0", "a", 1, 0),
        ("i0", "b", 0, 1),
        ("i1", "b", 0, 1),
        ("i2", "a", 1, 0),
        ("i2", "b", 0, 1),
        ("i3", "a", 1, 0),
        ("i3", "b", 0, 1),
        ("i7", "b", 1, 0),
    ]
    # a != b on all 8 rows -> 4 rows swapped.
    swapped = cells("class_conditional", confusions=[("a", "b")])
    assert [c[0] for c in swapped[::2]] == ["i2", "i3", "i4", "i6"]
