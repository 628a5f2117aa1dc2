"""Embeddings -> adapted embeddings: a projection head trained on the dataset's own images.

A generic ImageNet backbone is not trained to ignore what a camera changes
(framing, mirror, exposure, white balance, blur, compression). A small head
``h`` on the frozen backbone features is trained so that the augmented views
of one image (:mod:`clusterclean.views`) and the image itself land close
together and other images far apart, with the supervised contrastive loss
(Khosla et al. 2020; NT-Xent when each image is its own class):

    L = mean_i  -1/|P(i)| sum_{p in P(i)} log( exp(z_i.z_p / T) / sum_{a != i} exp(z_i.z_a / T) )

over a batch of items (original features and views), ``z = h(x) / ||h(x)||``,
``T`` the temperature and ``P(i)`` the other items of ``i``'s class. With
``related`` codes (the run passes the components of its graph without a head),
items of other classes that share a code are left out of the sum over ``a``:
two photos of one person already joined by the plain graph are not pushed
apart. Without this, on a small dataset (where another photo of the same person
is in most batches) the head learns to tell one person's photos apart. The class
of an item is its image (``method="views"``: no labels at all), or, where the
dataset knows identities (a ``group`` column, e.g. person ids), its group
(``method="groups"``: a metric head learned from the known identities, applied
to every image). The head is

    h(x) = W1^T u + b1,   u = (x - mu) / sigma

(with ``hidden > 0`` the two-layer ``h(x) = W2^T relu(W1^T u + b1) + b2``), with ``mu`` the mean
feature and ``sigma`` the root mean square of the centred features' coordinates.
Training needs torch; the fitted :class:`Adaptation` is numpy only, so applying
it (``Adaptation.apply``) to new images does not, and it is saved as ``.npz``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._contracts import Embeddings, VectorTransform, check_embeddings
from ._validation import check_float, check_int, check_type
from .errors import InvalidInputError, InvalidTypeError
from .options import Option, declare
from .views import AugmentedViews

__all__ = [
    "OPTIONS",
    "ADAPT_METHODS",
    "Adaptation",
    "adapt_embeddings",
    "fit_adaptation",
    "load_adaptation",
]

#: ``adapt`` values: ``auto`` (a label-free head when the images are there), no head,
#: a label-free head, a head that also learns known groups.
ADAPT_METHODS = ("auto", "none", "views", "groups")

#: The options of the adapt stage, declared once (:mod:`clusterclean.options`).
OPTIONS = declare(
    "adapt",
    Option(
        "adapt",
        "auto",
        "train a label-free projection head on augmented views of the images before the "
        "graph ('groups' also learns the group column; --adapt alone = views; auto = "
        "views when the run has >= 100 images, their files and a fixed cut, else none); "
        "saved as adaptation.npz",
        "choice",
        choices=ADAPT_METHODS,
        cli={"nargs": "?", "const": "views"},
    ),
    Option(
        "adapt_views",
        2,
        "augmented views embedded per image",
        "int",
        low=1,
    ),
    Option(
        "adapt_epochs",
        30,
        "training epochs of the head",
        "int",
        low=1,
    ),
    Option(
        "adapt_dim",
        128,
        "output dimension of the head",
        "int",
        low=1,
    ),
    Option(
        "adapt_hidden",
        0,
        "hidden width of a two-layer head (0: a linear head)",
        "int",
        low=0,
    ),
    Option(
        "adapt_temperature",
        0.2,
        "temperature T of the head's contrastive loss (lower: sharper, pushes look-alikes "
        "further apart)",
        "float",
        low=0.001,
        high=1.0,
    ),
    Option(
        "adapt_view_size",
        None,
        "embed the head's views at this longer input side, when smaller than the "
        "backbone's (e.g. 160: about half the views' embedding time; built-in CNN "
        "backbones only; none: the backbone's size)",
        "int",
        low=32,
        nullable=True,
    ),
    Option(
        "adapt_max_images",
        2000,
        "embed the views of a random sample of this many images (none: all)",
        "int",
        low=2,
        nullable=True,
    ),
)

logger = logging.getLogger(__name__)

#: Items (the original and the views) drawn per class in a batch, at most.
ITEMS_PER_CLASS = 4


@dataclass(frozen=True)
class Adaptation(VectorTransform):
    """A fitted projection head (numpy only).

    Attributes
    ----------
    mean : ndarray of shape (dim_in,), dtype float32
        ``mu``, the mean feature of the training images.
    scale : float
        ``sigma``: inputs are ``u = (x - mu) / sigma``.
    weights : tuple of ndarray
        ``W1`` (dim_in, hidden) [and ``W2`` (hidden, dim_out)], float32.
    biases : tuple of ndarray
        ``b1`` [and ``b2``], float32; a ReLU sits between two layers.
    method : str
        ``"views"`` (label-free) or ``"groups"`` (known identities too).
    backbone : str
        Backbone of the fitted embeddings; adapted ones are named
        ``"<backbone>+adapt<dim_out>"``.
    info : dict
        Training figures for ``run.json`` (images, classes, epochs, loss...).
    """

    mean: np.ndarray
    scale: float
    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]
    method: str
    backbone: str = "user"
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def dim_in(self) -> int:
        return int(self.weights[0].shape[0])

    @property
    def dim_out(self) -> int:
        return int(self.weights[-1].shape[1])

    _noun, _verb, _tag = "adaptation", "Adapt", "adapt"

    def _map(self, vectors: np.ndarray) -> np.ndarray:
        """``h(x)``; :meth:`transform` normalises the rows after."""
        z = (vectors - self.mean) / np.float32(self.scale)
        for layer, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            if layer:
                z = np.maximum(z, 0.0)
            z = z @ weight + bias
        return z

    def summary(self) -> dict[str, Any]:
        """What the head is and how it was trained, for ``run.json``."""
        return {
            "method": self.method,
            "dim_in": self.dim_in,
            "dim_out": self.dim_out,
            "hidden": int(self.weights[0].shape[1]) if len(self.weights) > 1 else 0,
            "backbone": self.backbone,
            **self.info,
        }

    def _arrays(self) -> dict[str, Any]:
        arrays = {f"weight{i}": w for i, w in enumerate(self.weights)}
        arrays |= {f"bias{i}": b for i, b in enumerate(self.biases)}
        return {
            "mean": self.mean,
            "scale": np.float64(self.scale),
            "n_layers": np.int64(len(self.weights)),
            "method": np.str_(self.method),
            "backbone": np.str_(self.backbone),
            "info": np.str_(json.dumps(self.info)),
            **arrays,
        }


def load_adaptation(path: str | Path) -> Adaptation:
    """Read a head written by :meth:`Adaptation.save`."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            n_layers = int(data["n_layers"])
            return Adaptation(
                mean=data["mean"].astype(np.float32),
                scale=float(data["scale"]),
                weights=tuple(data[f"weight{i}"].astype(np.float32) for i in range(n_layers)),
                biases=tuple(data[f"bias{i}"].astype(np.float32) for i in range(n_layers)),
                method=str(data["method"]),
                backbone=str(data["backbone"]),
                info=json.loads(str(data["info"])),
            )
    except (OSError, KeyError, ValueError) as exc:
        raise InvalidInputError(
            f"{path} is not an adaptation file written by Adaptation.save ({exc}); "
            "fit it again with clusterclean.fit_adaptation."
        ) from exc


