"""Inference engines: real torch models exported to ONNX and run by real ONNX Runtime on real
JPEG files; nothing is mocked and nothing is downloaded (random weights where the real ones
are not offline)."""

from __future__ import annotations

import json
import logging

import numpy as np
import onnx
import pandas as pd
import pytest
import skimage.data
import torch
from PIL import Image
from tiny_model import save_tiny_torchscript

from clusterclean import run
from clusterclean.backbones import (
    Backbone,
    load_backbone,
    load_onnx_backbone,
    save_random_weights,
)
from clusterclean.cli import main
from clusterclean.embed import embed_images, plan_workers
from clusterclean.engine import (
    FORWARD_ROWS,
    MIN_EXPORT_COSINE,
    OnnxRuntimeEngine,
    TorchEngine,
    export_onnx,
    load_engine,
)
from clusterclean.errors import ClustercleanError, EngineError, InvalidInputError
from clusterclean.pipeline import RunConfig
from clusterclean.synth import make_views
from clusterclean.views import embed_views

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


@pytest.fixture(autouse=True)
def engine_cache(tmp_path, monkeypatch):
    """Every test exports into its own empty cache: the export itself is under test."""
    folder = tmp_path / "engines"
    monkeypatch.setenv("CLUSTERCLEAN_ENGINE_CACHE", str(folder))
    return folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for name in PHOTOS:
        path = folder / f"{name}.jpg"
        Image.fromarray(getattr(skimage.data, name)()).save(path, quality=92)
        paths.append(str(path))
    return paths


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def weights_for(name: str, tmp_path) -> str | None:
    if name == "efficientnet_lite0":
        return None  # the real weights ship in a package
    if name == "torchscript":
        return save_tiny_torchscript(tmp_path / "tiny.pt")
    return save_random_weights(name, tmp_path / f"{name}.pth")


# --------------------------------------------------------------------------- same vectors


@pytest.mark.parametrize(
    "name",
    [
        "efficientnet_lite0",
        "resnet18",
        "resnet34",
        "resnet50",
        "resnet101",
        "osnet_x1_0",
        "osnet_x0_25",
        "resnet50_bnneck",
        "torchscript",
    ],
)
def test_onnxruntime_vectors_match_torch_on_real_images(name, photos, tmp_path):
    """Every built-in backbone: ONNX Runtime's unit vectors have cosine >= 0.9999 with torch's
    on real JPEG files (measured: >= 0.9999998)."""
    backbone = load_backbone(name, weights=weights_for(name, tmp_path), device="cpu")
    kwargs = {"backbone": backbone, "progress": False, "num_workers": 0}
    ort = embed_images(photos, engine="onnxruntime", **kwargs)
    eager = embed_images(photos, engine="torch", **kwargs)
    assert ort.ids.tolist() == eager.ids.tolist()
    assert cosines(ort.vectors, eager.vectors).min() >= 0.9999
    np.testing.assert_allclose(ort.vectors, eager.vectors, atol=1e-4)


def test_workers_that_run_the_engine_give_the_vectors_of_this_process(photos, tmp_path):
    """Each worker runs its own ONNX Runtime session on its batch: bit-identical to one
    session in this process, whatever the worker count."""
    backbone = load_backbone("efficientnet_lite0", device="cpu")
    engine = load_engine(backbone, engine="onnxruntime")
    paths = photos * 5  # 20 files, batches of 3 spread over the workers
    paths = [str(tmp_path / f"{i}.jpg") for i in range(len(paths))]
    for i, path in enumerate(paths):
        Image.open(photos[i % len(photos)]).rotate(3 * i).save(path, quality=90)
    results = [
        embed_images(
            paths, backbone=backbone, engine=engine, num_workers=w, batch_size=3, progress=False
        )
        for w in (0, 1, 2)
    ]
    for other in results[1:]:
        np.testing.assert_array_equal(other.vectors, results[0].vectors)


