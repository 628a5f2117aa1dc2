"""Projection head: contrastive training on views / known groups, numpy apply, pipeline stage."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from test_cli import _write_views

import clusterclean as cc
from clusterclean.adapt import Adaptation, adapt_embeddings, fit_adaptation, load_adaptation
from clusterclean.errors import InvalidInputError, InvalidTypeError
from clusterclean.views import AugmentedViews

DIM, NUISANCE = 32, 8


def _items(signal: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One noisy copy per signal row: the same signal in dims 8..31, a fresh "camera"
    nuisance of std 2 in dims 0..7, L2-normalised. Two copies of one signal have
    cosine ~ 24 / (24 + 32) = 0.43; copies of different signals ~ 0."""
    nuisance = np.zeros_like(signal)
    nuisance[:, :NUISANCE] = 2.0 * rng.standard_normal((len(signal), NUISANCE))
    items = signal + nuisance
    return (items / np.linalg.norm(items, axis=1, keepdims=True)).astype(np.float32)


def _signals(n: int, rng: np.random.Generator) -> np.ndarray:
    signal = np.zeros((n, DIM))
    signal[:, NUISANCE:] = rng.standard_normal((n, DIM - NUISANCE))
    return signal


def _margin(first: np.ndarray, second: np.ndarray) -> tuple[float, float]:
    """Mean cosine of row i of ``first`` with row i of ``second``, and with the other rows."""
    cross = first @ second.T
    same = np.diag(cross).mean()
    other = cross[~np.eye(len(cross), dtype=bool)].mean()
    return float(same), float(other)


@pytest.fixture(scope="module")
def synthetic():
    """150 training sources with an original and 2 views each; 100 unseen sources."""
    rng = np.random.default_rng(0)
    train = _signals(150, rng)
    originals = _items(train, rng)
    views = np.stack([_items(train, rng), _items(train, rng)], axis=1)
    embeddings = cc.as_embeddings([f"i{i}" for i in range(150)], originals, "synthetic")
    augmented = AugmentedViews(rows=np.arange(150), vectors=views, backbone="synthetic")
    unseen = _signals(100, rng)
    return embeddings, augmented, _items(unseen, rng), _items(unseen, rng)


@pytest.fixture(scope="module")
def head(synthetic):
    embeddings, views, _, _ = synthetic
    return fit_adaptation(embeddings, views, dim=16, hidden=64, epochs=40, seed=0)


def test_views_head_brings_copies_of_one_source_together_on_unseen_sources(synthetic, head):
    _, _, first, second = synthetic
    same_before, other_before = _margin(first, second)
    assert 0.3 < same_before < 0.55 and abs(other_before) < 0.05  # the hand estimate above
    same_after, other_after = _margin(head.transform(first), head.transform(second))
    assert same_after > 0.8
    assert same_after - other_after > same_before - other_before + 0.3
    assert head.method == "views"
    assert head.info["n_classes"] == 150 and head.info["final_loss"] < head.info["first_loss"]


def test_groups_head_learns_identities_and_applies_to_unknown_ones():
    # 80 known groups of 4 images (no views at all), the rows of 40 more groups unknown
    rng = np.random.default_rng(1)
    signal = np.repeat(_signals(120, rng), 4, axis=0)
    vectors = _items(signal, rng)
    groups = np.repeat(np.arange(120).astype(str), 4).astype(object)
    groups[320:] = None
    embeddings = cc.as_embeddings([f"i{i}" for i in range(480)], vectors, "synthetic")
    adapted, fitted = adapt_embeddings(embeddings, groups=groups, dim=16, hidden=0, epochs=40)
    assert fitted.method == "groups" and fitted.info["n_groups"] == 80
    assert len(fitted.weights) == 1  # hidden=0: a linear head
    held_out = adapted.vectors[320:].reshape(40, 4, 16)
    same_before, _ = _margin(vectors[320::4], vectors[321::4])
    same_after, other_after = _margin(held_out[:, 0], held_out[:, 1])
    assert same_after > 0.8 and same_after > same_before + 0.3 and other_after < 0.2
    assert adapted.ids.tolist() == embeddings.ids.tolist()
    assert adapted.backbone == "synthetic+adapt16"


