import math

import numpy as np
import pytest

from clusterclean import as_embeddings, search_neighbors
from clusterclean.errors import InvalidInputError, InvalidTypeError
from clusterclean.index import FLAT_MAX_IMAGES, build_index, choose_index, search_index
from clusterclean.pipeline import RunConfig


def _groups(n_groups: int, size: int, dim: int, *, rank: int | None = None, seed: int = 0):
    """Unit vectors in ``n_groups`` tight groups of ``size`` (more than k = 10 real neighbours).

    With ``rank``, the group centres span a ``rank``-dimensional subspace (as
    real embeddings concentrate on a few directions) and the noise is isotropic.
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_groups, rank or dim))
    if rank is not None:
        basis = np.linalg.qr(rng.normal(size=(dim, rank)))[0]
        centres = centres @ basis.T
    noise = 0.05 if rank is None else 0.01
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    vectors = np.repeat(centres, size, axis=0) + noise * rng.normal(size=(n_groups * size, dim))
    return as_embeddings([f"i{k}" for k in range(len(vectors))], vectors)


def _tie_aware_recall(found, exact) -> float:
    """Share of found neighbours at least as similar as the exact k-th (pynndescent-style)."""
    kth = exact.similarities[:, -1:]
    return float((found.similarities >= kth - 1e-6).mean())


@pytest.fixture(scope="module")
def grouped():
    embeddings = _groups(n_groups=160, size=25, dim=32)
    return embeddings, search_neighbors(embeddings, n_neighbors=10, index="flat")


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_recall_at_default_settings(grouped, kind):
    embeddings, exact = grouped
    found = search_neighbors(embeddings, n_neighbors=10, index=kind)
    assert _tie_aware_recall(found, exact) >= 0.95
    # the similarities are true cosines of the returned pairs
    rows = np.repeat(np.arange(len(embeddings)), 10)
    cos = np.einsum("ij,ij->i", embeddings.vectors[rows], embeddings.vectors[found.indices.ravel()])
    np.testing.assert_allclose(found.similarities.ravel(), cos, atol=1e-5)


def test_pca_search_rescores_with_full_vectors():
    embeddings = _groups(n_groups=100, size=20, dim=64, rank=8, seed=1)
    exact = search_neighbors(embeddings, n_neighbors=10, index="flat")
    found = search_neighbors(embeddings, n_neighbors=10, index="flat", n_components=12)
    assert _tie_aware_recall(found, exact) >= 0.95
    rows = np.repeat(np.arange(len(embeddings)), 10)
    cos = np.einsum("ij,ij->i", embeddings.vectors[rows], embeddings.vectors[found.indices.ravel()])
    np.testing.assert_allclose(found.similarities.ravel(), cos, atol=1e-5)
    assert (np.diff(found.similarities, axis=1) <= 1e-7).all()  # best first


def test_ivf_is_deterministic_and_batch_size_free(grouped):
    embeddings, _ = grouped
    first = search_neighbors(embeddings, n_neighbors=5, index="ivf")
    again = search_neighbors(embeddings, n_neighbors=5, index="ivf", batch_size=333)
    np.testing.assert_array_equal(first.indices, again.indices)
    np.testing.assert_array_equal(first.similarities, again.similarities)


def test_flat_hand_computed_in_small_batches():
    # unit circle at 0, 10, 90 and 180 degrees; one query per batch
    rad = np.deg2rad([0, 10, 90, 180])
    vectors = np.c_[np.cos(rad), np.sin(rad)].astype(np.float32)
    spec = choose_index(4, 2, index="flat")
    sims, idx = search_index(build_index(vectors, spec), vectors, 2, batch_size=1)
    assert idx.tolist() == [[0, 1], [1, 0], [2, 1], [3, 2]]
    c10, c80 = math.cos(math.radians(10)), math.cos(math.radians(80))
    np.testing.assert_allclose(sims, [[1, c10], [1, c10], [1, c80], [1, 0]], atol=1e-6)


def test_search_pads_when_the_index_is_small():
    vectors = np.eye(3, dtype=np.float32)
    sims, idx = search_index(build_index(vectors, choose_index(3, 3, index="flat")), vectors, 5)
    assert (idx[:, 3:] == -1).all() and np.isneginf(sims[:, 3:]).all()


def test_auto_choice_and_scaled_parameters():
    assert choose_index(FLAT_MAX_IMAGES, 256).kind == "flat"
    spec = choose_index(FLAT_MAX_IMAGES + 1, 256)
    assert spec.kind == "ivf"
    assert spec.n_lists == round(4 * math.sqrt(FLAT_MAX_IMAGES + 1))  # 1265
    assert spec.n_probe == 16
    million = choose_index(1_000_000, 256)
    assert (million.n_lists, million.n_probe) == (4000, 16)
    # small N: at most N / 40 cells so that each gets its 40 training points
    assert choose_index(2000, 8, index="ivf").n_lists == 50
    assert choose_index(10, 8, index="ivf", n_probe=9).n_probe == 1  # capped at n_lists
    hnsw = choose_index(1_000_000, 256, index="hnsw")
    assert (hnsw.hnsw_m, hnsw.ef_search) == (32, 16 * 20)
    assert choose_index(5, 8, index="hnsw").as_dict()["kind"] == "hnsw"


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        (
            {"index": "annoy"},
            InvalidInputError,
            "The 'index' parameter of choose_index must be one of 'auto', 'flat', 'ivf', "
            "'hnsw'. Got 'annoy' instead.",
        ),
        (
            {"index": "flat", "n_probe": 4},
            InvalidInputError,
            "The 'n_probe' parameter of choose_index applies to index='ivf' only. Got "
            "n_probe=4 with index='flat'; drop it or use index='ivf'.",
        ),
        (
            {"n_lists": 0},
            InvalidInputError,
            "The 'n_lists' parameter of choose_index must be an int >= 1. Got 0 instead.",
        ),
        (
            {"n_lists": 2.5},
            InvalidTypeError,
            "The 'n_lists' parameter of choose_index must be an int >= 1. Got 2.5 instead.",
        ),
        (
            {"index": "ivf", "n_lists": 1000},
            InvalidInputError,
            "The 'n_lists' parameter of choose_index must be an int in [1, 250] for 10000 "
            "images (40 training points per cell). Got 1000 instead.",
        ),
        (
            {"n_components": 16},
            InvalidInputError,
            "The 'n_components' parameter of choose_index must be an int in [1, 15] (below the "
            "embedding dimension). Got 16 instead; leave it unset to search the full vectors.",
        ),
    ],
)
def test_bad_options_are_named(options, error, message):
    with pytest.raises(error) as caught:
        choose_index(10_000, 16, **options)
    assert str(caught.value) == message


def test_search_neighbors_names_itself_in_errors(grouped):
    embeddings, _ = grouped
    with pytest.raises(InvalidInputError, match="parameter of search_neighbors must be one of"):
        search_neighbors(embeddings, index="IVF")


def test_run_config_checks_the_index_before_any_work():
    with pytest.raises(InvalidInputError, match="'index' parameter of run must be one of"):
        RunConfig(index="exact")
    with pytest.raises(InvalidInputError, match="'n_probe' parameter of run must be an int >= 1"):
        RunConfig(n_probe=0)


def test_run_records_the_index_in_run_json(tmp_path, grouped):
    import json

    import pandas as pd

    import clusterclean as cc

    embeddings, _ = grouped
    ids = embeddings.ids[:400]
    dataset = cc.Dataset(
        table=pd.DataFrame({"image_id": ids}), labels=np.zeros((400, 1)), attributes=["a"]
    )
    small = cc.Embeddings(ids=ids, vectors=embeddings.vectors[:400])
    cc.run(labels=dataset, embeddings=small, out=tmp_path / "r", progress=False, index="ivf")
    info = json.loads((tmp_path / "r" / "run.json").read_text())
    assert info["index"] == {
        "kind": "ivf",
        "n_lists": 10,
        "n_probe": 10,
        "hnsw_m": None,
        "ef_search": None,
        "n_components": None,
        "seed": 0,
    }
    assert info["parameters"]["index"] == "ivf"