def test_onnxruntime_runs_a_batch_in_slices_with_the_same_features(tmp_path):
    """A batch runs FORWARD_ROWS images per call: the features are those of one call on
    the whole batch, bit for bit (rows are independent); a model whose batch axis is
    fixed is called with that many rows."""
    backbone = load_backbone("efficientnet_lite0", device="cpu")
    engine = load_engine(backbone, engine="onnxruntime", threads=1)
    batch = np.random.default_rng(0).random((11, 3, 224, 224), dtype=np.float32)
    whole = OnnxRuntimeEngine(engine.model, threads=1, rows=len(batch))
    sliced = engine(batch)
    assert engine.rows == FORWARD_ROWS == 4 and len(batch) % FORWARD_ROWS  # a short last slice
    np.testing.assert_array_equal(sliced, whole(batch))
    np.testing.assert_array_equal(sliced[:1], engine(batch[:1]))
    assert not np.allclose(sliced[0], sliced[1])  # the check has teeth
    # a user's model exported with a fixed batch of 1 takes any batch, one image per call
    net = _small_onnx_model(tmp_path / "dynamic.onnx")
    torch.onnx.export(
        net,
        (torch.rand(1, 3, 64, 48),),
        str(tmp_path / "fixed.onnx"),
        input_names=["images"],
        output_names=["features"],
        opset_version=18,
        dynamo=False,
    )
    fixed = OnnxRuntimeEngine(tmp_path / "fixed.onnx", threads=1)
    small = np.random.default_rng(1).random((5, 3, 64, 48), dtype=np.float32)
    out = fixed(small)
    assert fixed.rows == 1 and out.shape == (5, 16)
    with torch.no_grad():
        np.testing.assert_allclose(out, net(torch.from_numpy(small)).numpy(), atol=1e-5)


def test_views_go_through_the_same_engine(photos, tmp_path):
    from clusterclean.dataset import load_dataset

    pd.DataFrame({"image": [p.rsplit("/", 1)[1] for p in photos], "hat": [0, 1, 0, 1]}).to_csv(
        tmp_path / "labels.csv", index=False
    )
    dataset = load_dataset(str(tmp_path / "labels.csv"), images=str(photos[0].rsplit("/", 1)[0]))
    backbone = load_backbone("efficientnet_lite0", device="cpu")
    views = {
        engine: embed_views(dataset, backbone=backbone, engine=engine, progress=False)
        for engine in ("onnxruntime", "torch")
    }
    a, b = (views[e].vectors.reshape(-1, views[e].vectors.shape[-1]) for e in views)
    assert cosines(a, b).min() >= 0.9999


# --------------------------------------------------------------------------- export cache


def test_export_is_cached_keyed_by_weights_and_written_atomically(tmp_path, engine_cache, caplog):
    weights = save_random_weights("resnet18", tmp_path / "a.pth")
    backbone = load_backbone("resnet18", weights=weights, device="cpu")
    first = export_onnx(backbone)
    assert first.parent == engine_cache and first.suffix == ".onnx"
    key = json.loads(first.with_suffix(".json").read_text())
    assert key["backbone"] == "resnet18" and key["input_size"] == [224, 224]
    assert {"weights_sha256", "opset", "precision", "exporter"} <= set(key)
    assert not list(engine_cache.glob(".*"))  # no temporary file left behind

    with caplog.at_level(logging.INFO, logger="clusterclean.engine"):
        again = export_onnx(backbone)
    assert again == first
    assert any("from the cache" in r.getMessage() for r in caplog.records)

    with torch.no_grad():  # other weights, same architecture: another file
        backbone.model.conv1.weight.mul_(2)
    assert export_onnx(backbone) != first
    assert len(list(engine_cache.glob("*.onnx"))) == 2


def test_a_damaged_cached_export_is_exported_again_not_a_failure(tmp_path, engine_cache, caplog):
    weights = save_random_weights("resnet18", tmp_path / "a.pth")
    backbone = load_backbone("resnet18", weights=weights, device="cpu")
    path = export_onnx(backbone)
    assert len(json.loads(path.with_suffix(".json").read_text())["onnx_sha256"]) == 64
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])  # cut short, as by a full disk
    with caplog.at_level(logging.WARNING, logger="clusterclean.engine"):
        engine = load_engine(backbone, engine="auto")
    assert isinstance(engine, OnnxRuntimeEngine)
    assert any("is damaged" in r.getMessage() for r in caplog.records)
    assert path.read_bytes() == good  # the same export, written again
    batch = np.random.default_rng(0).random((2, 3, 224, 224), dtype=np.float32)
    with torch.no_grad():
        expected = backbone.model(torch.from_numpy(batch)).numpy()
    assert cosines(engine(batch), expected).min() >= 0.9999