def test_same_seed_same_head_other_seed_other_head(synthetic, head):
    embeddings, views, _, _ = synthetic
    again = fit_adaptation(embeddings, views, dim=16, hidden=64, epochs=40, seed=0)
    other = fit_adaptation(embeddings, views, dim=16, hidden=64, epochs=40, seed=1)
    for a, b in zip(head.weights + head.biases, again.weights + again.biases, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(head.weights[0], other.weights[0])


def test_transform_by_hand():
    # u = (x - mu) / sigma = ([1, 0] - [0, 1]) / 2 = [0.5, -0.5]
    # layer 1: W1 = I, b1 = [0, 0] -> [0.5, -0.5] -> relu -> [0.5, 0]
    # layer 2: W2 = [[2, 0], [0, 1]], b2 = [0, 1] -> [1, 1] -> unit: [0.7071, 0.7071]
    head = Adaptation(
        mean=np.array([0.0, 1.0], np.float32),
        scale=2.0,
        weights=(np.eye(2, dtype=np.float32), np.array([[2, 0], [0, 1]], np.float32)),
        biases=(np.zeros(2, np.float32), np.array([0, 1], np.float32)),
        method="views",
    )
    np.testing.assert_allclose(head.transform(np.array([[1.0, 0.0]])), [[0.70710678] * 2])
    assert head.dim_in == 2 and head.dim_out == 2 and head.summary()["hidden"] == 2
    with pytest.raises(InvalidInputError, match="fitted on 2-dimensional embeddings; got shape"):
        head.transform(np.ones((1, 3)))
    with pytest.raises(InvalidTypeError, match="'embeddings' parameter of Adaptation.apply"):
        head.apply(np.ones((1, 2)))


def test_save_load_round_trip_and_apply_without_torch(tmp_path, synthetic, head):
    _, _, first, _ = synthetic
    path = head.save(tmp_path / "adaptation.npz")
    loaded = load_adaptation(path)
    assert loaded.summary() == head.summary()
    np.testing.assert_array_equal(loaded.transform(first), head.transform(first))
    np.save(tmp_path / "x.npy", first)
    code = (
        "import sys, numpy as np\n"
        "from clusterclean.adapt import load_adaptation\n"
        f"z = load_adaptation({str(path)!r}).transform(np.load({str(tmp_path / 'x.npy')!r}))\n"
        f"np.save({str(tmp_path / 'z.npy')!r}, z)\n"
        "assert 'torch' not in sys.modules, 'applying a head imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    np.testing.assert_array_equal(np.load(tmp_path / "z.npy"), head.transform(first))
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    with pytest.raises(InvalidInputError, match="not an adaptation file written by"):
        load_adaptation(tmp_path / "bad.npz")


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"dim": 0},
            InvalidInputError,
            "The 'dim' parameter of fit_adaptation must be an int >= 1",
        ),
        ({"hidden": -1}, InvalidInputError, "'hidden' parameter of fit_adaptation"),
        ({"epochs": 0}, InvalidInputError, "'epochs' parameter of fit_adaptation"),
        ({"temperature": 0.0}, InvalidInputError, "'temperature' parameter of fit_adaptation"),
        ({"batch_size": 4}, InvalidInputError, "'batch_size' parameter of fit_adaptation"),
        ({"seed": "0"}, InvalidTypeError, "'seed' parameter of fit_adaptation"),
        ({"groups": ["a"]}, InvalidInputError, "one label per embedding \\(150\\). Got 1"),
        ({"groups": "a"}, InvalidTypeError, "'groups' parameter of fit_adaptation"),
    ],
)
def test_bad_parameters(synthetic, kwargs, error, message):
    embeddings, views, _, _ = synthetic
    with pytest.raises(error, match=message):
        fit_adaptation(embeddings, views, **kwargs)


