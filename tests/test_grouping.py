"""Graph re-ranking, local scaling and component splitting on planted structure."""

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from planted import make_planted

from clusterclean import Neighbors, as_embeddings, edges_from_neighbors, run, search_neighbors
from clusterclean.components import component_hops, find_components, split_components
from clusterclean.errors import InvalidInputError
from clusterclean.evaluate import grouping_scores
from clusterclean.graph import rerank_neighbors, scale_locally
from clusterclean.group import Grouper, GroupOptions, label_disagreements, link_neighbors
from clusterclean.refine import load_refinement


def _angles(*degrees):
    rad = np.deg2rad(degrees)
    return as_embeddings([f"i{k}" for k in range(len(rad))], np.c_[np.cos(rad), np.sin(rad)])


def _edges(pairs, sims):
    src, dst = zip(*pairs) if pairs else ((), ())
    return pd.DataFrame({"row_a": src, "row_b": dst, "cosine": sims}).astype(
        {"row_a": "int32", "row_b": "int32", "cosine": "float32"}
    )


# --------------------------------------------------------------------------- re-ranking


def test_rerank_hand_computed():
    # two tight pairs: A=0 deg, A'=10 deg and B=90 deg, B'=100 deg
    emb = _angles(0, 10, 90, 100)
    nb = search_neighbors(emb, n_neighbors=2)
    out = rerank_neighbors(nb, emb, n_reciprocal=2, n_expansion=1, cosine_weight=0.3)
    # R*(A) = {A, A'}, V_A = (1, e) / (1 + e) on (A, A') with e = exp(-(2 - 2 cos 10));
    # V_A' = (e, 1) / (1 + e): sum min = 2e / (1 + e), sum max = 2 / (1 + e), J = e
    c10, c80 = np.cos(np.deg2rad(10)), np.cos(np.deg2rad(80))
    jaccard = np.exp(-(2 - 2 * c10))
    assert out.indices[0].tolist() == [1, 2]
    np.testing.assert_allclose(out.similarities[0, 0], 0.7 * jaccard + 0.3 * c10, rtol=1e-5)
    # A' and B share no reciprocal neighbour: J = 0, only the cosine term is left
    assert out.indices[1].tolist() == [0, 2]
    np.testing.assert_allclose(out.similarities[1, 1], 0.3 * c80, rtol=1e-5)
    # symmetric pair, symmetric score
    np.testing.assert_allclose(out.similarities[2, 0], out.similarities[3, 0], rtol=1e-6)


