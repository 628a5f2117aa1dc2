import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from planted import make_planted

from clusterclean import read_report, run, write_report
from clusterclean.errors import InvalidInputError, ReportSchemaError
from clusterclean.report import METADATA_KEY, SCHEMA_VERSION, TABLES

REPORT_FILES = {
    "dataset.parquet",
    "images.parquet",
    "components.parquet",
    "component_attributes.parquet",
    "label_issues.parquet",
    "pairs.parquet",
    "edges.parquet",
    "embeddings.parquet",
    "run.json",
}


def _plain(value):
    """Nulls as None and arrays as lists, so values compare across pandas' representations."""
    if isinstance(value, (list, np.ndarray)):
        return [str(v) for v in value]
    return None if pd.isna(value) else value


@pytest.fixture(scope="module")
def planted_report(tmp_path_factory):
    data = make_planted()
    out = tmp_path_factory.mktemp("r") / "report"
    report = run(labels=data.dataset, embeddings=data.embeddings, out=out, progress=False)
    return data, report, out


def test_report_round_trip(planted_report):
    data, report, out = planted_report
    assert REPORT_FILES <= {p.name for p in out.iterdir()}
    back = read_report(out)
    for name in ("images", "components", "component_attributes", "label_issues", "edges"):
        left = getattr(report, name).reset_index(drop=True)
        right = getattr(back, name)
        assert list(right.columns) == list(left.columns), name
        for column in left.columns:
            a, b = left[column].tolist(), right[column].tolist()
            assert [_plain(v) for v in a] == [_plain(v) for v in b], (name, column)
    np.testing.assert_array_equal(back.dataset.labels, data.dataset.labels)
    assert back.dataset.attributes == data.dataset.attributes
    np.testing.assert_array_equal(back.embeddings.vectors, report.embeddings.vectors)
    assert back.run_info["schema_version"] == SCHEMA_VERSION


def test_every_table_carries_schema_metadata_and_declared_types(planted_report):
    _, _, out = planted_report
    written = [name for name in TABLES if (out / f"{name}.parquet").is_file()]
    assert {f"{name}.parquet" for name in written} >= REPORT_FILES - {"run.json"}
    for name in written:
        schema = pq.read_schema(out / f"{name}.parquet")
        meta = json.loads(schema.metadata[METADATA_KEY])
        assert meta["version"] == SCHEMA_VERSION
        assert meta["creator"]["library"] == "clusterclean"
        assert "higher = more suspicious" in meta["score_direction"]
        declared = [c for c in TABLES[name] if c in schema.names]
        assert schema.names[: len(declared)] == declared


def test_run_json_has_parameters_versions_timings_counts(planted_report):
    data, _, out = planted_report
    info = json.loads((out / "run.json").read_text())
    assert info["parameters"]["n_neighbors"] == 10
    assert {"numpy", "pandas", "faiss", "clusterclean"} <= set(info["versions"])
    assert {"load", "embed", "graph", "components", "scores", "write", "total"} <= set(
        info["timings"]
    )
    assert info["counts"]["images"] == data.dataset.n_images


def test_unknown_schema_version_is_rejected(planted_report, tmp_path):
    _, report, _ = planted_report
    out = write_report(report, tmp_path / "old")
    table = pq.read_table(out / "edges.parquet")
    meta = json.loads(table.schema.metadata[METADATA_KEY])
    meta["version"] = "999"
    pq.write_table(
        table.replace_schema_metadata({METADATA_KEY: json.dumps(meta)}), out / "edges.parquet"
    )
    with pytest.raises(ReportSchemaError, match="schema version '999'.*reads versions 1, 2"):
        read_report(out)


def test_not_a_report_folder(tmp_path):
    with pytest.raises(ReportSchemaError, match="not a clusterclean report"):
        read_report(tmp_path)