def test_bad_inputs(synthetic):
    embeddings, views, _, _ = synthetic
    with pytest.raises(InvalidTypeError, match="'embeddings' parameter of fit_adaptation"):
        fit_adaptation(embeddings.vectors, views)
    with pytest.raises(InvalidTypeError, match="'views' parameter of fit_adaptation"):
        fit_adaptation(embeddings, views.vectors)
    with pytest.raises(InvalidInputError, match="needs augmented views .* or known groups"):
        fit_adaptation(embeddings)
    narrow = AugmentedViews(views.rows, views.vectors[:, :, :8], "synthetic")
    with pytest.raises(InvalidInputError, match="embed the views with the embeddings' backbone"):
        fit_adaptation(embeddings, narrow)
    foreign = AugmentedViews(views.rows + 1, views.vectors, "synthetic")
    with pytest.raises(InvalidInputError, match="must index the 150 embeddings"):
        fit_adaptation(embeddings, foreign)
    one = AugmentedViews(views.rows[:1], views.vectors[:1], "synthetic")
    with pytest.raises(InvalidInputError, match="at least 2 images with views or 2 groups"):
        fit_adaptation(embeddings, one)


# --------------------------------------------------------------------------- pipeline


ADAPT = {
    "backbone": "efficientnet_lite0",
    "adapt": "views",
    "adapt_epochs": 5,
    "num_workers": 0,
    "min_similarity": 0.5,
    "progress": False,
}


def test_run_with_adapt_trains_saves_and_reuses_the_head(tmp_path):
    import shutil

    labels = _write_views(tmp_path / "all")
    is_new = labels["image"].str.endswith("view 2.png")  # one view of each person added later
    for name, part in (("images", labels[~is_new]), ("new", labels[is_new])):
        (tmp_path / name).mkdir()
        for file in part["image"]:
            shutil.copy(tmp_path / "all" / file, tmp_path / name / file)
        part.to_csv(tmp_path / f"{name}.csv", index=False)
    report = cc.run(tmp_path / "images", tmp_path / "images.csv", out=tmp_path / "out", **ADAPT)

    info = report.run_info["adaptation"]
    assert info["method"] == "views" and info["file"] == "adaptation.npz"
    assert info["dim_in"] == 1280 and info["dim_out"] == 128
    assert info["n_view_images"] == 8 and info["n_views"] == 2 and info["epochs"] == 5
    assert "adapt" in report.run_info["timings"]
    assert report.run_info["parameters"]["adapt"] == "views"
    # the graph is built on the head's output; the saved vectors and the edges' similarity
    # stay the plain cosine of the backbone's
    assert report.embeddings.backbone == "efficientnet_lite0"
    src, dst = report.edges["row_a"].to_numpy(), report.edges["row_b"].to_numpy()
    plain = (report.embeddings.vectors[src] * report.embeddings.vectors[dst]).sum(axis=1)
    np.testing.assert_allclose(report.edges["cosine"], plain, atol=1e-5)

    head = load_adaptation(tmp_path / "out" / "adaptation.npz")
    assert head.summary() == {k: v for k, v in info.items() if k != "file"}
    # a given head is applied, not trained again: same result from the embeddings alone
    again = cc.run(labels=report.dataset, embeddings=report.embeddings, adaptation=head, **ADAPT)
    assert again.run_info["adaptation"]["seconds"] == info["seconds"]
    assert again.images["component_id"].tolist() == report.images["component_id"].tolist()

    # run --add: the new images go through the base run's head, which is not trained again
    added, _ = cc.add_images(
        tmp_path / "out",
        images=tmp_path / "new",
        labels=tmp_path / "new.csv",
        out=tmp_path / "added",
        progress=False,
    )
    assert added.run_info["adaptation"] == info
    assert load_adaptation(tmp_path / "added" / "adaptation.npz").summary() == head.summary()
    base_refinement = cc.load_refinement(tmp_path / "out" / "refinement.npz")
    union = cc.run(
        labels=added.dataset,
        embeddings=added.embeddings,
        adaptation=head,
        refinement=base_refinement,
        **ADAPT,
    )
    assert added.edges[["row_a", "row_b"]].equals(union.edges[["row_a", "row_b"]])
    assert added.images["component_id"].tolist() == union.images["component_id"].tolist()


