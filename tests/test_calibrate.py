"""The data-calibrated cut: estimates by hand, on planted groups, and every bad input."""

import json
import logging

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from planted import make_planted
from tiny_model import save_tiny_torchscript

from clusterclean import AugmentedViews, RunConfig, as_embeddings, calibrate_cut, run
from clusterclean.calibrate import _choose, _inserted, estimate_precision
from clusterclean.cli import main
from clusterclean.components import find_components
from clusterclean.errors import InvalidInputError, InvalidTypeError
from clusterclean.evaluate import grouping_scores
from clusterclean.graph import edges_from_neighbors, search_neighbors
from clusterclean.group import Grouper, GroupOptions

#: A plain cosine cut: no re-ranking, no cosine floor.
PLAIN = Grouper(GroupOptions(rerank=False, min_cosine=-1.0))


def _views(rows, vectors):
    return AugmentedViews(
        rows=np.asarray(rows, dtype=np.int64),
        vectors=np.asarray(vectors, dtype=np.float32),
        backbone="user",
    )


def _unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _planted(seed=0, n_groups=120, dim=24, noise=0.1):
    """Groups of 1-4 noisy copies of random centres; views = fresh noisy copies of each image.

    A view pair (x + e1, x + e2) is as far apart as two members of a group
    (c + e1, c + e2): the known positives have the real positives' difficulty.
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_groups, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    groups = np.repeat(np.arange(n_groups), rng.integers(1, 5, size=n_groups))
    base = centres[groups]
    vectors = _unit(base + noise * rng.normal(size=base.shape))
    views = _unit(vectors[:, None, :] + noise * rng.normal(size=(len(vectors), 2, dim)))
    ids = [f"img{i}" for i in range(len(vectors))]
    return as_embeddings(ids, vectors), groups, _views(np.arange(len(vectors)), views)


# --------------------------------------------------------------------------- by hand


def test_estimate_precision_hand_computed():
    # G/R = 1111.1, 250, 160 -> T = 160; P = 160 R / G = 0.144, 0.64, 1.0
    precision, n_same = estimate_precision(
        [0.9, 0.6, 0.5], [1000, 150, 80], n_view_pairs=100, min_recalled=20
    )
    assert n_same == pytest.approx(160.0)
    np.testing.assert_allclose(precision, [0.144, 0.64, 1.0])


def test_estimate_precision_skips_cuts_with_few_recalled_pairs():
    # R = 0.4 < MIN_RECALL = 0.5: T comes from the first two cuts (min 250)
    precision, n_same = estimate_precision(
        [0.9, 0.6, 0.4], [1000, 150, 20], n_view_pairs=100, min_recalled=20
    )
    assert n_same == pytest.approx(250.0)
    np.testing.assert_allclose(precision, [0.225, 1.0, 1.0])
    # 30 pairs: R = 0.6 groups 18 < 20 of them, so only the first cut counts (T = 1111.1)
    precision, n_same = estimate_precision(
        [0.9, 0.6], [1000, 150], n_view_pairs=30, min_recalled=20
    )
    assert n_same == pytest.approx(1000 / 0.9)
    np.testing.assert_allclose(precision, [1.0, 1.0])


def test_estimate_precision_needs_enough_recalled_pairs():
    with pytest.raises(InvalidInputError, match=r"fewer than 20 \(or 50%\) of its 50 view pairs"):
        estimate_precision([0.3, 0.1], [40, 5], n_view_pairs=50, min_recalled=20)
    with pytest.raises(InvalidInputError, match="1-D arrays of one length"):
        estimate_precision([0.3, 0.1], [40], n_view_pairs=50)


def test_inserted_views_replace_their_image():
    raw = np.eye(4, dtype=np.float32)[:3]
    views = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    data, pairs = _inserted(raw, np.array([0, 2]), views)
    # rows 0 and 2 become view 0; views 1 and 2 of row 0 -> rows 3, 4; of row 2 -> rows 5, 6
    np.testing.assert_array_equal(data[[0, 2]], views[:, 0])
    np.testing.assert_array_equal(data[1], raw[1])
    np.testing.assert_array_equal(data[3:], views[:, 1:].reshape(-1, 4))
    assert pairs.tolist() == [[0, 3], [0, 4], [3, 4], [2, 5], [2, 6], [5, 6]]
    data, pairs = _inserted(raw, np.array([1]), views[:1, :1])  # one view: appended, paired
    np.testing.assert_array_equal(data[:3], raw)
    assert pairs.tolist() == [[1, 3]]


def test_choose_best_f1_or_the_lowest_cut_holding_the_target(caplog):
    cuts = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    precision = np.array([0.5, 0.92, 0.85, 0.95, 0.97])
    recall = np.array([1.0, 0.9, 0.8, 0.6, 0.3])
    # F1: 0.667, 0.910, 0.824, 0.735, 0.458
    assert _choose(cuts, precision, recall, None) == 1
    assert _choose(cuts, precision, recall, 0.9) == 3  # 0.2 reaches 0.9 but 0.3 falls back
    assert _choose(cuts, precision, recall, 0.4) == 0
    with caplog.at_level(logging.WARNING, logger="clusterclean.calibrate"):
        assert _choose(cuts, precision, recall, 0.99) == 4
    assert "no cut reaches the target precision 0.990" in caplog.text


# --------------------------------------------------------------------------- planted groups


def _true_curve(embeddings, groups, cuts):
    neighbors = search_neighbors(embeddings, n_neighbors=10)
    scores = []
    for cut in cuts:
        edges = edges_from_neighbors(neighbors, min_similarity=float(cut))
        scores.append(grouping_scores(find_components(edges, len(embeddings)), groups))
    return scores


def test_planted_groups_estimates_track_the_truth():
    embeddings, groups, views = _planted()
    cuts = np.round(np.arange(0.5, 0.95, 0.02), 2)  # below 0.5 every cut merges everything
    calibration = calibrate_cut(embeddings, views, grouper=PLAIN, cuts=cuts)
    truth = _true_curve(embeddings, groups, calibration.cuts)
    true_f1 = np.array([t["pair_f1"] for t in truth])
    chosen = int(np.flatnonzero(calibration.cuts == calibration.min_similarity)[0])
    assert true_f1[chosen] >= true_f1.max() - 0.03
    assert calibration.precision[chosen] == pytest.approx(truth[chosen]["pair_precision"], abs=0.1)
    assert calibration.recall[chosen] == pytest.approx(truth[chosen]["pair_recall"], abs=0.1)
    # a precision target moves the cut up, and the estimate there reaches it
    strict = calibrate_cut(embeddings, views, grouper=PLAIN, cuts=cuts, target_precision=0.99)
    assert strict.min_similarity >= calibration.min_similarity
    assert strict.at(strict.min_similarity)["precision"] >= 0.99
    summary = calibration.summary()
    assert summary["min_similarity"] == calibration.min_similarity
    assert summary["n_images"] == len(embeddings) and summary["n_views"] == 2
    assert summary["n_view_pairs"] == len(embeddings)
    assert len(summary["curve"]["cut"]) == len(calibration.cuts)


# --------------------------------------------------------------------------- bad input


def test_bad_inputs_are_named():
    embeddings, _, views = _planted(n_groups=10)
    with pytest.raises(InvalidTypeError, match="'embeddings' parameter of calibrate_cut"):
        calibrate_cut(embeddings.vectors, views)
    with pytest.raises(InvalidTypeError, match="must be an AugmentedViews"):
        calibrate_cut(embeddings, views.vectors)
    with pytest.raises(InvalidInputError, match="have dimension 23 but the embeddings 24"):
        calibrate_cut(embeddings, _views(views.rows, views.vectors[:, :, :23]))
    with pytest.raises(InvalidInputError, match="distinct rows of the"):
        calibrate_cut(embeddings, _views(views.rows + 1, views.vectors))
    with pytest.raises(InvalidInputError, match=r"shape \(n_rows, n_views, dim\)"):
        calibrate_cut(embeddings, _views(views.rows, views.vectors[:, 0]))
    with pytest.raises(InvalidInputError, match="holds no views"):
        calibrate_cut(embeddings, _views([], np.zeros((0, 2, 24))))
    with pytest.raises(InvalidInputError, match="'target_precision' parameter of calibrate_cut"):
        calibrate_cut(embeddings, views, target_precision=1.5)
    with pytest.raises(InvalidInputError, match="non-empty increasing sequence"):
        calibrate_cut(embeddings, views, cuts=[0.5, 0.3])


# --------------------------------------------------------------------------- pipeline and CLI


def _image_folder(folder, n_persons=28, n_views=2):
    """Persons = random colour patterns, each photographed in shifted crops."""
    rng = np.random.default_rng(3)
    folder.mkdir()
    rows = []
    for p in range(n_persons):
        pattern = (rng.random((12, 12, 3)) * 255).astype(np.uint8)
        photo = Image.fromarray(pattern).resize((96, 96), Image.Resampling.NEAREST)
        for v in range(n_views):
            photo.crop((4 * v, 2 * v, 80 + 4 * v, 88 + 2 * v)).save(folder / f"p{p}_v{v}.png")
            rows.append({"image": f"p{p}_v{v}.png", "group": str(p), "hat": p % 2})
    return pd.DataFrame(rows)


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_run_auto_calibrates_records_and_summarises(tmp_path, capsys):
    weights = save_tiny_torchscript(tmp_path / "tiny.pt")
    labels = _image_folder(tmp_path / "images")
    labels.to_csv(tmp_path / "labels.csv", index=False)
    code = main(
        [
            "run",
            "--images",
            str(tmp_path / "images"),
            "--labels",
            str(tmp_path / "labels.csv"),
            "--out",
            str(tmp_path / "report"),
            "--backbone",
            "torchscript",
            "--weights",
            str(weights),
            "--min-similarity",
            "auto",
            "--max-calibration-images",
            "50",
            "--workers",
            "0",
            "--no-progress",
        ]
    )
    assert code == 0
    info = json.loads((tmp_path / "report" / "run.json").read_text())
    assert info["parameters"]["min_similarity"] == "auto"
    calibration = info["calibration"]
    assert calibration["n_images"] == 50 and calibration["n_views"] == 2
    assert calibration["n_view_pairs"] == 50
    assert calibration["min_similarity"] in calibration["curve"]["cut"]
    out = capsys.readouterr().out
    assert f"calibrated cut (--min-similarity auto): {calibration['min_similarity']:.2f}" in out


def test_auto_needs_the_images():
    data = make_planted(n_groups=6)
    with pytest.raises(InvalidInputError, match="this run has no images: the embeddings were"):
        run(labels=data.dataset, embeddings=data.embeddings, min_similarity="auto", progress=False)


def test_auto_is_the_only_word_min_similarity_takes(capsys):
    with pytest.raises(InvalidInputError, match=r"must be a float in \[-1, 1\] or 'auto'. Got"):
        RunConfig(min_similarity="sometimes")
    with pytest.raises(InvalidInputError, match="'target_precision' parameter of run"):
        RunConfig(min_similarity="auto", target_precision=2.0)
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--labels", "x.csv", "--out", "r", "--min-similarity", "often"])
    assert exit_info.value.code == 2
    assert "must be a number in [-1, 1] or 'auto', got 'often'" in capsys.readouterr().err


def test_images_added_to_an_auto_run_use_its_calibrated_cut():
    from types import SimpleNamespace

    from clusterclean.incremental import _config_of

    base = SimpleNamespace(
        run_info={"parameters": {"min_similarity": "auto"}, "calibration": {"min_similarity": 0.42}}
    )
    assert _config_of(base, {}).min_similarity == 0.42
