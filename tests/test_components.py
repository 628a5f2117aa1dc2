import networkx as nx
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterclean import find_components
from clusterclean.components import component_edge_stats
from clusterclean.errors import InvalidInputError


def _edges(pairs, sims=None):
    src, dst = zip(*pairs) if pairs else ((), ())
    sims = sims if sims is not None else [0.9] * len(pairs)
    return pd.DataFrame({"row_a": src, "row_b": dst, "cosine": sims}).astype(
        {"row_a": "int32", "row_b": "int32", "cosine": "float32"}
    )


def test_components_hand_computed_and_numbered_by_first_row():
    # rows 0-3-5 form one component, 1-2 another, 4 is alone
    ids = find_components(_edges([(3, 5), (0, 3), (1, 2)]), 6)
    assert ids.tolist() == [0, 1, 1, 0, 2, 0]
    assert ids.dtype == np.int32


def test_no_edges_means_all_singletons():
    assert find_components(_edges([]), 3).tolist() == [0, 1, 2]
    assert find_components(_edges([]), 0).tolist() == []


def test_edge_endpoint_out_of_range_is_rejected():
    with pytest.raises(InvalidInputError, match=r"row indices in \[0, 2\)"):
        find_components(_edges([(0, 2)]), 2)
    with pytest.raises(InvalidInputError, match="must have columns 'row_a' and 'row_b'"):
        find_components(pd.DataFrame({"a": [0]}), 2)


def test_edge_stats_hand_computed():
    edges = _edges([(0, 1), (1, 2), (3, 4)], [0.9, 0.7, 0.95])
    stats = component_edge_stats(edges, np.array([0, 0, 0, 1, 1, 2]))
    assert stats["n_edges"].tolist() == [2, 1, 0]
    np.testing.assert_allclose(stats["mean_edge_cosine"][:2], [0.8, 0.95], rtol=1e-6)
    np.testing.assert_allclose(stats["min_edge_cosine"][:2], [0.7, 0.95], rtol=1e-6)
    assert np.isnan(stats["mean_edge_cosine"][2]) and np.isnan(stats["min_edge_cosine"][2])
    assert stats["n_hops"].tolist() == [2, 1, 0]  # chain 0-1-2, pair 3-4, singleton 5


def test_edge_stats_hops_of_a_chain_and_a_star():
    # chain 0-1-2-3-4: 4 hops; star 5-(6, 7, 8, 9): 2 hops (leaf - centre - leaf)
    edges = _edges([(0, 1), (1, 2), (2, 3), (3, 4), (5, 6), (5, 7), (5, 8), (5, 9)], [0.8] * 8)
    stats = component_edge_stats(edges, np.array([0] * 5 + [1] * 5))
    assert stats["n_hops"].dtype == np.int32
    assert stats["n_hops"].tolist() == [4, 2]


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 30),
    data=st.data(),
)
def test_components_are_the_graph_partition(n, data):
    pairs = data.draw(
        st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=40)
    )
    pairs = sorted({(min(a, b), max(a, b)) for a, b in pairs if a != b})
    ids = find_components(_edges(pairs), n)
    # a partition: every row exactly once, ids dense
    assert len(ids) == n and set(ids.tolist()) == set(range(ids.max() + 1))
    # numbered in order of first appearance
    firsts = [int(np.flatnonzero(ids == c)[0]) for c in range(ids.max() + 1)]
    assert firsts == sorted(firsts)
    # same blocks as networkx
    graph = nx.Graph()
    graph.add_nodes_from(range(n))
    graph.add_edges_from(pairs)
    expected = {frozenset(c) for c in nx.connected_components(graph)}
    got = {frozenset(np.flatnonzero(ids == c).tolist()) for c in range(ids.max() + 1)}
    assert got == expected