def test_adapt_needs_images_and_the_right_backbone(tmp_path):
    rng = np.random.default_rng(0)
    labels = pd.DataFrame({"image": [f"{i}.jpg" for i in range(6)], "hat": [0, 1] * 3})
    vectors = cc.as_embeddings(labels["image"], rng.standard_normal((6, 8)), "efficientnet_lite0")
    with pytest.raises(InvalidInputError, match="needs the image files: give --images DIR"):
        cc.run(labels=labels, embeddings=vectors, **ADAPT)
    with pytest.raises(
        InvalidInputError, match="'adapt' parameter of run must be one of 'auto', 'none'"
    ):
        cc.RunConfig(adapt="yes")
    with pytest.raises(InvalidInputError, match="'adapt_epochs' parameter of run"):
        cc.RunConfig(adapt_epochs=0)
    with pytest.raises(InvalidInputError, match="'adapt_max_images' parameter of run"):
        cc.RunConfig(adapt_max_images=1)
    with pytest.raises(InvalidInputError, match="min_similarity='auto' cannot be combined"):
        cc.RunConfig(adapt="views", min_similarity="auto")
    images = _write_views(tmp_path / "images")
    images[["image", "hat"]].to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(InvalidInputError, match="labels table has no 'group' values"):
        cc.run(tmp_path / "images", tmp_path / "labels.csv", **{**ADAPT, "adapt": "groups"})
    # vectors of another model, with the images present
    other = cc.as_embeddings(images["image"], rng.standard_normal((12, 8)), "user")
    with pytest.raises(InvalidInputError, match="but the embeddings come from 'user'"):
        cc.run(tmp_path / "images", tmp_path / "labels.csv", embeddings=other, **ADAPT)
    head = Adaptation(
        np.zeros(8, np.float32),
        1.0,
        (np.eye(8, dtype=np.float32),),
        (np.zeros(8, np.float32),),
        "views",
    )
    with pytest.raises(InvalidInputError, match="fitted adaptation was given but adapt is 'none'"):
        cc.run(labels=labels, embeddings=vectors, adaptation=head, adapt="none", progress=False)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (
            [],
            {
                "adapt": "auto",
                "adapt_views": 2,
                "adapt_epochs": 30,
                "adapt_dim": 128,
                "adapt_temperature": 0.2,
            },
        ),
        (["--adapt"], {"adapt": "views"}),
        (["--adapt", "none"], {"adapt": "none"}),
        (
            ["--adapt", "groups", "--adapt-views", "3", "--adapt-dim", "64"],
            {"adapt": "groups", "adapt_views": 3, "adapt_dim": 64},
        ),
        (
            ["--adapt-epochs", "7", "--adapt-max-images", "500"],
            {"adapt_epochs": 7, "adapt_max_images": 500},
        ),
        (["--adapt-temperature", "0.1"], {"adapt_temperature": 0.1}),
    ],
)
def test_cli_flags_reach_the_config(tmp_path, flags, expected):
    from clusterclean.cli import _config_from_args, build_parser

    args = build_parser().parse_args(["run", "--images", str(tmp_path), "--out", "o", *flags])
    config = _config_from_args(args, backbone="resnet50")
    assert {name: getattr(config, name) for name in expected} == expected


