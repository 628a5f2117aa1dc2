import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterclean import Dataset, as_embeddings, score_components
from clusterclean.errors import InvalidInputError
from clusterclean.scoring import GEOMETRIC_EPS, count_flags, flag_name, parse_threshold

NAN = np.nan


def _dataset(rows, attributes=("a", "b", "c")):
    table = pd.DataFrame({"image_id": [f"img{i}" for i in range(len(rows))]})
    return Dataset(table=table, labels=np.array(rows, dtype=np.float32), attributes=attributes)


# component 0: rows 0-2 (b disagrees 2:1, c known twice, all 0)
# component 1: row 3 alone
# component 2: rows 4-5, a tied 1:1
ROWS = [
    [1, 1, 0],
    [1, 0, 0],
    [1, 1, NAN],
    [0, 1, 1],
    [1, 0, 0],
    [0, 0, 0],
]
COMPONENTS = np.array([0, 0, 0, 1, 2, 2])


def test_component_metrics_hand_computed():
    scores = score_components(COMPONENTS, _dataset(ROWS), thresholds=("p50", 0.05))
    c = scores.components.set_index("component_id")
    # component 0: active a (m=0) and b (m=1/3); c has no positive -> inactive
    assert c.loc[0, "variance"] == pytest.approx((0 + 1 / 9) / 2)
    assert c.loc[0, "cubic_variance"] == pytest.approx((0 + 1 / 27) / 2)
    geo = math.sqrt(GEOMETRIC_EPS * (1 / 3 + GEOMETRIC_EPS)) - GEOMETRIC_EPS
    assert c.loc[0, "geometric_variance"] == pytest.approx(geo)
    assert c.loc[0, "label_count_std"] == pytest.approx(1 / 6)  # ratios 1 and 2/3
    assert c.loc[0, "inconsistency_score"] == pytest.approx(2 * math.sqrt(1 / 18))
    assert c.loc[0, "n_active_attributes"] == 2
    assert c.loc[0, "n_disagreeing_attributes"] == 1
    # the singleton is not scored
    assert c.loc[1, ["variance", "geometric_variance", "cubic_variance"]].tolist() == [0, 0, 0]
    assert c.loc[1, "n_label_issues"] == 0
    # component 2: only a is active, m = 1/2
    assert c.loc[2, "variance"] == pytest.approx(0.25)
    assert c.loc[2, "label_count_std"] == pytest.approx(0.0)
    assert c["component_size"].tolist() == [3, 1, 2]


def test_flags_percentile_and_absolute():
    scores = score_components(COMPONENTS, _dataset(ROWS), thresholds=("p50", 0.05))
    flags = scores.component_flags
    variance = flags[flags["metric"] == "variance"]
    # p50 of the variances of the scored components {1/18, 1/4} = 0.1528: only component 2 above
    assert variance[variance["threshold"] == "p50"]["component_id"].tolist() == [2]
    assert variance[variance["threshold"] == "0.05"]["component_id"].tolist() == [0, 2]
    assert variance["value"].tolist() == pytest.approx([1 / 4, 1 / 18, 1 / 4])
    assert variance["cut"].tolist() == pytest.approx([(1 / 18 + 1 / 4) / 2, 0.05, 0.05])
    assert flag_name("label_count_std", "p80") == "label_count_std>p80"
    assert flag_name("variance", 0.05) == "variance>0.05"
    assert scores.components.attrs["thresholds"]["variance>p50"] == pytest.approx(
        (1 / 18 + 1 / 4) / 2
    )
    counts = count_flags(flags, scores.components.attrs["thresholds"])
    assert counts["variance>p50"] == 1 and counts["variance>0.05"] == 2
    # the components table has the same columns whatever the thresholds
    assert not [c for c in scores.components.columns if c.startswith("is_bad")]


def test_label_issues_hand_computed():
    scores = score_components(COMPONENTS, _dataset(ROWS))
    issues = scores.label_issues
    # only row 1's b (0 among 1, 1, 0) is a strict minority; the 1:1 tie is not flagged
    assert issues[["image_id", "attribute", "given_label"]].values.tolist() == [["img1", "b", 0]]
    row = issues.iloc[0]
    assert row.component_majority == 1
    assert row.agreement == pytest.approx(1 / 3)
    assert row.label_issue_score == pytest.approx(2 / 3)
    assert row.minority_fraction == pytest.approx(1 / 3)
    images = scores.images
    assert images["n_rare_labels"].tolist() == [0, 1, 0, 0, 0, 0]
    assert images["rare_labels"][1] == ["b"]
    assert images["label_issue_score"][1] == pytest.approx(2 / 3)
    assert images["component_size"].tolist() == [3, 3, 3, 1, 2, 2]


