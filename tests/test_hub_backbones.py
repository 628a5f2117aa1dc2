"""The timm: and open_clip: backbone families (clusterclean.hub_backbones).

Everything runs offline: random-weight models built by timm (``pretrained=False``)
and OpenCLIP (a tiny config, ``pretrained=None``), saved to tmp_path and loaded
back with ``weights=``; real image files go through clusterclean's real embedding
stage and must give the model's own features. The failed download runs the real
CLI with an empty Hugging Face cache and no network.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import subprocess
import sys

import numpy as np
import open_clip
import pandas as pd
import pytest
import skimage.data
import timm
import torch
from PIL import Image

import clusterclean as cc
from clusterclean.backbones import backbone_families, load_backbone
from clusterclean.cli import build_parser
from clusterclean.embed import OPTIONS, embed_images, read_image
from clusterclean.errors import InvalidInputError
from clusterclean.hub_backbones import HUB_OFFLINE_FIXES

#: The backbone runs channels-last; the reference runs contiguous: another conv kernel.
TOL = 1e-4
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
#: A tiny OpenCLIP architecture (a 1-layer ViT on 32x32 images), registered for these tests.
TINY_CLIP = "clusterclean-test-tiny-vit"
TINY_CLIP_CONFIG = {
    "embed_dim": 24,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 100, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for name in PHOTOS:
        path = folder / f"{name}.png"
        Image.fromarray(getattr(skimage.data, name)()).convert("RGB").save(path)
        paths.append(str(path))
    return paths


def random_timm(name: str, seed: int = 0) -> torch.nn.Module:
    """A random-weight timm model with its classifier, as a downloaded checkpoint has it."""
    torch.manual_seed(seed)
    return timm.create_model(name, pretrained=False).eval()


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """(random OpenCLIP model, its evaluation preprocess, its checkpoint file)."""
    folder = tmp_path_factory.mktemp("clip")
    (folder / f"{TINY_CLIP}.json").write_text(json.dumps(TINY_CLIP_CONFIG))
    open_clip.add_model_config(folder / f"{TINY_CLIP}.json")
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(TINY_CLIP, pretrained=None)
    path = folder / "tiny_clip.pth"
    torch.save(model.state_dict(), path)
    return model.eval(), preprocess, path


def stage_images(backbone, paths) -> list[Image.Image]:
    """The images as the embedding stage decodes them (at most reduced to 8/7 of the input)."""
    min_size = math.ceil(max(backbone.input_size) * 8 / 7)
    return [read_image(p, min_size=min_size) for p in paths]


def unit(features: torch.Tensor) -> np.ndarray:
    out = features.double().numpy()
    return out / np.linalg.norm(out, axis=1, keepdims=True)


# --------------------------------------------------------------------------- names


def test_the_families_are_registered_and_accepted_by_the_option_and_the_cli():
    assert backbone_families() == ["open_clip", "timm"]
    (option,) = [o for o in OPTIONS if o.name == "backbone"]
    for name in ("timm:convnext_tiny", "open_clip:ViT-B-32/laion2b_s34b_b79k", "resnet50"):
        assert option.check(name, "run") == name
        args = build_parser().parse_args(["run", "--out", "x", "--backbone", name])
        assert args.backbone == name
    assert "timm:NAME" in option.range_text() and "open_clip:NAME" in option.range_text()
    for bad in ("vgg:x", "timm:", "timm"):
        with pytest.raises(InvalidInputError, match="'timm:NAME'"):
            option.check(bad, "run")


def test_a_new_family_is_one_factory_and_one_registration(monkeypatch):
    from clusterclean import backbones

    monkeypatch.setattr(backbones, "BACKBONE_FAMILIES", dict(backbones.BACKBONE_FAMILIES))
    calls = []

    @backbones.register_backbone_family("toy")
    def toy(model_name, weights, input_size):
        calls.append((model_name, weights, input_size))
        model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        return backbones.Backbone(f"toy:{model_name}", model, lambda image: image, 3, (16, 16))

    (option,) = [o for o in OPTIONS if o.name == "backbone"]
    assert option.check("toy:any/name", "run") == "toy:any/name"
    assert load_backbone("toy:any/name", device="cpu").name == "toy:any/name"
    assert calls == [("any/name", None, None)]
    with pytest.raises(ValueError, match="identifier"):
        backbones.register_backbone_family("not a prefix")


@pytest.mark.parametrize(
    "name, message",
    [
        (
            "timm:convnext_tny",
            "Unknown timm model 'convnext_tny' in backbone 'timm:convnext_tny'. Close names: "
            "convnext_tiny",
        ),
        ("timm:resnet10t.nope", "Unknown pretrained tag in backbone 'timm:resnet10t.nope'"),
        (
            "open_clip:ViT-B-33/laion2b_s34b_b79k",
            "Unknown OpenCLIP model 'ViT-B-33' in backbone 'open_clip:ViT-B-33/laion2b_s34b_b79k'",
        ),
        ("open_clip:ViT-B-32", "Backbone 'open_clip:ViT-B-32' needs a pretrained tag of ViT-B-32"),
        ("open_clip:ViT-B-32/nope", "Backbone 'open_clip:ViT-B-32/nope' needs a pretrained tag"),
    ],
)
def test_an_unknown_model_or_tag_is_one_error_naming_the_backbone(name, message):
    with pytest.raises(InvalidInputError) as err:
        load_backbone(name, device="cpu")
    assert str(err.value).startswith(message)


# --------------------------------------------------------------------------- timm


@pytest.mark.parametrize("name", ["resnet10t", "test_vit"])  # a CNN, a fixed-size ViT
def test_timm_vectors_are_the_models_own_pooled_features(tmp_path, photos, name):
    model = random_timm(name)
    weights = tmp_path / f"{name}.pth"
    torch.save(model.state_dict(), weights)

    embeddings = embed_images(
        photos, backbone=f"timm:{name}", weights=weights, num_workers=0, progress=False
    )
    backbone = load_backbone(f"timm:{name}", weights=weights, device="cpu")

    assert embeddings.backbone == f"timm:{name}" and embeddings.ids.tolist() == photos
    assert backbone.dim == model.num_features == embeddings.vectors.shape[1]
    # preprocessing: timm's own evaluation transform from the model's config
    own = timm.data.create_transform(
        **timm.data.resolve_data_config({}, model=model), is_training=False
    )
    images = stage_images(backbone, photos)
    batch = torch.stack([own(image) for image in images])
    assert torch.equal(batch, torch.stack([backbone.transform(image) for image in images]))
    assert torch.equal(pickle.loads(pickle.dumps(backbone.transform))(images[0]), batch[0])
    assert backbone.input_size == tuple(model.pretrained_cfg["input_size"][1:])
    # features: the model's own pooled embedding (before its classifier)
    with torch.inference_mode():
        expected = model.forward_head(model.forward_features(batch), pre_logits=True)
    np.testing.assert_allclose(embeddings.vectors, unit(expected), atol=TOL)


def test_timm_weights_as_safetensors_or_wrapped_state_dict_give_the_same_vectors(tmp_path, photos):
    from safetensors.torch import save_file

    model = random_timm("resnet10t", seed=1)
    plain, wrapped, safe = tmp_path / "a.pth", tmp_path / "b.pth", tmp_path / "c.safetensors"
    torch.save(model.state_dict(), plain)
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, wrapped)
    save_file(model.state_dict(), safe)
    vectors = [
        embed_images(
            photos[:2], backbone="timm:resnet10t", weights=w, num_workers=0, progress=False
        ).vectors
        for w in (plain, wrapped, safe)
    ]
    np.testing.assert_array_equal(vectors[0], vectors[1])
    np.testing.assert_array_equal(vectors[0], vectors[2])
    ids = {load_backbone("timm:resnet10t", weights=w).weights_id for w in (plain, safe)}
    assert len(ids) == 2 and all(i.startswith("sha256:") for i in ids)


def test_timm_weights_of_another_model_are_refused_naming_file_and_backbone(tmp_path):
    weights = tmp_path / "other.pth"
    torch.save(random_timm("test_vit").state_dict(), weights)
    with pytest.raises(InvalidInputError) as err:
        load_backbone("timm:resnet10t", weights=weights)
    assert str(err.value).startswith(
        f"The weights file {str(weights)!r} does not load into backbone 'timm:resnet10t' "
        "(RuntimeError: Error(s) in loading state_dict for ResNet: Missing key(s) in state_dict: "
    )


# --------------------------------------------------------------------------- OpenCLIP


def test_open_clip_vectors_are_encode_image_of_its_own_preprocess(tiny_clip, photos):
    model, preprocess, weights = tiny_clip
    name = f"open_clip:{TINY_CLIP}"

    embeddings = embed_images(photos, backbone=name, weights=weights, num_workers=0, progress=False)
    backbone = load_backbone(name, weights=weights, device="cpu")

    assert embeddings.backbone == name and backbone.dim == TINY_CLIP_CONFIG["embed_dim"]
    assert backbone.input_size == (32, 32)
    images = stage_images(backbone, photos)
    batch = torch.stack([preprocess(image) for image in images])
    assert torch.equal(batch, torch.stack([backbone.transform(image) for image in images]))
    # DataLoader workers receive the transform pickled
    assert torch.equal(pickle.loads(pickle.dumps(backbone.transform))(images[0]), batch[0])
    with torch.inference_mode():
        expected = model.encode_image(batch)
    np.testing.assert_allclose(embeddings.vectors, unit(expected), atol=TOL)


def test_open_clip_weights_of_another_model_are_refused_naming_file_and_backbone(
    tiny_clip, tmp_path
):
    weights = tmp_path / "timm.pth"
    torch.save(random_timm("resnet10t").state_dict(), weights)
    with pytest.raises(InvalidInputError) as err:
        load_backbone(f"open_clip:{TINY_CLIP}", weights=weights)
    assert str(err.value).startswith(
        f"The weights file {str(weights)!r} does not load into backbone "
        f"'open_clip:{TINY_CLIP}' (RuntimeError: Error(s) in loading state_dict for CLIP"
    )


# --------------------------------------------------------------------------- offline


@pytest.mark.parametrize("backbone", ["timm:resnet10t", "open_clip:ViT-B-32/laion2b_s34b_b79k"])
def test_a_failed_download_is_one_clear_error_line(tmp_path, backbone):
    """The real CLI, an empty Hugging Face and torch cache, no network: exit 1, one line."""
    (tmp_path / "images").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "images" / "a.png")
    pd.DataFrame({"image": ["a.png"], "hat": [1]}).to_csv(tmp_path / "labels.csv", index=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    dead = "http://127.0.0.1:9"
    env.update(HF_HOME=str(tmp_path / "hf"), TORCH_HOME=str(tmp_path / "torch"))
    env.update(HF_HUB_OFFLINE="1", HTTPS_PROXY=dead, HTTP_PROXY=dead, https_proxy=dead)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "clusterclean.cli",
            "run",
            "-q",
            "--images",
            str(tmp_path / "images"),
            "--labels",
            str(tmp_path / "labels.csv"),
            "--out",
            str(tmp_path / "report"),
            "--backbone",
            backbone,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.strip().splitlines()  # one line, no traceback
    assert line.startswith(
        f"clusterclean: error: The pretrained weights of backbone {backbone!r} are not in the "
        "local cache and downloading them failed ("
    )
    assert line.endswith(HUB_OFFLINE_FIXES)
    assert not (tmp_path / "report").exists()


# --------------------------------------------------------------------------- end to end


def test_run_with_a_timm_backbone_end_to_end(tmp_path):
    """cc.run on generated images: three views of each of three photos group together."""
    folder = tmp_path / "images"
    folder.mkdir()
    rows = []
    for p, name in enumerate(("astronaut", "coffee", "chelsea")):
        photo = Image.fromarray(getattr(skimage.data, name)()).convert("RGB").resize((256, 256))
        for v in range(3):
            photo.crop((6 * v, 4 * v, 220 + 6 * v, 240 + 4 * v)).save(folder / f"{p}_{v}.png")
            rows.append({"image": f"{p}_{v}.png", "hat": p % 2})
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    weights = tmp_path / "resnet10t.pth"
    torch.save(random_timm("resnet10t").state_dict(), weights)

    report = cc.run(
        folder,
        tmp_path / "labels.csv",
        out=tmp_path / "report",
        backbone="timm:resnet10t",
        weights=str(weights),
        cache_dir=str(tmp_path / "cache"),
        num_workers=0,
        refine=False,
        progress=False,
    )

    assert report.embeddings.backbone == "timm:resnet10t"
    assert report.embeddings.vectors.shape == (9, 512)
    assert report.run_info.parameters["backbone"] == "timm:resnet10t"
    (cached,) = (tmp_path / "cache").iterdir()  # a folder name without ':' or '/'
    assert cached.name.startswith("timm_resnet10t-")
    component = report.images.set_index("image_id")["component_id"]
    for p in range(3):
        assert component[f"{p}_0.png"] == component[f"{p}_1.png"] == component[f"{p}_2.png"]
