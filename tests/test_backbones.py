"""Backbones: registry, weight loading (local, packaged, TorchScript) and the offline error.

Real torchvision / EfficientNet models with real weight files written to tmp_path.
Embedding real image files through each backbone is tested in test_embed.py.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torchvision

from clusterclean.backbones import BACKBONES, Backbone, available_backbones, load_backbone
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
    # resnet101 takes ~10 s on a small CPU and runs the same code path as resnet50
    ["resnet18", "resnet34", "resnet50", pytest.param("resnet101", marks=pytest.mark.slow)],
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
    torch.testing.assert_close(out, penultimate(reference, x), **CLOSE)


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