def test_component_attribute_table_hand_computed():
    table = score_components(COMPONENTS, _dataset(ROWS)).component_attributes
    c0 = table[table.component_id == 0].set_index("attribute")
    assert c0.loc["b", ["n_known", "n_positive"]].tolist() == [3, 2]
    assert c0.loc["c", ["n_known", "n_positive"]].tolist() == [2, 0]  # missing not counted
    assert c0.loc["b", "positive_ratio"] == pytest.approx(2 / 3)
    assert 1 not in table.component_id.tolist()  # singletons have no rows


def test_higher_agreement_bar_flags_majorities_too():
    issues = score_components(COMPONENTS, _dataset(ROWS), min_label_agreement=0.7).label_issues
    flagged = set(zip(issues.image_id, issues.attribute))
    # b's majority (2/3 < 0.7) and both sides of the tie are now flagged
    assert {("img0", "b"), ("img2", "b"), ("img1", "b"), ("img4", "a"), ("img5", "a")} == flagged
    tie = issues[issues.image_id == "img4"].iloc[0]
    assert pd.isna(tie.component_majority)


def test_excluded_attributes_are_not_scored():
    scores = score_components(COMPONENTS, _dataset(ROWS), exclude_attributes=["b"])
    assert len(scores.label_issues) == 0
    assert scores.components.loc[0, "variance"] == 0


def test_centroid_cosine():
    vectors = [[1, 0], [1, 0], [0, 1], [0, 1], [1, 1], [1, 1]]
    emb = as_embeddings([f"img{i}" for i in range(6)], np.array(vectors, dtype=float))
    scores = score_components(COMPONENTS, _dataset(ROWS), embeddings=emb)
    # component 0's mean direction is (2, 1) / sqrt(5)
    expected = [2 / math.sqrt(5), 2 / math.sqrt(5), 1 / math.sqrt(5), 1, 1, 1]
    np.testing.assert_allclose(scores.images["centroid_cosine"], expected, rtol=1e-6)


def test_bad_arguments():
    with pytest.raises(InvalidInputError, match="must match row for row"):
        score_components(np.array([0, 0]), _dataset(ROWS))
    with pytest.raises(InvalidInputError, match="unknown attributes"):
        score_components(COMPONENTS, _dataset(ROWS), exclude_attributes=["nope"])
    with pytest.raises(InvalidInputError, match="'p80'"):
        parse_threshold("high")
    assert parse_threshold("p80") == ("percentile", 80.0)
    assert parse_threshold(0.05) == ("absolute", 0.05)


@settings(max_examples=50, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 6), min_size=1, max_size=12),
    n_attributes=st.integers(1, 6),
    seed=st.integers(0, 10_000),
)
def test_consistent_components_score_zero(sizes, n_attributes, seed):
    rng = np.random.default_rng(seed)
    components = np.repeat(np.arange(len(sizes)), sizes)
    per_component = rng.choice([0.0, 1.0, np.nan], size=(len(sizes), n_attributes))
    labels = per_component[components]
    # missing cells are not votes: blank some out, the component still agrees
    labels[rng.random(labels.shape) < 0.2] = np.nan
    ds = _dataset(labels, attributes=tuple(f"x{i}" for i in range(n_attributes)))
    scores = score_components(components, ds, thresholds=("p80", 0.0))
    metrics = ["variance", "geometric_variance", "cubic_variance", "label_count_std"]
    assert (scores.components[metrics] == 0).all().all()
    assert len(scores.label_issues) == 0
    assert scores.component_flags.empty


@settings(max_examples=50, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 6), min_size=1, max_size=10),
    seed=st.integers(0, 10_000),
)
def test_metric_ranges_and_issue_minority(sizes, seed):
    rng = np.random.default_rng(seed)
    components = np.repeat(np.arange(len(sizes)), sizes)
    labels = rng.choice([0.0, 1.0, np.nan], size=(len(components), 4))
    scores = score_components(components, _dataset(labels, ("p", "q", "r", "s")))
    c = scores.components
    assert c["variance"].between(0, 0.25).all() and c["cubic_variance"].between(0, 0.125).all()
    assert c["geometric_variance"].between(0, 0.5).all()
    assert c["label_count_std"].between(0, 0.5).all()
    assert c["inconsistency_score"].between(0, 1).all()
    assert scores.label_issues["label_issue_score"].between(0.5, 1, inclusive="right").all()
    assert (scores.label_issues["minority_fraction"] < 0.5).all()
