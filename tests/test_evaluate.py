"""Tests of clusterclean.evaluate, with hand-computed expected values."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterclean._contracts import Dataset, as_embeddings
from clusterclean.errors import InvalidInputError, InvalidTypeError
from clusterclean.evaluate import (
    cleaning_scores,
    detection_scores,
    evaluate_cleaning,
    grouping_scores,
    label_frame,
    macro_f1,
    parse_injection,
    pca_features,
    probe_f1,
    read_benchmark,
    train_val_experiments,
    write_evaluation,
)

# --------------------------------------------------------------------------- grouping


def test_grouping_scores_hand_computed():
    # component 0 = {a, a, b}, 1 = {b, b}, 2 = {c}.
    # correct pairs: C(2,2) [a,a] + C(2,2) [b,b in comp 1] = 2;
    # predicted: C(3,2) + C(2,2) = 4; true: C(2,2) [a] + C(3,2) [b] = 4.
    # ARI = (2 - 4*4/15) / ((4+4)/2 - 4*4/15) = (14/15) / (44/15) = 7/22.
    got = grouping_scores([0, 0, 0, 1, 1, 2], ["a", "a", "b", "b", "b", "c"])
    assert got["n_correct_pairs"] == 2
    assert got["n_predicted_pairs"] == 4 and got["n_true_pairs"] == 4
    assert got["pair_precision"] == 0.5 and got["pair_recall"] == 0.5 and got["pair_f1"] == 0.5
    assert got["adjusted_rand"] == pytest.approx(7 / 22)
    assert got["largest_component"] == 3
    assert got["n_components"] == 3 and got["n_persons"] == 3 and got["n_images"] == 6


def test_grouping_all_singletons_has_no_false_merge_and_no_recall():
    got = grouping_scores([10, 11, 12], ["p", "p", "q"])
    assert (got["pair_precision"], got["pair_recall"], got["pair_f1"]) == (1.0, 0.0, 0.0)
    assert got["largest_component"] == 1


def test_grouping_perfect_partition_with_relabelled_ids():
    got = grouping_scores([7, 7, 3, 3, 3], [1, 1, 2, 2, 2])
    assert (got["pair_precision"], got["pair_recall"], got["pair_f1"]) == (1.0, 1.0, 1.0)
    assert got["adjusted_rand"] == pytest.approx(1.0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), min_size=1, max_size=25))
def test_grouping_pair_counts_match_brute_force(pairs):
    predicted = [p for p, _ in pairs]
    truth = [t for _, t in pairs]
    same_pred = same_true = both = 0
    for i, j in itertools.combinations(range(len(pairs)), 2):
        sp, st_ = predicted[i] == predicted[j], truth[i] == truth[j]
        same_pred += sp
        same_true += st_
        both += sp and st_
    got = grouping_scores(predicted, truth)
    assert (got["n_predicted_pairs"], got["n_true_pairs"], got["n_correct_pairs"]) == (
        same_pred,
        same_true,
        both,
    )


def test_grouping_rejects_mismatched_and_missing():
    with pytest.raises(InvalidInputError, match="got 2 predicted component ids but 3 true"):
        grouping_scores([0, 1], ["a", "b", "c"])
    with pytest.raises(
        InvalidInputError, match="'truth' parameter of grouping_scores has a missing"
    ):
        grouping_scores([0, 1], ["a", None])


# --------------------------------------------------------------------------- detection


def test_detection_scores_maps_one_hot_cells_to_their_task():
    flagged = pd.DataFrame(
        {
            "image_id": ["i1", "i1", "i2", "i3"],
            "attribute": ["a", "a", "b", "age=old"],
        }
    )
    planted = pd.DataFrame({"image_id": ["i1", "i3", "i4"], "attribute": ["a", "age", "c"]})
    tasks = {"age": ("age=old", "age=young")}
    got = detection_scores(flagged, planted, tasks=tasks)
    # flagged cells {i1 a, i2 b, i3 age}, planted {i1 a, i3 age, i4 c}: 2 hits of 3 and 3.
    assert got == {
        "precision": pytest.approx(2 / 3),
        "recall": pytest.approx(2 / 3),
        "f1": pytest.approx(2 / 3),
        "n_flagged": 3,
        "n_planted": 3,
        "n_true_positives": 2,
    }
    only_c = detection_scores(flagged, planted, tasks=tasks, attributes=["c"])
    assert (only_c["precision"], only_c["recall"], only_c["f1"]) == (1.0, 0.0, 0.0)
    without_tasks = detection_scores(flagged, planted)
    assert without_tasks["n_true_positives"] == 1


def test_detection_scores_rejects_tables_without_cells():
    planted = pd.DataFrame({"image_id": ["x"], "attribute": ["a"]})
    with pytest.raises(
        InvalidInputError, match=r"'flagged' table .* lacks the columns \['attribute'\]"
    ):
        detection_scores(pd.DataFrame({"image_id": ["x"]}), planted)
    with pytest.raises(InvalidTypeError, match="'planted' parameter of detection_scores must be"):
        detection_scores(planted, [("x", "a")])


# --------------------------------------------------------------------------- cleaning


def _frame(rows: dict[str, list[float]]) -> pd.DataFrame:
    return pd.DataFrame.from_dict(rows, orient="index", columns=["a", "b"]).rename_axis("image_id")


def test_cleaning_scores_hand_computed():
    nan = np.nan
    truth = _frame({"i1": [1, 0], "i2": [1, 1], "i3": [0, 0]})
    noisy = _frame({"i1": [0, 0], "i2": [1, nan], "i3": [0, 1]})  # planted: i1 a, i3 b
    cleaned = _frame({"i1": [1, nan], "i2": [0, nan]})  # i3 dropped
    got = cleaning_scores(noisy, cleaned, truth)
    # labelled: i1a i1b i2a i3a i3b = 5; changed: all 5 (i1a, i2a relabelled; i1b, i3a, i3b
    # removed); hits i1a, i3b -> precision 2/5, recall 2/2, F1 = 0.8 / 1.4 = 4/7.
    assert got["n_cells"] == 5 and got["n_planted"] == 2 and got["n_changed"] == 5
    assert got["precision"] == pytest.approx(0.4) and got["recall"] == 1.0
    assert got["f1"] == pytest.approx(4 / 7)
    assert (got["n_relabelled"], got["n_removed"], got["n_images_removed"]) == (2, 3, 1)
    assert got["n_corrected"] == 1  # i1 a
    assert got["n_clean_removed"] == 2  # i1 b, i3 a
    assert got["n_clean_corrupted"] == 1  # i2 a
    assert got["n_errors_left"] == 1  # i2 a among the 2 kept cells
    assert got["error_rate_before"] == pytest.approx(2 / 5)
    assert got["error_rate_after"] == pytest.approx(1 / 2)


def test_cleaning_scores_of_doing_nothing():
    truth = _frame({"i1": [1, 0], "i2": [1, 1]})
    noisy = _frame({"i1": [0, 0], "i2": [1, 1]})
    got = cleaning_scores(noisy, noisy, truth)
    assert got["n_changed"] == 0 and got["precision"] == 1.0 and got["recall"] == 0.0
    assert got["n_errors_left"] == 1 and got["error_rate_after"] == pytest.approx(1 / 4)


def test_cleaning_scores_rejects_new_rows_and_partial_truth():
    noisy = _frame({"i1": [0, 0]})
    with pytest.raises(InvalidInputError, match="has 1 image ids that the noisy table lacks"):
        cleaning_scores(noisy, _frame({"i1": [0, 0], "zz": [1, 1]}), noisy)
    with pytest.raises(InvalidInputError, match="the truth must cover every labelled cell"):
        cleaning_scores(noisy, noisy, _frame({"i1": [0, np.nan]}))
    with pytest.raises(InvalidInputError, match=r"lacks the attribute columns \['b'\]"):
        cleaning_scores(noisy, noisy[["a"]], noisy)


def test_label_frame_from_dataset():
    table = pd.DataFrame({"image_id": ["x", "y"], "path": [None, None]})
    dataset = Dataset(table, np.array([[1, np.nan], [0, 1]]), ("a", "b"))
    frame = label_frame(dataset)
    assert list(frame.index) == ["x", "y"] and list(frame.columns) == ["a", "b"]
    assert np.isnan(frame.loc["x", "b"]) and frame.loc["y", "b"] == 1.0


# --------------------------------------------------------------------------- downstream


def _separable(n: int, seed: int):
    """2-D points, well separated on each axis: a = (x0 > 0), b = (x1 > 0)."""
    rng = np.random.default_rng(seed)
    sign = rng.integers(0, 2, size=(n, 2))
    x = (sign * 2 - 1) * rng.uniform(0.5, 2.0, size=(n, 2))
    ids = [f"s{seed}_{k}" for k in range(n)]
    labels = pd.DataFrame(sign.astype(float), index=ids, columns=["a", "b"])
    return ids, x, labels


def test_probe_f1_separable_one_class_and_empty_attributes():
    train_ids, x_train, train = _separable(40, 0)
    test_ids, x_test, test = _separable(20, 1)
    emb = as_embeddings(train_ids + test_ids, np.vstack([x_train, x_test]), normalize=False)
    train = train.assign(c=0.0, d=0.0)
    test = test.assign(c=test["a"], d=0.0)
    got = probe_f1(emb, train, test)
    assert got["a"] == 1.0 and got["b"] == 1.0
    assert got["c"] == 0.0  # trained on one class: predicts 0, misses every positive
    assert np.isnan(got["d"])  # no positive to find, none predicted: undefined
    assert macro_f1(got, {"ab": ["a", "b"], "d": ["d"]}) == {
        "macro_f1": pytest.approx(2 / 3),
        "macro_f1_ab": 1.0,
        "macro_f1_d": pytest.approx(np.nan, nan_ok=True),
    }


def test_probe_f1_needs_an_embedding_per_row():
    ids, x, labels = _separable(10, 0)
    emb = as_embeddings(ids[:-1], x[:-1], normalize=False)
    with pytest.raises(InvalidInputError, match="'train' labels of probe_f1 hold 1 image ids"):
        probe_f1(emb, labels, labels)
    with pytest.raises(InvalidTypeError, match="'embeddings' parameter of probe_f1 must be"):
        probe_f1(x, labels, labels)


def test_train_val_experiments_hand_computed():
    train_ids, x_train, train = _separable(40, 0)
    val_ids, x_val, val = _separable(10, 1)
    val = val[["a"]]
    train = train[["a"]]
    emb = as_embeddings(train_ids + val_ids, np.vstack([x_train, x_val]), normalize=False)
    truth = pd.concat([train, val])
    raw = truth.copy()
    positive = val.index[val["a"] == 1]
    raw.loc[positive[0], "a"] = 0.0  # one wrong val label: TP = n_pos - 1, FP = 1
    cleaned = raw.drop(index=[positive[0], train_ids[0]])
    got = train_val_experiments(
        emb, raw, cleaned, train_ids=train_ids, val_ids=val_ids, truth=truth
    ).set_index("experiment")
    n_pos = len(positive)
    noisy_f1 = 2 * (n_pos - 1) / (2 * (n_pos - 1) + 1)
    assert list(got.index) == ["A", "B", "C", "D"]
    assert got["train_labels"].tolist() == ["raw", "cleaned", "cleaned", "raw"]
    assert got["n_train"].tolist() == [40, 39, 39, 40]
    assert got["n_val"].tolist() == [10, 9, 10, 9]
    assert got.loc["A", "macro_f1"] == pytest.approx(noisy_f1)
    assert got.loc["C", "macro_f1"] == pytest.approx(noisy_f1)
    assert got.loc["B", "macro_f1"] == 1.0 and got.loc["D", "macro_f1"] == 1.0
    assert (got["true_macro_f1"] == 1.0).all()


# --------------------------------------------------------------------------- end to end


def test_parse_injection():
    assert parse_injection("disagreement:0.1") == ("disagreement", 0.1)
    assert parse_injection("class_conditional:0") == ("class_conditional", 0.0)
    for bad in ("disagreement", "typo:0.1", "uniform:0.7", "uniform:x"):
        with pytest.raises(InvalidInputError, match=f"KIND:RATE .* Got '{bad}' instead"):
            parse_injection(bad)


def test_pca_features_keeps_the_top_axes_of_the_train_rows():
    # Train rows vary along axis 0 only: the first principal axis is +-e0.
    ids = ["t0", "t1", "t2", "x"]
    vectors = np.array([[1.0, 0, 0], [3.0, 0, 0], [5.0, 0, 0], [0.0, 7.0, 0]])
    emb = as_embeddings(ids, vectors, normalize=False)
    got = pca_features(emb, ["t0", "t1", "t2"], 1)
    assert np.abs(got.vectors[:, 0]).tolist() == pytest.approx([2.0, 0.0, 2.0, 3.0])
    assert pca_features(emb, ["t0"], 5) is emb
    with pytest.raises(InvalidInputError, match="1 of 1 have none"):
        pca_features(emb, ["nope"], 1)


def _perfect_groups(n_groups: int, n_views: int, seed: int):
    """Labels + embeddings whose kNN components are exactly the groups."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_groups, 32))
    vectors = np.repeat(centers, n_views, axis=0) + rng.normal(
        scale=1e-3, size=(n_groups * n_views, 32)
    )
    groups = np.repeat([f"g{k}" for k in range(n_groups)], n_views)
    split = np.repeat(np.array(["train", "train", "val", "test"] * n_groups)[:n_groups], n_views)
    person_labels = rng.integers(0, 2, size=(n_groups, 4))
    labels = pd.DataFrame(np.repeat(person_labels, n_views, axis=0), columns=list("abcd"))
    labels.insert(0, "image_id", [f"im{k}" for k in range(len(groups))])
    labels.insert(1, "group", groups)
    labels.insert(2, "split", split)
    return labels, as_embeddings(labels["image_id"], vectors)


