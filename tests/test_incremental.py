import numpy as np
import pandas as pd
import pytest
from planted import make_planted

import clusterclean as cc
from clusterclean._contracts import Neighbors
from clusterclean.errors import InvalidInputError
from clusterclean.incremental import add_images, merge_neighbors
from clusterclean.report import read_table

# the plain cosine graph (this version's refinement and re-ranking off, when it has them)
_OFF = {name: False for name in ("refine", "rerank") if name in cc.RunConfig.__dataclass_fields__}
OPTIONS = {"progress": False, "n_neighbors": 5, "min_similarity": 0.8, "index": "flat", **_OFF}
# the refined (whitened, fitted on the base) and re-ranked graph
REFINED = {"progress": False, "n_neighbors": 5, "index": "flat", "refine": True, "rerank": True}


def _subset(dataset: cc.Dataset, embeddings: cc.Embeddings, rows):
    table = dataset.table.iloc[rows].reset_index(drop=True)
    part = cc.Dataset(table=table, labels=dataset.labels[rows], attributes=dataset.attributes)
    vectors = cc.Embeddings(ids=embeddings.ids[rows], vectors=embeddings.vectors[rows])
    return part, vectors


@pytest.fixture(scope="module")
def planted():
    data = make_planted(n_groups=120, max_size=6, dim=24, n_attributes=5, n_flips=12, noise=0.05)
    order = np.random.default_rng(3).permutation(data.dataset.n_images)
    return _subset(data.dataset, data.embeddings, order)


def _partition(component_ids: np.ndarray) -> set:
    return {frozenset(np.flatnonzero(component_ids == c)) for c in np.unique(component_ids)}


@pytest.mark.parametrize("options", [OPTIONS, REFINED], ids=["plain", "refined"])
def test_adding_equals_a_full_run_on_the_union(tmp_path, planted, options):
    dataset, embeddings = planted
    n_base = int(0.7 * dataset.n_images)
    base, base_vectors = _subset(dataset, embeddings, np.arange(n_base))
    new, new_vectors = _subset(dataset, embeddings, np.arange(n_base, dataset.n_images))
    cc.run(labels=base, embeddings=base_vectors, out=tmp_path / "base", **options)

    added, additions = add_images(
        tmp_path / "base",
        labels=new,
        embeddings=new_vectors,
        out=tmp_path / "added",
        progress=False,
    )
    # a base run that refined its vectors hands its fitted refinement to the new images
    refined = added.run_info.get("refinement")
    assert bool(refined) == bool(options.get("refine"))
    fitted = {}
    if refined:
        from clusterclean.refine import load_refinement

        fitted["refinement"] = load_refinement(tmp_path / "base" / refined["file"])
        assert (tmp_path / "added" / refined["file"]).is_file()
    full = cc.run(labels=dataset, embeddings=embeddings, **options, **fitted)

    np.testing.assert_array_equal(added.neighbors.indices, full.neighbors.indices)
    np.testing.assert_allclose(added.neighbors.similarities, full.neighbors.similarities, atol=1e-5)
    assert added.edges[["row_a", "row_b"]].equals(full.edges[["row_a", "row_b"]])
    added_ids = added.images["component_id"].to_numpy()
    full_ids = full.images["component_id"].to_numpy()
    assert _partition(added_ids) == _partition(full_ids)
    # same scores per component (matched through their first image) and per cell
    columns = ["component_size", "variance", "cubic_variance", "label_count_std", "n_label_issues"]
    first = pd.Series(np.arange(len(full_ids))).groupby(full_ids).min()
    by_full = full.components.set_index("component_id").loc[first.index, columns]
    by_added = added.components.set_index("component_id").loc[added_ids[first.to_numpy()], columns]
    np.testing.assert_allclose(by_added.to_numpy(float), by_full.to_numpy(float), atol=1e-6)
    key = ["image_id", "attribute", "given_label"]
    assert sorted(map(tuple, added.label_issues[key].to_numpy())) == sorted(
        map(tuple, full.label_issues[key].to_numpy())
    )
    # the written folder reads back, with the additions table
    assert cc.read_report(tmp_path / "added").dataset.n_images == dataset.n_images
    saved, _ = read_table(tmp_path / "added" / "additions.parquet", expected="additions")
    assert saved["image_id"].tolist() == list(new.ids)
    assert added.run_info["incremental"]["n_new_images"] == new.n_images
    assert additions["n_existing_in_component"].sum() > 0


