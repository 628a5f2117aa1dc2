"""run.json is a typed, versioned record, checked on read."""

from __future__ import annotations

import json

import pytest
from planted import make_planted

from clusterclean import read_report, run
from clusterclean.errors import ReportSchemaError
from clusterclean.report import SCHEMA_VERSION
from clusterclean.run_record import RUN_RECORD_FIELDS, RunRecord


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    data = make_planted(n_groups=20, max_size=4, dim=16, n_flips=4, seed=3)
    out = tmp_path_factory.mktemp("record") / "r"
    run(labels=data.dataset, embeddings=data.embeddings, out=out, progress=False)
    return out


def test_a_written_report_reads_back_as_the_same_record(folder):
    record = read_report(folder, load_embeddings=False).run_info
    assert isinstance(record, RunRecord)
    on_disk = json.loads((folder / "run.json").read_text())
    assert record.as_dict() == on_disk and record == on_disk
    assert set(on_disk) <= set(RUN_RECORD_FIELDS)
    assert isinstance(record.run_id, str) and record.schema_version == SCHEMA_VERSION == "2"
    assert set(record.manifest) >= {"images.parquet", "report.html"}
    assert record["counts"] == record.counts  # still a mapping


def test_a_field_of_the_wrong_type_is_one_clear_error(folder, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    info = json.loads((copy / "run.json").read_text())
    info["counts"] = [1, 2]
    (copy / "run.json").write_text(json.dumps(info))
    with pytest.raises(ReportSchemaError, match="field 'counts' must be dict, not list"):
        read_report(copy)


def test_unknown_sections_are_kept_and_written_back():
    record = RunRecord.from_dict({"parameters": {"seed": 0}, "future_section": {"x": 1}})
    assert record.extra == {"future_section": {"x": 1}}
    assert record.as_dict()["future_section"] == {"x": 1}
    assert "distributed" not in record.as_dict()  # written only when set
    assert record.replace(distributed={"shards": "s"}).distributed == {"shards": "s"}