def test_evaluate_cleaning_with_perfect_components_finds_every_disagreement():
    from clusterclean.pipeline import RunConfig

    labels, emb = _perfect_groups(16, 5, seed=0)
    result = evaluate_cleaning(
        labels,
        kind="disagreement",
        rate=0.3,
        embeddings=emb,
        config=RunConfig(min_similarity=0.9, n_neighbors=6),
        attribute_groups={"ab": ["a", "b"]},
        strategies=["majority", "component"],
    )
    # round(0.3 * 16 groups * 4 attributes) = round(19.2) = 19 flipped (group, attribute) pairs.
    assert (
        result.planted.merge(labels[["image_id", "group"]]).groupby(["group", "attribute"]).ngroups
        == 19
    )
    assert result.grouping["pair_f1"] == 1.0
    detection = result.detection.set_index(["method", "attributes"])
    # A strict minority inside a perfect component is always the flagged side.
    assert detection.loc[("label_issues", "all"), ["precision", "recall"]].tolist() == [1.0, 1.0]
    # the confident (is_flagged) cells are a subset of them, so just as right
    assert detection.loc[("label_issues", "all"), "flagged_precision"] == 1.0
    # every flag is planted, so the first min(100, flags) are too
    assert detection.loc[("label_issues", "all"), "precision_at_100"] == 1.0
    majority = detection.loc[("majority", "all")]
    assert majority["n_corrected"] == len(result.planted) and majority["n_errors_left"] == 0
    assert majority["precision"] == 1.0 and majority["n_clean_corrupted"] == 0
    assert detection.loc[("label_issues", "ab"), "n_planted"] == int(
        result.planted["attribute"].isin(["a", "b"]).sum()
    )
    downstream = result.downstream.set_index("labels")
    assert list(downstream.index) == ["raw", "oracle", "majority", "component"]
    assert downstream.loc["oracle", "n_train"] == 8 * 5
    assert result.summary()["run_seconds"] == result.report.run_info.timings["total"] > 0
    assert set(result.summary()) == {
        "n_images",
        "run_seconds",
        "n_planted_cells",
        "n_disputed_pairs",
        "n_disputed_cells",
        "grouping",
        "detection",
        "downstream",
    }