# --------------------------------------------------------------------------- training


def _check_views(views: object, embeddings: Embeddings, func: str) -> AugmentedViews:
    check_type(
        views, AugmentedViews, "views", func, "AugmentedViews (see clusterclean.embed_views)"
    )
    if views.vectors.ndim != 3 or views.vectors.shape[2] != embeddings.dim:
        raise InvalidInputError(
            f"The views have shape {views.vectors.shape} but the embeddings have dimension "
            f"{embeddings.dim}; embed the views with the embeddings' backbone."
        )
    rows = np.asarray(views.rows)
    if len(rows) != len(views.vectors) or (
        len(rows) and (rows.min() < 0 or rows.max() >= len(embeddings))
    ):
        raise InvalidInputError(
            f"The views' rows must index the {len(embeddings)} embeddings, one row per view "
            "set; these views belong to other data."
        )
    return views


def _group_codes(groups: object, n_rows: int, func: str, name: str = "groups") -> np.ndarray:
    """Group labels -> int codes (-1 = unknown: None, NaN or empty)."""
    if isinstance(groups, (str, bytes)) or not isinstance(
        groups, (Sequence, np.ndarray, pd.Series)
    ):
        raise InvalidTypeError(
            f"The {name!r} parameter of {func} must be a sequence of group labels (None for "
            f"unknown) or None. Got {type(groups).__name__} instead."
        )
    values = pd.Series(list(groups), dtype=object)
    if len(values) != n_rows:
        raise InvalidInputError(
            f"The {name!r} parameter of {func} must hold one label per embedding ({n_rows}). "
            f"Got {len(values)} instead."
        )
    known = values.notna() & (values.astype(str) != "")
    codes = np.full(n_rows, -1, dtype=np.int64)
    codes[known.to_numpy()] = pd.factorize(values[known].astype(str), sort=True)[0]
    return codes