def test_adapt_auto_trains_a_head_only_when_it_can(tmp_path, monkeypatch, caplog):
    import logging

    from clusterclean import pipeline

    images = _write_views(tmp_path / "images")  # 12 images
    images[["image", "hat"]].to_csv(tmp_path / "labels.csv", index=False)
    auto = {**ADAPT, "adapt": "auto"}
    with caplog.at_level(logging.INFO, logger="clusterclean.pipeline"):
        small = cc.run(tmp_path / "images", tmp_path / "labels.csv", **auto)
    assert small.run_info["adaptation"] is None
    assert "12 images, fewer than the 100 it needs" in caplog.text
    assert small.run_info["parameters"]["adapt"] == "auto"  # what the user asked for

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="clusterclean.pipeline"):
        vectors_only = cc.run(
            labels=small.dataset.table.drop(columns="path"), embeddings=small.embeddings, **auto
        )
    assert vectors_only.run_info["adaptation"] is None
    assert "the run has none" in caplog.text

    caplog.clear()
    calibrated = cc.RunConfig(backbone="efficientnet_lite0", min_similarity="auto")
    with caplog.at_level(logging.INFO, logger="clusterclean.pipeline"):
        method = pipeline._adapt_method(small.dataset, small.embeddings, calibrated)
    assert method == "none"
    assert "calibrates the cut in the backbone's space" in caplog.text

    monkeypatch.setattr(pipeline, "MIN_ADAPT_IMAGES", 12)  # the threshold, not the head
    report = cc.run(tmp_path / "images", tmp_path / "labels.csv", out=tmp_path / "r", **auto)
    assert report.run_info["adaptation"]["method"] == "views"
    # run --add replays the head the base run trained, even though it asked for "auto"
    assert cc.incremental._config_of(report, {}).adapt == "views"
    assert cc.incremental._config_of(small, {}).adapt == "none"


def test_related_items_are_left_out_of_the_negatives_by_hand():
    import torch

    from clusterclean.adapt import _supcon_loss

    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # a0, a1 (class 0), b (class 1)
    labels = torch.tensor([0, 0, 1])
    # anchors a0, a1: -log(e^1 / (e^1 + e^0)) = log(1 + 1/e); b has no positive
    plain = _supcon_loss(z, labels, 1.0)
    assert float(plain) == pytest.approx(np.log(1 + np.exp(-1)), abs=1e-6)
    # b related to a0 and a1: left out of their denominators, -log(e / e) = 0
    masked = _supcon_loss(z, labels, 1.0, related=torch.tensor([7, 7, 7]))
    assert float(masked) == pytest.approx(0.0, abs=1e-6)
    # -1 = no code: nothing is left out
    none = _supcon_loss(z, labels, 1.0, related=torch.tensor([-1, -1, -1]))
    assert float(none) == pytest.approx(float(plain), abs=1e-6)


def test_related_codes_are_checked(synthetic):
    embeddings, views = synthetic[:2]
    with pytest.raises(InvalidInputError, match="'related' parameter of fit_adaptation"):
        fit_adaptation(embeddings, views, related=[0, 1])