def test_evaluate_cleaning_on_already_noisy_labels_plants_elsewhere_and_says_so(caplog):
    # #17: labels that already carry seed-0 noise, evaluated with seed 0 again, used to
    # get the same pairs drawn and flipped back (F1 0.06 on the demo, no warning).
    from clusterclean.pipeline import RunConfig
    from clusterclean.synth import inject_noise

    truth, emb = _perfect_groups(16, 5, seed=0)
    first = inject_noise(truth, kind="disagreement", rate=0.3, seed=0)
    with caplog.at_level("WARNING", logger="clusterclean.synth"):
        result = evaluate_cleaning(
            first.labels,
            kind="disagreement",
            rate=0.3,
            seed=0,
            embeddings=emb,
            config=RunConfig(min_similarity=0.9, n_neighbors=6),
            strategies=["majority"],
            probe=False,
        )
    pair = ["image_id", "attribute"]
    groups = truth[["image_id", "group"]]
    first_pairs = set(map(tuple, first.planted.merge(groups)[["group", "attribute"]].values))
    again_pairs = set(map(tuple, result.planted.merge(groups)[["group", "attribute"]].values))
    assert len(first_pairs) == 19 and not first_pairs & again_pairs  # nothing flipped back
    assert result.planted.merge(first.planted[pair]).empty
    n_first = len(first.planted)
    n_disputed = 5 * 19  # every labelled cell of the 19 pairs planted first
    assert (result.n_disputed_pairs, result.n_disputed_cells) == (19, n_disputed)
    assert result.summary()["n_disputed_cells"] == n_disputed
    # round(0.3 * (64 - 19)) = round(13.5) = 14 new pairs out of the 45 unanimous ones
    assert len(again_pairs) == 14
    # perfect components: every new error is found; the first noise counts as false positives
    found = result.detection.set_index(["method", "attributes"]).loc[("label_issues", "all")]
    assert found["recall"] == 1.0
    assert found["precision"] == pytest.approx(
        len(result.planted) / (len(result.planted) + n_first)
    )
    assert "already disagree inside their group on 19 (group, attribute) pairs (95 cells)" in (
        caplog.text
    )


