"""The ``timm:`` and ``open_clip:`` backbone families: models users already have, by name.

``load_backbone("timm:convnext_tiny")``, ``"timm:vit_small_patch14_dinov2.lvd142m"``
(DINOv2 through timm), ``"open_clip:ViT-B-32/laion2b_s34b_b79k"`` (model/pretrained
tag). Each library builds its own model, its own preprocessing (timm:
``resolve_data_config`` + ``create_transform``; OpenCLIP: the evaluation
``preprocess``) and downloads its own weights into its own cache (the Hugging Face
cache, ``$HF_HOME``, or torch's for older timm URLs). The features are the pooled
embedding: timm with ``num_classes=0``, OpenCLIP's ``encode_image``; the backbone
registry reads the dimension from one forward pass.

Offline, ``weights=PATH`` loads a local file instead (timm: ``timm.models.load_state_dict``,
its classifier dropped, then a strict load; OpenCLIP: ``pretrained=PATH``, strict; both
read ``.safetensors`` or a ``torch.save`` state dict with ``weights_only=True``). The file
is in the library's own format: a timm Hugging Face repo's ``model.safetensors``, an
OpenCLIP ``open_clip_model.safetensors``, or ``torch.save(model.state_dict(), PATH)``.
A download that fails raises one :class:`~clusterclean.errors.WeightsUnavailableError`
that says what failed and how to work offline.

:mod:`clusterclean.backbones` registers the two families and imports this module
only when such a backbone is loaded; it wraps what is built here into a
:class:`~clusterclean.backbones.Backbone` (and hashes a weights file).
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch

from .errors import InvalidInputError, MissingDependencyError, WeightsUnavailableError

__all__ = ["HubModel", "timm_model", "open_clip_model", "HUB_OFFLINE_FIXES"]

#: What a user without network can do (the end of every failed-download message).
HUB_OFFLINE_FIXES = (
    "To work offline, pass a local weights file of this model with --weights PATH "
    "(Python: weights=PATH; a .safetensors or torch.save state dict), or fill the Hugging "
    "Face cache once while online (it lives in $HF_HOME/hub, default ~/.cache/huggingface/hub) "
    "and set HF_HUB_OFFLINE=1 (and HF_HOME if you copied the cache elsewhere), or skip "
    "embedding with --embeddings FILE."
)


class HubModel(NamedTuple):
    """A model built by timm or OpenCLIP, ready for :class:`~clusterclean.backbones.Backbone`.

    ``model`` (eval mode, CPU) maps ``(batch, 3, *input_size)`` to pooled features;
    ``transform`` is the library's own evaluation preprocessing; ``source`` names the
    downloaded weights (``timm:timm/resnet10t.c3_in1k``), ``""`` for a local file.
    """

    model: torch.nn.Module
    transform: Callable
    input_size: tuple[int, int]
    source: str


def _require(module: str, package: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"The {module}: backbones need the {package!r} package, which is not installed "
            f"({exc}). It is a clusterclean dependency: reinstall with bash scripts/setup.sh "
            f"or pip install -r requirements.txt."
        ) from exc


def _first_line(exc: BaseException) -> str:
    """``Type: message`` on one line (the first two lines of a long message, 300 chars at most)."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # torch's bold "do those steps only if"
    lines = [line.strip() for line in plain.splitlines() if line.strip()]
    text = " ".join(lines[:2])
    return f"{type(exc).__name__}: {text[:300]}"


def _unknown(kind: str, name: str, backbone: str, known: list[str], listing: str) -> None:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f" Close names: {', '.join(close)}." if close else ""
    raise InvalidInputError(f"Unknown {kind} {name!r} in backbone {backbone!r}.{hint} {listing}")


def _unfit(path: Path, backbone: str, exc: BaseException) -> InvalidInputError:
    return InvalidInputError(
        f"The weights file {str(path)!r} does not load into backbone {backbone!r} "
        f"({_first_line(exc)}). Give a weights file of this very model: a .safetensors file "
        "or a state dict written with torch.save(model.state_dict(), PATH); it is read with "
        "weights_only=True, so a checkpoint that also pickles other objects is refused."
    )


