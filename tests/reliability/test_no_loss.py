"""Nothing a user owns is ever lost, and a damaged report is named, not read (issue #18).

Each test replays one case found by trying clusterclean as a hostile but ordinary user:
the output folder's ownership (a manifest in run.json), inputs inside ``--out``, the cleaned
tables, reports mixed from several runs or edited, files that would block, and arguments of
the wrong type. Every refusal is one line and exit 1 on the command line.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from planted import make_planted

import clusterclean as cc
from clusterclean.cli import main
from clusterclean.embed import read_image
from clusterclean.errors import InvalidInputError, InvalidTypeError, ReportSchemaError


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("clusterclean: error: ")
    return lines[0]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A planted dataset written as an embeddings Parquet + labels CSV, and its report."""
    work = tmp_path_factory.mktemp("planted")
    data = make_planted(n_groups=12, max_size=4, n_flips=3, seed=5)
    ids = data.dataset.ids.astype(str)
    pd.DataFrame({"image_id": ids, "embedding": list(data.embeddings.vectors)}).to_parquet(
        work / "emb.parquet"
    )
    labels = pd.DataFrame(data.dataset.labels, columns=list(data.dataset.attributes))
    labels.insert(0, "image_id", ids)
    labels.to_csv(work / "labels.csv", index=False)
    report = cc.run(
        labels=work / "labels.csv",
        embeddings=work / "emb.parquet",
        out=work / "report",
        progress=False,
        min_similarity=0.8,
    )
    return work, report


def _run_args(work: Path, out: Path, *extra: str) -> list[str]:
    return [
        "run",
        "--labels",
        str(work / "labels.csv"),
        "--embeddings",
        str(work / "emb.parquet"),
        "--out",
        str(out),
        "--min-similarity",
        "0.8",
        "--no-progress",
        *extra,
    ]


# ----------------------------------------------------------------- 1-3: the output folder


@pytest.mark.parametrize("run_json", ['{"lr": 0.1}', "{}"])
def test_a_folder_with_a_foreign_run_json_is_not_replaced(planted, tmp_path, capsys, run_json):
    """Case 1: a run.json is no proof that a folder is ours; the user's files stay."""
    work, _ = planted
    folder = tmp_path / "imgsB"
    folder.mkdir()
    Image.new("RGB", (8, 8), "red").save(folder / "a.jpg")
    (folder / "run.json").write_text(run_json)
    (folder / "precious.txt").write_text("mine")
    before = _snapshot(folder)
    assert main(_run_args(work, folder)) == 1
    line = _one_error_line(capsys)
    assert "is not empty and holds no clusterclean report (a.jpg, precious.txt, run.json)" in line
    assert _snapshot(folder) == before


def test_the_images_folder_as_out_is_refused(tmp_path, capsys):
    """Case 1 with the images folder itself as --out: refused before any work."""
    images = tmp_path / "imgs"
    images.mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8), (i * 80, 0, 0)).save(images / f"{i}.jpg")
    before = _snapshot(images)
    code = main(["run", "--images", str(images), "--out", str(images), "--no-progress"])
    assert code == 1
    line = _one_error_line(capsys)
    assert f"The output folder {images} is, holds or lies inside the input {images}" in line
    assert _snapshot(images) == before


def test_a_rerun_keeps_the_users_files_in_a_report(planted, tmp_path, capsys):
    """Case 2: notes.txt and a sub-folder placed in a report stop the rerun; nothing moves."""
    work, _ = planted
    out = tmp_path / "rep"
    assert main(_run_args(work, out)) == 0
    capsys.readouterr()
    assert main(_run_args(work, out)) == 0  # a report we wrote, untouched: replaced
    capsys.readouterr()
    (out / "notes.txt").write_text("my notes")
    (out / "mysub").mkdir()
    (out / "mysub" / "x.txt").write_text("x")
    before = _snapshot(out)
    assert main(_run_args(work, out)) == 1
    line = _one_error_line(capsys)
    assert "holds files that are not part of its report (mysub/, notes.txt)" in line
    assert _snapshot(out) == before


