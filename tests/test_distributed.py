"""The Ray Data path on a local Ray cluster started here (2 CPUs), against the local path."""

import time

import numpy as np
import pytest
from planted import make_planted

import clusterclean as cc

ray = pytest.importorskip(
    "ray", reason="ray is not installed: pip install 'clusterclean[distributed]' to run these"
)

OPTIONS = {"n_neighbors": 5, "min_similarity": 0.8}


@pytest.fixture(scope="module")
def local_ray():
    started = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    print(f"ray.init: {time.perf_counter() - started:.1f} s")
    yield
    ray.shutdown()


def _partition(component_ids) -> set:
    ids = np.asarray(component_ids)
    return {frozenset(np.flatnonzero(ids == c)) for c in np.unique(ids)}


def test_ray_path_gives_the_local_components(local_ray, tmp_path):
    from clusterclean.distributed import run_distributed

    data = make_planted(n_groups=80, max_size=6, dim=24, n_attributes=5, n_flips=8, noise=0.05)
    local = cc.run(labels=data.dataset, embeddings=data.embeddings, progress=False, **OPTIONS)
    spread = run_distributed(
        labels=data.dataset,
        embeddings=data.embeddings,
        shards=tmp_path / "shards",
        out=tmp_path / "report",
        rows_per_block=64,  # several blocks, so the actors split the work
        **OPTIONS,
    )
    assert _partition(spread.images["component_id"]) == _partition(local.images["component_id"])
    assert spread.edges[["row_a", "row_b"]].equals(local.edges[["row_a", "row_b"]])
    np.testing.assert_array_equal(spread.neighbors.indices, local.neighbors.indices)
    key = ["image_id", "attribute"]
    assert sorted(spread.label_issues[key].values.tolist()) == sorted(
        local.label_issues[key].values.tolist()
    )
    assert len(list((tmp_path / "shards" / "neighbors").glob("*.parquet"))) > 1
    written = cc.read_report(tmp_path / "report")
    assert written.run_info["distributed"]["engine"].startswith("ray ")
    assert written.run_info["index"]["kind"] == "flat"


def test_unknown_option_is_named(local_ray, tmp_path):
    from clusterclean.distributed import run_distributed
    from clusterclean.errors import InvalidTypeError

    with pytest.raises(InvalidTypeError, match=r"run_distributed\(\) got unknown options \['k'\]"):
        run_distributed(labels="x.csv", shards=tmp_path, k=3)


@pytest.mark.slow  # two actors each load a real model: minutes on 2 shared cores
def test_ray_embedding_actors_match_local_embedding(local_ray, tmp_path):
    from test_cli import _write_views

    from clusterclean.dataset import load_dataset
    from clusterclean.distributed import run_distributed
    from clusterclean.embed import embed_images

    labels = _write_views(tmp_path / "images")
    labels.to_csv(tmp_path / "labels.csv", index=False)
    dataset = load_dataset(tmp_path / "labels.csv", images=tmp_path / "images")
    spread = run_distributed(
        labels=dataset,
        shards=tmp_path / "shards",
        rows_per_block=4,
        backbone="efficientnet_lite0",
        **OPTIONS,
    )
    local = embed_images(dataset, backbone="efficientnet_lite0", num_workers=0, progress=False)
    np.testing.assert_allclose(spread.embeddings.vectors, local.vectors, atol=1e-4)
    assert spread.images["component_id"].nunique() == 4


def test_ray_path_trains_the_same_head_as_the_local_path(local_ray, tmp_path):
    from test_cli import _write_views

    from clusterclean.dataset import load_dataset
    from clusterclean.distributed import run_distributed

    labels = _write_views(tmp_path / "images")
    labels.to_csv(tmp_path / "labels.csv", index=False)
    dataset = load_dataset(tmp_path / "labels.csv", images=tmp_path / "images")
    vectors = cc.embed_images(dataset, backbone="efficientnet_lite0", num_workers=0, progress=False)
    options = {
        "backbone": "efficientnet_lite0",
        "adapt": "views",
        "adapt_epochs": 5,
        "num_workers": 0,
        "n_neighbors": 5,
        "min_similarity": 0.5,
    }
    local = cc.run(labels=dataset, embeddings=vectors, progress=False, **options)
    spread = run_distributed(
        labels=dataset, embeddings=vectors, shards=tmp_path / "shards", rows_per_block=4, **options
    )
    head = {k: v for k, v in local.run_info["adaptation"].items() if k != "seconds"}
    assert head["method"] == "views" and head["n_view_images"] == len(labels)
    assert {k: v for k, v in spread.run_info["adaptation"].items() if k != "seconds"} == head
    # the actors searched in the head's (then whitened) space, as run() does
    np.testing.assert_array_equal(spread.neighbors.indices, local.neighbors.indices)
    assert _partition(spread.images["component_id"]) == _partition(local.images["component_id"])


def test_actors_embed_with_a_module_backbone(local_ray, tmp_path):
    # #17: a Backbone.from_module reaches the actors pickled, and gives the local vectors
    import torch
    from PIL import Image
    from torchvision import transforms as T

    from clusterclean.distributed import run_distributed

    rng = np.random.default_rng(0)
    for i in range(6):
        pixels = rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"{i}.png")
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    )
    backbone = cc.Backbone.from_module(net, T.Compose([T.CenterCrop(32), T.ToTensor()]))
    options = {"backbone": backbone, "engine": "torch", "adapt": "none", "rerank": False}
    local = cc.run(images=tmp_path, progress=False, **options)
    spread = run_distributed(images=tmp_path, shards=tmp_path / "shards", **options)
    assert spread.embeddings.backbone == "module:Sequential"
    np.testing.assert_allclose(spread.embeddings.vectors, local.embeddings.vectors, atol=1e-5)
