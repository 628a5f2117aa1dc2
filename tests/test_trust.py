"""clusterclean.trust: grouping problems split off, and the confidence of each suspected cell.

Expectations are computed by hand on components small enough to read.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from planted import CHECK_OPTIONS, make_planted, with_stranger_labels

import clusterclean as cc
from clusterclean._contracts import Dataset, Neighbors
from clusterclean.cli import build_parser
from clusterclean.errors import InvalidInputError
from clusterclean.html import render_html
from clusterclean.pipeline import summarize
from clusterclean.trust import (
    FEATURES,
    MIN_GROUPING_AGREEMENT,
    MODEL,
    cell_confidence,
    cell_features,
    check_grouping,
    find_grouping_issues,
    rank_label_issues,
)


def _issues(rows):
    frame = pd.DataFrame(rows, columns=["image_id", "component_id", "attribute", "agreement"])
    return frame.astype({"component_id": np.int32})


def test_an_image_with_many_minority_cells_is_a_grouping_problem():
    issues = _issues(
        [
            ("x", 0, "a", 0.2),
            ("x", 0, "b", 0.2),
            ("y", 1, "a", 0.25),
            ("x", 0, "c", 0.2),
            ("z", 1, "b", 0.25),
            ("z", 1, "c", 0.25),
        ]
    )
    kept, grouping = find_grouping_issues(issues, min_grouping_attributes=3)
    assert kept["image_id"].tolist() == ["y", "z", "z"]
    assert grouping.to_dict("records") == [
        {
            "image_id": "x",
            "component_id": 0,
            "n_disagreeing_attributes": 3,
            "disagreeing_attributes": ["a", "b", "c"],
        }
    ]
    kept, grouping = find_grouping_issues(issues, min_grouping_attributes=2)
    assert kept["image_id"].tolist() == ["y"]
    assert grouping["image_id"].tolist() == ["x", "z"]  # most attributes first


def test_the_confidence_is_the_logistic_of_the_standardised_features():
    features = pd.DataFrame([[0.75, 2.0, 0.0, 1.0, 0.9, 0.8]], columns=list(FEATURES))
    model = {
        "intercept": -0.5,
        "mean": [0.5, 1.0, 0.0, 0.0, 0.0, 0.0],
        "scale": [0.25, 1.0, 1.0, 1.0, 1.0, 1.0],
        "weights": [2.0, 1.0, -1.0, 0.0, 0.0, 0.0],
    }
    # z = -0.5 + 2 * (0.75 - 0.5) / 0.25 + 1 * (2 - 1) / 1 - 1 * 0 = 2.5
    assert cell_confidence(features, model)[0] == pytest.approx(1 / (1 + math.exp(-2.5)))


def test_the_shipped_model_on_one_cell_by_hand():
    """One cell, every feature at the model's mean except 'against' one scale above it:
    z = intercept + w_against = 2.489 + 0.912 = 3.401, confidence = 0.968."""
    mean = dict(zip(FEATURES, MODEL["mean"], strict=True))
    mean["against"] += MODEL["scale"][0]
    features = pd.DataFrame([mean], columns=list(FEATURES))
    assert cell_confidence(features)[0] == pytest.approx(1 / (1 + math.exp(-3.4014)), abs=1e-4)
    assert cell_confidence(features)[0] == pytest.approx(0.9677, abs=1e-4)


def _dataset(labels: list[list[float]], attributes: tuple[str, ...]) -> Dataset:
    ids = [f"i{k}" for k in range(len(labels))]
    return Dataset(
        table=pd.DataFrame({"image_id": ids}),
        labels=np.asarray(labels, dtype=np.float32),
        attributes=attributes,
        tasks={},
    )


def _one_component_run(dataset, **options):
    rng = np.random.default_rng(0)
    centre = rng.normal(size=16)
    vectors = centre + 0.01 * rng.normal(size=(dataset.n_images, 16))
    return cc.run(
        labels=dataset,
        embeddings=cc.as_embeddings(dataset.ids, vectors),
        progress=False,
        refine=False,
        rerank=False,
        min_similarity=0.9,
        detect_mixed=False,
        detect_varying_attributes=False,
        **options,
    )


# Five near-identical images; i4 is in the minority on 'a' only, i3 on 'b' and 'c'.
LABELS = [[1, 1, 0], [1, 1, 0], [1, 1, 0], [1, 0, 1], [0, 1, 0]]


def test_features_of_a_hand_made_component(tmp_path):
    dataset = _dataset(LABELS, ("a", "b", "c"))
    report = _one_component_run(dataset)
    assert report.images["component_id"].nunique() == 1
    issues = report.label_issues.set_index(["image_id", "attribute"])
    assert sorted(issues.index) == [("i3", "b"), ("i3", "c"), ("i4", "a")]
    assert report.grouping_issues.empty  # min_grouping_attributes is none by default
    features = cell_features(
        report.label_issues, report.images, report.components, report.component_attributes
    ).set_index(pd.MultiIndex.from_frame(report.label_issues[["image_id", "attribute"]]))
    # i4 on a: 4 of 5 say 1 -> against = 0.8; 5 voted; no other minority cell of i4
    assert features.loc[("i4", "a"), "against"] == pytest.approx(0.8)
    assert features.loc[("i4", "a"), "log2_n_known"] == pytest.approx(math.log2(5))
    assert features.loc[("i4", "a"), "n_other_rare"] == 0
    # i3 holds two minority cells: one other for each
    assert features.loc[("i3", "b"), "n_other_rare"] == 1
    assert features.loc[("i3", "c"), "n_disagreeing_attributes"] == 3  # a, b and c disagree
    # ranked by confidence, is_flagged at the default cut
    ranked = report.label_issues["confidence"].to_numpy()
    assert (np.diff(ranked) <= 0).all()
    assert (report.label_issues["is_flagged"] == (ranked >= 0.31)).all()
    # i3's two minority cells make its cells less believable than i4's single one
    assert issues.loc[("i4", "a"), "confidence"] > issues.loc[("i3", "b"), "confidence"]

    # with min_grouping_attributes=2, i3 (2 minority cells) is a grouping problem instead
    split = _one_component_run(dataset, min_grouping_attributes=2, out=tmp_path / "r")
    assert split.label_issues["image_id"].tolist() == ["i4"]
    assert split.grouping_issues["image_id"].tolist() == ["i3"]
    assert split.grouping_issues["disagreeing_attributes"].tolist() == [["b", "c"]]
    assert split.components["n_label_issues"].sum() == 1
    assert split.run_info.counts["grouping_issues"] == 1
    back = cc.read_report(tmp_path / "r")
    columns = ["image_id", "attribute", "confidence", "is_flagged"]
    pd.testing.assert_frame_equal(back.label_issues[columns], split.label_issues[columns])
    assert back.grouping_issues["image_id"].tolist() == ["i3"]
    assert back.grouping_issues["disagreeing_attributes"].map(list).tolist() == [["b", "c"]]
    assert "Grouped with another identity" in (tmp_path / "r" / "report.html").read_text()


def test_is_flagged_follows_min_confidence():
    data = make_planted(n_groups=30, max_size=6, n_flips=12, seed=4)
    report = cc.run(labels=data.dataset, embeddings=data.embeddings, progress=False)
    plain = report.label_issues.drop(columns=["confidence", "is_flagged"])
    for cut in (0.0, 0.5, 1.0):
        issues = rank_label_issues(
            plain,
            report.images,
            report.components,
            report.component_attributes,
            min_confidence=cut,
        ).label_issues
        assert (issues["is_flagged"] == (issues["confidence"] >= cut)).all()
    high = cc.run(
        labels=data.dataset, embeddings=data.embeddings, progress=False, min_confidence=1.0
    )
    assert not high.label_issues["is_flagged"].any()
    assert high.run_info.parameters["min_confidence"] == 1.0


def test_the_options_are_checked_with_the_stage_wording():
    empty = _issues([])
    with pytest.raises(InvalidInputError, match="'min_confidence' parameter of rank_label"):
        rank_label_issues(empty, empty, empty, empty, min_confidence=1.5)
    with pytest.raises(InvalidInputError, match="'min_grouping_attributes' parameter of run"):
        cc.RunConfig(min_grouping_attributes=0)


def test_the_cli_flags_reach_the_run_config():
    from clusterclean.cli import _config_from_args

    args = build_parser().parse_args(
        ["run", "--out", "x", "--min-confidence", "0.7", "--min-grouping-attributes", "4"]
    )
    config = _config_from_args(args)
    assert (config.min_confidence, config.min_grouping_attributes) == (0.7, 4)


def test_a_report_from_before_the_trust_stage_still_renders_and_summarizes():
    report = _one_component_run(_dataset(LABELS, ("a", "b", "c")))
    old = replace(
        report,
        label_issues=report.label_issues.drop(columns=["confidence", "is_flagged"]),
        grouping_issues=None,
    )
    summary = summarize(old)
    assert summary["flagged_label_issues"] is None and summary["grouping_issues"] is None
    assert "written before grouping problems were told apart" in render_html(old)


def test_the_grouping_section_escapes_names():
    report = _one_component_run(_dataset(LABELS, ("a", "b", "c")))
    grouping = pd.DataFrame(
        {
            "image_id": ["<b>i3</b>"],
            "component_id": np.array([0], dtype=np.int32),
            "n_disagreeing_attributes": [2],
            "disagreeing_attributes": [["<script>alert(1)</script>", 'a&b "q"']],
        }
    )
    page = render_html(replace(report, grouping_issues=grouping))
    section = page[page.index('id="grouping"') :]
    section = section[: section.index("</div></div>") if "</div></div>" in section else None]
    assert page.lower().count("<script") == 2  # the page's own two: its data and its script
    assert "&lt;script&gt;alert(1)&lt;/script&gt;, a&amp;b &quot;q&quot;" in section
    assert "&lt;b&gt;i3&lt;/b&gt;" in section
    assert "component 0: 5 images" in section


@settings(max_examples=50, deadline=None)
@given(
    against=st.lists(st.floats(0.5, 1.0), min_size=1, max_size=20),
    weight=st.floats(0.01, 10.0),
)
def test_confidence_is_a_probability_and_grows_with_the_votes_against(against, weight):
    """Invariant: in [0, 1], and monotone in a feature whose weight is positive."""
    features = pd.DataFrame(0.0, index=range(len(against)), columns=list(FEATURES))
    features["against"] = against
    model = {"intercept": 0.0, "mean": [0.0] * 6, "scale": [1.0] * 6, "weights": [weight] + [0] * 5}
    confidence = cell_confidence(features, model)
    assert ((confidence >= 0) & (confidence <= 1)).all()
    order = np.argsort(against, kind="stable")
    assert (np.diff(confidence[order]) >= 0).all()


# --------------------------------------------------------------------------- grouping check


def _edges(pairs):
    return pd.DataFrame(pairs, columns=["row_a", "row_b"])


def test_check_grouping_by_hand(monkeypatch):
    labels = np.array([[0, 0], [0, 1], [1, 1], [1, 1], [np.nan, 0]])
    ids = np.array([0, 0, 1, 1, 2])
    # (1, 2) crosses components (as after a mixed split): not a linked pair
    edges = _edges([(0, 1), (2, 3), (1, 2)])
    neighbors = Neighbors(
        np.array([[1, 2], [0, 4], [3, -1], [2, 0], [-1, -1]]),
        np.zeros((5, 2), np.float32),
    )
    check = check_grouping(labels, ids, edges, neighbors, min_pairs=2)
    # inside: (0,1) differ on attr 1, (2,3) on none: D_in = 1/2.
    # nearest outside: 0->2 (2 differ), 1->4 (attr 0 unknown, attr 1 differs: 1),
    # 2 has none, 3->0 (2), 4 none: D_out = 5/3.  agreement = 1 - 0.5 / (5/3) = 0.7
    assert check == {
        "agreement": 0.7,
        "within_disagreement": 0.5,
        "outside_disagreement": round(5 / 3, 4),
        "n_within_pairs": 2,
        "n_outside_pairs": 3,
        "min_agreement": MIN_GROUPING_AGREEMENT,
        "reliable": True,
    }
    assert check_grouping(labels, ids, edges, neighbors, min_pairs=3) is None  # 2 linked pairs
    assert check_grouping(labels[:, :0], ids, edges, neighbors, min_pairs=1) is None
    same = np.zeros((5, 2))  # nobody differs from anybody: nothing to compare against
    assert check_grouping(same, ids, edges, neighbors, min_pairs=1) is None
    swapped = check_grouping(labels[:, ::-1], ids, edges, neighbors, min_pairs=2)
    assert swapped == check
    import clusterclean.trust as trust

    monkeypatch.setattr(trust, "_PAIR_CHUNK", 1)  # pairs compared one at a time: the same
    assert check_grouping(labels, ids, edges, neighbors, min_pairs=2) == check


@settings(max_examples=60, deadline=None)
@given(
    st.integers(min_value=0, max_value=2**32 - 1),
    st.integers(min_value=4, max_value=30),
    st.integers(min_value=1, max_value=5),
)
def test_check_grouping_invariants(seed, n, m):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, (n, m)).astype(float)
    labels[rng.random((n, m)) < 0.2] = np.nan
    ids = rng.integers(0, max(1, n // 3), n)
    edges = _edges(rng.integers(0, n, (2 * n, 2)))
    indices = rng.integers(-1, n, (n, 4))
    neighbors = Neighbors(indices, np.zeros(indices.shape, np.float32))
    check = check_grouping(labels, ids, edges, neighbors, min_pairs=1)
    if check is None:
        return
    # at most 1; 1 exactly when linked images never differ; at least 0 and at most m
    assert check["agreement"] <= 1
    assert 0 <= check["within_disagreement"] <= m
    assert 0 < check["outside_disagreement"] <= m
    assert check["reliable"] == (check["agreement"] >= MIN_GROUPING_AGREEMENT)
    # renaming the components or reordering the attributes changes nothing
    order = rng.permutation(m)
    assert check_grouping(labels[:, order], ids + 7, edges, neighbors, min_pairs=1) == check


def test_a_run_warns_when_components_disagree_like_strangers(caplog):
    from clusterclean.cli import _summary_lines

    data = make_planted(n_groups=40, max_size=6, n_flips=5, seed=7)
    clean = cc.run(labels=data.dataset, embeddings=data.embeddings, **CHECK_OPTIONS)
    check = clean.run_info.grouping_check
    assert check["reliable"] and check["agreement"] > 0.8
    assert check["n_within_pairs"] >= 20
    assert not any("WARNING" in line for line in _summary_lines(clean))
    assert 'id="grouping-warning"' not in render_html(clean)
    # the same vectors, every image's labels drawn afresh: linked images are strangers
    with caplog.at_level("WARNING", logger="clusterclean.pipeline"):
        mixed = cc.run(
            labels=with_stranger_labels(data), embeddings=data.embeddings, **CHECK_OPTIONS
        )
    check = mixed.run_info.grouping_check
    assert not check["reliable"] and check["agreement"] < 0.3
    assert "grouping check: linked images disagree" in caplog.text
    lines = _summary_lines(mixed)
    assert any(line.startswith("WARNING: agreement below 0.65") for line in lines)
    assert mixed.run_info["grouping_check"] == check  # written to run.json
    page = render_html(mixed)
    assert 'id="grouping-warning"' in page and "The grouping looks unreliable." in page