# --------------------------------------------------------------------------- timm


def timm_model(
    model_name: str, weights: Path | None, input_size: tuple[int, int] | None
) -> HubModel:
    """``timm:MODEL_NAME``: any timm model (``.tag`` optional), classifier removed.

    Parameters
    ----------
    model_name : str
        A ``timm.list_models()`` name, optionally with a pretrained tag
        (``vit_small_patch14_dinov2.lvd142m``), or ``hf-hub:ORG/REPO``.
    weights : Path, optional
        An existing local weights file of this model; ``None`` = timm's pretrained
        weights (Hugging Face cache, downloaded when online).
    input_size : tuple of int, optional
        ``(height, width)``; default: the model's pretrained config.
    """
    timm = _require("timm", "timm")
    from timm.data import create_transform, resolve_data_config
    from timm.models import get_pretrained_cfg

    backbone = f"timm:{model_name}"
    cfg = None
    if not model_name.startswith("hf-hub:"):
        if not timm.is_model(model_name):
            _unknown(
                "timm model",
                model_name,
                backbone,
                timm.list_models(),
                "The names are timm.list_models() (with an optional .tag from "
                "timm.list_pretrained()).",
            )
        try:
            cfg = get_pretrained_cfg(model_name)
        except RuntimeError as exc:  # "Invalid pretrained tag (x) for arch."
            arch = model_name.partition(".")[0]
            tags = ", ".join(timm.list_pretrained(f"{arch}.*")) or "none"
            raise InvalidInputError(
                f"Unknown pretrained tag in backbone {backbone!r} ({exc}). The tags of {arch} "
                f"are: {tags}."
            ) from exc
        if weights is None and not (cfg and (cfg.hf_hub_id or cfg.url)):
            raise InvalidInputError(
                f"timm publishes no pretrained weights for backbone {backbone!r}; pass a "
                "weights file with --weights PATH or pick a tag from timm.list_pretrained()."
            )
    kwargs: dict = {"num_classes": 0}
    if input_size is not None and cfg is not None and cfg.fixed_input_size:
        kwargs["img_size"] = input_size
    if weights is None:
        try:
            model = timm.create_model(model_name, pretrained=True, **kwargs)
        except Exception as exc:  # OSError (LocalEntryNotFoundError), HTTP, hash ...
            raise WeightsUnavailableError(
                f"The pretrained weights of backbone {backbone!r} are not in the local cache "
                f"and downloading them failed ({_first_line(exc)}). {HUB_OFFLINE_FIXES}"
            ) from exc
        hub = model.pretrained_cfg.get("hf_hub_id") or model.pretrained_cfg.get("url")
        source = f"timm:{hub or model_name}"
    else:
        path = weights
        model = timm.create_model(model_name, pretrained=False, **kwargs)
        try:
            state = timm.models.load_state_dict(str(path), weights_only=True)
        except Exception as exc:  # torch / safetensors errors for a file that is no state dict
            raise InvalidInputError(
                f"Could not read the weights file {str(path)!r} for backbone {backbone!r} "
                f"({_first_line(exc)}). Give a .safetensors file or a state dict written with "
                "torch.save(model.state_dict(), PATH)."
            ) from exc
        classifier = model.pretrained_cfg.get("classifier") or ()
        classifier = (classifier,) if isinstance(classifier, str) else classifier
        heads = tuple(f"{c}." for c in classifier)
        state = {k: v for k, v in state.items() if not k.startswith(heads)}  # the classifier
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:  # missing / unexpected keys, wrong shapes
            raise _unfit(path, backbone, exc) from exc
        source = ""
    model.eval()
    overrides = {"input_size": (3, *input_size)} if input_size is not None else {}
    data_config = resolve_data_config(overrides, model=model)
    size = tuple(int(s) for s in data_config["input_size"][1:])
    transform = create_transform(**data_config, is_training=False)
    return HubModel(model, transform, size, source)