def test_evaluate_cleaning_rejects_a_table_without_image_column():
    with pytest.raises(InvalidInputError, match="needs an image column"):
        evaluate_cleaning(pd.DataFrame({"a": [1]}), kind="uniform", rate=0.1)


# --------------------------------------------------------------------------- scripts


def _tiny_benchmark(folder, n_groups: int = 20, n_views: int = 4):
    """A benchmark folder like scripts/make_benchmark.py writes, with planted-perfect vectors."""
    import json

    from clusterclean.report import write_table

    labels, emb = _perfect_groups(n_groups, n_views, seed=1)
    folder.mkdir()
    labels.rename(columns={"image_id": "image"}).to_csv(folder / "labels.csv", index=False)
    leaky = labels.assign(split=np.resize(["train", "train", "val", "test"], len(labels)))
    leaky.rename(columns={"image_id": "image"}).to_csv(folder / "labels_leaky.csv", index=False)
    frame = pd.DataFrame({"image_id": emb.ids.astype(str), "embedding": list(emb.vectors)})
    write_table("embeddings", frame, folder / "embeddings.parquet")
    info = {
        "attributes": {"visible": ["a", "b"], "invisible": ["c", "d"]},
        "confusions": [["a", "b"], ["c", "d"]],
        "counts": {"images": len(labels)},
    }
    (folder / "benchmark.json").write_text(json.dumps(info))
    return labels


