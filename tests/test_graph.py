import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterclean import as_embeddings, build_knn_graph, edges_from_neighbors, search_neighbors
from clusterclean.errors import InvalidInputError, InvalidTypeError


def _angles(*degrees):
    rad = np.deg2rad(degrees)
    return as_embeddings([f"i{k}" for k in range(len(rad))], np.c_[np.cos(rad), np.sin(rad)])


def test_neighbors_hand_computed():
    # points at 0, 10, 90 and 180 degrees on the unit circle
    emb = _angles(0, 10, 90, 180)
    nb = search_neighbors(emb, n_neighbors=1)
    assert nb.indices[:, 0].tolist() == [1, 0, 1, 2]
    np.testing.assert_allclose(
        nb.similarities[:, 0],
        [np.cos(np.deg2rad(10))] * 2 + [np.cos(np.deg2rad(80)), 0.0],
        atol=1e-6,
    )


def test_edges_cut_union_and_mutual():
    nb = search_neighbors(_angles(0, 10, 90, 180), n_neighbors=1)
    high = edges_from_neighbors(nb, min_similarity=0.5)
    assert list(zip(high.row_a, high.row_b)) == [(0, 1)]
    assert high.cosine.iloc[0] == pytest.approx(np.cos(np.deg2rad(10)), abs=1e-6)
    union = edges_from_neighbors(nb, min_similarity=-1.0)
    assert list(zip(union.row_a, union.row_b)) == [(0, 1), (1, 2), (2, 3)]
    mutual = edges_from_neighbors(nb, min_similarity=-1.0, mutual=True)
    assert list(zip(mutual.row_a, mutual.row_b)) == [(0, 1)]
    assert union.dtypes.astype(str).tolist() == ["int32", "int32", "float32"]


def test_exact_duplicates_never_list_themselves():
    emb = as_embeddings(["a", "b", "c", "d"], np.array([[1, 0], [1, 0], [1, 0], [0, 1.0]]))
    nb = search_neighbors(emb, n_neighbors=2)
    for row in range(3):
        assert row not in nb.indices[row]
        assert set(nb.indices[row]) == {0, 1, 2} - {row}


def test_fewer_images_than_neighbours_pads():
    nb = search_neighbors(_angles(0, 10), n_neighbors=3)
    assert nb.indices.tolist() == [[1, -1, -1], [0, -1, -1]]
    assert np.isneginf(nb.similarities[:, 1:]).all()
    edges = edges_from_neighbors(nb, min_similarity=-1.0)
    assert list(zip(edges.row_a, edges.row_b)) == [(0, 1)]


def test_single_image_has_no_edges():
    edges = build_knn_graph(_angles(0), n_neighbors=5, min_similarity=0.0)
    assert len(edges) == 0


def test_parameter_errors_use_one_wording():
    emb = _angles(0, 10)
    with pytest.raises(
        InvalidInputError,
        match=r"The 'min_similarity' parameter of "
        r"edges_from_neighbors must be a float in \[-1, 1\]. Got 1.5 instead.",
    ):
        build_knn_graph(emb, min_similarity=1.5)
    with pytest.raises(
        InvalidInputError,
        match="'n_neighbors' parameter of search_neighbors must be an int >= 1. Got 0 instead",
    ):
        search_neighbors(emb, n_neighbors=0)
    with pytest.raises(InvalidTypeError, match="must be an Embeddings"):
        search_neighbors(np.zeros((2, 2), dtype=np.float32))


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(2, 40),
    k=st.integers(1, 6),
    cut=st.floats(-1, 1),
    seed=st.integers(0, 10_000),
    mutual=st.booleans(),
)
def test_edges_match_brute_force(n, k, cut, seed, mutual):
    rng = np.random.default_rng(seed)
    emb = as_embeddings([str(i) for i in range(n)], rng.normal(size=(n, 8)))
    edges = edges_from_neighbors(
        search_neighbors(emb, n_neighbors=k), min_similarity=cut, mutual=mutual
    )
    # contract: src < dst, no duplicates, sorted, all above the cut
    pairs = list(zip(edges.row_a.tolist(), edges.row_b.tolist()))
    assert all(s < d for s, d in pairs)
    assert pairs == sorted(set(pairs))
    assert (edges.cosine >= cut).all()
    # oracle: dense similarity, top-k per row (continuous data: no ties)
    sims = emb.vectors @ emb.vectors.T
    np.fill_diagonal(sims, -np.inf)
    top = np.argsort(-sims, axis=1)[:, : min(k, n - 1)]
    listed = {(i, int(j)) for i in range(n) for j in top[i]}
    expected = set()
    for i, j in listed:
        a, b = min(i, j), max(i, j)
        both = (i, j) in listed and (j, i) in listed
        if sims[a, b] >= cut and (both or not mutual):
            expected.add((a, b))
    # float32 search vs float64 oracle may disagree right at the cut
    borderline = {(a, b) for a, b in expected ^ set(pairs) if abs(sims[a, b] - cut) < 1e-5}
    assert expected ^ set(pairs) <= borderline


def test_cosine_floor_drops_weak_edges_whatever_the_link_similarity():
    from clusterclean.group import link_neighbors

    emb = _angles(0, 10, 90, 180)
    nb = search_neighbors(emb, n_neighbors=1)
    plain = {"min_similarity": -1.0, "rerank": False}  # a plain cosine cut
    _, all_edges = link_neighbors(nb, emb, min_cosine=-1.0, **plain)
    _, floored = link_neighbors(nb, emb, min_cosine=0.5, **plain)
    assert list(zip(all_edges.row_a, all_edges.row_b)) == [(0, 1), (1, 2), (2, 3)]
    assert list(zip(floored.row_a, floored.row_b)) == [(0, 1)]  # cos 80 deg, cos 90 deg < 0.5