# --------------------------------------------------------------------------- OpenCLIP


@contextlib.contextmanager
def _quiet_root_errors():
    """Drop ERROR records sent to the root logger (``logging.error``) meanwhile.

    OpenCLIP reports a failed download with ``logging.error`` and then raises; the
    error clusterclean raises from it says the same, so the log line would only
    print the message twice.
    """
    root = logging.getLogger()

    def keep(record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR

    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


class ImageEncoder(torch.nn.Module):
    """An OpenCLIP model's ``encode_image`` as a module: (B, 3, H, W) -> (B, dim)."""

    def __init__(self, clip: torch.nn.Module) -> None:
        super().__init__()
        self.clip = clip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_image(x)


def open_clip_model(
    model_name: str, weights: Path | None, input_size: tuple[int, int] | None
) -> HubModel:
    """``open_clip:MODEL/TAG``: an OpenCLIP model's image embedding (``encode_image``).

    Parameters
    ----------
    model_name : str
        ``MODEL/TAG`` from ``open_clip.list_pretrained()`` (``ViT-B-32/laion2b_s34b_b79k``),
        ``MODEL`` alone with ``weights``, or ``hf-hub:ORG/REPO``.
    weights : Path, optional
        An existing local checkpoint of MODEL (``pretrained=PATH``); TAG, when given too,
        still picks the preprocessing (mean, std, resize) the tag was trained with.
    input_size : tuple of int, optional
        ``(height, width)``; default: the model's image size.
    """
    open_clip = _require("open_clip", "open_clip_torch")
    backbone = f"open_clip:{model_name}"
    if model_name.startswith("hf-hub:"):
        arch, tag = model_name, ""
    else:
        arch, _, tag = model_name.partition("/")
        if arch not in open_clip.list_models():
            _unknown(
                "OpenCLIP model",
                arch,
                backbone,
                open_clip.list_models(),
                "Write open_clip:MODEL/TAG with a pair from open_clip.list_pretrained(), "
                "e.g. open_clip:ViT-B-32/laion2b_s34b_b79k.",
            )
        tags = open_clip.list_pretrained_tags_by_model(arch)
        if (tag or weights is None) and tag not in tags:
            raise InvalidInputError(
                f"Backbone {backbone!r} needs a pretrained tag of {arch} after the '/': one of "
                f"{', '.join(tags) or 'none'} (e.g. open_clip:{arch}/{tags[0] if tags else 'TAG'}"
                "), or a local checkpoint with --weights PATH."
            )
    kwargs: dict = {"pretrained_text": False, "weights_only": True}
    if input_size is not None:
        kwargs["force_image_size"] = tuple(input_size)
    if weights is None:
        try:
            with _quiet_root_errors():  # OpenCLIP logs the failure, then raises it
                model, _, preprocess = open_clip.create_model_and_transforms(
                    arch, pretrained=tag or None, **kwargs
                )
        except Exception as exc:  # RuntimeError wrapping the hub's OSError, HTTP ...
            raise WeightsUnavailableError(
                f"The pretrained weights of backbone {backbone!r} are not in the local cache "
                f"and downloading them failed ({_first_line(exc)}). {HUB_OFFLINE_FIXES}"
            ) from exc
        source = f"open_clip:{model_name}"
    else:
        path = weights
        if tag:
            cfg = open_clip.get_pretrained_cfg(arch, tag)
            keys = ("mean", "std", "interpolation", "resize_mode")
            kwargs.update({f"image_{k}": cfg[k] for k in keys if cfg.get(k) is not None})
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                arch, pretrained=str(path), **kwargs
            )
        except Exception as exc:  # torch / safetensors / load_state_dict errors
            raise _unfit(path, backbone, exc) from exc
        source = ""
    model.eval()
    image_size = model.visual.image_size
    size = tuple(image_size) if isinstance(image_size, (tuple, list)) else (image_size,) * 2
    return HubModel(ImageEncoder(model).eval(), preprocess, size, source)