def test_an_edited_report_file_is_not_replaced(planted, tmp_path, capsys):
    work, _ = planted
    out = tmp_path / "rep"
    assert main(_run_args(work, out)) == 0
    capsys.readouterr()
    with open(out / "report.html", "a") as fh:
        fh.write("<!-- my annotations -->")
    assert main(_run_args(work, out)) == 1
    assert "holds report.html, changed since clusterclean wrote it" in _one_error_line(capsys)
    assert (out / "report.html").read_text().endswith("<!-- my annotations -->")


def test_an_input_inside_out_is_refused(planted, tmp_path, capsys):
    """Case 3: --labels rep/labels.csv with --out rep: refused, labels.csv kept."""
    work, _ = planted
    out = tmp_path / "rep"
    out.mkdir()
    shutil.copy(work / "labels.csv", out / "labels.csv")
    args = _run_args(work, out)
    args[args.index("--labels") + 1] = str(out / "labels.csv")
    assert main(args) == 1
    line = _one_error_line(capsys)
    assert f"lies inside the input {out / 'labels.csv'}" in line
    assert (out / "labels.csv").read_bytes() == (work / "labels.csv").read_bytes()


def test_out_may_not_contain_or_lie_inside_an_input_folder(planted, tmp_path):
    work, _ = planted
    for out in (work, work.parent, work / "labels.csv", work / "emb.parquet" / "sub"):
        with pytest.raises(InvalidInputError, match="is, holds or lies inside the input"):
            cc.run(
                labels=work / "labels.csv",
                embeddings=work / "emb.parquet",
                out=out,
                progress=False,
            )


def test_out_given_as_a_symlink_writes_through_it(planted, tmp_path):
    """--out as a link: the report lands in the folder it names; the link stays a link."""
    work, _ = planted
    target = tmp_path / "real"
    link = tmp_path / "link"
    link.symlink_to(target, target_is_directory=True)
    for _ in range(2):  # the second run replaces the report through the link
        cc.run(
            labels=work / "labels.csv",
            embeddings=work / "emb.parquet",
            out=link,
            progress=False,
            min_similarity=0.8,
        )
        assert link.is_symlink() and (target / "run.json").is_file()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]


def test_add_into_the_base_report_keeps_additions_in_the_manifest(planted, tmp_path):
    """run --add writes additions.parquet inside the atomic swap and lists it."""
    work, _ = planted
    data = make_planted(n_groups=12, max_size=4, n_flips=3, seed=5)
    ids = data.dataset.ids.astype(str)
    base_ids, new_ids = ids[:-4], ids[-4:]
    frame = pd.read_csv(work / "labels.csv")
    frame[frame.image_id.isin(base_ids)].to_csv(tmp_path / "base.csv", index=False)
    frame[frame.image_id.isin(new_ids)].to_csv(tmp_path / "new.csv", index=False)
    emb = pd.read_parquet(work / "emb.parquet")
    emb[emb.image_id.isin(base_ids)].to_parquet(tmp_path / "base.parquet")
    emb[emb.image_id.isin(new_ids)].to_parquet(tmp_path / "new.parquet")
    base = tmp_path / "base"
    cc.run(
        labels=tmp_path / "base.csv", embeddings=tmp_path / "base.parquet", out=base, progress=False
    )
    cc.add_images(base, labels=tmp_path / "new.csv", embeddings=tmp_path / "new.parquet", out=base)
    manifest = json.loads((base / "run.json").read_text())["manifest"]
    assert "additions.parquet" in manifest
    assert cc.read_report(base).additions is not None
    assert cc.report.report_ownership_problem(base) is None  # still ours: a rerun may replace


# ----------------------------------------------------------------- 4: clean --out