def _script(name: str):
    import importlib.util
    import sys
    from pathlib import Path

    scripts = Path(__file__).resolve().parents[1] / "scripts"
    sys.path.insert(0, str(scripts))
    try:
        spec = importlib.util.spec_from_file_location(name, scripts / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(scripts))
    return module


def test_read_benchmark_names_the_script_when_files_are_missing(tmp_path):
    with pytest.raises(InvalidInputError, match="make it with `python scripts/make_benchmark.py"):
        read_benchmark(tmp_path)


def test_evaluate_benchmark_script_end_to_end(tmp_path):
    import json

    _tiny_benchmark(tmp_path / "bench")
    out = tmp_path / "results"
    script = _script("evaluate_benchmark")
    argv = ["--benchmark", str(tmp_path / "bench"), "--out", str(out)]
    options = ["--kinds", "disagreement,uniform", "--levels", "0,0.2", "--cuts", "0.6,0.95"]
    assert script.main([*argv, *options]) == 0
    for name in (
        "grouping_sweep.parquet",
        "noise_detection.parquet",
        "noise_downstream.parquet",
        "threshold_sweep.parquet",
        "experiments.parquet",
        "results.md",
        "f1_vs_noise.png",
        "detection_vs_noise.png",
        "detection_vs_threshold.png",
        "component_scores.png",
    ):
        assert (out / name).stat().st_size > 0, name
    results = json.loads((out / "results.json").read_text())
    assert results["grouping"]["pair_f1"] == 1.0
    # Perfect components: every planted disagreement is a strict minority, so it is flagged.
    assert results["label_issues"]["all"]["precision"] == 1.0
    assert results["label_issues"]["all"]["recall"] == 1.0
    detection = pd.read_parquet(out / "noise_detection.parquet")
    assert set(detection["noise"]) == {"disagreement", "uniform"}
    assert set(detection["level"]) == {0.0, 0.2}
    experiments = pd.read_parquet(out / "experiments.parquet")
    assert experiments["experiment"].tolist() == ["A", "B", "C", "D"]