def _training_items(
    embeddings: Embeddings, views: AugmentedViews | None, codes: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training vectors, their class ids and the dataset row of each.

    Items: every view, the original of every image with views, and (with
    groups) the original of every image with a known group. Class: the group
    when known, else the image.
    """
    n_rows = len(embeddings)
    view_rows = np.zeros(0, dtype=np.int64) if views is None else np.asarray(views.rows)
    rows = view_rows
    if codes is not None:
        rows = np.union1d(view_rows, np.flatnonzero(codes >= 0))
    image_class = np.arange(n_rows, dtype=np.int64) + (0 if codes is None else codes.max() + 1)
    if codes is not None:
        image_class = np.where(codes >= 0, codes, image_class)
    vectors = [embeddings.vectors[rows]]
    item_rows = [rows]
    if views is not None:
        vectors.append(views.vectors.reshape(-1, embeddings.dim))
        item_rows.append(np.repeat(view_rows, views.n_views))
    item_rows = np.concatenate(item_rows)
    return np.concatenate(vectors), image_class[item_rows], item_rows


def _batches(classes: np.ndarray, batch_size: int, rng: np.random.Generator):
    """Item index arrays: ``batch_size // ITEMS_PER_CLASS`` shuffled classes per batch,
    up to ``ITEMS_PER_CLASS`` random items of each; classes with one item are left out."""
    order = np.argsort(classes, kind="stable")
    unique, starts, counts = np.unique(classes[order], return_index=True, return_counts=True)
    usable = np.flatnonzero(counts >= 2)
    per_batch = max(2, batch_size // ITEMS_PER_CLASS)
    shuffled = rng.permutation(usable)
    for first in range(0, len(shuffled), per_batch):
        chosen = []
        for c in shuffled[first : first + per_batch]:
            members = order[starts[c] : starts[c] + counts[c]]
            if counts[c] > ITEMS_PER_CLASS:
                members = rng.choice(members, ITEMS_PER_CLASS, replace=False)
            chosen.append(members)
        yield np.concatenate(chosen)


def _supcon_loss(z, labels, temperature: float, related=None):
    """The supervised contrastive loss of the module docstring over unit rows ``z``.

    ``related`` (one code per item, -1 = none): items of other classes that share a
    code are left out of each other's denominator, neither pulled nor pushed.
    """
    import torch

    logits = z @ z.T / temperature
    self_mask = torch.eye(len(z), dtype=torch.bool)
    same_class = labels[:, None] == labels[None, :]
    ignored = self_mask
    if related is not None:
        ignored = ignored | (
            (related[:, None] == related[None, :]) & (related[:, None] >= 0) & ~same_class
        )
    logits = logits.masked_fill(ignored, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positive = same_class & ~self_mask
    n_positive = positive.sum(dim=1)
    has = n_positive > 0
    per_anchor = -(log_prob.masked_fill(~positive, 0.0).sum(dim=1)[has]) / n_positive[has]
    return per_anchor.mean()


def _train(
    head, inputs, labels, classes, epochs, batch_size, temperature, optimiser, seed, related=None
):
    """Run the epochs on one CPU thread (same seed, same head); the mean loss of each."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rng = np.random.default_rng(seed)
    losses = []
    try:
        for _ in range(epochs):
            total, n_batches = 0.0, 0
            for batch in _batches(classes, batch_size, rng):
                batch = torch.from_numpy(batch)
                z = torch.nn.functional.normalize(head(inputs[batch]), dim=1)
                loss = _supcon_loss(
                    z, labels[batch], temperature, None if related is None else related[batch]
                )
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                total, n_batches = total + loss.item(), n_batches + 1
            losses.append(total / max(n_batches, 1))
    finally:
        torch.set_num_threads(threads)
    return losses


def fit_adaptation(
    embeddings: Embeddings,
    views: AugmentedViews | None = None,
    *,
    groups: Sequence[Any] | np.ndarray | None = None,
    related: Sequence[Any] | np.ndarray | None = None,
    dim: int = 128,
    hidden: int = 0,
    epochs: int = 30,
    temperature: float = 0.2,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
) -> Adaptation:
    """Train a projection head on frozen features (see the module docstring for the loss).

    Parameters
    ----------
    embeddings : Embeddings
        Backbone features of every image, shape (n_images, dim_in).
    views : AugmentedViews, optional
        Augmented views of some of these images (:func:`clusterclean.embed_views`
        with the same backbone); ``views.rows`` index ``embeddings``. Each image
        with views is a class of its own (original + views), unless its group
        is known.
    groups : sequence of length n_images, optional
        Known identities (None / NaN / "" = unknown). Images of one group are
        one class: the head learns the identities (``method="groups"``).
        ``views`` or ``groups`` (or both) is required.
    related : sequence of length n_images, optional
        Codes of images that are likely one subject (None / NaN / "" = no
        code): neither pulled together nor pushed apart (see the module
        docstring). Without them, the head trained on the 254-image demo for 50
        epochs split its persons apart (same-person pair F1 0.85 -> 0.28); with
        them 0.85 -> 0.85, and 0.91 at 30 epochs.
    dim : int, default 128
        Output dimension ``dim_out``.
    hidden : int, default 0
        Hidden width of a two-layer head; 0 = a linear head. Measured on the
        selection benchmark (docs/grouping/bench_adapt.json): a linear head
        raised same-person pair F1, a 512-wide two-layer head lowered it
        (it fits the augmentations and forgets what tells persons apart).
    epochs : int, default 30
        Passes over the classes. Chosen on the selection benchmark and the demo
        (10 / 30 / 50; docs/grouping/bench_adapt.json): 30 was best on the
        benchmark, 10 on the small demo, where more epochs hurt.
    temperature : float in [0.001, 1], default 0.2
        ``T`` of the loss (0.2 beat 0.05, 0.1, 0.3 and 0.5 there, and 0.1 and 0.3 on
        every dataset of the suite's development seeds: docs/suite/head.md); the run
        option ``adapt_temperature``.
    batch_size : int, default 256
        Items per batch (``batch_size // 4`` classes of up to 4 items).
    learning_rate, weight_decay : float
        Of the AdamW optimiser.
    seed : int, default 0
        Seeds the initial weights and the batches: same inputs, same head
        (training runs on one CPU thread, so the sums are always in one order).

    Returns
    -------
    Adaptation
    """
    func = "fit_adaptation"
    check_embeddings(embeddings, func)
    if views is not None:
        views = _check_views(views, embeddings, func)
    codes = None if groups is None else _group_codes(groups, len(embeddings), func)
    if related is not None:
        related = _group_codes(related, len(embeddings), func, "related")
    if views is None and groups is None:
        raise InvalidInputError(
            f"{func} needs augmented views (clusterclean.embed_views) or known groups (or both) "
            "to know which images belong together."
        )
    dim = check_int(dim, "dim", func, min_value=1)
    hidden = check_int(hidden, "hidden", func, min_value=0)
    epochs = check_int(epochs, "epochs", func, min_value=1)
    temperature = check_float(temperature, "temperature", func, low=1e-3, high=1.0)
    batch_size = check_int(batch_size, "batch_size", func, min_value=2 * ITEMS_PER_CLASS)
    learning_rate = check_float(learning_rate, "learning_rate", func, low=1e-6, high=1.0)
    weight_decay = check_float(weight_decay, "weight_decay", func, low=0.0, high=1.0)
    seed = check_int(seed, "seed", func, min_value=0)

    vectors, classes, item_rows = _training_items(embeddings, views, codes)
    n_classes = int((np.bincount(np.unique(classes, return_inverse=True)[1]) >= 2).sum())
    if n_classes < 2:
        raise InvalidInputError(
            f"{func} needs at least 2 images with views or 2 groups of >= 2 images to learn "
            f"from; got {n_classes}. Give views of more images, or more known groups."
        )
    import torch

    started = time.perf_counter()
    mean = embeddings.vectors.astype(np.float64).mean(axis=0)
    scale = float(np.sqrt(((embeddings.vectors - mean) ** 2).mean())) or 1.0
    inputs = torch.from_numpy(((vectors - mean) / scale).astype(np.float32))
    labels = torch.from_numpy(classes)

    generator = torch.Generator().manual_seed(seed)
    sizes = [embeddings.dim, dim] if hidden == 0 else [embeddings.dim, hidden, dim]
    layers = [torch.nn.Linear(a, b) for a, b in zip(sizes, sizes[1:], strict=False)]
    with torch.no_grad():  # seeded initialisation, independent of torch's global generator
        for layer in layers:
            bound = 1.0 / np.sqrt(layer.in_features)
            layer.weight.uniform_(-bound, bound, generator=generator)
            layer.bias.uniform_(-bound, bound, generator=generator)
    head = torch.nn.Sequential(*[m for layer in layers for m in (layer, torch.nn.ReLU())][:-1])
    optimiser = torch.optim.AdamW(head.parameters(), lr=learning_rate, weight_decay=weight_decay)
    related_items = None if related is None else torch.from_numpy(related[item_rows])
    losses = _train(
        head,
        inputs,
        labels,
        classes,
        epochs,
        batch_size,
        temperature,
        optimiser,
        seed,
        related_items,
    )
    seconds = time.perf_counter() - started
    info = {
        "n_images": len(embeddings),
        "n_view_images": 0 if views is None else len(views.rows),
        "n_views": 0 if views is None else views.n_views,
        "n_groups": 0 if codes is None else int(codes.max() + 1),
        "n_classes": n_classes,
        "epochs": epochs,
        "temperature": temperature,
        "first_loss": round(losses[0], 6),
        "final_loss": round(losses[-1], 6),
        "seed": seed,
        "seconds": round(seconds, 3),
    }
    logger.info(
        "adapt: trained a %s head %s on %d items of %d classes, %d epochs, loss %.3f -> %.3f, "
        "%.1f s",
        "groups" if codes is not None else "views",
        " -> ".join(map(str, sizes)),
        len(vectors),
        n_classes,
        epochs,
        losses[0],
        losses[-1],
        seconds,
    )
    return Adaptation(
        mean=mean.astype(np.float32),
        scale=scale,
        weights=tuple(np.ascontiguousarray(lay.weight.detach().numpy().T) for lay in layers),
        biases=tuple(lay.bias.detach().numpy().copy() for lay in layers),
        method="groups" if codes is not None else "views",
        backbone=embeddings.backbone,
        info=info,
    )


def adapt_embeddings(
    embeddings: Embeddings, views: AugmentedViews | None = None, **options: Any
) -> tuple[Embeddings, Adaptation]:
    """Fit an :class:`Adaptation` (``options`` of :func:`fit_adaptation`) and apply it.

    Returns the adapted embeddings (unit rows of dimension ``dim``) and the head.
    """
    adaptation = fit_adaptation(embeddings, views, **options)
    return adaptation.apply(embeddings), adaptation
