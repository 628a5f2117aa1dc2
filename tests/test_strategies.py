"""Cleaning strategies on real reports built from hand-made labels and planted components.

Components are planted exactly: every image of group g gets the basis vector e_g,
so images of a group are identical (cosine 1) and groups are orthogonal (cosine 0).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clusterclean._contracts import Dataset, as_embeddings
from clusterclean.dataset import load_dataset
from clusterclean.errors import InvalidInputError, InvalidTypeError
from clusterclean.pipeline import run
from clusterclean.report import read_table
from clusterclean.strategies import STRATEGIES, clean_labels, write_cleaned

N = np.nan
ALL = ("component", "label", "intersection", "image", "majority")


def make_report(groups, labels, attributes, *, tasks=None, splits=None, **options):
    """A real report (pipeline.run over planted embeddings) for hand-made labels."""
    ids = [f"img{i:02d}" for i in range(len(groups))]
    table = pd.DataFrame({"image_id": ids, "path": [None] * len(ids)})
    if splits is not None:
        table["split"] = splits
    dataset = Dataset(
        table=table,
        labels=np.asarray(labels, dtype=np.float32),
        attributes=tuple(attributes),
        tasks=tasks or {},
    )
    vectors = np.eye(max(groups) + 1)[groups]
    return run(labels=dataset, embeddings=as_embeddings(ids, vectors), progress=False, **options)


# Component A (img00-img04), B (img05-img06, size 2), singleton C (img07).
# hat:     A 1 1 1 1 0 -> k=5 c=4 m=0.2 ; B 1 0 -> m=0.5 (tie)
# bag:     A 0 0 0 1 . -> k=4 c=1 m=0.25; B 0 0
# glasses: A all 1     -> consistent    ; B 1 . -> k=1
BINARY_LABELS = [
    [1, 0, 1],
    [1, 0, 1],
    [1, 0, 1],
    [1, 1, 1],
    [0, N, 1],
    [1, 0, 1],
    [0, 0, N],
    [1, 1, 0],
]
BINARY_GROUPS = [0, 0, 0, 0, 0, 1, 1, 2]
BINARY_SPLITS = ["train", "train", "train", "train", "val", "train", "val", "train"]
ATTRS = ("hat", "bag", "glasses")


@pytest.fixture(scope="module")
def binary_report():
    return make_report(BINARY_GROUPS, BINARY_LABELS, ATTRS, splits=BINARY_SPLITS)


# pose task: A (img00-img04) left left left right missing; B (img05-img08) left left
# right right (a tie); C (img09-img11) front left right (a three-way tie).
POSE = ("pose=front", "pose=left", "pose=right")
ONE_HOT = {"front": [1, 0, 0], "left": [0, 1, 0], "right": [0, 0, 1], None: [N, N, N]}
POSE_VALUES = ["left", "left", "left", "right", None, "left", "left", "right", "right"]
POSE_VALUES += ["front", "left", "right"]
POSE_GROUPS = [0] * 5 + [1] * 4 + [2] * 3


@pytest.fixture(scope="module")
def task_report():
    labels = [[1] + ONE_HOT[v] for v in POSE_VALUES]  # attribute "person" always 1
    return make_report(POSE_GROUPS, labels, ("person", *POSE), tasks={"pose": POSE})


def cells(result):
    """{(image_id, attribute): (old, new)} of the change log (NaN as None)."""

    def value(x):
        return None if np.isnan(x) else int(x)

    return {
        (row.image_id, row.attribute): (value(row.old), value(row.new))
        for row in result.changes.itertuples()
    }


def dropped(result):
    return result.dropped["image_id"].tolist()


# --------------------------------------------------------------------------- #
# Hand-computed: binary attributes
# --------------------------------------------------------------------------- #
def test_registry_lists_every_strategy():
    assert tuple(STRATEGIES) == ALL


@pytest.mark.parametrize(
    ("threshold", "expected"),
    [
        (0.05, ["img05", "img06"]),  # variance A = (0.2^2 + 0.25^2 + 0) / 3 = 0.0342, B = 0.125
        (0.03, ["img00", "img01", "img02", "img03", "img04", "img05", "img06"]),
        (0.125, []),  # strictly above: B's 0.125 is not above 0.125
        ("p50", ["img05", "img06"]),  # median of [0.0342, 0.125] = 0.0796; singleton not pooled
    ],
)
def test_component_drops_whole_components_above_the_cut(binary_report, threshold, expected):
    result = clean_labels(binary_report, strategy="component", threshold=threshold)
    assert dropped(result) == expected
    assert result.changes.empty
    assert result.dataset.ids.tolist() == [
        f"img{i:02d}" for i in range(8) if f"img{i:02d}" not in expected
    ]


def test_component_reason_and_metric_choice(binary_report):
    result = clean_labels(binary_report, strategy="component", threshold=0.05)
    assert result.dropped["reason"].tolist() == ["variance 0.125 > 0.05 (threshold 0.05)"] * 2
    assert result.dropped["component_id"].nunique() == 1
    # label_count_std: A = std(0.8, 0.25, 1.0) = 0.3171, B = std(0.5, 1.0) = 0.25
    result = clean_labels(
        binary_report, strategy="component", metric="label_count_std", threshold=0.3
    )
    assert dropped(result) == ["img00", "img01", "img02", "img03", "img04"]
    assert result.dropped["reason"].iloc[0] == "label_count_std 0.3171 > 0.3 (threshold 0.3)"


@pytest.mark.parametrize(
    ("threshold", "expected"),
    [
        # t = 0.2: hat in A (m = 0.2, boundary included), bag in A (0.25), hat in B (0.5)
        (0.2, {**{(f"img0{i}", "hat"): (1, None) for i in range(4)}, ("img04", "hat"): (0, None),
               **{(f"img0{i}", "bag"): (0, None) for i in range(3)}, ("img03", "bag"): (1, None),
               ("img05", "hat"): (1, None), ("img06", "hat"): (0, None)}),
        (0.25, {**{(f"img0{i}", "bag"): (0, None) for i in range(3)}, ("img03", "bag"): (1, None),
                ("img05", "hat"): (1, None), ("img06", "hat"): (0, None)}),
        (0.5, {("img05", "hat"): (1, None), ("img06", "hat"): (0, None)}),
    ],
)  # fmt: skip
def test_label_makes_ambiguous_attributes_missing(binary_report, threshold, expected):
    result = clean_labels(binary_report, strategy="label", threshold=threshold)
    assert cells(result) == expected
    assert result.dropped.empty
    # img04's bag was already missing: no row, still missing
    assert np.isnan(result.dataset.labels[4, 1])


def test_label_reason(binary_report):
    result = clean_labels(binary_report, strategy="label", threshold=0.2)
    reasons = result.changes.set_index(["image_id", "attribute"])["reason"]
    assert reasons["img04", "hat"] == (
        "ambiguous: 4 of 5 labelled images positive (minority 0.2 >= t=0.2)"
    )


def test_intersection_sets_unshared_positives_to_zero(binary_report):
    result = clean_labels(binary_report, strategy="intersection")
    assert cells(result) == {
        **{(f"img0{i}", "hat"): (1, 0) for i in range(4)},
        ("img03", "bag"): (1, 0),
        ("img05", "hat"): (1, 0),
    }
    labels = result.dataset.labels
    np.testing.assert_array_equal(labels[:5, 0], [0, 0, 0, 0, 0])
    assert np.isnan(labels[4, 1])  # missing stays missing
    np.testing.assert_array_equal(labels[7], [1, 1, 0])  # singleton untouched


@pytest.mark.parametrize(
    ("threshold", "expected", "reason"),
    [
        (0.2, [], None),  # 1 of 5 = 0.2 is not below 0.2
        (0.25, ["img04"], "rare labels (agreement < t=0.25): hat=0 (1 of 5 agree)"),
        (0.3, ["img03", "img04"], "rare labels (agreement < t=0.3): bag=1 (1 of 4 agree)"),
        (0.5, ["img03", "img04"], "rare labels (agreement < t=0.5): bag=1 (1 of 4 agree)"),
    ],
)
def test_image_drops_images_with_rare_labels(binary_report, threshold, expected, reason):
    result = clean_labels(binary_report, strategy="image", threshold=threshold)
    assert dropped(result) == expected  # never the size-2 component: agreement 0.5
    assert result.changes.empty
    if reason:
        assert result.dropped["reason"].iloc[0] == reason


def test_majority_relabels_and_reports_ties(binary_report):
    result = clean_labels(binary_report, strategy="majority")
    assert cells(result) == {
        ("img04", "hat"): (0, 1),
        ("img03", "bag"): (1, 0),
        ("img05", "hat"): (1, 1),  # tie in the size-2 component: reported, unchanged
        ("img06", "hat"): (0, 0),
    }
    assert np.isnan(result.dataset.labels[4, 1])  # a missing cell is not filled
    assert np.isnan(result.dataset.labels[6, 2])
    tie = result.changes.set_index(["image_id", "attribute"]).loc[("img05", "hat"), "reason"]
    assert tie == "tie: 1 of 2 labelled images positive; left unchanged"
    summary = result.summary()
    assert (summary["changed_cells"], summary["ties"], summary["dropped"]) == (2, 2, 0)
    assert summary["attributes"] == {
        "hat": {"changed_cells": 1, "ties": 2},
        "bag": {"changed_cells": 1, "ties": 0},
    }
    assert summary["splits"] == {
        "train": {"images": 6, "dropped": 0, "changed_cells": 1, "ties": 1},
        "val": {"images": 2, "dropped": 0, "changed_cells": 1, "ties": 1},
    }


def test_min_component_size_leaves_small_components(binary_report):
    result = clean_labels(binary_report, strategy="majority", min_component_size=3)
    assert cells(result) == {("img04", "hat"): (0, 1), ("img03", "bag"): (1, 0)}
    result = clean_labels(binary_report, strategy="component", threshold=0.0, min_component_size=3)
    assert dropped(result) == ["img00", "img01", "img02", "img03", "img04"]


def test_splits_restrict_what_changes_but_everyone_votes(binary_report):
    train = clean_labels(binary_report, strategy="majority", splits=["train"])
    assert cells(train) == {("img03", "bag"): (1, 0), ("img05", "hat"): (1, 1)}
    val = clean_labels(binary_report, strategy="majority", splits=["val"])
    assert cells(val) == {("img04", "hat"): (0, 1), ("img06", "hat"): (0, 0)}
    image = clean_labels(binary_report, strategy="image", threshold=0.3, splits=["train"])
    assert dropped(image) == ["img03"]
    component = clean_labels(binary_report, strategy="component", threshold=0.03, splits=["val"])
    assert dropped(component) == ["img04", "img06"]
    assert image.summary()["splits"]["val"] == {
        "images": 2,
        "dropped": 0,
        "changed_cells": 0,
        "ties": 0,
    }


def test_attribute_selection(binary_report):
    only_hat = clean_labels(binary_report, strategy="majority", include_attributes=["hat"])
    assert set(cells(only_hat)) == {("img04", "hat"), ("img05", "hat"), ("img06", "hat")}
    no_hat = clean_labels(binary_report, strategy="majority", exclude_attributes=["hat"])
    assert cells(no_hat) == {("img03", "bag"): (1, 0)}
    image = clean_labels(binary_report, strategy="image", threshold=0.3, exclude_attributes=["bag"])
    assert dropped(image) == ["img04"]


def test_attributes_the_report_excluded_are_never_changed():
    report = make_report(BINARY_GROUPS, BINARY_LABELS, ATTRS, exclude_attributes=("hat",))
    for strategy in ("label", "intersection", "majority"):
        result = clean_labels(report, strategy=strategy)
        assert "hat" not in set(result.changes["attribute"]), strategy
    assert dropped(clean_labels(report, strategy="image", threshold=0.25)) == []
    with pytest.raises(InvalidInputError) as error:
        clean_labels(report, strategy="majority", include_attributes=["hat"])
    assert str(error.value) == (
        "The 'include_attributes' parameter of clean_labels names ['hat'], which the report "
        "excluded from scoring (run --exclude-attributes); those attributes are never cleaned. "
        "Re-run the report without excluding them to clean them."
    )


def test_input_report_is_not_modified(binary_report):
    before = binary_report.dataset.labels.copy()
    table = binary_report.dataset.table.copy()
    for strategy in ALL:
        result = clean_labels(binary_report, strategy=strategy)
        assert result.dataset is not binary_report.dataset
    np.testing.assert_array_equal(binary_report.dataset.labels, before)
    pd.testing.assert_frame_equal(binary_report.dataset.table, table)


# --------------------------------------------------------------------------- #
# Hand-computed: one-of-K tasks
# --------------------------------------------------------------------------- #
def test_majority_keeps_tasks_one_of_k(task_report):
    result = clean_labels(task_report, strategy="majority")
    changes = result.changes
    changed = changes[changes["old"] != changes["new"]]
    assert cells(result.__class__(**{**result.__dict__, "changes": changed})) == {
        ("img03", "pose=right"): (1, 0),
        ("img03", "pose=left"): (0, 1),
    }
    ties = changes[changes["old"] == changes["new"]]
    # B: 4 voters x the 2 tied values; C: 3 voters x the 3 tied values
    assert len(ties) == 4 * 2 + 3 * 3
    assert set(ties.loc[ties["image_id"] == "img05", "attribute"]) == {"pose=left", "pose=right"}
    assert ties["reason"].iloc[0] == (
        "tie: values pose=left, pose=right each held by 2 of 4 labelled images (task 'pose'); "
        "left unchanged"
    )
    block = result.dataset.labels[:, 1:]
    known = ~np.isnan(block).any(axis=1)
    np.testing.assert_array_equal(block[known].sum(axis=1), 1)
    assert np.isnan(block[4]).all()  # the image with no pose still has none


@pytest.mark.parametrize(("threshold", "images"), [(0.25, 4 + 4 + 3), (0.3, 4 + 3), (0.5, 4 + 3)])
def test_label_blanks_ambiguous_tasks_whole(task_report, threshold, images):
    # A: minority (4 - 3) / 4 = 0.25; B: 2/4 = 0.5; C: 2/3 = 0.667
    result = clean_labels(task_report, strategy="label", threshold=threshold)
    assert len(result.changes) == 3 * images  # every known one-hot cell of those images
    assert set(result.changes["attribute"]) == set(POSE)
    assert result.changes["new"].isna().all()


def test_intersection_makes_unshared_tasks_missing(task_report):
    result = clean_labels(task_report, strategy="intersection")
    assert len(result.changes) == 3 * (4 + 4 + 3)
    assert result.changes["new"].isna().all()
    assert result.changes["reason"].iloc[0] == (
        "task 'pose' not shared: 2 different values among 4 labelled images"
    )


def test_image_rare_task_value(task_report):
    result = clean_labels(task_report, strategy="image", threshold=0.3)
    assert dropped(result) == ["img03"]
    assert result.dropped["reason"].iloc[0] == (
        "rare labels (agreement < t=0.3): pose=left=0 (1 of 4 agree), pose=right=1 (1 of 4 agree)"
    )


def test_partial_task_selection_is_refused(task_report):
    with pytest.raises(InvalidInputError) as error:
        clean_labels(task_report, strategy="majority", include_attributes=["pose=left"])
    assert str(error.value) == (
        "The 'include_attributes' parameter of clean_labels names only some values of the "
        "one-of-K task 'pose'; name the task itself ('pose') so that it stays one-of-K."
    )
    result = clean_labels(task_report, strategy="majority", include_attributes=["pose"])
    assert set(result.changes["attribute"]) <= set(POSE)
    assert (
        len(clean_labels(task_report, strategy="majority", exclude_attributes=["pose"]).changes)
        == 0
    )


# --------------------------------------------------------------------------- #
# Export
# --------------------------------------------------------------------------- #
def test_write_cleaned_parquet_and_logs(task_report, tmp_path):
    result = clean_labels(task_report, strategy="majority")
    written = write_cleaned(result, tmp_path / "cleaned.parquet")
    assert written == [
        tmp_path / n for n in ("cleaned.parquet", "changes.parquet", "dropped.parquet")
    ]
    table = pq.read_table(tmp_path / "cleaned.parquet")
    assert table.column_names == ["image_id", "person", "pose"]
    assert (str(table.schema.field("person").type), str(table.schema.field("pose").type)) == (
        "int8",
        "string",
    )
    assert table.column("pose").to_pylist()[:5] == ["left", "left", "left", "left", None]
    assert table.column("person").to_pylist() == [1] * 12
    changes, meta = read_table(tmp_path / "changes.parquet", expected="changes")
    assert meta["table"] == "changes"
    assert list(changes.columns) == [
        "image_id", "component_id", "split", "attribute", "old", "new", "strategy", "reason"
    ]  # fmt: skip
    assert len(changes) == len(result.changes)
    dropped_log, _ = read_table(tmp_path / "dropped.parquet", expected="dropped")
    assert dropped_log.empty
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_write_cleaned_csv_round_trips_through_load_dataset(task_report, binary_report, tmp_path):
    blanked = clean_labels(task_report, strategy="label", threshold=0.3)
    write_cleaned(blanked, tmp_path / "blanked.csv")
    text = (tmp_path / "blanked.csv").read_text().splitlines()
    assert text[0] == "image_id,person,pose"
    assert text[1:6] == [
        "img00,1,left",
        "img01,1,left",
        "img02,1,left",
        "img03,1,right",
        "img04,1,",
    ]
    assert text[6] == "img05,1,"  # B is a tie: pose made missing

    result = clean_labels(task_report, strategy="majority")  # every value is still used
    write_cleaned(result, tmp_path / "cleaned.csv")
    again = load_dataset(tmp_path / "cleaned.csv", multiclass_columns=["pose"])
    np.testing.assert_array_equal(again.labels, result.dataset.labels)
    assert again.tasks == {"pose": POSE}

    binary = clean_labels(binary_report, strategy="image", threshold=0.3)
    write_cleaned(binary, tmp_path / "binary.csv")
    text = (tmp_path / "binary.csv").read_text().splitlines()
    assert text[0] == "image_id,split,hat,bag,glasses"
    assert len(text) == 1 + 6  # img03 and img04 dropped
    assert text[5:] == ["img06,val,0,0,", "img07,train,1,1,0"]
    back = load_dataset(tmp_path / "binary.csv")
    np.testing.assert_array_equal(back.labels, binary.dataset.labels)


def test_write_several_strategies(binary_report, tmp_path):
    results = [clean_labels(binary_report, strategy=s) for s in ("image", "majority")]
    written = write_cleaned(results, tmp_path / "out" / "cleaned.parquet")
    names = [p.name for p in written]
    assert names == [
        "cleaned.image.parquet", "cleaned.majority.parquet", "changes.parquet", "dropped.parquet"
    ]  # fmt: skip
    changes = pd.read_parquet(tmp_path / "out" / "changes.parquet")
    assert changes["strategy"].unique().tolist() == ["majority"]
    assert str(changes["old"].dtype) in {"Int8", "int8", "float64"}


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "cleaned.json",
            "The output '{p}' has the suffix '.json'; write the cleaned labels to one of "
            ".parquet, .pq, .csv, .tsv.",
        ),
        (
            "changes.parquet",
            "The output '{p}' would be overwritten by the change log written next to it "
            "(changes.parquet and dropped.parquet); choose another name such as cleaned.parquet.",
        ),
    ],
)
def test_write_cleaned_rejects_bad_outputs(binary_report, tmp_path, name, message):
    result = clean_labels(binary_report, strategy="majority")
    with pytest.raises(InvalidInputError) as error:
        write_cleaned(result, tmp_path / name)
    assert str(error.value) == message.format(p=tmp_path / name)
    with pytest.raises(InvalidInputError, match="Each strategy may be written once"):
        write_cleaned([result, result], tmp_path / "cleaned.parquet")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- #
# Bad input
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        (
            {"strategy": "foo"},
            InvalidInputError,
            "The 'strategy' parameter of clean_labels must be one of 'component', 'label', "
            "'intersection', 'image', 'majority'. Got 'foo' instead.",
        ),
        (
            {"strategy": "majority", "threshold": 0.2},
            InvalidInputError,
            "The 'majority' strategy takes no threshold; got threshold=0.2. Leave it out (it "
            "applies to the component, label and image strategies).",
        ),
        (
            {"strategy": "label", "threshold": 0.7},
            InvalidInputError,
            "The 'threshold' parameter of clean_labels must be a float in (0, 0.5] for the "
            "'label' strategy. Got 0.7 instead.",
        ),
        (
            {"strategy": "image", "threshold": "p80"},
            InvalidInputError,
            "The 'threshold' parameter of clean_labels must be a float in (0, 0.5] for the "
            "'image' strategy. Got 'p80' instead.",
        ),
        (
            {"strategy": "component", "threshold": -1},
            InvalidInputError,
            "The 'threshold' parameter of clean_labels must be a float >= 0 or a percentile "
            "like 'p80' for the 'component' strategy. Got -1 instead.",
        ),
        (
            {"strategy": "component", "threshold": "high"},
            InvalidInputError,
            "A threshold must be a percentile like 'p80' (0-100) or a number like 0.05. Got "
            "'high' instead.",
        ),
        (
            {"strategy": "component", "metric": "mean"},
            InvalidInputError,
            "The 'metric' parameter of clean_labels must be one of 'variance', "
            "'geometric_variance', 'cubic_variance', 'label_count_std'. Got 'mean' instead.",
        ),
        (
            {"strategy": "majority", "min_component_size": 0},
            InvalidInputError,
            "The 'min_component_size' parameter of clean_labels must be an int >= 1. Got 0 "
            "instead.",
        ),
        (
            {"strategy": "majority", "include_attributes": ["hat"], "exclude_attributes": ["bag"]},
            InvalidInputError,
            "Give either 'include_attributes' or 'exclude_attributes' to clean_labels, not both.",
        ),
        (
            {"strategy": "component", "exclude_attributes": ["bag"]},
            InvalidInputError,
            "The 'component' strategy drops whole components by a metric computed over every "
            "scored attribute, so it takes no attribute selection; leave out "
            "include_attributes / exclude_attributes (--attributes / --exclude-attributes).",
        ),
        (
            {"strategy": "majority", "include_attributes": ["cap"]},
            InvalidInputError,
            "The 'include_attributes' parameter of clean_labels names 'cap', which is neither "
            "an attribute nor a task of the report; valid names include 'hat', 'bag', "
            "'glasses'.",
        ),
        (
            {"strategy": "majority", "exclude_attributes": "hat"},
            InvalidTypeError,
            "The 'exclude_attributes' parameter of clean_labels must be a list of names. Got "
            "'hat' instead.",
        ),
        (
            {"strategy": "majority", "splits": "train"},
            InvalidTypeError,
            "The 'splits' parameter of clean_labels must be a non-empty list of split names "
            "such as ['train'] or ['train', 'val']. Got 'train' instead.",
        ),
        (
            {"strategy": "majority", "splits": ["dev"]},
            InvalidInputError,
            "The 'splits' parameter of clean_labels must name splits among train, val, test. "
            "Got 'dev' instead.",
        ),
    ],
)
def test_bad_options(binary_report, options, error, message):
    with pytest.raises(error) as raised:
        clean_labels(binary_report, **options)
    assert str(raised.value) == message


def test_splits_need_a_split_column(task_report):
    with pytest.raises(InvalidInputError) as error:
        clean_labels(task_report, strategy="majority", splits=["train"])
    assert str(error.value) == (
        "The report's dataset has no split column, so splits=... cannot choose images; add a "
        "'split' column to the labels table and re-run `clusterclean run`, or leave splits "
        "out to clean every image."
    )


def test_report_must_be_a_report(binary_report):
    with pytest.raises(InvalidTypeError) as error:
        clean_labels(binary_report.dataset, strategy="majority")
    assert str(error.value) == (
        "The 'report' parameter of clean_labels must be a Report (from run() or read_report()). "
        "Got Dataset instead."
    )


# --------------------------------------------------------------------------- #
# Properties
# --------------------------------------------------------------------------- #
@st.composite
def labelled_components(draw, *, consistent: bool):
    """Planted components with binary attributes, maybe a task, missing cells and splits."""
    sizes = draw(st.lists(st.integers(1, 5), min_size=1, max_size=5))
    groups = [g for g, size in enumerate(sizes) for _ in range(size)]
    n_binary = draw(st.integers(1, 3))
    n_values = draw(st.sampled_from([0, 2, 3]))
    cell = st.sampled_from([0.0, 1.0, N])
    rows = []
    for g, size in enumerate(sizes):
        if consistent:
            base = draw(st.lists(st.sampled_from([0.0, 1.0]), min_size=n_binary, max_size=n_binary))
            value = draw(st.integers(0, max(n_values - 1, 0)))
        for _ in range(size):
            if consistent:
                binary = [b if draw(st.booleans()) else N for b in base]
                task_value = value if draw(st.booleans()) else None
            else:
                binary = draw(st.lists(cell, min_size=n_binary, max_size=n_binary))
                task_value = draw(st.one_of(st.none(), st.integers(0, max(n_values - 1, 0))))
            one_hot = (
                [N] * n_values
                if task_value is None
                else np.eye(n_values)[task_value].tolist()
                if n_values
                else []
            )
            rows.append(binary + one_hot)
        del g
    attributes = [f"a{j}" for j in range(n_binary)] + [f"t=v{j}" for j in range(n_values)]
    tasks = {"t": tuple(attributes[n_binary:])} if n_values else {}
    splits = draw(
        st.lists(st.sampled_from(["train", "val"]), min_size=len(groups), max_size=len(groups))
    )
    return groups, rows, attributes, tasks, splits


PROPERTY_SETTINGS = settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY_SETTINGS
@given(labelled_components(consistent=True))
def test_consistent_dataset_is_unchanged_by_every_strategy(data):
    groups, rows, attributes, tasks, splits = data
    report = make_report(groups, rows, attributes, tasks=tasks, splits=splits)
    for strategy in ALL:
        for threshold in [None, 0.0, "p0"] if strategy == "component" else [None]:
            result = clean_labels(report, strategy=strategy, threshold=threshold)
            assert result.changes.empty and result.dropped.empty, strategy
            np.testing.assert_array_equal(result.dataset.labels, report.dataset.labels)


@PROPERTY_SETTINGS
@given(
    labelled_components(consistent=False),
    st.integers(1, 3),
    st.sampled_from([None, ["train"], ["val"]]),
)
def test_strategy_invariants(data, min_component_size, chosen_splits):
    groups, rows, attributes, tasks, splits = data
    report = make_report(groups, rows, attributes, tasks=tasks, splits=splits)
    source = report.dataset
    ids = source.ids.tolist()
    sizes = np.bincount(groups)
    small = {ids[i] for i, g in enumerate(groups) if sizes[g] < min_component_size}
    outside = {ids[i] for i, s in enumerate(splits) if chosen_splits and s not in chosen_splits}
    for strategy in ALL:
        result = clean_labels(
            report, strategy=strategy, min_component_size=min_component_size, splits=chosen_splits
        )
        kept = result.dataset.ids.tolist()
        # never adds an image; keeps input order; kept + dropped = input
        assert kept == [i for i in ids if i in set(kept)]
        assert sorted(kept + result.dropped["image_id"].tolist()) == sorted(ids)
        # singletons / small components and unselected splits are untouched
        touched = set(result.dropped["image_id"]) | set(result.changes["image_id"])
        assert not touched & (small | outside), strategy
        # the change log replays old -> new exactly
        replay = source.labels.copy()
        row_of = {image_id: i for i, image_id in enumerate(ids)}
        col_of = {a: j for j, a in enumerate(attributes)}
        for change in result.changes.itertuples():
            r, c = row_of[change.image_id], col_of[change.attribute]
            np.testing.assert_array_equal(replay[r, c], change.old)
            replay[r, c] = change.new
        keep = [row_of[i] for i in kept]
        np.testing.assert_array_equal(replay[keep], result.dataset.labels)
        assert not result.changes.duplicated(["image_id", "attribute"]).any()
        # one-of-K rows stay one-of-K (or missing)
        for task_attrs in tasks.values():
            block = result.dataset.labels[:, [col_of[a] for a in task_attrs]]
            was = source.labels[keep][:, [col_of[a] for a in task_attrs]]
            valid_before = ~np.isnan(was).any(axis=1)
            known = ~np.isnan(block).any(axis=1)
            np.testing.assert_array_equal(block[known & valid_before].sum(axis=1), 1)


@PROPERTY_SETTINGS
@given(labelled_components(consistent=False))
def test_majority_is_idempotent(data):
    groups, rows, attributes, tasks, splits = data
    report = make_report(groups, rows, attributes, tasks=tasks, splits=splits)
    first = clean_labels(report, strategy="majority")
    # majority drops nothing, and the embeddings (hence the components) are unchanged:
    # the report of the relabelled data differs only in its labels.
    again = clean_labels(replace(report, dataset=first.dataset), strategy="majority")
    np.testing.assert_array_equal(again.dataset.labels, first.dataset.labels)
    assert (again.changes["old"] == again.changes["new"]).all()  # only ties remain