def test_refuses_to_overwrite_a_foreign_folder(planted_report, tmp_path):
    _, report, _ = planted_report
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(InvalidInputError, match="not empty and holds no clusterclean report"):
        write_report(report, tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "precious"


def test_rewrite_replaces_the_whole_report_and_leaves_no_temporaries(planted_report, tmp_path):
    _, report, _ = planted_report
    out = tmp_path / "rep"
    write_report(report, out)
    first = {p.name for p in out.iterdir()}
    write_report(report, out)
    assert {p.name for p in out.iterdir()} == first >= REPORT_FILES
    assert [p.name for p in tmp_path.iterdir()] == ["rep"]
    # a file clusterclean did not write is never replaced: the rewrite is refused (issue #18)
    (out / "stale.parquet").write_text("from an older run")
    with pytest.raises(InvalidInputError, match=r"not part of its report \(stale.parquet\)"):
        write_report(report, out)
    assert (out / "stale.parquet").read_text() == "from an older run"
    assert [p.name for p in tmp_path.iterdir()] == ["rep"]


def test_unknown_column_is_refused(planted_report, tmp_path):
    _, report, _ = planted_report
    from clusterclean.report import write_table

    with pytest.raises(InvalidInputError, match="not part of the 'edges' table schema"):
        write_table("edges", report.edges.assign(extra=1), tmp_path / "e.parquet")
    assert not (tmp_path / "e.parquet").exists()


def test_pairs_report_differing_labels_and_cross_split(tmp_path):
    data = make_planted(n_groups=4, max_size=3, n_flips=0, seed=3)
    table = data.dataset.table.copy()
    # two consecutive rows of one group, in different splits, made to differ on attr_0
    first = int(np.flatnonzero(data.groups[:-1] == data.groups[1:])[0])
    table["split"] = "train"
    table.loc[first + 1, "split"] = "val"
    labels = data.dataset.labels.copy()
    labels[first + 1, 0] = 1 - labels[first, 0]
    dataset = type(data.dataset)(table=table, labels=labels, attributes=data.dataset.attributes)
    report = run(labels=dataset, embeddings=data.embeddings, progress=False)
    pair = report.pairs[
        (report.pairs.image_id_a == table.image_id[first])
        & (report.pairs.image_id_b == table.image_id[first + 1])
    ].iloc[0]
    assert pair.differing_attributes == ["attr_0"] and pair.n_differing_labels == 1
    assert pair.is_cross_split and (pair.split_a, pair.split_b) == ("train", "val")
    same = report.pairs[~report.pairs.is_cross_split]
    assert (same.split_a == same.split_b).all()
    assert isinstance(report.pairs, pd.DataFrame)


# --------------------------------------------------------------- schema 1 -> 2

V1_REPORT = __import__("pathlib").Path(__file__).parent / "data" / "report_v1"


def test_a_schema_1_report_reads_as_the_same_run_written_today(tmp_path):
    """tests/data/report_v1 was written by clusterclean at schema 1 (commit 9d87475) from
    make_planted(n_groups=12, max_size=5, dim=8, n_flips=4, noise=0.02, seed=3) with
    thresholds p80 and 0.05. Read today, it must hold what the same run gives today,
    under today's names; the files themselves are left as they were."""
    before = {p.name: p.read_bytes() for p in V1_REPORT.iterdir()}
    old = read_report(V1_REPORT)
    assert old.run_info.schema_version == "1"
    data = make_planted(n_groups=12, max_size=5, dim=8, n_flips=4, noise=0.02, seed=3)
    run(labels=data.dataset, embeddings=data.embeddings, thresholds=("p80", 0.05), out=tmp_path)
    new = read_report(tmp_path)
    for name in ("images", "components", "label_issues", "pairs", "edges", "duplicates"):
        a, b = getattr(old, name), getattr(new, name)
        assert a.columns.tolist() == b.columns.tolist(), name
        pd.testing.assert_frame_equal(a, b, check_dtype=False, obj=name)
    pd.testing.assert_frame_equal(
        old.component_flags, new.component_flags, check_dtype=False, obj="component_flags"
    )
    assert len(new.component_flags) > 0 and set(new.component_flags["threshold"]) == {
        "p80",
        "0.05",
    }
    assert old.run_info.thresholds == pytest.approx(new.run_info.thresholds)
    assert old.run_info.counts["flagged_components"] == new.run_info.counts["flagged_components"]
    np.testing.assert_array_equal(old.neighbors.indices, new.neighbors.indices)
    assert {p.name: p.read_bytes() for p in V1_REPORT.iterdir()} == before


def test_a_schema_1_table_read_alone_gets_todays_names():
    from clusterclean.report import RENAMED_IN_2, read_table

    frame, meta = read_table(V1_REPORT / "label_issues.parquet", expected="label_issues")
    assert meta["version"] == "1" and "label_issue_score" in frame.columns
    assert "score" not in frame.columns and RENAMED_IN_2["label_issues"] == {
        "score": "label_issue_score"
    }


def test_a_schema_1_report_can_be_cleaned_and_rendered(tmp_path):
    import shutil

    from clusterclean.cli import main

    folder = tmp_path / "old"
    shutil.copytree(V1_REPORT, folder)
    assert main(["report", str(folder)]) == 0
    assert (folder / "report.html").stat().st_size > 0
    assert read_report(folder).run_info.schema_version == "1"  # still owned, still readable
    cleaned = tmp_path / "cleaned.parquet"
    assert main(["clean", str(folder), "--strategy", "label", "--out", str(cleaned)]) == 0
    assert len(pd.read_parquet(cleaned)) > 0


def test_new_images_can_be_added_to_a_schema_1_report(tmp_path):
    import shutil

    from clusterclean.incremental import add_images

    shutil.copytree(V1_REPORT, tmp_path / "old")
    data = make_planted(n_groups=12, max_size=5, dim=8, n_flips=4, noise=0.02, seed=3)
    ids = np.array([f"new_{i}" for i in data.embeddings.ids[:3]], dtype=object)
    labels = pd.DataFrame(data.dataset.labels[:3], columns=data.dataset.attributes)
    labels.insert(0, "image_id", ids)
    vectors = pd.DataFrame(data.embeddings.vectors[:3] + 0.001, index=ids)
    add_images(tmp_path / "old", labels=labels, embeddings=vectors, out=tmp_path / "new")
    added = read_report(tmp_path / "new")
    assert added.run_info.schema_version == SCHEMA_VERSION  # the new report is written today
    # each new image is a near copy of the base image it was made from
    nearest = added.additions.set_index("image_id")["nearest_existing_id"]
    assert nearest.to_dict() == {f"new_{i}": i for i in data.embeddings.ids[:3]}
    assert "nearest_existing_cosine" in added.additions.columns
