"""Backbones: registry, weight loading (local, packaged, TorchScript) and the offline error.

Real torchvision / EfficientNet models with real weight files written to tmp_path.
Embedding real image files through each backbone is tested in test_embed.py.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from clusterclean.backbones import (
    ANY_SIZE_BACKBONES,
    BACKBONES,
    Backbone,
    _reid_networks,
    available_backbones,
    load_backbone,
    smaller_input,
)
from clusterclean.errors import InvalidInputError, WeightsUnavailableError

#: The backbone runs channels-last; the hand-made reference runs contiguous: another conv kernel.
CLOSE = {"rtol": 1e-4, "atol": 1e-4}
RESNET_DIMS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "resnet101": 2048}


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """An empty torch cache and no way to reach the internet (a dead local proxy)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)


def random_resnet(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torchvision.models.get_model(name, weights=None).eval()


def penultimate(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """ResNet features before the classifier, computed by hand from the layers."""
    with torch.inference_mode():
        for layer in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            x = getattr(model, layer)(x)
        return x.mean(dim=(2, 3))


def test_registry_names():
    assert available_backbones() == sorted(BACKBONES)
    assert set(available_backbones()) >= {
        "resnet18",
        "resnet34",
        "resnet50",
        "resnet101",
        "efficientnet_lite0",
        "torchscript",
        "osnet_x1_0",
        "osnet_x0_25",
        "resnet50_bnneck",
    }


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(InvalidInputError) as err:
        load_backbone("resnet51")
    message = str(err.value)
    assert message.startswith("The 'name' parameter of load_backbone must be one of ")
    assert "'resnet50'" in message and "'efficientnet_lite0'" in message
    assert message.endswith("Got 'resnet51' instead.")


@pytest.mark.parametrize(
    "name",
    # 34 and 101 run the same code path as 18 and 50 and cost seconds on a small CPU
    [
        "resnet18",
        pytest.param("resnet34", marks=pytest.mark.slow),
        "resnet50",
        pytest.param("resnet101", marks=pytest.mark.slow),
    ],
)
def test_resnet_loads_a_local_state_dict(tmp_path, name):
    reference = random_resnet(name)
    path = tmp_path / f"{name}.pth"
    torch.save(reference.state_dict(), path)  # includes fc.*: the classifier must be ignored

    backbone = load_backbone(name, weights=path, device="cpu")

    assert isinstance(backbone, Backbone)
    assert backbone.name == name and backbone.dim == RESNET_DIMS[name]
    assert backbone.input_size == (224, 224)
    assert backbone.weights_id.startswith("sha256:") and len(backbone.weights_id) == 7 + 64
    assert not backbone.model.training
    x = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        out = backbone.model(x)
    assert out.shape == (2, RESNET_DIMS[name])
    expected = penultimate(reference, x)
    # random deep nets (resnet101) reach large activations, where oneDNN's choice of
    # algorithm moves the last digits: the tolerance is relative to the output's scale.
    # Weights loaded wrongly give unrelated features (cosine far below 1).
    scale = expected.abs().max().item()
    torch.testing.assert_close(out, expected, rtol=1e-3, atol=CLOSE["atol"] * max(scale, 1.0))
    cosine = torch.nn.functional.cosine_similarity(out, expected, dim=1)
    assert cosine.min().item() >= 0.99999


def test_checkpoint_wrapped_in_state_dict_with_module_prefix(tmp_path):
    reference = random_resnet("resnet18", seed=3)
    state = {f"module.{k}": v for k, v in reference.state_dict().items()}
    path = tmp_path / "ckpt.pth.tar"
    torch.save({"state_dict": state, "epoch": 7}, path)
    backbone = load_backbone("resnet18", weights=path)
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(backbone.model(x), penultimate(reference, x), **CLOSE)


def test_resnet_offline_without_cache_names_the_fixes(offline):
    with pytest.raises(WeightsUnavailableError) as err:
        load_backbone("resnet18")
    message = str(err.value)
    assert "ImageNet weights of backbone 'resnet18'" in message
    assert "empty_torch_home" in message  # where it looked
    assert "resnet18-f37072fd.pth" in message  # which file
    assert "--weights PATH" in message
    assert "--backbone efficientnet_lite0" in message
    assert "--embeddings FILE" in message


def test_efficientnet_lite0_loads_offline_with_packaged_weights(offline):
    backbone = load_backbone("efficientnet_lite0", device="cpu")
    assert backbone.dim == 1280 and backbone.input_size == (224, 224)
    with torch.inference_mode():
        out = backbone.model(torch.rand(2, 3, 224, 224))
    assert out.shape == (2, 1280)
    assert torch.isfinite(out).all() and (out.norm(dim=1) > 0).all()


def test_weights_for_another_architecture_are_rejected(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(random_resnet("resnet18").state_dict(), path)
    with pytest.raises(InvalidInputError) as err:
        load_backbone("resnet50", weights=path)
    message = str(err.value)
    assert f"The weights file {str(path)!r} does not fit backbone 'resnet50'" in message
    assert "missing" in message and "wrong shape" in message
    assert "Pick the --backbone the weights were trained for." in message


def test_missing_weights_file(tmp_path):
    path = tmp_path / "nope.pth"
    with pytest.raises(InvalidInputError, match="does not exist. Check the path given to --"):
        load_backbone("resnet18", weights=path)


def test_weights_file_that_is_not_a_state_dict(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("not a checkpoint")
    with pytest.raises(InvalidInputError, match="Could not read the weights file .* state dict"):
        load_backbone("resnet18", weights=path)
    torch.save([1, 2, 3], path)
    with pytest.raises(InvalidInputError, match="does not hold a state dict"):
        load_backbone("resnet18", weights=path)


# torch >= 2.10 marks TorchScript deprecated; the backbone still supports existing exports.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")


class _TinyNet(torch.nn.Module):
    def __init__(self, pool: bool = True) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 5, kernel_size=3, stride=4)
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv(x))
        return y.mean(dim=(2, 3)) if self.pool else y


def test_torchscript_model_dim_found_by_a_dummy_forward(tmp_path):
    torch.manual_seed(1)
    net = _TinyNet().eval()
    path = tmp_path / "tiny.pt"
    torch.jit.script(net).save(str(path))

    backbone = load_backbone("torchscript", weights=path, input_size=(64, 32))

    assert backbone.dim == 5 and backbone.input_size == (64, 32)
    x = torch.rand(3, 3, 64, 32)
    with torch.inference_mode():
        torch.testing.assert_close(backbone.model(x), net(x))


def test_torchscript_errors(tmp_path):
    with pytest.raises(InvalidInputError, match="needs the TorchScript file: pass --weights PATH"):
        load_backbone("torchscript")
    state_dict_file = tmp_path / "sd.pth"
    torch.save(_TinyNet().state_dict(), state_dict_file)
    with pytest.raises(InvalidInputError, match="Could not load .* as a TorchScript model"):
        load_backbone("torchscript", weights=state_dict_file)
    feature_map_file = tmp_path / "map.pt"
    torch.jit.script(_TinyNet(pool=False)).save(str(feature_map_file))
    with pytest.raises(InvalidInputError) as err:
        load_backbone("torchscript", weights=feature_map_file)
    assert "returns (1, 5, 56, 56) for an input of shape (1, 3, 224, 224)" in str(err.value)
    assert "Export the model with its global pooling" in str(err.value)


@pytest.mark.parametrize("size", [(224,), (8, 8), (224, 224.0), "224"])
def test_bad_input_size(size):
    with pytest.raises(InvalidInputError, match="'input_size' parameter of load_backbone"):
        load_backbone("resnet18", input_size=size)


def test_bad_device():
    with pytest.raises(InvalidInputError, match="'device' parameter must be a torch device"):
        load_backbone("efficientnet_lite0", device="tpu-ish")


def test_importing_the_stage_does_not_import_torch():
    code = (
        "import sys, clusterclean.backbones, clusterclean.embed; "
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "assert 'torchvision' not in sys.modules, 'torchvision imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- person ReID

#: (number of tensors, number of values, sha256 of the sorted "key:shape" lines) of the state
#: dicts that torchreid 0.2.5 (osnet_x1_0 / osnet_x0_25, num_classes=751) and fast-reid 1.4.0
#: (Baseline, build_resnet_backbone 50x, last stride 1, EmbeddingHead with BNNeck, 751 ids)
#: write. Computed once with those packages; a checkpoint matching them has their exact keys.
REFERENCE_LAYOUTS = {
    "osnet_x1_0": (
        567,
        2577891,
        "5c7fea135abe7893279c4b5151161fbf0be65f880d284f40d2599c3b5bd7f96f",
    ),
    "osnet_x0_25": (
        567,
        593735,
        "b9e709781ce9f2d871cfd6fcd5148cc8009ee5e876c6fe97c04b2b1df91a0562",
    ),
    "fast-reid": (
        324,
        25107446,
        "a1dc5a36a4d1ec562dd6400418317726335c2738907ccee23dc69c89e7eefe14",
    ),
}
N_IDS = 751  # Market-1501 training identities


def layout(state: dict) -> tuple[int, int, str]:
    lines = "\n".join(f"{k}:{tuple(v.shape)}" for k, v in sorted(state.items()))
    return (
        len(state),
        sum(v.numel() for v in state.values()),
        hashlib.sha256(lines.encode()).hexdigest(),
    )


def randomised(make_module, seed: int) -> dict:
    """A fresh module's state dict (random init) with random batch-norm statistics too."""
    torch.manual_seed(seed)
    state = make_module().state_dict()
    for key, value in state.items():
        if key.endswith("running_mean"):
            value.uniform_(-0.1, 0.1)
        elif key.endswith("running_var"):
            value.uniform_(0.5, 1.5)
    return state


def torchreid_checkpoint(name: str, path, seed: int = 0) -> dict:
    """A checkpoint as torchreid's save_checkpoint writes it (DataParallel prefix included)."""
    widths = {"osnet_x1_0": (64, 256, 384, 512), "osnet_x0_25": (16, 64, 96, 128)}[name]
    state = randomised(lambda: _reid_networks().OSNet(widths), seed)
    state["classifier.weight"] = torch.randn(N_IDS, 512)
    state["classifier.bias"] = torch.zeros(N_IDS)
    assert layout(state) == REFERENCE_LAYOUTS[name]
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 150, "rank1": 0.94},
        path,
    )
    return state


@pytest.mark.parametrize("name", ["osnet_x1_0", "osnet_x0_25"])
def test_osnet_loads_a_torchreid_checkpoint(tmp_path, name):
    path = tmp_path / f"{name}_market.pth.tar-150"
    state = torchreid_checkpoint(name, path)

    backbone = load_backbone(name, weights=path)

    assert backbone.dim == 512 and backbone.input_size == (256, 128)
    loaded = backbone.model.state_dict()
    for key in ("conv1.conv.weight", "conv2.0.conv2d.3.conv2.weight", "conv2.2.0.bn.running_var"):
        torch.testing.assert_close(loaded[key], state[key])
    image = Image.fromarray(np.full((300, 90, 3), 128, dtype=np.uint8))
    assert backbone.transform(image).shape == (3, 256, 128)  # person crop: resized, not cropped
    with torch.inference_mode():
        out = backbone.model(torch.rand(2, 3, 256, 128))
    assert out.shape == (2, 512) and torch.isfinite(out).all()


def test_resnet50_bnneck_loads_fast_reid_and_strong_baseline_checkpoints(tmp_path):
    ours = randomised(lambda: _reid_networks().BNNeckResNet50(ceil_mode_maxpool=True), seed=1)
    fast_reid = {
        k.replace("bottleneck.", "heads.bottleneck.0.", 1) if k.startswith("bottleneck.") else k: v
        for k, v in ours.items()
    }
    fast_reid["heads.weight"] = torch.randn(N_IDS, 2048)
    assert layout(fast_reid) == REFERENCE_LAYOUTS["fast-reid"]
    torch.save({"model": fast_reid, "iteration": 17_999}, tmp_path / "market_bot_R50.pth")
    strong = {k.replace("backbone.", "base.", 1): v for k, v in ours.items()}
    strong["classifier.weight"] = fast_reid["heads.weight"]
    torch.save(strong, tmp_path / "resnet50_model_120.pth")

    x = torch.rand(1, 3, 64, 32)
    outputs = []
    for file in ("market_bot_R50.pth", "resnet50_model_120.pth"):
        backbone = load_backbone("resnet50_bnneck", weights=tmp_path / file)
        assert backbone.dim == 2048 and backbone.input_size == (256, 128)
        torch.testing.assert_close(
            backbone.model.state_dict()["bottleneck.running_mean"], ours["bottleneck.running_mean"]
        )
        with torch.inference_mode():
            outputs.append(backbone.model(x))
    assert outputs[0].shape == (1, 2048)
    # fast-reid's stem max-pools with ceil_mode, reid-strong-baseline's pads: same weights,
    # same output size, slightly different features
    assert not torch.allclose(outputs[0], outputs[1])


@pytest.mark.parametrize("name", ["osnet_x1_0", "osnet_x0_25", "resnet50_bnneck"])
def test_reid_backbones_need_weights(name):
    with pytest.raises(WeightsUnavailableError) as err:
        load_backbone(name)
    message = str(err.value)
    assert message.startswith(f"The {name!r} backbone needs trained weights.")
    assert "--weights PATH" in message and "MODEL_ZOO" in message


def test_reid_checkpoint_for_another_architecture(tmp_path):
    path = tmp_path / "osnet.pth"
    torchreid_checkpoint("osnet_x0_25", path)
    with pytest.raises(InvalidInputError) as err:
        load_backbone("osnet_x1_0", weights=path)
    assert "does not fit backbone 'osnet_x1_0': keys" in str(err.value)
    assert "wrong shape (first: conv1.conv.weight" in str(err.value)


@pytest.mark.parametrize(
    ("size", "longer_side", "expected"),
    [
        ((224, 224), 160, (160, 160)),
        ((256, 128), 160, (160, 80)),  # a person crop keeps its 2:1 shape
        ((224, 224), 128, (128, 128)),
        ((240, 200), 180, (180, 150)),
        ((224, 224), 224, None),  # not smaller: the backbone's own size
        ((224, 224), 300, None),
    ],
)
def test_smaller_input_scales_the_longer_side(size, longer_side, expected):
    assert smaller_input(size, longer_side) == expected


def test_any_size_backbones_are_registered_names():
    assert ANY_SIZE_BACKBONES <= set(BACKBONES)