def test_additions_name_duplicates_and_contradictions(tmp_path):
    # base: a at 0 and a2 at 30 degrees (x=1, one component), b at 90 degrees (x=0);
    # new: c at 2 degrees with x=0 (a near duplicate of a), d far from all
    def at(*degrees):
        rad = np.deg2rad(degrees)
        return np.c_[np.cos(rad), np.sin(rad)]

    base = cc.Dataset(
        table=pd.DataFrame({"image_id": ["a", "a2", "b"]}),
        labels=[[1.0], [1.0], [0.0]],
        attributes=["x"],
    )
    vectors = cc.as_embeddings(["a", "a2", "b"], at(0, 30, 90))
    cc.run(labels=base, embeddings=vectors, out=tmp_path / "base", **OPTIONS)
    new = cc.Dataset(
        table=pd.DataFrame({"image_id": ["c", "d"]}), labels=[[0.0], [1.0]], attributes=["x"]
    )
    far = np.array([[-1.0, -0.2]])
    report, additions = add_images(
        tmp_path / "base",
        labels=new,
        embeddings=cc.as_embeddings(["c", "d"], np.vstack([at(2), far])),
        progress=False,
    )
    assert additions["image_id"].tolist() == ["c", "d"]
    assert additions["nearest_existing_id"].tolist() == ["a", "b"]
    # cos 2 degrees = 0.99939 (>= 0.98: a near duplicate); d.b = -0.2 / |d|
    np.testing.assert_allclose(
        additions["nearest_existing_cosine"],
        [np.cos(np.deg2rad(2)), -0.2 / np.hypot(1, 0.2)],
        atol=1e-6,
    )
    assert additions["is_duplicate"].tolist() == [True, False]
    # c links to a (0.9994) and a2 (cos 28 = 0.883 >= 0.8); both say x=1, c says x=0
    assert additions["n_contradicting_pairs"].tolist() == [2, 0]
    assert additions["contradicted_attributes"].tolist() == [["x"], []]
    assert additions["n_existing_in_component"].tolist() == [2, 0]
    assert report.run_info["incremental"]["n_duplicates"] == 1
    assert report.run_info["incremental"]["n_contradicting"] == 1


def test_merge_keeps_the_best_k_stably():
    base = Neighbors(indices=np.array([[4, 2, -1]]), similarities=np.array([[0.9, 0.5, -np.inf]]))
    merged = merge_neighbors(base, np.array([[7, 8]]), np.array([[0.5, 0.95]]))
    assert merged.indices.tolist() == [[8, 4, 2]]  # 7 ties with 2 and comes later
    np.testing.assert_allclose(merged.similarities, [[0.95, 0.9, 0.5]])


@pytest.fixture()
def base_folder(tmp_path, planted):
    dataset, embeddings = planted
    base, vectors = _subset(dataset, embeddings, np.arange(40))
    cc.run(labels=base, embeddings=vectors, out=tmp_path / "base", **OPTIONS)
    return tmp_path / "base", dataset, embeddings


