"""``clusterclean clean``: exit codes, written files, printed counts and the exact error lines."""

from __future__ import annotations

import pandas as pd
import pytest
from test_strategies import ATTRS, BINARY_GROUPS, BINARY_LABELS, BINARY_SPLITS, make_report

from clusterclean.cli import main


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    """The hand-made report of test_strategies (components A, B and a singleton), on disk."""
    folder = tmp_path_factory.mktemp("clean-cli") / "report"
    make_report(BINARY_GROUPS, BINARY_LABELS, ATTRS, splits=BINARY_SPLITS, out=folder)
    return folder


def clean(*args: str) -> int:
    return main(["clean", *map(str, args)])


def test_image_strategy_writes_table_and_logs(report_dir, tmp_path, capsys):
    out = tmp_path / "cleaned.parquet"
    assert clean(report_dir, "--strategy", "image", "--threshold", "0.3", "--out", out) == 0
    stdout = capsys.readouterr().out.splitlines()
    assert stdout[:3] == [
        "image (threshold 0.3): 8 images -> 6 kept, 2 dropped; 0 cells changed, 0 ties left "
        "unchanged",
        "  split train: 6 images, 1 dropped, 0 cells changed, 0 ties",
        "  split val: 2 images, 1 dropped, 0 cells changed, 0 ties",
    ]
    assert (
        stdout[3] == f"wrote: {out}, {tmp_path / 'changes.parquet'}, {tmp_path / 'dropped.parquet'}"
    )
    table = pd.read_parquet(out)
    assert table["image_id"].tolist() == ["img00", "img01", "img02", "img05", "img06", "img07"]
    assert list(table.columns) == ["image_id", "split", "hat", "bag", "glasses"]
    dropped = pd.read_parquet(tmp_path / "dropped.parquet")
    assert dropped["image_id"].tolist() == ["img03", "img04"]
    assert set(dropped["strategy"]) == {"image"}
    assert pd.read_parquet(tmp_path / "changes.parquet").empty


def test_several_strategies_each_to_its_own_file(report_dir, tmp_path, capsys):
    out = tmp_path / "cleaned.csv"
    code = clean(
        report_dir,
        "--strategy",
        "component,image,majority",
        "--threshold",
        "component=0.05,image=0.25",
        "--splits",
        "train,val",
        "--exclude-attributes",
        "bag",
        "--out",
        out,
    )
    assert code == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "changes.parquet",
        "cleaned.component.csv",
        "cleaned.image.csv",
        "cleaned.majority.csv",
        "dropped.parquet",
    ]
    dropped = pd.read_parquet(tmp_path / "dropped.parquet")
    assert dropped[["image_id", "strategy"]].values.tolist() == [
        ["img05", "component"],
        ["img06", "component"],
        ["img04", "image"],
    ]
    changes = pd.read_parquet(tmp_path / "changes.parquet")
    assert changes[["image_id", "attribute", "strategy"]].values.tolist() == [
        ["img04", "hat", "majority"],
        ["img05", "hat", "majority"],  # tie rows, old == new
        ["img06", "hat", "majority"],
    ]
    majority = (tmp_path / "cleaned.majority.csv").read_text().splitlines()
    assert majority[5] == "img04,val,1,,1"  # hat relabelled 0 -> 1, missing bag kept
    assert "majority: 8 images -> 8 kept, 0 dropped; 1 cells changed, 2 ties left unchanged" in (
        capsys.readouterr().out
    )


