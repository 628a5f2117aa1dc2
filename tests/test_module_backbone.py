"""A torch module of the user's own as the backbone (#17): ``Backbone.from_module(module,
transform)`` through run, find_label_issues, embed_images and add_images, on real image files,
real torch and real ONNX Runtime; nothing is mocked and no weights are downloaded (random
weights, seeded)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
import test_find
import torch
from PIL import Image
from torchvision import transforms as T

import clusterclean as cc
from clusterclean.backbones import Backbone
from clusterclean.embed import embed_images, read_image
from clusterclean.errors import InvalidInputError, InvalidTypeError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

#: Persons x views of the generated folder; person p's views are one colour field plus noise.
N_PERSONS, N_VIEWS = 3, 4
#: The graph options of tests/test_find.py (a plain cosine cut, nothing learnt), with a cut
#: that joins the views of one colour and not two colours.
GRAPH = {**test_find.GRAPH, "min_similarity": 0.95}


@pytest.fixture(autouse=True)
def engine_cache(tmp_path, monkeypatch):
    """Every test exports into its own empty ONNX cache."""
    folder = tmp_path / "engines"
    monkeypatch.setenv("CLUSTERCLEAN_ENGINE_CACHE", str(folder))
    return folder


def conv_net(seed: int = 0, *, relu: bool = True) -> torch.nn.Sequential:
    """A small random-weight conv net ending in a pooled (batch, 16) feature."""
    torch.manual_seed(seed)
    layers = [torch.nn.Conv2d(3, 16, kernel_size=5, stride=2), torch.nn.BatchNorm2d(16)]
    layers += [torch.nn.ReLU()] if relu else []
    layers += [torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()]
    return torch.nn.Sequential(*layers)


def preprocess(mean=(0.5, 0.5, 0.5)) -> T.Compose:
    """torchvision's evaluation recipe at 48x48."""
    return T.Compose([T.Resize(56), T.CenterCrop(48), T.ToTensor(), T.Normalize(mean, (0.25,) * 3)])


@pytest.fixture
def folder(tmp_path):
    """Generated photos: ``p{p}_v{v}.png`` (PNG) and ``.jpg`` alternating, and their labels:
    attributes a, b per person, one wrong cell planted on p1_v2."""
    root = tmp_path / "images"
    root.mkdir()
    rng = np.random.default_rng(0)
    colours = [(200, 40, 40), (40, 200, 40), (40, 40, 200)]
    rows = []
    for p in range(N_PERSONS):
        for v in range(N_VIEWS):
            base = np.broadcast_to(np.array(colours[p], dtype=np.int16), (60, 80, 3))
            noise = rng.integers(-12, 12, (60, 80, 3))
            pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
            name = f"p{p}_v{v}.{'png' if v % 2 else 'jpg'}"
            Image.fromarray(pixels).save(root / name)
            rows.append({"image_id": name, "a": int(p == 0), "b": int(p != 2)})
    labels = pd.DataFrame(rows)
    labels.loc[labels["image_id"] == "p1_v2.jpg", "a"] = 1  # the planted wrong cell
    return root, labels


def paths_of(root) -> list[str]:
    return sorted(str(p) for p in root.iterdir())