def test_clean_refuses_to_replace_files_it_did_not_write(planted, tmp_path, capsys):
    """Case 4: a user's changes.parquet / dropped.parquet beside --out stop `clean`."""
    _, report = planted
    folder = tmp_path / "clean"
    folder.mkdir()
    pd.DataFrame({"mine": [1]}).to_parquet(folder / "changes.parquet")
    (folder / "dropped.parquet").write_text("not even parquet")
    before = _snapshot(folder)
    args = ["clean", str(report.folder), "--strategy", "majority"]
    assert main([*args, "--out", str(folder / "cleaned.parquet")]) == 1
    line = _one_error_line(capsys)
    assert "changes.parquet" in line and "dropped.parquet" in line and "--overwrite" in line
    assert _snapshot(folder) == before
    # with --overwrite the set is replaced; a rerun replaces its own files without it
    assert main([*args, "--out", str(folder / "cleaned.parquet"), "--overwrite"]) == 0
    assert main([*args, "--out", str(folder / "cleaned.parquet")]) == 0
    assert sorted(p.name for p in folder.iterdir()) == [
        "changes.parquet",
        "cleaned.parquet",
        "dropped.parquet",
    ]
    # a CSV carries no mark: an existing one is the user's
    (folder / "mine.csv").write_text("a,b\n1,2\n")
    assert main([*args, "--out", str(folder / "mine.csv")]) == 1
    assert "mine.csv" in _one_error_line(capsys)
    assert (folder / "mine.csv").read_text() == "a,b\n1,2\n"


# ----------------------------------------------------------------- 5: one report, one run


def _report_copy(report, tmp_path: Path, name: str = "copy") -> Path:
    copy = tmp_path / name
    shutil.copytree(report.folder, copy)
    return copy


def test_a_table_from_another_run_is_named(planted, tmp_path):
    """Case 5: images.parquet of another report copied in: read_report says which file."""
    work, report = planted
    other = make_planted(n_groups=20, max_size=3, seed=9)
    small = cc.run(labels=other.dataset, embeddings=other.embeddings, out=tmp_path / "other")
    copy = _report_copy(report, tmp_path)
    shutil.copy(small.folder / "images.parquet", copy / "images.parquet")
    with pytest.raises(ReportSchemaError, match=r"images.parquet comes from another run"):
        cc.read_report(copy)


def test_a_dropped_column_is_named(planted, tmp_path):
    import pyarrow.parquet as pq

    _, report = planted
    copy = _report_copy(report, tmp_path)
    table = pq.read_table(copy / "components.parquet")
    pq.write_table(table.drop_columns(["variance"]), copy / "components.parquet")
    with pytest.raises(
        ReportSchemaError, match=r"components.parquet lacks the column\(s\) \['variance'\]"
    ):
        cc.read_report(copy)


def test_run_json_is_validated(planted, tmp_path, capsys):
    """Case 5 and 7: schema_version 999, bad JSON, a list, no manifest: one line, exit 1."""
    _, report = planted
    copy = _report_copy(report, tmp_path)
    info = json.loads((copy / "run.json").read_text())
    cases = {
        json.dumps(dict(info, schema_version=999)): "has report schema version 999",
        "{not json": "run.json is not readable JSON",
        "[]": "run.json must hold a JSON object; it holds a list",
        json.dumps({k: v for k, v in info.items() if k != "manifest"}): "no run id or file",
    }
    for text, expected in cases.items():
        (copy / "run.json").write_text(text)
        with pytest.raises(ReportSchemaError, match=expected):
            cc.read_report(copy)
        for command in (["report", str(copy)], ["clean", str(copy), "--strategy", "label"]):
            assert main([*command, "--dry-run"] if command[0] == "clean" else command) == 1
            assert expected in _one_error_line(capsys)


