"""Attributes that may differ inside a component: detected, left unscored, kept on request."""

import numpy as np
import pandas as pd
import pytest
from planted import make_planted

from clusterclean import Dataset, run
from clusterclean.scoring import find_varying_attributes

# six components of two images (rows 0-11) and a singleton (row 12)
COMPONENTS = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6])


def _dataset(columns, tasks=None):
    table = pd.DataFrame({"image_id": [f"i{r}" for r in range(13)]})
    labels = np.array(list(columns.values()), dtype=np.float32).T
    return Dataset(table=table, labels=labels, attributes=tuple(columns), tasks=tasks or {})


def test_varying_shares_hand_computed():
    ds = _dataset(
        {
            "a": [1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1],  # never varies
            "b": [1, 0, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1],  # varies in 1 of 6 (noise)
            "c": [0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0],  # never varies
            "p": [1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 0, 1],  # varies in 5 of 6
        }
    )
    table = find_varying_attributes(COMPONENTS, ds).set_index("attribute")
    assert table.loc["p", ["n_components", "n_varying"]].tolist() == [6, 5]
    assert table.loc["b", "varying_share"] == pytest.approx(1 / 6)
    # median share of (0, 1/6, 0, 5/6) = 1/12 > the 0.05 floor
    assert table.loc["p", "ratio_to_median"] == pytest.approx((5 / 6) / (1 / 12))
    assert table["is_per_image"].to_dict() == {"p": True, "b": False, "a": False, "c": False}
    assert table.index[0] == "p"  # most varying first


def test_too_few_components_propose_nothing():
    ds = _dataset({"p": [1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 0, 1], "a": [1] * 13})
    table = find_varying_attributes(COMPONENTS, ds, min_components=7)
    assert not table["is_per_image"].any()


def test_one_of_k_task_is_decided_as_a_whole():
    # pose in {front, back}: the views of each pair differ, so both one-hot columns vary
    front = [1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 1, 0, 1]
    back = [1 - v for v in front]
    ds = _dataset(
        {"pose=back": back, "pose=front": front, "a": [1] * 13, "b": [0] * 13, "c": [1] * 13},
        tasks={"pose": ("pose=back", "pose=front")},
    )
    table = find_varying_attributes(COMPONENTS, ds)
    assert table["attribute"].tolist()[0] == "pose"
    assert "pose=front" not in table["attribute"].tolist()
    row = table.iloc[0]
    assert row["columns"] == ["pose=back", "pose=front"] and row["n_varying"] == 6
    assert row["is_per_image"]


def _with_per_image_attribute(seed=3):
    data = make_planted(n_groups=60, max_size=5, n_flips=6, seed=seed)
    rng = np.random.default_rng(seed)
    pose = rng.integers(0, 2, size=data.dataset.n_images).astype(np.float32)
    labels = np.column_stack([data.dataset.labels, pose])
    dataset = Dataset(
        table=data.dataset.table,
        labels=labels,
        attributes=(*data.dataset.attributes, "pose_left"),
    )
    return data, dataset


def test_run_leaves_detected_per_image_attributes_unscored():
    data, dataset = _with_per_image_attribute()
    report = run(labels=dataset, embeddings=data.embeddings, progress=False)
    varying = report.run_info["varying_attributes"]
    assert varying["proposed"] == ["pose_left"]
    assert report.run_info["excluded_attributes"] == ["pose_left"]
    flagged = set(zip(report.label_issues.image_id, report.label_issues.attribute))
    assert flagged == data.flipped  # the planted errors, and no "error" on pose_left
    from clusterclean.pipeline import summarize

    assert summarize(report)["per_image_attributes"] == ["pose_left"]


def test_user_keeps_an_attribute_consistent_or_turns_detection_off():
    data, dataset = _with_per_image_attribute()
    kept = run(
        labels=dataset,
        embeddings=data.embeddings,
        progress=False,
        consistent_attributes=("pose_left",),
    )
    assert kept.run_info["varying_attributes"]["kept_by_user"] == ["pose_left"]
    assert kept.run_info["excluded_attributes"] == []
    assert "pose_left" in set(kept.label_issues.attribute)
    off = run(
        labels=dataset, embeddings=data.embeddings, progress=False, detect_varying_attributes=False
    )
    assert off.run_info["varying_attributes"] == {"detected": False}
    assert "pose_left" in set(off.label_issues.attribute)


def test_cleaning_never_touches_a_detected_attribute():
    from clusterclean import clean_labels

    data, dataset = _with_per_image_attribute()
    report = run(labels=dataset, embeddings=data.embeddings, progress=False)
    result = clean_labels(report, strategy="majority")
    assert "pose_left" not in set(result.changes.attribute)
    np.testing.assert_array_equal(result.dataset.labels[:, -1], dataset.labels[:, -1])