def test_dry_run_prints_counts_and_writes_nothing(report_dir, tmp_path, capsys):
    out = tmp_path / "sub" / "cleaned.parquet"
    code = clean(report_dir, "--strategy", "majority,label", "--out", out, "--dry-run")
    assert code == 0
    assert not (tmp_path / "sub").exists()
    assert capsys.readouterr().out.splitlines() == [
        "majority: 8 images -> 8 kept, 0 dropped; 2 cells changed, 2 ties left unchanged",
        "  split train: 6 images, 0 dropped, 1 cells changed, 1 ties",
        "  split val: 2 images, 0 dropped, 1 cells changed, 1 ties",
        "  attribute hat: 1 cells changed, 2 ties",
        "  attribute bag: 1 cells changed, 0 ties",
        "label (threshold 0.2): 8 images -> 8 kept, 0 dropped; 11 cells changed, 0 ties left "
        "unchanged",
        "  split train: 6 images, 0 dropped, 9 cells changed, 0 ties",
        "  split val: 2 images, 0 dropped, 2 cells changed, 0 ties",
        "  attribute hat: 7 cells changed, 0 ties",
        "  attribute bag: 4 cells changed, 0 ties",
        "dry run: nothing written",
    ]


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["--strategy", "foo"],
            "clusterclean: error: The 'strategy' parameter of clean_labels must be one of "
            "'component', 'label', 'intersection', 'image', 'majority'. Got 'foo' instead.",
        ),
        (
            ["--strategy", "label", "--threshold", "0.7"],
            "clusterclean: error: The 'threshold' parameter of clean_labels must be a float in "
            "(0, 0.5] for the 'label' strategy. Got '0.7' instead.",
        ),
        (
            ["--strategy", "majority", "--threshold", "majority=0.1"],
            "clusterclean: error: The 'majority' strategy takes no threshold; got "
            "threshold='0.1'. Leave it out (it applies to the component, label and image "
            "strategies).",
        ),
        (
            ["--strategy", "majority", "--splits", "dev"],
            "clusterclean: error: The 'splits' parameter of clean_labels must name splits "
            "among train, val, test. Got 'dev' instead.",
        ),
        (
            ["--strategy", "majority", "--attributes", "cap"],
            "clusterclean: error: The 'include_attributes' parameter of clean_labels names "
            "'cap', which is neither an attribute nor a task of the report; valid names "
            "include 'hat', 'bag', 'glasses'.",
        ),
    ],
)
def test_library_errors_exit_1_with_one_line(report_dir, tmp_path, capsys, args, line):
    assert clean(report_dir, *args, "--out", tmp_path / "cleaned.parquet") == 1
    captured = capsys.readouterr()
    assert captured.err == line + "\n"
    assert list(tmp_path.iterdir()) == []


def test_missing_report_and_bad_output(report_dir, tmp_path, capsys):
    missing = tmp_path / "nothing"
    assert clean(missing, "--strategy", "image", "--out", tmp_path / "c.parquet") == 1
    assert capsys.readouterr().err == (
        f"clusterclean: error: {missing} is not a clusterclean report (no run.json); run "
        f"`clusterclean run ... --out {missing}` first.\n"
    )
    out = tmp_path / "cleaned.xlsx"
    assert clean(report_dir, "--strategy", "image", "--out", out) == 1
    assert capsys.readouterr().err == (
        f"clusterclean: error: The output '{out}' has the suffix '.xlsx'; write the cleaned "
        "labels to one of .parquet, .pq, .csv, .tsv.\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--strategy", "image"], "the following arguments are required: --out (or --dry-run)"),
        (
            ["--strategy", "image", "--attributes", "hat", "--exclude-attributes", "bag"],
            "argument --exclude-attributes: not allowed with argument --attributes",
        ),
        (
            ["--strategy", "image,image", "--dry-run"],
            "--strategy must list each strategy once; got image,image",
        ),
        (
            ["--strategy", "image", "--threshold", "label=0.2", "--dry-run"],
            "--threshold 'label=0.2' must read STRATEGY=VALUE with a strategy of --strategy "
            "(image)",
        ),
        (["--out", "x.parquet"], "the following arguments are required: --strategy"),
    ],
)
def test_usage_errors_exit_2(report_dir, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        clean(report_dir, *args)
    assert exit_info.value.code == 2
    # one usage line, the error, where to read more (not argparse's 40-line usage)
    assert capsys.readouterr().err.splitlines() == [
        "usage: clusterclean clean REPORT_DIR --strategy STRATEGY [options]",
        f"clusterclean clean: error: {message}",
        "see clusterclean clean --help",
    ]


def test_a_closed_pipe_still_gets_the_files_and_a_quiet_exit(report_dir, tmp_path):
    # `clusterclean clean ... | head -1`: the reader is gone before anything is printed
    import subprocess
    import sys

    out = tmp_path / "cleaned.parquet"
    command = [sys.executable, "-m", "clusterclean.cli", "clean", str(report_dir)]
    process = subprocess.Popen(
        [*command, "--strategy", "image", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    process.stdout.close()
    code = process.wait(timeout=120)
    stderr = process.stderr.read().decode()
    process.stderr.close()
    assert (code, stderr) == (141, "")  # 128 + SIGPIPE, like any Unix filter; no traceback
    assert pd.read_parquet(out)["image_id"].tolist()[:2] == ["img00", "img01"]
    assert (tmp_path / "changes.parquet").is_file()


@pytest.mark.parametrize("where", ["before", "after"])
def test_quiet_prints_only_errors(report_dir, tmp_path, capsys, where):
    quiet = ["-q", "clean"] if where == "before" else ["clean", "-q"]
    out = tmp_path / "cleaned.parquet"
    assert main([*quiet, str(report_dir), "--strategy", "image", "--out", str(out)]) == 0
    assert capsys.readouterr() == ("", "")
    assert out.is_file()
    missing = tmp_path / "no-report"
    assert main([*quiet, str(missing), "--strategy", "image", "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("clusterclean: error: ")