def test_a_truncated_table_is_one_line(planted, tmp_path, capsys):
    _, report = planted
    copy = _report_copy(report, tmp_path)
    data = (copy / "edges.parquet").read_bytes()
    (copy / "edges.parquet").write_bytes(data[: len(data) // 2])
    assert main(["report", str(copy)]) == 1
    assert "edges.parquet is not a readable Parquet table" in _one_error_line(capsys)
    assert main(["clean", str(copy), "--strategy", "label", "--dry-run"]) == 1
    assert "edges.parquet is not a readable Parquet table" in _one_error_line(capsys)


def test_report_rebuilds_the_html_and_keeps_the_folder_ours(planted, tmp_path):
    _, report = planted
    copy = _report_copy(report, tmp_path)
    assert main(["report", str(copy), "--top", "3"]) == 0
    assert cc.report.report_ownership_problem(copy) is None


# ----------------------------------------------------------------- 6: nothing blocks


@pytest.fixture(scope="module")
def images_folder(tmp_path_factory):
    from skimage import data as photos

    folder = tmp_path_factory.mktemp("imgs") / "images"
    folder.mkdir()
    for name in ("astronaut", "coffee", "chelsea"):
        Image.fromarray(getattr(photos, name)()[::4, ::4]).save(folder / f"{name}.jpg")
    return folder


def test_a_named_pipe_is_skipped_without_opening_it(images_folder, tmp_path):
    """Case 6: mkfifo imgs/fifo.jpg used to block the run forever on open."""
    folder = tmp_path / "imgs"
    shutil.copytree(images_folder, folder)
    os.mkfifo(folder / "fifo.jpg")
    report = cc.run(
        images=folder, out=tmp_path / "out", backbone="efficientnet_lite0", progress=False
    )
    skipped = report.skipped.set_index("image_id")["reason"].to_dict()
    assert skipped == {"fifo.jpg": "a named pipe, not a regular file (skipped without opening it)"}
    assert report.dataset.n_images == 3


def test_a_symlink_loop_is_called_one(tmp_path):
    from clusterclean.embed import _skip_reason

    loop = tmp_path / "loop.jpg"
    loop.symlink_to(loop)
    with pytest.raises(OSError) as error:
        read_image(loop)
    assert _skip_reason(str(loop), error.value).startswith("symbolic link loop")


def test_symlinks_outside_the_images_folder_need_follow_symlinks(images_folder, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    outside = tmp_path / "elsewhere.jpg"
    shutil.copy(images_folder / "coffee.jpg", outside)
    shutil.copy(images_folder / "chelsea.jpg", folder / "chelsea.jpg")
    (folder / "link.jpg").symlink_to(outside)
    with pytest.raises(
        InvalidInputError,
        match=r"symbolic links to files outside it: 'link.jpg -> .*--follow-symlinks",
    ):
        cc.load_dataset(images=folder)
    dataset = cc.load_dataset(images=folder, follow_symlinks=True)
    assert sorted(dataset.ids) == ["chelsea.jpg", "link.jpg"]


def test_the_bomb_limit_is_max_image_pixels_itself(tmp_path, monkeypatch):
    """Pillow alone only warns between 1x and 2x MAX_IMAGE_PIXELS; clusterclean refuses."""
    Image.new("RGB", (100, 100)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100 * 100 - 1)
    with pytest.raises(Image.DecompressionBombError, match="exceeds limit of 9999 pixels"):
        read_image(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100 * 100)
    assert read_image(tmp_path / "big.png").size == (100, 100)


# ----------------------------------------------------------------- 7: types and ranges


@pytest.mark.parametrize(
    "value",
    [3, ["a.npy"], {"a": 1}, b"emb.parquet", np.zeros(3).tolist()],
    ids=["int", "list", "dict", "bytes", "float-list"],
)
def test_run_embeddings_of_a_wrong_type(planted, value):
    work, _ = planted
    with pytest.raises(InvalidTypeError, match="The 'embeddings' parameter of run must be"):
        cc.run(labels=work / "labels.csv", embeddings=value)


@pytest.mark.parametrize("value", [3, b"out", ["out"]], ids=["int", "bytes", "list"])
def test_run_out_of_a_wrong_type(planted, value):
    work, _ = planted
    with pytest.raises(InvalidTypeError, match="The 'out' parameter of run must be a folder"):
        cc.run(labels=work / "labels.csv", embeddings=work / "emb.parquet", out=value)


@pytest.mark.parametrize("value", [None, 3, b"rep", np.zeros(2)])
def test_read_report_of_a_wrong_type(value):
    with pytest.raises(InvalidTypeError, match="The 'folder' parameter of read_report"):
        cc.read_report(value)


def test_n_neighbors_is_checked_against_the_dataset(planted, capsys):
    work, _ = planted
    args = _run_args(work, work / "never")
    assert main([*args, "--n-neighbors", "1000000000"]) == 1
    line = _one_error_line(capsys)
    assert "The 'n_neighbors' parameter of run must be at most the number of images" in line
    assert not (work / "never").exists()


# ----------------------------------------------------------------- smaller items


def test_a_single_threshold_string_is_one_threshold(planted):
    work, _ = planted
    report = cc.run(labels=work / "labels.csv", embeddings=work / "emb.parquet", thresholds="p80")
    assert set(report.component_flags["threshold"]) == {"p80"}
    assert "variance>p80" in report.run_info.thresholds


def test_embedding_ids_are_stripped_like_label_ids(planted, tmp_path):
    work, _ = planted
    emb = pd.read_parquet(work / "emb.parquet")
    emb["image_id"] = " " + emb["image_id"] + " "
    emb.to_parquet(tmp_path / "spaced.parquet")
    report = cc.run(labels=work / "labels.csv", embeddings=tmp_path / "spaced.parquet")
    assert report.dataset.n_images == len(emb)


def test_control_characters_in_a_message_are_escaped(tmp_path, capsys):
    pd.DataFrame({"image_id": ["a"], "bad\x1b[31mcol": ["maybe"]}).to_csv(
        tmp_path / "l.csv", index=False
    )
    code = main(
        ["run", "--labels", str(tmp_path / "l.csv"), "--embeddings", str(tmp_path / "x.parquet")]
        + ["--out", str(tmp_path / "o")]
    )
    assert code == 1
    line = _one_error_line(capsys)
    assert "\x1b" not in line
    assert "--multiclass bad\\x1b[31mcol" in line  # the name is there, shown as an escape


def test_two_image_columns_that_disagree_are_refused(tmp_path):
    frame = pd.DataFrame({"image_id": ["a", "b"], "image": ["b.jpg", "a.jpg"], "hat": [1, 0]})
    with pytest.raises(InvalidInputError, match="has 2 columns that could name the image"):
        cc.load_dataset(frame)


def test_bidi_override_is_shown_as_an_escape_in_the_html(tmp_path):
    data = make_planted(n_groups=6, max_size=3, n_flips=2, seed=3)
    table = data.dataset.table.copy()
    table["image_id"] = [f"\u202eevil{i}" for i in range(len(table))]
    dataset = type(data.dataset)(
        table=table,
        labels=data.dataset.labels,
        attributes=data.dataset.attributes,
        tasks=data.dataset.tasks,
    )
    embeddings = cc.as_embeddings(list(table["image_id"]), data.embeddings.vectors)
    report = cc.run(labels=dataset, embeddings=embeddings, out=tmp_path / "r", progress=False)
    page = (report.folder / "report.html").read_text()
    assert "\u202e" not in page
    assert "\\u202eevil" in page


def test_one_distinct_value_is_singular():
    frame = pd.DataFrame({"image_id": ["a", "b"], "colour": ["red", "red"]})
    with pytest.raises(InvalidInputError, match=r"\(1 distinct value\)"):
        cc.load_dataset(frame)