def by_hand(backbone: Backbone, paths: list[str]) -> np.ndarray:
    """What the stage must compute: read, transform, forward one by one, L2-normalise."""
    min_size = -(-max(backbone.input_size) * 8 // 7)
    with torch.inference_mode():
        rows = [
            backbone.model(backbone.transform(read_image(p, min_size=min_size))[None])[0]
            for p in paths
        ]
    vectors = torch.stack(rows).numpy()
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


# --------------------------------------------------------------------------- from_module


def test_from_module_reads_dim_and_size_and_leaves_the_module_as_it_was():
    net = conv_net().train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    backbone = Backbone.from_module(net, preprocess())
    assert (backbone.name, backbone.dim, backbone.input_size) == ("module:Sequential", 16, (48, 48))
    assert backbone.model is not net and not backbone.model.training
    assert net.training  # the caller's module keeps its mode ...
    with torch.no_grad():  # ... and training it further does not reach the backbone
        net[0].weight.add_(1.0)
    assert not torch.equal(backbone.model[0].weight, net[0].weight)
    assert torch.equal(backbone.model[0].weight, before["0.weight"])
    assert Backbone.from_module(conv_net(), preprocess(), name="mine").name == "module:mine"


def test_weights_id_is_stable_and_follows_weights_layers_and_transform():
    weights_id = Backbone.from_module(conv_net(), preprocess()).weights_id
    assert weights_id.startswith("sha256:") and len(weights_id) == 7 + 64
    assert Backbone.from_module(conv_net(), preprocess()).weights_id == weights_id
    others = [
        Backbone.from_module(conv_net(seed=1), preprocess()),  # other weights
        Backbone.from_module(conv_net(relu=False), preprocess()),  # same state dict, no ReLU
        Backbone.from_module(conv_net(), preprocess(mean=(0.4, 0.5, 0.5))),  # other transform
    ]
    assert len({weights_id, *(o.weights_id for o in others)}) == 4


# --------------------------------------------------------------------------- the pipeline


def test_run_embeds_a_folder_with_the_module_and_records_it(folder, tmp_path, engine_cache):
    root, labels = folder
    backbone = Backbone.from_module(conv_net(), preprocess())
    report = cc.run(
        images=root,
        labels=labels,
        backbone=backbone,
        out=tmp_path / "report",
        progress=False,
        **GRAPH,
    )
    vectors = report.embeddings
    assert vectors.backbone == "module:Sequential" and vectors.dim == 16
    np.testing.assert_allclose(np.linalg.norm(vectors.vectors, axis=1), 1.0, rtol=1e-5)
    order = [str(root / i) for i in vectors.ids]
    expected = by_hand(backbone, order)  # ONNX Runtime agrees with torch to a cosine >= 0.9999
    assert (np.sum(vectors.vectors * expected, axis=1) >= 0.9999).all()
    record = json.loads((tmp_path / "report" / "run.json").read_text())
    assert record["parameters"]["backbone"] == "module:Sequential"
    assert record["embedding"]["backbone"] == "module:Sequential"
    assert record["embedding"]["weights_id"] == backbone.weights_id
    assert record["embedding"]["engine"]["name"] == "onnxruntime"  # engine='auto' on CPU
    keys = [json.loads(p.read_text()) for p in engine_cache.glob("*.json")]
    assert [k["weights_id"] for k in keys] == [backbone.weights_id]  # the export's cache key
    assert not backbone.model.training


def test_find_label_issues_takes_the_module_and_finds_the_planted_cell(folder):
    root, labels = folder
    backbone = Backbone.from_module(conv_net(), preprocess())
    mask = cc.find_label_issues(labels, images=root, backbone=backbone, flagged_only=False, **GRAPH)
    assert mask.dtype == bool and mask.shape == (len(labels),)
    assert labels["image_id"][mask].tolist() == ["p1_v2.jpg"]


def test_torch_and_onnxruntime_give_the_same_vectors(folder):
    root, _ = folder
    backbone = Backbone.from_module(conv_net(), preprocess())
    paths = paths_of(root)
    on_torch = embed_images(paths, backbone=backbone, engine="torch", progress=False)
    on_onnx = embed_images(paths, backbone=backbone, engine="onnxruntime", progress=False)
    np.testing.assert_allclose(on_torch.vectors, by_hand(backbone, paths), atol=1e-5)
    assert (np.sum(on_torch.vectors * on_onnx.vectors, axis=1) >= 0.9999).all()


class _LeavesTorch(torch.nn.Module):
    """A forward pass through numpy: the ONNX graph would hold a constant, so the export's
    check fails and engine='auto' must fall back to torch."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, kernel_size=3, stride=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.conv(x).mean(dim=(2, 3))
        return torch.from_numpy(np.tanh(features.detach().cpu().numpy()) + 2.0)


def test_a_module_that_does_not_export_runs_on_torch_and_says_so(folder, caplog):
    root, _ = folder
    torch.manual_seed(0)
    backbone = Backbone.from_module(_LeavesTorch(), preprocess())
    paths = paths_of(root)
    with caplog.at_level(logging.INFO, logger="clusterclean.engine"):
        found = embed_images(paths, backbone=backbone, progress=False)
    assert "Engine: torch (the ONNX export of module:_LeavesTorch failed" in caplog.text
    np.testing.assert_allclose(found.vectors, by_hand(backbone, paths), atol=1e-5)


def test_an_unpicklable_transform_decodes_in_this_process_with_a_warning(folder, caplog):
    root, _ = folder
    lambda_transform = T.Compose([preprocess(), T.Lambda(lambda x: x * 2.0)])
    backbone = Backbone.from_module(conv_net(), lambda_transform)
    paths = paths_of(root)
    with caplog.at_level(logging.WARNING, logger="clusterclean.embed"):
        found = embed_images(
            paths, backbone=backbone, engine="torch", num_workers=2, progress=False
        )
    assert "cannot be sent to worker processes" in caplog.text
    assert "instead of 2 workers" in caplog.text
    np.testing.assert_allclose(found.vectors, by_hand(backbone, paths), atol=1e-5)


def test_the_embedding_cache_keeps_two_transforms_apart(folder, tmp_path):
    root, _ = folder
    paths = paths_of(root)
    first = Backbone.from_module(conv_net(), preprocess())
    second = Backbone.from_module(conv_net(), preprocess(mean=(0.2, 0.5, 0.8)))
    cache = tmp_path / "cache"
    kwargs = dict(engine="torch", cache_dir=cache, progress=False)
    a = embed_images(paths, backbone=first, **kwargs)
    b = embed_images(paths, backbone=second, **kwargs)
    assert len(list(cache.iterdir())) == 2  # one folder per setup, not one shared
    np.testing.assert_allclose(b.vectors, by_hand(second, paths), atol=1e-5)
    assert not np.allclose(a.vectors, b.vectors, atol=1e-3)


def test_augmented_views_take_the_module_too(folder):
    root, labels = folder
    backbone = Backbone.from_module(conv_net(), preprocess())
    dataset = cc.load_dataset(labels, images=root)
    views = cc.embed_views(dataset, backbone=backbone, n_views=2, progress=False)
    assert views.backbone == "module:Sequential" and views.vectors.shape[1:] == (2, 16)


def test_adding_images_to_a_module_run_needs_the_same_module(folder, tmp_path):
    root, labels = folder
    backbone = Backbone.from_module(conv_net(), preprocess())
    base_rows = labels["image_id"].str.startswith(("p0", "p1"))
    base_dir = tmp_path / "base"
    base_dir.mkdir()
    for name in labels["image_id"][base_rows]:
        (base_dir / name).write_bytes((root / name).read_bytes())
    new_dir = tmp_path / "new"
    new_dir.mkdir()
    for name in labels["image_id"][~base_rows]:
        (new_dir / name).write_bytes((root / name).read_bytes())
    base = cc.run(
        images=base_dir,
        labels=labels[base_rows],
        backbone=backbone,
        out=tmp_path / "report",
        progress=False,
        **GRAPH,
    )
    new_labels = labels[~base_rows]
    with pytest.raises(InvalidInputError, match="torch module 'module:Sequential'.*pass the same"):
        cc.add_images(base.folder, new_dir, new_labels, progress=False)
    other = Backbone.from_module(conv_net(seed=1), preprocess())
    with pytest.raises(InvalidInputError, match="is not the base run's"):
        cc.add_images(base.folder, new_dir, new_labels, options={"backbone": other})
    report, additions = cc.add_images(
        base.folder, new_dir, new_labels, options={"backbone": backbone}, progress=False
    )
    assert report.dataset.n_images == len(labels) and len(additions) == N_VIEWS
    assert report.run_info["embedding"]["weights_id"] == backbone.weights_id


# --------------------------------------------------------------------------- bad input


def test_a_bare_module_is_refused_with_how_to_give_it(folder):
    root, labels = folder
    net = conv_net()
    fix = r"backbone=clusterclean\.Backbone\.from_module\(module, transform\)"
    for backbone in (net, (net, preprocess())):
        with pytest.raises(InvalidTypeError, match="'backbone' parameter of run must be .*" + fix):
            cc.run(images=root, labels=labels, backbone=backbone, progress=False)
        with pytest.raises(InvalidTypeError, match="'backbone' parameter of run must be .*" + fix):
            cc.find_label_issues(labels, images=root, backbone=backbone)
        with pytest.raises(
            InvalidTypeError, match="'backbone' parameter of embed_images must be .*" + fix
        ):
            embed_images(paths_of(root), backbone=backbone, progress=False)
    with pytest.raises(InvalidInputError, match="'weights' parameter of run applies to a backbone"):
        cc.run(
            images=root,
            labels=labels,
            backbone=Backbone.from_module(net, preprocess()),
            weights="w.pth",
            progress=False,
        )


class _FeatureMap(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, kernel_size=3)

    def forward(self, x):
        return self.conv(x)


class _Pair(_FeatureMap):
    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3)), x


@pytest.mark.parametrize(
    ("module", "transform", "error", "message"),
    [
        ("not a module", preprocess(), InvalidTypeError, "'module' parameter of Backbone.from"),
        (conv_net(), "resize", InvalidTypeError, "'transform' parameter .* must be a callable"),
        (
            conv_net(),
            T.Compose([T.Resize(56), T.CenterCrop(48)]),
            InvalidInputError,
            r"must return a float tensor of shape \(3, height, width\). Got Image for a "
            r"320x240 RGB PIL image instead; end it with T.ToTensor\(\)",
        ),
        (
            conv_net(),
            T.Compose([T.Resize(48), T.ToTensor()]),
            InvalidInputError,
            r"must give every image the same size.* Got \(48, 64\) for a 320x240 image and "
            r"\(64, 48\) for a 240x320 one",
        ),
        (
            conv_net(),
            T.Compose([T.Grayscale(), T.ToTensor()]),
            InvalidInputError,
            r"must return a float tensor of shape \(3, height, width\). Got \(1, 240, 320\)",
        ),
        (
            _FeatureMap(),
            preprocess(),
            InvalidInputError,
            r"returns \(1, 4, 46, 46\) for an input of shape \(1, 3, 48, 48\); clusterclean "
            r"needs features of shape \(batch, dim\). End it with a global pooling",
        ),
        (_Pair(), preprocess(), InvalidInputError, r"_Pair given to .* returns tuple for an input"),
        (
            torch.nn.Conv2d(1, 4, kernel_size=3),
            preprocess(),
            InvalidInputError,
            r"fails on a \(1, 3, 48, 48\) input, the size its transform makes \(RuntimeError",
        ),
    ],
    ids=[
        "not-a-module",
        "transform-not-callable",
        "no-to-tensor",
        "size-varies",
        "one-channel",
        "feature-map",
        "tuple",
        "wrong-input",
    ],
)
def test_bad_modules_and_transforms_say_what_to_do(module, transform, error, message):
    with pytest.raises(error, match=message):
        Backbone.from_module(module, transform)


def test_bad_run_inputs_are_type_errors_naming_the_parameter(folder):
    # #17 item 6: what run takes as images and labels, and what it refuses
    root, labels = folder
    for kwargs, name in (
        ({"images": 7}, "images"),
        ({"images": root, "labels": 7}, "labels"),
        ({"images": root, "embeddings": {"a": [1.0]}}, "embeddings"),
    ):
        with pytest.raises(InvalidTypeError, match=f"The '{name}' parameter of run must be"):
            cc.run(progress=False, **kwargs)