def test_related_groups_only_the_images_with_views():
    from clusterclean.pipeline import _related

    # rows 0, 1 are one subject (cosine 0.995), row 2 another, rows 3, 4 (no views) copy row 0
    vectors = np.array(
        [[1.0, 0.0, 0.0], [0.995, 0.0998749, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [1, 0, 0]]
    )
    embeddings = cc.as_embeddings([f"i{i}" for i in range(5)], vectors, "synthetic")
    config = cc.RunConfig(refine=False, rerank=False, min_similarity=0.9, min_cosine=-1.0)
    related = _related(embeddings, np.array([0, 1, 2]), config)
    assert related[3] is None and related[4] is None  # not trained on: not grouped
    assert related[0] == related[1] != related[2]


def test_the_heads_views_use_a_smaller_input_of_an_any_size_backbone(caplog):
    import torch
    from PIL import Image
    from tiny_model import PooledConv
    from torchvision import transforms as T

    from clusterclean.pipeline import LoadedModel

    model = LoadedModel(cc.RunConfig(backbone="efficientnet_lite0"))
    full, full_engine = model.load()
    assert model.load_smaller(None) == (full, full_engine)
    assert model.load_smaller(224) == (full, full_engine)  # not smaller
    small, small_engine = model.load_smaller(160)
    assert small.input_size == (160, 160) and small.dim == full.dim
    assert small.weights_id == full.weights_id
    assert model.load_smaller(160)[0] is small  # loaded once
    vectors = small_engine(torch.rand(2, 3, 160, 160))
    assert vectors.shape == (2, full.dim)
    assert tuple(small.transform(Image.new("RGB", (64, 48))).shape) == (3, 160, 160)

    # a backbone that is not a built-in CNN keeps its size, and the log says so
    module = cc.Backbone.from_module(PooledConv(), T.Compose([T.CenterCrop(32), T.ToTensor()]))
    own = LoadedModel(cc.RunConfig(backbone=module))
    with caplog.at_level("INFO", logger="clusterclean.pipeline"):
        assert own.load_smaller(16) == own.load()
    assert "backbone's own size 32x32" in caplog.text


def test_run_embeds_the_heads_views_at_adapt_view_size(tmp_path, caplog):
    labels = _write_views(tmp_path / "images")
    labels.to_csv(tmp_path / "labels.csv", index=False)
    heads = {}
    for size in (None, 160):
        with caplog.at_level("INFO", logger="clusterclean.views"):
            caplog.clear()
            report = cc.run(
                tmp_path / "images", tmp_path / "labels.csv", adapt_view_size=size, **ADAPT
            )
        assert report.run_info["parameters"]["adapt_view_size"] == size
        heads[size] = report.adaptation
        # the images keep the backbone's 224x224 input either way
        assert report.embeddings.backbone == "efficientnet_lite0"
        assert "views: embedded 2 views of 12 images" in caplog.text
    # other views (160x160 inputs), so another head; same shapes and training
    assert heads[160].summary()["n_view_images"] == heads[None].summary()["n_view_images"]
    assert not np.allclose(heads[160].weights[0], heads[None].weights[0])


def test_run_trains_the_head_at_adapt_temperature(tmp_path):
    labels = _write_views(tmp_path / "images")
    labels.to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(InvalidInputError, match="'adapt_temperature' parameter of run"):
        cc.RunConfig(adapt_temperature=0.0)
    heads = {}
    for temperature in (0.2, 0.05):
        report = cc.run(
            tmp_path / "images",
            tmp_path / "labels.csv",
            adapt_temperature=temperature,
            **ADAPT,
        )
        assert report.run_info["parameters"]["adapt_temperature"] == temperature
        assert report.adaptation.summary()["temperature"] == temperature
        heads[temperature] = report.adaptation
    # the same views and batches, another loss: another head
    assert not np.allclose(heads[0.05].weights[0], heads[0.2].weights[0])


def test_run_passes_refine_variance_and_adapt_hidden(tmp_path):
    labels = _write_views(tmp_path / "images")
    labels.to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(InvalidInputError, match="'refine_variance' parameter of run"):
        cc.RunConfig(refine_variance=0.0)
    with pytest.raises(InvalidInputError, match="'adapt_hidden' parameter of run"):
        cc.RunConfig(adapt_hidden=-1)
    plain = cc.run(tmp_path / "images", tmp_path / "labels.csv", **ADAPT)
    other = cc.run(
        tmp_path / "images",
        tmp_path / "labels.csv",
        refine_variance=0.5,
        adapt_hidden=32,
        **ADAPT,
    )
    assert plain.run_info["parameters"]["refine_variance"] == 0.9  # the default
    assert other.run_info["parameters"]["adapt_hidden"] == 32
    # the fewest directions holding half the variance, not 90 %: fewer of them
    assert other.refinement.explained_variance >= 0.5
    assert other.refinement.dim_out < plain.refinement.dim_out
    assert len(plain.adaptation.weights) == 1 and len(other.adaptation.weights) == 2
