"""Extending clusterclean: each extension is one function (or class) plus one registration.

These are the worked examples the README's architecture page points to: a grouping
method, a component metric, a cleaning strategy and a backbone, each registered
through its public decorator and then reached by ``run`` / the CLI / the report with
no other change. Each test removes its registration afterwards.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from planted import make_planted

from clusterclean import clean_labels, read_report, run
from clusterclean.backbones import BACKBONES, Backbone, available_backbones, register_backbone
from clusterclean.cli import build_parser
from clusterclean.group import SPLITTERS, Grouper, GroupOptions, register_splitter
from clusterclean.scoring import METRICS, register_metric
from clusterclean.strategies import STRATEGIES, Edits, register_strategy


@pytest.fixture
def restore_registries():
    saved = {id(r): dict(r) for r in (SPLITTERS, METRICS, STRATEGIES, BACKBONES)}
    yield
    for registry in (SPLITTERS, METRICS, STRATEGIES, BACKBONES):
        registry.clear()
        registry.update(saved[id(registry)])


def test_a_grouping_method_is_one_function_and_one_registration(restore_registries):
    @register_splitter("pairs_apart", enabled=lambda options: True)
    def pairs_apart(edges, component_ids, options):
        """Components of exactly two images become two singletons."""
        sizes = np.bincount(component_ids)
        ids = component_ids.astype(np.int64).copy()
        lonely = np.flatnonzero(sizes[component_ids] == 2)
        ids[lonely] = ids.max() + 1 + np.arange(len(lonely))
        return np.unique(ids, return_inverse=True)[1].astype(np.int32)

    edges = pd.DataFrame(
        {"row_a": [0, 2, 3], "row_b": [1, 3, 4], "cosine": np.float32([0.9, 0.9, 0.9])}
    )
    grouper = Grouper(GroupOptions())
    assert "pairs_apart" in [s.name for s in grouper.splitters()]
    ids = grouper.components(edges, 5)
    assert len(set(ids[[0, 1]])) == 2 and len(set(ids[[2, 3, 4]])) == 1


def test_a_component_metric_is_one_function_and_one_registration(restore_registries, tmp_path):
    @register_metric("max_minority", short="maxm", formula="max over active attributes of m_a")
    def max_minority(m, active, ratio, n_active):
        return np.where(active, m, 0.0).max(axis=1, initial=0.0)

    data = make_planted(n_groups=40, max_size=5, dim=16, n_flips=10, noise=0.02, seed=5)
    run(labels=data.dataset, embeddings=data.embeddings, out=tmp_path / "r", progress=False)
    components = pd.read_parquet(tmp_path / "r" / "components.parquet")
    assert "max_minority" in components.columns
    flags = pd.read_parquet(tmp_path / "r" / "component_flags.parquet")
    assert "max_minority" in set(flags["metric"])
    assert components["max_minority"].between(0, 0.5).all()
    assert components["max_minority"].max() > 0
    args = build_parser().parse_args(["report", str(tmp_path / "r"), "--sort-by", "max_minority"])
    assert args.sort_by == "max_minority"  # the HTML report can rank by it


def test_a_cleaning_strategy_is_one_function_and_one_registration(restore_registries, tmp_path):
    @register_strategy("drop_disagreeing_components", threshold="none", default=None)
    def drop_disagreeing_components(view):
        """Drop every editable image of a component that disagrees on any attribute."""
        minority = np.minimum(view.n_positive, view.n_known - view.n_positive)
        bad = (minority > 0).any(axis=1) & view.is_scored_component
        rows = np.flatnonzero(bad[view.component_ids] & view.is_editable_row)
        edits = Edits()
        edits.drop(rows, np.full(len(rows), "component disagrees", dtype=object))
        return edits

    data = make_planted(n_groups=40, max_size=5, dim=16, n_flips=10, noise=0.02, seed=5)
    report = run(labels=data.dataset, embeddings=data.embeddings, progress=False)
    result = clean_labels(report, strategy="drop_disagreeing_components")
    assert 0 < len(result.dropped) < report.dataset.n_images
    assert result.dataset.n_images == report.dataset.n_images - len(result.dropped)


def test_a_backbone_is_one_function_and_one_registration(restore_registries, tmp_path):
    torch = pytest.importorskip("torch")
    from PIL import Image

    class MeanColour(torch.nn.Module):
        def forward(self, x):
            return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)

    @register_backbone("mean_colour")
    def mean_colour(weights, input_size):
        size = input_size or (16, 16)
        return Backbone("mean_colour", MeanColour().eval(), _to_tensor, 6, size, "none")

    assert "mean_colour" in available_backbones()
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(6):
        colour = rng.integers(0, 255, size=3)
        pixels = np.clip(colour + rng.integers(-3, 4, size=(16, 16, 3)), 0, 255)
        for copy in range(2):
            Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}_{copy}.png")
            rows.append({"image": f"{i}_{copy}.png", "hat": i % 2})
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    report = run(
        images=folder,
        labels=tmp_path / "labels.csv",
        backbone="mean_colour",
        num_workers=0,
        rerank=False,
        refine=False,
        min_similarity=0.999,
        progress=False,
        out=tmp_path / "r",
    )
    assert report.embeddings.backbone == "mean_colour" and report.embeddings.dim == 6
    assert read_report(tmp_path / "r").run_info["parameters"]["backbone"] == "mean_colour"


def _to_tensor(image):
    import torch

    array = np.asarray(image.convert("RGB").resize((16, 16)), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()