class _Unexportable(torch.nn.Module):
    """A forward pass that leaves torch for numpy: an ONNX graph records its result as a
    constant, so the exported model is wrong (or the export fails) and the check must see it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, kernel_size=3, stride=8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.conv(x).mean(dim=(2, 3))
        return torch.from_numpy(np.tanh(features.detach().numpy()) + 2.0)


def unexportable() -> Backbone:
    from clusterclean.backbones import IMAGENET_MEAN, IMAGENET_STD, ResizeCrop

    return Backbone(
        "odd",
        _Unexportable().eval(),
        ResizeCrop((64, 64), IMAGENET_MEAN, IMAGENET_STD),
        4,
        (64, 64),
        "odd-1",
    )


def test_auto_falls_back_to_torch_when_the_export_fails_and_says_why(engine_cache, caplog):
    backbone = unexportable()
    with caplog.at_level(logging.INFO, logger="clusterclean.engine"):
        engine = load_engine(backbone, engine="auto")
    assert isinstance(engine, TorchEngine)
    assert any("Engine: torch (the ONNX export of odd" in r.getMessage() for r in caplog.records)
    assert len(list(engine_cache.glob("odd-*.failed"))) == 1  # remembered: not tried again
    with pytest.raises(EngineError, match="remembered in"):
        load_engine(backbone, engine="onnxruntime")


def test_auto_picks_onnxruntime_on_cpu_and_logs_it(caplog):
    backbone = load_backbone("efficientnet_lite0", device="cpu")
    with caplog.at_level(logging.INFO, logger="clusterclean.engine"):
        engine = load_engine(backbone)
    assert isinstance(engine, OnnxRuntimeEngine)
    assert any(r.getMessage().startswith("Engine: ONNX Runtime") for r in caplog.records)
    assert MIN_EXPORT_COSINE == 0.9999


def test_bad_engine_values_are_refused_with_the_valid_ones():
    backbone = load_backbone("efficientnet_lite0", device="cpu")
    with pytest.raises(InvalidInputError, match="'engine' parameter of load_engine must be one"):
        load_engine(backbone, engine="tensorrt")
    with pytest.raises(InvalidInputError, match="'engine' parameter of run must be one of"):
        RunConfig(engine="openvino")


def test_plan_workers_one_per_core_for_onnxruntime():
    backbone = load_backbone("efficientnet_lite0", device="cpu")
    engine = load_engine(backbone, engine="onnxruntime", threads=4)
    assert plan_workers(10, engine) == 0  # small input: no worker
    assert plan_workers(256, engine) == 0
    assert plan_workers(257, engine) >= 1
    assert plan_workers(1000, engine, num_workers=3) == 3
    assert engine.for_workers(2).threads == 2 and engine.for_workers(8).threads == 1
    assert engine.for_workers(2).model == engine.model


# --------------------------------------------------------------------------- caches and run.json


def test_embedding_cache_keeps_engines_apart(photos, tmp_path):
    backbone = load_backbone("efficientnet_lite0", device="cpu")
    cache = tmp_path / "cache"
    for engine in ("onnxruntime", "torch"):
        embed_images(photos, backbone=backbone, engine=engine, cache_dir=cache, progress=False)
    setups = [json.loads(p.read_text()) for p in cache.glob("*/setup.json")]
    assert sorted(s["engine"] for s in setups) == ["onnxruntime", "torch"]


def _image_folder(tmp_path):
    """Two subjects x three views as JPEG, and their labels table: (folder, labels path)."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(1)
    rows = []
    for s, name in enumerate(("astronaut", "coffee")):
        for v, view in enumerate(
            make_views(Image.fromarray(getattr(skimage.data, name)()), 3, rng=rng)
        ):
            view.save(folder / f"s{s}_v{v}.jpg", quality=90)
            rows.append({"image": f"s{s}_v{v}.jpg", "hat": s})
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    return folder, tmp_path / "labels.csv"


def test_run_json_records_the_engine_that_ran(tmp_path):
    folder, labels = _image_folder(tmp_path)
    report = run(
        images=folder,
        labels=labels,
        out=tmp_path / "out",
        backbone="efficientnet_lite0",
        min_similarity=0.8,
        progress=False,
    )
    info = json.loads((tmp_path / "out" / "run.json").read_text())
    assert info["parameters"]["engine"] == "auto"
    assert info["embedding"]["engine"]["name"] == "onnxruntime"
    assert report.run_info["embedding"]["engine"]["name"] == "onnxruntime"


# --------------------------------------------------------------------------- a user's ONNX model


def _small_onnx_model(path) -> torch.nn.Module:
    """A small random-weight convolutional net exported to ONNX at ``path`` (64x48 input,
    dynamic batch, 16 features), the way a user would; returns the torch module."""
    torch.manual_seed(3)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 3, stride=2),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
    )
    with torch.no_grad():  # non-trivial running statistics, so BatchNorm is tested too
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 2.0)
    net.eval()
    torch.onnx.export(
        net,
        (torch.rand(2, 3, 64, 48),),
        str(path),
        input_names=["images"],
        output_names=["features"],
        dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
        opset_version=18,
        dynamo=False,
    )
    return net


