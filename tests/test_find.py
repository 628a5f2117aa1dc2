"""cc.find_label_issues: a cleanlab-style mask / ranking over the rows of the labels."""

import numpy as np
import pandas as pd
import pytest

import clusterclean as cc
from clusterclean.errors import InvalidInputError, InvalidTypeError

GRAPH = dict(
    adapt="none",
    refine=False,
    rerank=False,
    min_cosine=-1.0,
    min_similarity=0.99,
    n_neighbors=3,
    detect_mixed=False,
    detect_varying_attributes=False,
    label_penalty=0.0,
)


def _three_persons():
    # persons at 0, 60 and 120 degrees, four near-identical views each (rows 4p..4p+3)
    angles = np.deg2rad([d + 0.5 * k for d in (0, 60, 120) for k in range(4)])
    vectors = np.c_[np.cos(angles), np.sin(angles)].astype(np.float32)
    ids = [f"img{i:02d}" for i in range(12)]
    truth = np.array([[1, 0, 1], [0, 1, 1], [0, 0, 0]])  # a, b, c per person
    labels = np.repeat(truth, 4, axis=0)
    labels[1, 0] = 0  # one wrong cell on row 1
    labels[9, 0] = 1  # two wrong cells on row 9
    labels[9, 1] = 1
    table = pd.DataFrame(labels, columns=list("abc"))
    # the table's rows in another order than the vectors: the mask follows the table
    table.insert(0, "image_id", ids)
    table = table.iloc[::-1].reset_index(drop=True)
    return table, vectors, ids


def test_mask_and_rankings_follow_the_rows_of_the_labels():
    table, vectors, ids = _three_persons()
    row_1 = table.index[table["image_id"] == "img01"][0]  # 10 (table reversed)
    row_9 = table.index[table["image_id"] == "img09"][0]  # 2
    mask = cc.find_label_issues(table, vectors, embedding_ids=ids, flagged_only=False, **GRAPH)
    assert mask.dtype == bool and mask.shape == (12,)
    assert np.flatnonzero(mask).tolist() == sorted([row_1, row_9])
    by_count = cc.find_label_issues(
        table,
        vectors,
        embedding_ids=ids,
        flagged_only=False,
        return_indices_ranked_by="n_issues",
        **GRAPH,
    )
    assert by_count.tolist() == [row_9, row_1]  # two suspected cells before one
    # ranked by confidence: the order of each row's highest confidence in the report
    report = cc.run(labels=table, embeddings=vectors, embedding_ids=ids, progress=False, **GRAPH)
    best = report.label_issues.groupby("image_id")["confidence"].max()
    expected = [row_9, row_1] if best["img09"] > best["img01"] else [row_1, row_9]
    by_confidence = cc.find_label_issues(
        table,
        vectors,
        embedding_ids=ids,
        flagged_only=False,
        return_indices_ranked_by="confidence",
        **GRAPH,
    )
    assert by_confidence.tolist() == expected
    # flagged only: the rows with a cell at confidence >= min_confidence
    flagged = cc.find_label_issues(table, vectors, embedding_ids=ids, **GRAPH)
    rows = report.label_issues.loc[report.label_issues["is_flagged"], "image_id"]
    assert np.flatnonzero(flagged).tolist() == sorted(table.index[table["image_id"].isin(rows)])


def test_a_dataframe_of_vectors_works_like_an_array_with_ids():
    table, vectors, ids = _three_persons()
    frame = pd.DataFrame(vectors, index=pd.Index(ids, name="image_id"))
    a = cc.find_label_issues(table, frame, flagged_only=False, **GRAPH)
    b = cc.find_label_issues(table, vectors, embedding_ids=ids, flagged_only=False, **GRAPH)
    np.testing.assert_array_equal(a, b)


def test_bad_arguments_name_the_parameter():
    table, vectors, ids = _three_persons()
    with pytest.raises(InvalidInputError, match="'return_indices_ranked_by' parameter"):
        cc.find_label_issues(
            table, vectors, embedding_ids=ids, return_indices_ranked_by="score", **GRAPH
        )
    with pytest.raises(InvalidTypeError, match="'flagged_only' parameter of find_label_issues"):
        cc.find_label_issues(table, vectors, embedding_ids=ids, flagged_only="yes", **GRAPH)


def test_an_unreadable_image_is_a_row_that_is_never_an_issue(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    folder = tmp_path / "imgs"
    folder.mkdir()
    base = rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)
    for name in ("a.png", "b.png", "c.png"):  # three copies of one photo
        Image.fromarray(base).save(folder / name)
    (folder / "broken.png").write_bytes(b"not a png")
    table = pd.DataFrame(
        {"image_id": ["broken.png", "a.png", "b.png", "c.png"], "red": [1, 1, 1, 0]}
    )
    mask = cc.find_label_issues(
        table,
        images=folder,
        flagged_only=False,
        adapt="none",
        detect_mixed=False,
        detect_varying_attributes=False,
        n_neighbors=2,
        rerank=False,
        refine=False,
        min_similarity=0.9,
        label_penalty=0.0,
    )
    # rows of the table as given: broken.png (row 0) skipped, c.png (row 3) the odd label
    assert mask.tolist() == [False, False, False, True]
