"""Edge cases of the data: each runs end to end, writes a report that reads back, and gives
the hand-computed answer.

One image; all images identical (one giant component); no edges at all; an attribute
that is always missing; zero attributes; labels naming images outside the images folder.
(Paths outside the root through ``load_dataset`` are unit-tested in tests/test_dataset.py.)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clusterclean import Dataset, as_embeddings, run
from clusterclean.cli import main
from clusterclean.report import read_report


def _dataset(labels, attributes=None) -> Dataset:
    labels = np.asarray(labels, dtype=np.float32).reshape(len(labels), -1)
    ids = [f"img{i}" for i in range(len(labels))]
    attributes = attributes or tuple(f"attr_{a}" for a in range(labels.shape[1]))
    return Dataset(table=pd.DataFrame({"image_id": ids}), labels=labels, attributes=attributes)


def _run(dataset: Dataset, vectors, tmp_path, **options):
    """Run, write, read back; return the report as read from disk."""
    embeddings = as_embeddings(dataset.ids, np.asarray(vectors, dtype=np.float32))
    run(labels=dataset, embeddings=embeddings, out=tmp_path / "r", progress=False, **options)
    report = read_report(tmp_path / "r")
    assert len(report.images) == dataset.n_images
    assert report.images["image_id"].tolist() == list(dataset.ids)
    for column in ("variance", "cubic_variance", "label_count_std", "inconsistency_score"):
        values = report.components[column].to_numpy(dtype=float)
        assert np.isfinite(values).all(), column  # never NaN scores, whatever the data
    return report


#: Every way of building the graph, spelled out (not the defaults, which may change).
GROUPINGS = {
    "plain": {"refine": False, "rerank": False, "min_similarity": 0.9},
    "refine": {"refine": True, "rerank": False, "min_similarity": 0.9},
    "rerank": {"refine": False, "rerank": True, "min_similarity": 0.5},
    "local-scaling": {"refine": False, "rerank": False, "n_local": 5, "min_similarity": 0.5},
}


def test_one_image(tmp_path):
    report = _run(_dataset([[1, 0]]), [[0.6, 0.8]], tmp_path)
    assert report.components[["component_id", "component_size"]].values.tolist() == [[0, 1]]
    assert len(report.edges) == len(report.pairs) == len(report.label_issues) == 0
    assert report.images["nearest_id"].isna().all()
    assert report.run_info["counts"]["largest_component"] == 1


@pytest.mark.parametrize("options", list(GROUPINGS.values()), ids=list(GROUPINGS))
def test_all_images_identical_make_one_component_and_find_the_odd_label(tmp_path, options):
    n = 12
    labels = np.tile([1.0, 0.0], (n, 1))
    labels[5, 1] = 1.0  # the one disagreeing cell: img5 says attr_1 = 1, the 11 others 0
    report = _run(_dataset(labels), np.ones((n, 8)), tmp_path, n_neighbors=n, **options)
    assert report.images["component_id"].nunique() == 1
    assert report.components["component_size"].tolist() == [n]
    assert len(report.edges) == n * (n - 1) // 2  # every pair, similarity 1
    assert np.allclose(report.edges["cosine"], 1.0, atol=1e-6)
    issues = report.label_issues
    assert issues[["image_id", "attribute"]].values.tolist() == [["img5", "attr_1"]]
    # m_a = 1/12 for attr_1, 0 for attr_0 (active attributes: attr_0 and attr_1)
    assert report.components["variance"].iloc[0] == pytest.approx(((1 / 12) ** 2 + 0) / 2)
    exact = report.duplicates[report.duplicates["kind"] == "near"]
    assert exact["duplicate_group_size"].tolist() == [n] * n


@pytest.mark.parametrize("options", list(GROUPINGS.values()), ids=list(GROUPINGS))
def test_no_edges_at_all(tmp_path, options):
    """Orthogonal vectors: every similarity is 0, below any positive cut."""
    n = 6
    report = _run(_dataset(np.eye(n, 2)), np.eye(n), tmp_path, **options)
    assert len(report.edges) == 0
    assert report.edges.dtypes.astype(str).tolist() == ["int32", "int32", "str", "str", "float32"]
    assert sorted(report.images["component_id"]) == list(range(n))
    assert (report.components["component_size"] == 1).all()
    assert len(report.label_issues) == len(report.pairs) == len(report.component_attributes) == 0


def test_an_attribute_that_is_always_missing(tmp_path):
    labels = np.array([[1, np.nan], [1, np.nan], [0, np.nan]])
    report = _run(_dataset(labels, ("hat", "never_known")), np.ones((3, 4)), tmp_path)
    rows = report.component_attributes.set_index("attribute")
    assert "never_known" not in set(report.label_issues["attribute"])
    if "never_known" in rows.index:  # k_a = 0: no known value, nothing to disagree on
        assert rows.loc["never_known", "n_known"] == 0
        assert rows.loc["never_known", "minority_fraction"] == 0
    assert report.label_issues[["image_id", "attribute"]].values.tolist() == [["img2", "hat"]]
    assert np.isnan(report.dataset.labels[:, 1]).all()  # kept missing, not turned into 0


def test_zero_attributes(tmp_path):
    report = _run(_dataset(np.zeros((4, 0))), np.ones((4, 3)), tmp_path)
    assert report.dataset.attributes == ()
    assert report.components["component_size"].tolist() == [4]
    assert len(report.label_issues) == len(report.component_attributes) == 0
    assert report.components["variance"].tolist() == [0.0]


@pytest.mark.parametrize("where", ["parent", "absolute"])
def test_cli_rejects_labels_naming_images_outside_the_folder(tmp_path, capsys, where):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (8, 8)).save(images / name)
    outside = tmp_path / "secret.png"
    Image.new("RGB", (8, 8)).save(outside)
    value = "../secret.png" if where == "parent" else str(outside)
    pd.DataFrame({"image": ["a.png", value], "hat": [1, 0]}).to_csv(tmp_path / "l.csv", index=False)
    code = main(
        ["run", "--images", str(images), "--labels", str(tmp_path / "l.csv")]
        + ["--out", str(tmp_path / "out"), "--no-progress"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert "resolves outside the images folder" in err[0]
    assert not (tmp_path / "out").exists()