def test_compare_peers_script_end_to_end(tmp_path):
    pytest.importorskip("cleanlab")
    _tiny_benchmark(tmp_path / "bench")
    out = tmp_path / "peers"
    script = _script("compare_peers")
    argv = ["--benchmark", str(tmp_path / "bench"), "--out", str(out), "--min-similarity", "0.9"]
    assert script.main(argv) == 0
    table = pd.read_parquet(out / "peers.parquet")
    ours = table[(table["method"] == "clusterclean label_issues") & (table["attributes"] == "all")]
    assert ours[["precision", "recall"]].iloc[0].tolist() == [1.0, 1.0]
    assert {"cleanlab per-class issues", "clusterclean components (grouping)"} <= set(
        table["method"]
    )


def test_run_option_sets_any_pipeline_field():
    script = _script("evaluate_benchmark")
    args = script.build_parser().parse_args(
        ["--run-option", "mutual=true", "--run-option", 'thresholds=["p90", 0.05]']
    )
    config = script.run_config(args, 0.8)
    assert (config.mutual, config.thresholds, config.min_similarity) == (True, ("p90", 0.05), 0.8)
    bad = script.build_parser().parse_args(["--run-option", "typo=1"])
    with pytest.raises(SystemExit, match="KEY=VALUE with KEY one of"):
        script.run_config(bad, 0.8)