def test_bad_additions_are_explained(base_folder):
    folder, dataset, embeddings = base_folder
    overlap, overlap_vectors = _subset(dataset, embeddings, np.arange(35, 45))
    with pytest.raises(InvalidInputError, match=r"5 new images are already in the base report"):
        add_images(folder, labels=overlap, embeddings=overlap_vectors, progress=False)
    new, new_vectors = _subset(dataset, embeddings, np.arange(40, 50))
    renamed = cc.Dataset(table=new.table, labels=new.labels, attributes=[f"b{a}" for a in range(5)])
    with pytest.raises(InvalidInputError, match="attributes. Only in the new labels: \\['b0'"):
        add_images(folder, labels=renamed, embeddings=new_vectors, progress=False)
    narrow = cc.as_embeddings(new_vectors.ids, new_vectors.vectors[:, :8])
    with pytest.raises(InvalidInputError, match="have 8 dimensions but the base report's have 24"):
        add_images(folder, labels=new, embeddings=narrow, progress=False)
    (folder / "neighbors.parquet").unlink()
    with pytest.raises(InvalidInputError, match="has no neighbors.parquet, which adding images"):
        add_images(folder, labels=new, embeddings=new_vectors, progress=False)


@pytest.mark.slow  # three real embedding runs: ~90 s on 2 shared cores
def test_cli_adds_an_image_folder_like_a_full_run(tmp_path, capsys):
    import shutil

    from test_cli import _write_views

    from clusterclean.cli import main

    labels = _write_views(tmp_path / "all")
    is_new = labels["image"].str.endswith(("view 1.png", "view 2.png")) & labels["group"].isin(
        ["2", "3"]
    )
    for name, part in (("base", labels[~is_new]), ("new", labels[is_new])):
        (tmp_path / name).mkdir()
        for file in part["image"]:
            shutil.copy(tmp_path / "all" / file, tmp_path / name / file)
        part.to_csv(tmp_path / f"{name}.csv", index=False)
    labels.to_csv(tmp_path / "all.csv", index=False)
    common = ["--no-progress"]
    options = ["--backbone", "efficientnet_lite0", "--min-similarity", "0.8", "--workers", "0"]
    for name in ("base", "all"):
        folder, table = tmp_path / name, tmp_path / f"{name}.csv"
        args = ["run", "--images", str(folder), "--labels", str(table), "--out"]
        assert main([*args, str(tmp_path / f"report_{name}"), *options, *common]) == 0
    capsys.readouterr()
    code = main(
        [
            "run",
            "--add",
            str(tmp_path / "new"),
            "--labels",
            str(tmp_path / "new.csv"),
            "--base",
            str(tmp_path / "report_base"),
            "--out",
            str(tmp_path / "report_added"),
            *common,
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "images: 12" in out
    assert "new images: 4, duplicating a base image: " in out
    added = cc.read_report(tmp_path / "report_added")
    full = cc.read_report(tmp_path / "report_all")
    assert added.run_info["incremental"]["n_new_images"] == 4
    by_id = {
        name: dict(zip(r.images["image_id"], r.images["component_id"]))
        for name, r in (("added", added), ("full", full))
    }
    ids = sorted(by_id["full"])
    assert _partition(np.array([by_id["added"][i] for i in ids])) == _partition(
        np.array([by_id["full"][i] for i in ids])
    )
    key = ["image_id", "attribute"]
    assert sorted(added.label_issues[key].values.tolist()) == sorted(
        full.label_issues[key].values.tolist()
    )


def test_cli_add_needs_a_base_and_no_new_options(base_folder, capsys):
    from clusterclean.cli import main

    folder, _, _ = base_folder
    assert main(["run", "--add", "new", "--out", "x", "--no-progress"]) == 1
    assert "--add NEW_DIR needs --base REPORT_DIR" in capsys.readouterr().err
    code = main(["run", "--base", str(folder), "--n-neighbors", "3", "--out", "x"])
    assert code == 1
    assert (
        "With --base the options of the base run are used; drop --n-neighbors"
        in capsys.readouterr().err
    )


def test_adding_to_an_ivf_report_keeps_its_index(tmp_path, planted):
    dataset, embeddings = planted
    n_base = dataset.n_images - 40
    base, base_vectors = _subset(dataset, embeddings, np.arange(n_base))
    new, new_vectors = _subset(dataset, embeddings, np.arange(n_base, dataset.n_images))
    options = {**OPTIONS, "index": "ivf"}
    cc.run(labels=base, embeddings=base_vectors, out=tmp_path / "base", **options)
    added, additions = add_images(
        tmp_path / "base", labels=new, embeddings=new_vectors, progress=False
    )
    assert added.run_info["index"]["kind"] == "ivf"
    assert added.run_info["index"]["n_lists"] == n_base // 40
    # the approximate lists still find the planted groups' edges
    exact = cc.run(labels=dataset, embeddings=embeddings, **OPTIONS)
    found = set(zip(added.edges["row_a"], added.edges["row_b"]))
    wanted = set(zip(exact.edges["row_a"], exact.edges["row_b"]))
    assert len(found & wanted) >= 0.95 * len(wanted)
    assert len(additions) == 40


def test_cli_adds_a_batch_that_lacks_a_value_of_a_one_of_k_column(tmp_path, planted, capsys):
    # #17: the batch holds no 'adult'; it used to fail with "only in the base: ['age=adult']",
    # and --multiclass age (the base run's own) was refused with --base
    from clusterclean.cli import main

    dataset, embeddings = planted
    n_base, n_new = 60, 6
    ages = np.array(["young", "adult", "old"])[np.arange(n_base + n_new) % 3]
    table = pd.DataFrame(dataset.labels[: n_base + n_new], columns=dataset.attributes)
    table.insert(0, "image", dataset.ids[: n_base + n_new])
    table["age"] = ages
    new = table.iloc[n_base:].copy()
    new["age"] = ["young", "old", None, "old", "young", "young"]
    table.iloc[:n_base].to_csv(tmp_path / "base.csv", index=False)
    new.to_csv(tmp_path / "new.csv", index=False)
    for name, rows in (("base", slice(0, n_base)), ("new", slice(n_base, n_base + n_new))):
        np.save(tmp_path / f"{name}.npy", embeddings.vectors[rows])
        (tmp_path / f"{name}.txt").write_text("\n".join(embeddings.ids[rows]) + "\n")
    common = ["--multiclass", "age", "-q", "--no-progress"]

    def run(*args):
        return main(["run", *args, *common])

    assert (
        run(*_files(tmp_path, "base"), "--out", str(tmp_path / "base_report"), "--index", "flat")
        == 0
    )
    base = ["--base", str(tmp_path / "base_report")]
    assert run(*_files(tmp_path, "new"), *base, "--out", str(tmp_path / "added")) == 0
    added = cc.read_report(tmp_path / "added", load_embeddings=False).dataset
    assert added.tasks["age"] == ("age=adult", "age=old", "age=young")
    new_rows = added.labels[
        n_base:, [added.attributes.index(f"age={v}") for v in ("adult", "old", "young")]
    ]
    np.testing.assert_array_equal(
        new_rows,
        [[0, 0, 1], [0, 1, 0], [np.nan] * 3, [0, 1, 0], [0, 0, 1], [0, 0, 1]],
    )
    capsys.readouterr()
    # a value the base never saw: one line naming it
    new.loc[new.index[0], "age"] = "elderly"
    new.to_csv(tmp_path / "new.csv", index=False)
    assert run(*_files(tmp_path, "new"), *base, "--out", str(tmp_path / "x")) == 1
    assert capsys.readouterr().err == (
        "clusterclean: error: The new labels' one-of-K column 'age' holds elderly, a value the "
        "base report has never seen (its values: adult, old, young). Fix the value, or re-run "
        "`clusterclean run` on all the images so that the value becomes an attribute.\n"
    )
    # an option that differs from the base run's: refused, naming both values
    code = main(
        [
            "run",
            *_files(tmp_path, "new"),
            *base,
            "--out",
            str(tmp_path / "x"),
            "-q",
            "--multiclass",
            "age,attr_0",
        ]
    )
    assert code == 1
    assert "drop --multiclass (base: age, given: age,attr_0)" in capsys.readouterr().err


def _files(folder, name):
    return [
        "--labels",
        str(folder / f"{name}.csv"),
        "--embeddings",
        str(folder / f"{name}.npy"),
        "--embedding-ids",
        str(folder / f"{name}.txt"),
    ]