def test_onnx_backbone_runs_a_users_model_with_torchs_vectors(photos, tmp_path):
    net = _small_onnx_model(tmp_path / "model.onnx")
    backbone = load_backbone("onnx", weights=tmp_path / "model.onnx")
    assert (backbone.model, backbone.input_size, backbone.dim) == (None, (64, 48), 16)
    assert backbone.transform.mean == (0.485, 0.456, 0.406)  # ImageNet unless told otherwise
    got = embed_images(photos, backbone=backbone, num_workers=0, progress=False)
    # the same module and the same transform, run by torch
    mine = Backbone("mine", net, backbone.transform, backbone.dim, backbone.input_size)
    want = embed_images(photos, backbone=mine, engine="torch", num_workers=0, progress=False)
    assert cosines(got.vectors, want.vectors).min() >= MIN_EXPORT_COSINE
    assert not np.allclose(got.vectors[0], got.vectors[1])  # the check has teeth
    # the normalisation can be given, or carried by the file
    other = load_onnx_backbone(tmp_path / "model.onnx", mean=(0.5,) * 3, std=(0.25,) * 3)
    assert (other.transform.mean, other.transform.std) == ((0.5,) * 3, (0.25,) * 3)
    tagged = onnx.load(tmp_path / "model.onnx")
    onnx.helper.set_model_props(tagged, {"mean": "0.5,0.5,0.5", "std": "0.25,0.25,0.25"})
    onnx.save(tagged, tmp_path / "tagged.onnx")
    carried = load_backbone("onnx", weights=tmp_path / "tagged.onnx").transform
    assert (carried.mean, carried.std) == ((0.5,) * 3, (0.25,) * 3)
    with pytest.raises(InvalidInputError, match="takes images of 64x48"):
        load_backbone("onnx", weights=tmp_path / "model.onnx", input_size=(32, 32))
    with pytest.raises(InvalidInputError, match="no torch module"):
        load_engine(backbone, engine="torch")


def test_onnx_backbone_in_a_run_records_onnxruntime(tmp_path):
    _small_onnx_model(tmp_path / "model.onnx")
    folder, labels = _image_folder(tmp_path)
    report = run(
        images=folder,
        labels=labels,
        backbone="onnx",
        weights=tmp_path / "model.onnx",
        min_similarity=0.8,
        progress=False,
    )
    assert report.run_info["embedding"]["backbone"] == "onnx"
    assert report.run_info["embedding"]["engine"]["name"] == "onnxruntime"
    assert report.embeddings.dim == 16


def test_a_bad_onnx_file_is_one_error_naming_the_file(tmp_path, capsys):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"this is not an ONNX model")
    with pytest.raises(ClustercleanError) as info:
        load_backbone("onnx", weights=bad)
    assert str(bad) in str(info.value)
    folder, labels = _image_folder(tmp_path)
    argv = ["run", "--images", str(folder), "--labels", str(labels), "--out", str(tmp_path / "o")]
    assert main([*argv, "--backbone", "onnx", "--weights", str(bad)]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "ONNX Runtime cannot load" in lines[0]


def test_a_run_with_a_head_loads_the_model_once(tmp_path, caplog):
    # the images and the head's augmented views go through one loaded backbone and engine
    folder, labels = _image_folder(tmp_path)
    with caplog.at_level(logging.INFO, logger="clusterclean"):
        report = run(
            images=folder,
            labels=labels,
            backbone="efficientnet_lite0",
            adapt="views",
            adapt_epochs=2,
            min_similarity=0.5,
            progress=False,
        )
    assert report.run_info["adaptation"]["method"] == "views"
    engines = [r for r in caplog.records if r.getMessage().startswith("Engine: ONNX Runtime")]
    exports = [r for r in caplog.records if "to ONNX in" in r.getMessage()]
    assert len(engines) == 1 and len(exports) == 1
    assert "views: embedded 2 views of 6 images" in caplog.text


def test_an_onnx_session_opens_on_first_use(tmp_path, photos):
    # the engine is cheap to make: worker processes open their own sessions, and a bad
    # file is named when it is first run
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"this is not an ONNX model")
    engine = OnnxRuntimeEngine(bad, threads=1)
    with pytest.raises(InvalidInputError, match=f"ONNX Runtime cannot load '{bad}'"):
        engine(np.zeros((1, 3, 8, 8), dtype=np.float32))
    good = OnnxRuntimeEngine(export_onnx(load_backbone("efficientnet_lite0")), threads=1)
    assert good(np.zeros((2, 3, 224, 224), dtype=np.float32)).shape == (2, 1280)