def test_write_evaluation_round_trips(tmp_path):
    import json

    from clusterclean.pipeline import RunConfig

    labels, emb = _perfect_groups(6, 4, seed=2)
    labels["age"] = np.repeat(np.resize(["young", "old"], 6), 4)
    result = evaluate_cleaning(
        labels,
        kind="uniform",
        rate=0.1,
        embeddings=emb,
        config=RunConfig(min_similarity=0.9, multiclass_columns=("age",)),
        strategies=["majority"],
        probe=False,
    )
    folder = write_evaluation(result, tmp_path / "ev")
    summary = json.loads((folder / "evaluation.json").read_text())
    # 6 groups x 4 views x 5 attributes = 120 cells; round(0.1 * 120) = 12 planted.
    assert summary["n_planted_cells"] == 12 and summary["downstream"] is None
    planted = pd.read_parquet(folder / "planted.parquet")
    assert len(planted) == 12 and set(planted["attribute"]) <= {"a", "b", "c", "d", "age"}
    detection = pd.read_parquet(folder / "detection.parquet")
    assert detection["method"].tolist() == ["label_issues", "majority"]
    assert not (folder / "downstream.parquet").exists()
    assert sorted(p.name for p in folder.iterdir()) == [
        "detection.parquet",
        "evaluation.json",
        "planted.parquet",
    ]


# --------------------------------------------------------------------------- CLI


def test_cli_evaluate_on_a_benchmark_folder(tmp_path, capsys):
    from clusterclean.cli import main

    _tiny_benchmark(tmp_path / "bench")
    out = tmp_path / "ev"
    argv = ["evaluate", "--benchmark", str(tmp_path / "bench"), "--inject", "disagreement:0.2"]
    assert main([*argv, "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    # 20 groups x 4 attributes = 80 eligible pairs -> 16 pairs, 1 of 4 views each.
    assert printed.splitlines()[0] == "planted disagreement noise at 0.2: 16 wrong cells"
    assert re.match(r"pipeline: \d+\.\d s for 80 images$", printed.splitlines()[1])
    assert re.search(r"label_issues  all .*; P@100 \d\.\d{3}", printed)
    # the run's grouping check, as `run` prints it (20 groups of 4: enough linked pairs)
    assert re.search(r"^grouping check: labels agree -?\d\.\d\d that", printed, re.M)
    assert "label_issues  invisible" in printed and "linear probe macro-F1" in printed
    assert (out / "evaluation.json").is_file() and (out / "downstream.parquet").is_file()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--inject", "typo"],
            "The noise specification must be KIND:RATE with KIND one of ['disagreement', "
            "'uniform', 'class_conditional'] and RATE a float in [0, 0.5], e.g. "
            "'disagreement:0.1'. Got 'typo' instead.",
        ),
        (
            [],
            "evaluate needs trusted labels: --labels FILE (with --images DIR or --embeddings "
            "FILE), or --benchmark DIR made by scripts/make_benchmark.py.",
        ),
        (
            ["--labels", "x.csv", "--group", "invisible"],
            "--group must be NAME=ATTR,ATTR,... (e.g. invisible=age,gender); got 'invisible'.",
        ),
    ],
)
def test_cli_evaluate_bad_input_is_one_line(argv, message, capsys):
    from clusterclean.cli import main

    assert main(["evaluate", *argv]) == 1
    assert capsys.readouterr().err == f"clusterclean: error: {message}\n"


def test_precision_at_k_counts_hits_among_the_first_k_rows():
    from clusterclean.evaluate import precision_at_k

    ranked = pd.DataFrame(
        {"image_id": ["a", "b", "c", "d"], "attribute": ["x", "x", "age=old", "y"]}
    )
    planted = pd.DataFrame({"image_id": ["a", "c", "d"], "attribute": ["x", "age", "y"]})
    assert precision_at_k(ranked, planted, 2) == 0.5  # a hit, b not
    assert precision_at_k(ranked, planted, 3) == pytest.approx(1 / 3)  # age=old is not 'age'
    tasks = {"age": ("age=old", "age=young")}
    assert precision_at_k(ranked, planted, 3, tasks=tasks) == pytest.approx(2 / 3)
    assert precision_at_k(ranked, planted, 100, tasks=tasks) == 0.75  # all 4 rows
    assert np.isnan(precision_at_k(ranked.head(0), planted, 10))