def test_rerank_matches_a_dense_oracle():
    planted = make_planted(n_groups=15, max_size=5, dim=8, noise=0.15, seed=7)
    emb = planted.embeddings
    n_reciprocal, n_expansion, width = 4, 2, 6
    nb = search_neighbors(emb, n_neighbors=width)
    out = rerank_neighbors(
        nb, emb, n_reciprocal=n_reciprocal, n_expansion=n_expansion, cosine_weight=0.2
    )
    # dense re-implementation straight from the paper's definitions
    x = emb.vectors.astype(np.float64)
    n = len(x)
    sims = x @ x.T
    rank = np.argsort(-sims - 10 * np.eye(n), axis=1)  # self first
    knn = [set(rank[p, :n_reciprocal]) for p in range(n)]
    half = [set(rank[p, : n_reciprocal // 2]) for p in range(n)]
    recip = [{g for g in knn[p] if p in knn[g]} for p in range(n)]
    recip_half = [{g for g in half[p] if p in half[g]} for p in range(n)]
    v = np.zeros((n, n))
    for p in range(n):
        members = set(recip[p])
        for q in recip[p]:
            if len(recip_half[q] & recip[p]) > 2 / 3 * len(recip_half[q]):
                members |= recip_half[q]
        for g in members:
            v[p, g] = np.exp(-(2 - 2 * sims[p, g]))
        v[p] /= v[p].sum()
    v = np.stack([v[rank[p, :n_expansion]].mean(axis=0) for p in range(n)])
    for p in range(n):
        for j, g in zip(out.indices[p], out.similarities[p], strict=True):
            jac = np.minimum(v[p], v[j]).sum() / np.maximum(v[p], v[j]).sum()
            assert g == pytest.approx(0.8 * jac + 0.2 * sims[p, j], abs=1e-5)
        assert np.all(np.diff(out.similarities[p]) <= 1e-7)  # re-sorted


def test_rerank_lifts_grouping_of_noisy_groups():
    planted = make_planted(n_groups=80, max_size=6, dim=32, noise=0.12, seed=3)
    emb = planted.embeddings
    nb = search_neighbors(emb, n_neighbors=10)

    def best_f1(neighbors):
        return max(
            grouping_scores(
                find_components(edges_from_neighbors(neighbors, min_similarity=c), len(emb)),
                planted.groups,
            )["pair_f1"]
            for c in np.arange(0.4, 0.95, 0.05)
        )

    assert best_f1(rerank_neighbors(nb, emb)) > best_f1(nb) + 0.01


def test_rerank_rejects_short_lists_and_mismatches():
    emb = _angles(0, 10, 90)
    nb = search_neighbors(emb, n_neighbors=2)
    with pytest.raises(InvalidInputError, match=r"'n_reciprocal' parameter .* at most .* = 3"):
        rerank_neighbors(nb, emb, n_reciprocal=5)
    with pytest.raises(InvalidInputError, match="kNN lists of 3 images but 2 embeddings"):
        rerank_neighbors(nb, _angles(0, 10))


# --------------------------------------------------------------------------- local scaling


def test_scale_locally_hand_computed():
    nb = Neighbors(
        indices=np.array([[1, 2], [0, 2], [1, 0]]),
        similarities=np.array([[0.9, 0.5], [0.9, 0.7], [0.7, 0.5]], dtype=np.float32),
    )
    out = scale_locally(nb, n_local=1)
    # r = (0.9, 0.9, 0.7), median 0.9: s' = s - (r_i + r_j) / 2 + 0.9
    assert out.indices.tolist() == [[1, 2], [0, 2], [1, 0]]
    np.testing.assert_allclose(out.similarities, [[0.9, 0.6], [0.9, 0.8], [0.8, 0.6]], atol=1e-6)
    padded = scale_locally(
        Neighbors(np.array([[1, -1], [0, -1]]), np.array([[0.5, -np.inf], [0.5, -np.inf]]))
    )
    assert np.isneginf(padded.similarities[:, 1]).all()
    assert padded.indices[:, 1].tolist() == [-1, -1]


# --------------------------------------------------------------------------- splitting


def _bridge_graph():
    """Two 6-cliques (rows 0-5, 6-11) joined by a chain 5 - 12 - 13 - 6 of strong edges."""
    pairs, sims = [], []
    for block in (range(0, 6), range(6, 12)):
        for a in block:
            for b in block:
                if a < b:
                    pairs.append((a, b))
                    sims.append(0.85)
    for a, b in [(5, 12), (12, 13), (6, 13)]:
        pairs.append((a, b))
        sims.append(0.95)
    return _edges(pairs, sims), 14


def test_communities_cut_the_bridge_between_two_groups():
    edges, n = _bridge_graph()
    single = find_components(edges, n)
    assert len(set(single.tolist())) == 1  # single link chains everything
    split = split_components(edges, single, communities=True, seed=0)
    assert len(set(split[:6].tolist())) == 1 and len(set(split[6:12].tolist())) == 1
    assert split[0] != split[6]
    # deterministic for a given seed
    np.testing.assert_array_equal(split, split_components(edges, single, communities=True))


def test_size_cap_resplits_at_a_higher_cut():
    # chain 0-1 (0.9), 1-2 (0.8), 2-3 (0.95), 3-4 (0.7), and 5 alone
    edges = _edges([(0, 1), (1, 2), (2, 3), (3, 4)], [0.9, 0.8, 0.95, 0.7])
    ids = find_components(edges, 6)
    assert ids.tolist() == [0, 0, 0, 0, 0, 1]
    # cap 4: cut just above 0.7 -> {0,1,2,3} {4} {5}
    assert split_components(edges, ids, max_component_size=4).tolist() == [0, 0, 0, 0, 1, 2]
    # cap 2: {0,1,2,3} splits above 0.8 -> {0,1} {2,3}
    assert split_components(edges, ids, max_component_size=2).tolist() == [0, 0, 1, 1, 2, 3]
    # cap 1: everything alone
    assert split_components(edges, ids, max_component_size=1).tolist() == list(range(6))
    # no cap, no communities: unchanged
    assert split_components(edges, ids).tolist() == ids.tolist()


def test_split_rejects_bad_options():
    edges, n = _bridge_graph()
    ids = find_components(edges, n)
    with pytest.raises(InvalidInputError, match="'max_component_size' parameter of split_comp"):
        split_components(edges, ids, max_component_size=0)
    with pytest.raises(InvalidInputError, match="'resolution' parameter .* float > 0"):
        split_components(edges, ids, communities=True, resolution=0)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 30), cap=st.integers(1, 8), louvain=st.booleans(), data=st.data())
def test_split_is_a_finer_partition_within_the_cap(n, cap, louvain, data):
    raw = data.draw(
        st.lists(
            st.tuples(st.integers(0, n - 1), st.integers(0, n - 1), st.floats(0, 1)), max_size=60
        )
    )
    best = {}
    for a, b, s in raw:
        if a != b:
            best[(min(a, b), max(a, b))] = s
    pairs = sorted(best)
    edges = _edges(pairs, [best[p] for p in pairs])
    ids = find_components(edges, n)
    split = split_components(edges, ids, max_component_size=cap, communities=louvain)
    assert split.dtype == np.int32 and len(split) == n
    assert set(split.tolist()) == set(range(split.max() + 1))  # dense
    firsts = [int(np.flatnonzero(split == c)[0]) for c in range(split.max() + 1)]
    assert firsts == sorted(firsts)
    assert np.bincount(split).max() <= cap
    for c in range(split.max() + 1):  # each new component inside one old component
        assert len(set(ids[split == c].tolist())) == 1


# --------------------------------------------------------------------------- hops


def test_hops_hand_computed():
    # path 0-1-2-3 (3 hops), triangle 4-5-6 (1 hop), single 7, star 8-(9,10,11) (2 hops)
    edges = _edges(
        [(0, 1), (1, 2), (2, 3), (4, 5), (5, 6), (4, 6), (8, 9), (8, 10), (8, 11)], [0.9] * 9
    )
    ids = find_components(edges, 12)
    assert component_hops(edges, ids).tolist() == [3, 1, 0, 2]
    assert component_hops(_edges([], []), np.zeros(0, dtype=np.int32)).tolist() == []


@pytest.mark.parametrize("n_middle", [127, 128, 200])
def test_hops_wide_frontier(n_middle):
    # 0 - {1..n_middle} - c - d: image c has n_middle frontier neighbours at once (an
    # int8 count wraps at 128 and c was never reached); the diameter is 3 whatever n_middle
    c, d = n_middle + 1, n_middle + 2
    middle = range(1, n_middle + 1)
    edges = _edges(
        [(0, m) for m in middle] + [(m, c) for m in middle] + [(c, d)], [0.9] * (2 * n_middle + 1)
    )
    ids = find_components(edges, n_middle + 3)
    assert component_hops(edges, ids).tolist() == [3]


# --------------------------------------------------------------------------- graph + pipeline


def test_link_neighbors_cuts_the_link_similarity_and_reports_plain_cosines():
    refined = _angles(0, 10, 90, 100)
    raw = _angles(0, 5, 90, 95)  # another space: its cosines go in the table
    nb = search_neighbors(refined, n_neighbors=2)
    lists, edges = link_neighbors(
        nb,
        refined,
        cosine_of=raw,
        min_similarity=0.5,
        rerank=True,
        n_reciprocal=2,
        n_expansion=1,
    )
    # re-ranked: only the two tight pairs pass 0.5 (A'-B scores 0.3 cos 80 = 0.05)
    assert list(zip(edges.row_a, edges.row_b)) == [(0, 1), (2, 3)]
    np.testing.assert_allclose(edges.cosine, [np.cos(np.deg2rad(5))] * 2, rtol=1e-6)
    assert edges.dtypes.astype(str).tolist() == ["int32", "int32", "float32"]
    assert lists.indices[1].tolist() == [0, 2]
    np.testing.assert_allclose(lists.similarities[1], np.cos(np.deg2rad([5, 85])), atol=1e-6)
    with pytest.raises(InvalidInputError, match="'cosine_of' parameter of link_neighbors"):
        link_neighbors(nb, refined, cosine_of=_angles(0, 10))


def test_run_records_and_saves_the_refinement(tmp_path):
    planted = make_planted(n_groups=40, max_size=5, dim=16, noise=0.02, seed=5)
    report = run(
        labels=planted.dataset,
        embeddings=planted.embeddings,
        out=tmp_path / "report",
        progress=False,
        refine=True,
        refine_dim=12,
        rerank=True,
        min_similarity=0.5,
        max_component_size=5,
    )
    info = json.loads((tmp_path / "report" / "run.json").read_text())
    assert info["refinement"]["dim_out"] == 12 and info["refinement"]["power"] == 1.0
    assert info["parameters"]["rerank"] is True
    loaded = load_refinement(tmp_path / "report" / info["refinement"]["file"])
    assert loaded.dim_in == 16 and loaded.dim_out == 12
    # the report keeps the raw embeddings; edges hold their cosines
    np.testing.assert_array_equal(report.embeddings.vectors, planted.embeddings.vectors)
    raw = planted.embeddings.vectors
    edges = report.edges
    np.testing.assert_allclose(
        edges.cosine, np.einsum("ij,ij->i", raw[edges.row_a], raw[edges.row_b]), rtol=1e-5
    )
    sizes = report.components["component_size"].to_numpy()
    assert sizes.max() <= 5
    scores = grouping_scores(report.images["component_id"].to_numpy(), planted.groups)
    assert scores["pair_f1"] > 0.9


def test_run_rejects_bad_grouping_options():
    planted = make_planted(n_groups=5)
    with pytest.raises(InvalidInputError, match="'n_reciprocal' parameter of run must be at most"):
        run(labels=planted.dataset, embeddings=planted.embeddings, rerank=True, n_reciprocal=20)
    with pytest.raises(InvalidInputError, match=r"'refine_power' parameter of run .* \[0, 1\]"):
        run(labels=planted.dataset, embeddings=planted.embeddings, refine_power=1.5)


def test_cli_grouping_flags_reach_the_config():
    from clusterclean.cli import _config_from_args, build_parser

    args = build_parser().parse_args(
        [
            "run",
            "--labels",
            "x.csv",
            "--out",
            "o",
            "--refine",
            "--rerank",
            "--refine-dim",
            "32",
            "--max-component-size",
            "50",
            "--no-communities",
            "--n-local",
            "3",
        ]
    )
    config = _config_from_args(args)
    assert (config.refine, config.rerank, config.refine_dim) == (True, True, 32)
    assert (config.max_component_size, config.communities, config.n_local) == (50, False, 3)
    default = build_parser().parse_args(["run", "--labels", "x.csv", "--out", "o"])
    assert (_config_from_args(default).refine, _config_from_args(default).rerank) == (True, True)
    plain = build_parser().parse_args(
        ["run", "--labels", "x.csv", "--out", "o", "--no-refine", "--no-rerank"]
    )
    assert (_config_from_args(plain).refine, _config_from_args(plain).rerank) == (False, False)


# --------------------------------------------------------------------------- labels as evidence


def test_label_disagreements_hand_computed():
    nan = np.nan
    labels = np.array([[1, 0, 1, nan], [1, 1, 0, 0], [nan, nan, 1, 1]], dtype=np.float32)
    # (0,1): columns 1 and 2 differ, column 3 unknown in 0 -> 2
    # (0,2): only column 2 known in both, equal -> 0;  (1,2): columns 2 and 3 differ -> 2
    d = label_disagreements(labels, np.array([0, 0, 1]), np.array([1, 2, 2]))
    assert d.tolist() == [2, 0, 2]
    assert d.dtype == np.int32


def test_weigh_labels_lowers_links_beyond_the_tolerance_only():
    # four images on a line of angles; labels: 0 and 1 agree, 2 disagrees with both
    # on 3 attributes, 3 on 1 attribute with 2.
    emb = _angles(0, 5, 10, 15)
    labels = np.array([[0, 0, 0], [0, 0, 0], [1, 1, 1], [1, 1, 0]], dtype=np.float32)
    nb = search_neighbors(emb, n_neighbors=3)
    grouper = Grouper(GroupOptions(rerank=False, label_penalty=0.2, label_tolerance=1))
    links = grouper.link(nb, emb)
    weighed = grouper.weigh_labels(links, labels).pairs.set_index(["row_a", "row_b"])["link"]
    plain = links.pairs.set_index(["row_a", "row_b"])["link"]
    # d - tolerance: (0,1) 0 -> 0; (0,2) 3-1=2 -> -0.4; (1,2) 2 -> -0.4; (2,3) 0 -> 0
    for pair, drop in {(0, 1): 0.0, (0, 2): 0.4, (1, 2): 0.4, (2, 3): 0.0}.items():
        assert weighed[pair] == pytest.approx(plain[pair] - drop, abs=1e-6)
    # at a cosine cut of 0.99 (5 degrees = 0.9962) the chain 0-1-2-3 is one component
    # by the vectors and two by vectors + labels
    assert len(set(grouper.group(links, 0.99)[1])) == 1
    edges, ids = grouper.group(grouper.weigh_labels(links, labels), 0.99)
    assert ids[0] == ids[1] and ids[2] == ids[3] and ids[0] != ids[2]
    off = Grouper(GroupOptions(rerank=False, label_penalty=0.0))
    assert off.weigh_labels(links, labels) is links  # label_penalty 0: untouched


def test_run_splits_lookalikes_by_their_labels_but_keeps_a_single_wrong_label():
    # two look-alike persons (A: 0-3, B: 4-7), all eight vectors within a few degrees;
    # A and B differ on 4 attributes; image 1 has one wrong label (attribute 0).
    emb = _angles(0, 1, 2, 3, 4, 5, 6, 7)
    a, b = [0, 0, 0, 0, 1], [1, 1, 1, 1, 1]
    rows = [a, [1, 0, 0, 0, 1], a, a, b, b, b, b]
    labels = pd.DataFrame(rows, columns=list("pqrst"), index=emb.ids).rename_axis("image_id")
    common = dict(
        embeddings=emb,
        labels=labels.reset_index(),
        progress=False,
        adapt="none",
        refine=False,
        rerank=False,
        min_cosine=-1.0,
        min_similarity=0.99,
        n_neighbors=7,
        detect_mixed=False,
        detect_varying_attributes=False,
    )
    merged = run(**common, label_penalty=0.0)
    assert merged.images["component_id"].nunique() == 1
    split = run(**common, label_penalty=0.3, label_tolerance=1)
    ids = split.images.set_index("image_id")["component_id"]
    assert ids[["i0", "i1", "i2", "i3"]].nunique() == 1  # the wrong label kept its image in A
    assert ids[["i4", "i5", "i6", "i7"]].nunique() == 1
    assert ids["i0"] != ids["i4"]
    issues = split.label_issues
    assert list(zip(issues["image_id"], issues["attribute"])) == [("i1", "p")]
