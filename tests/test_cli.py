"""End-to-end CLI tests: real image files, real model, real Parquet; exit codes and error lines."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from planted import make_planted

from clusterclean.cli import main


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err  # one line, no traceback
    return err[0]


@pytest.fixture()
def vectors_and_labels(tmp_path):
    data = make_planted(n_groups=12, seed=9)
    emb = pd.DataFrame(
        {"image_id": data.embeddings.ids, "embedding": list(data.embeddings.vectors)}
    )
    emb.to_parquet(tmp_path / "emb.parquet")
    labels = pd.DataFrame(data.dataset.labels.astype(int), columns=data.dataset.attributes)
    labels.insert(0, "image", data.dataset.ids)
    labels.to_csv(tmp_path / "labels.csv", index=False)
    return data, tmp_path


def test_run_with_own_embeddings_and_no_images(vectors_and_labels, capsys):
    data, tmp = vectors_and_labels
    code = main(
        [
            "run",
            "--labels",
            str(tmp / "labels.csv"),
            "--embeddings",
            str(tmp / "emb.parquet"),
            "--out",
            str(tmp / "report"),
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert f"images: {data.dataset.n_images}" in out
    assert f"suspected wrong label cells: {len(data.flipped)}" in out
    assert f"report: {tmp / 'report'}" in out
    images = pd.read_parquet(tmp / "report" / "images.parquet")
    assert images["path"].isna().all()


def test_run_with_npy_embeddings_and_ids_file(vectors_and_labels, capsys):
    data, tmp = vectors_and_labels
    np.save(tmp / "emb.npy", data.embeddings.vectors)
    (tmp / "ids.txt").write_text("\n".join(data.embeddings.ids) + "\n")
    code = main(
        [
            "run",
            "--labels",
            str(tmp / "labels.csv"),
            "--embeddings",
            str(tmp / "emb.npy"),
            "--embedding-ids",
            str(tmp / "ids.txt"),
            "--out",
            str(tmp / "r2"),
            "-q",
        ]
    )
    assert code == 0
    info = json.loads((tmp / "r2" / "run.json").read_text())
    assert info["counts"]["label_issues"] == len(data.flipped)


def test_missing_labels_file_is_one_line_exit_1(tmp_path, capsys):
    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "imgs" / "a.png")
    code = main(
        [
            "run",
            "--labels",
            str(tmp_path / "nope.csv"),
            "--images",
            str(tmp_path / "imgs"),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 1
    line = _error_line(capsys)
    assert line.startswith("clusterclean: error: ")
    assert "nope.csv" in line


def test_mismatched_embedding_ids_exit_1(vectors_and_labels, capsys):
    data, tmp = vectors_and_labels
    labels = pd.read_csv(tmp / "labels.csv")
    labels.loc[0, "image"] = "somebody-else"
    labels.to_csv(tmp / "labels.csv", index=False)
    code = main(
        [
            "run",
            "--labels",
            str(tmp / "labels.csv"),
            "--embeddings",
            str(tmp / "emb.parquet"),
            "--out",
            str(tmp / "r"),
        ]
    )
    assert code == 1
    assert _error_line(capsys) == (
        "clusterclean: error: The embeddings do not match the dataset: 1 dataset images have no "
        "embedding (first: 'somebody-else'); 1 embedding ids are not in the labels table "
        f"(first: '{data.dataset.ids[0]}'). The embeddings' image_id values must equal the "
        "labels table's image ids."
    )


def test_bad_parameter_value_exit_1(vectors_and_labels, capsys):
    _, tmp = vectors_and_labels
    code = main(
        [
            "run",
            "--labels",
            str(tmp / "labels.csv"),
            "--embeddings",
            str(tmp / "emb.parquet"),
            "--out",
            str(tmp / "r"),
            "--min-similarity",
            "1.5",
        ]
    )
    assert code == 1
    assert _error_line(capsys) == (
        "clusterclean: error: The 'min_similarity' parameter of run must be a float in [-1, 1]. "
        "Got 1.5 instead."
    )


def test_usage_error_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--labels", "x.csv"])
    assert exit_info.value.code == 2
    # one usage line, the error, where to read more: not argparse's 50 lines of usage
    assert capsys.readouterr().err.splitlines() == [
        "usage: clusterclean run --out OUT [options]",
        "clusterclean run: error: the following arguments are required: --out",
        "see clusterclean run --help",
    ]
    with pytest.raises(SystemExit):
        main(["-q", "report", "r", "--bogus"])  # unknown flags name their subcommand
    assert capsys.readouterr().err.splitlines()[1:] == [
        "clusterclean report: error: unrecognized arguments: --bogus",
        "see clusterclean report --help",
    ]
    with pytest.raises(SystemExit):
        main([])
    assert capsys.readouterr().err.splitlines() == [
        "usage: clusterclean COMMAND [options]",
        "clusterclean: error: the following arguments are required: COMMAND",
        "see clusterclean --help",
    ]


@pytest.mark.parametrize(
    ("argv", "level"),
    [
        (["-q", "run"], "ERROR"),
        (["run", "-q"], "ERROR"),
        (["-v", "run"], "INFO"),
        (["-v", "run", "-v"], "DEBUG"),
        (["run"], "WARNING"),
    ],
)
def test_output_flags_on_both_sides_of_the_subcommand(vectors_and_labels, argv, level, monkeypatch):
    import logging

    import clusterclean.pipeline

    seen = {}

    def fake_run(**kwargs):
        seen["level"] = logging.getLevelName(logging.getLogger().level)
        seen["progress"] = kwargs["progress"]
        # faiss's loader says at INFO which builds it could not load: never shown
        seen["faiss"] = logging.getLogger("faiss.loader").isEnabledFor(logging.INFO)
        raise KeyboardInterrupt

    monkeypatch.setattr(clusterclean.pipeline, "run", fake_run)
    data, tmp = vectors_and_labels
    files = ["--labels", str(tmp / "labels.csv"), "--embeddings", str(tmp / "emb.parquet")]
    assert main([*argv, *files, "--out", str(tmp / "r")]) == 130
    assert seen == {"level": level, "progress": False, "faiss": False}


def test_progress_bars_only_on_a_terminal(vectors_and_labels, monkeypatch):
    import io

    import clusterclean.pipeline

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    seen = []

    def fake_run(**kwargs):
        seen.append(kwargs["progress"])
        raise KeyboardInterrupt

    monkeypatch.setattr(clusterclean.pipeline, "run", fake_run)
    data, tmp = vectors_and_labels
    argv = ["run", "--labels", str(tmp / "labels.csv"), "--embeddings", str(tmp / "emb.parquet")]
    argv += ["--out", str(tmp / "r")]
    main(argv)  # stderr is captured by pytest: not a terminal
    monkeypatch.setattr(sys, "stderr", Terminal())
    main(argv)
    main([*argv, "--no-progress"])
    main(["-q", *argv])  # -q: only errors, so no bars on a terminal either
    assert seen == [False, True, False, False]


def _write_views(folder, n_views=3):
    """Four "persons" (four bundled photos), each seen in a few slightly shifted crops."""
    from skimage import data as photos

    folder.mkdir()
    rows = []
    for p, name in enumerate(("astronaut", "coffee", "chelsea", "rocket")):
        photo = Image.fromarray(getattr(photos, name)()).convert("RGB").resize((256, 256))
        for v in range(n_views):
            view = photo.crop((8 * v, 4 * v, 200 + 8 * v, 240 + 4 * v))
            file = f"person {p}_view {v}.png"  # spaces in file names on purpose
            view.save(folder / file)
            rows.append({"image": file, "group": str(p), "hat": p % 2, "bag": int(p < 2)})
    labels = pd.DataFrame(rows)
    labels.loc[1, "hat"] = 1 - labels.loc[1, "hat"]  # person 0, view 1: a planted flip
    return labels


def test_end_to_end_on_an_image_folder(tmp_path):
    labels = _write_views(tmp_path / "images")
    # a truncated file: skipped with its reason, the run goes on without it
    (tmp_path / "images" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a whole jpeg")
    broken = {"image": "broken.jpg", "group": "9", "hat": 1, "bag": 0}
    pd.concat([labels, pd.DataFrame([broken])]).to_csv(tmp_path / "labels.csv", index=False)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "clusterclean.cli",
            "run",
            "--images",
            str(tmp_path / "images"),
            "--labels",
            str(tmp_path / "labels.csv"),
            "--out",
            str(tmp_path / "report"),
            "--backbone",
            "efficientnet_lite0",
            "--min-similarity",
            "0.8",
            "--workers",
            "0",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "images: 12 (1 unreadable, skipped: see skipped.parquet)" in result.stdout
    skipped = pd.read_parquet(tmp_path / "report" / "skipped.parquet")
    assert skipped["image_id"].tolist() == ["broken.jpg"] and skipped["reason"][0]
    images = pd.read_parquet(tmp_path / "report" / "images.parquet")
    # the three views of a person share a component, persons do not
    per_person = images.groupby(labels["group"].to_numpy())["component_id"].nunique()
    assert (per_person == 1).all()
    assert images["component_id"].nunique() == 4
    issues = pd.read_parquet(tmp_path / "report" / "label_issues.parquet")
    assert issues[["image_id", "attribute"]].values.tolist() == [["person 0_view 1.png", "hat"]]


README_TEXT = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def readme_demo_block() -> list[str]:
    """The lines between ``<!-- demo -->`` and ``<!-- /demo -->`` in README.md, fences dropped."""
    block = re.search(r"<!-- demo[^>]*-->\n```[a-z]*\n(.*?)```\n<!-- /demo -->", README_TEXT, re.S)
    assert block, "README.md has no <!-- demo --> block"
    return block.group(1).splitlines()


def test_demo_runs_offline_and_prints_what_the_readme_shows(tmp_path):
    # exactly what `make demo` runs (the full-size demo), so that the README's figures are real
    result = subprocess.run(
        [sys.executable, "-m", "clusterclean.cli", "demo", "--out", "demo-out", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "demo-out" / "report" / "run.json").is_file()
    assert (tmp_path / "demo-out" / "data" / "labels.csv").is_file()
    printed = result.stdout.splitlines()
    shown = readme_demo_block()
    # the last line names the report folder, whose absolute path is the user's
    assert printed[-1] == f"report: {(tmp_path / 'demo-out' / 'report').resolve()}"
    assert shown[-1].startswith("report: ") and shown[-1].endswith("/demo-out/report")
    assert shown[:-1] == printed[:-1], (
        "README.md's demo output is stale: paste the output of `make demo` between "
        "<!-- demo --> and <!-- /demo -->"
    )
    # the README's quick recipes read this demo's report: their output must be what they print
    recipes = load_recipes()
    blocks = recipes.recipes(README_TEXT)
    for name in recipes.QUICK:
        block = blocks[name]
        printed = recipes.run_recipe(name, block["lang"], block["code"], tmp_path)
        assert printed.replace(str(tmp_path), "/tmp/cc") == block["output"], (
            f"README.md's {name!r} recipe output is stale: run python scripts/readme_recipes.py"
        )


def load_recipes():
    """scripts/readme_recipes.py as a module."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / "readme_recipes.py"
    spec = importlib.util.spec_from_file_location("readme_recipes", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
