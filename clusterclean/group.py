"""The one grouper: kNN lists + vectors -> edges and components at a cut, or at many cuts.

Every graph clusterclean builds comes from here: the run's
(:func:`clusterclean.pipeline.run`), the calibration's
(:func:`clusterclean.calibrate.calibrate_cut`), the projection head's related
pairs (:func:`clusterclean.pipeline.adapt_vectors`) and the benchmarks'. So a
grouping option added to :class:`GroupOptions` reaches all of them at once.

How a graph is made, in the order applied:

1. *link similarity* of every listed pair: the cosine of the searched (refined)
   vectors, re-ranked (:func:`clusterclean.graph.rerank_neighbors`) with
   ``rerank``, made relative (:func:`clusterclean.graph.scale_locally`) with
   ``n_local``; a pair's score is the higher of its two listings, or with
   ``mutual`` the lower (both must list each other);
   with ``label_penalty`` > 0 the labels are evidence too (:meth:`Grouper.weigh_labels`):
   a pair's score loses ``label_penalty × max(0, d − label_tolerance)``, ``d`` the
   number of identity attributes both images have labelled and that differ;
2. *the cut*: pairs whose score is at least ``min_similarity`` are edges, and
   their ``cosine`` column is the plain cosine of the unrefined vectors;
   edges below the cosine floor ``min_cosine`` are dropped;
3. *components*: connected components of the edges, then refined by the
   grouping methods the options turn on (:data:`SPLITTERS`, in registration
   order: Louvain ``communities``, then ``max_component_size``; a new method is
   one function + :func:`register_splitter`).

Steps 1 and the cosines are computed once (:meth:`Grouper.link`), so many cuts
cost one threshold each (:meth:`Grouper.components_per_cut`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ._contracts import Embeddings, Neighbors, check_embeddings
from ._validation import check_float
from .components import find_components, split_components
from .errors import InvalidInputError
from .graph import OPTIONS as SEARCH_OPTIONS
from .graph import cosine_of_pairs, listed_pairs, score_links, search_neighbors
from .options import SEED, Option, declare, defaults, make_options

if TYPE_CHECKING:  # pragma: no cover - typing only
    from .refine import Refinement


__all__ = [
    "OPTIONS",
    "SPLITTERS",
    "Splitter",
    "register_splitter",
    "GroupOptions",
    "Links",
    "Grouper",
    "link_neighbors",
    "label_disagreements",
    "components_per_cut",
]

#: The options of the group stage, declared once (:mod:`clusterclean.options`).
OPTIONS = declare(
    "group",
    Option(
        "min_similarity",
        0.5,
        "cut on the link similarity of an edge (0.5 was measured with the default refine "
        "+ rerank; with neither it is a plain cosine cut, try 0.9); auto: calibrated on "
        "augmented views of the images, estimates in run.json",
        "float",
        low=-1.0,
        high=1.0,
        special=("auto",),
    ),
    Option(
        "min_cosine",
        0.5,
        "floor on the plain cosine of every edge, whatever the link similarity",
        "float",
        low=-1.0,
        high=1.0,
    ),
    Option(
        "mutual",
        False,
        "keep only mutual-kNN edges",
        "bool",
    ),
    Option(
        "rerank",
        True,
        "k-reciprocal re-ranking of the kNN lists; min_similarity then cuts the re-ranked"
        " similarity",
        "bool",
    ),
    Option(
        "n_reciprocal",
        6,
        "re-ranking's reciprocal set size",
        "int",
        low=2,
    ),
    Option(
        "n_expansion",
        2,
        "re-ranking's query expansion size",
        "int",
        low=1,
    ),
    Option(
        "n_local",
        0,
        "scale similarities relative to this many nearest neighbours (0 = off)",
        "int",
        low=0,
    ),
    Option(
        "label_penalty",
        0.15,
        "labels as evidence: subtract this much from a pair's link similarity for each "
        "attribute the two images' labels disagree on beyond label_tolerance (0 = off)",
        "float",
        low=0.0,
        high=1.0,
    ),
    Option(
        "label_tolerance",
        2,
        "attributes two images of one identity may disagree on before label_penalty applies "
        "(so a single wrong label never separates them)",
        "int",
        low=0,
    ),
    Option(
        "communities",
        False,
        "split components into their Louvain communities",
        "bool",
    ),
    Option(
        "max_component_size",
        None,
        "re-split larger components at a higher cut (none: no cap)",
        "int",
        low=1,
        nullable=True,
    ),
)


#: The declared defaults, which the stage functions' signatures take.
_DEFAULTS = defaults(OPTIONS)

#: How the grouping graph is made, but its cut: the options of :class:`Grouper`.
GroupOptions = make_options(
    "GroupOptions",
    (
        *(o for o in SEARCH_OPTIONS if o.name == "n_neighbors"),
        *(o for o in OPTIONS if o.name != "min_similarity"),
        SEED,
    ),
    doc="How the grouping graph is made, but its cut (the options of :class:`Grouper`).",
    func="GroupOptions",
    module=__name__,
)


@dataclass(frozen=True)
class Splitter:
    """A grouping method applied to the components (:func:`register_splitter`)."""

    name: str
    enabled: Callable[[Any], bool]
    split: Callable[[pd.DataFrame, np.ndarray, Any], np.ndarray]


#: Registry: grouping method name -> :class:`Splitter`, applied in this order.
SPLITTERS: dict[str, Splitter] = {}


def register_splitter(name: str, *, enabled: Callable[[Any], bool]):
    """Decorator: add a grouping method ``split(edges, component_ids, options) -> ids``.

    It refines the connected components of the edges (every new component inside
    one old one); ``enabled(options)`` says from the :class:`GroupOptions` whether
    it runs. :class:`Grouper` applies the enabled ones in registration order, for
    the run, the calibration and the head's related pairs alike.
    """

    def decorate(split):
        SPLITTERS[name] = Splitter(name, enabled, split)
        return split

    return decorate


@register_splitter("communities", enabled=lambda options: options.communities)
def _louvain_communities(edges, component_ids, options):
    return split_components(edges, component_ids, communities=True, seed=options.seed)


@register_splitter(
    "max_component_size", enabled=lambda options: options.max_component_size is not None
)
def _size_cap(edges, component_ids, options):
    return split_components(
        edges, component_ids, max_component_size=options.max_component_size, seed=options.seed
    )


@dataclass(frozen=True)
class Links:
    """Every listed pair scored once: what any cut keeps (:meth:`Grouper.link`).

    Attributes
    ----------
    n_images : int
    neighbors : Neighbors
        The kNN lists ordered by link similarity, holding plain cosines.
    pairs : pandas.DataFrame
        ``row_a`` < ``row_b`` (int32), ``link`` (float32: the score the cut applies
        to), ``cosine`` (float32: plain cosine); the pairs above the cosine
        floor only, sorted by (row_a, row_b).
    """

    n_images: int
    neighbors: Neighbors
    pairs: pd.DataFrame

    def edges(self, min_similarity: float) -> pd.DataFrame:
        """The edge table at the cut: ``row_a``, ``row_b``, ``cosine`` (plain cosine).

        The cut is a Python float, so the float32 link scores are compared in
        float32 (NumPy's rule for Python scalars).
        """
        return self.edges_where(self.pairs["link"].to_numpy() >= float(min_similarity))

    def edges_where(self, keep: np.ndarray) -> pd.DataFrame:
        """The edge table of the pairs where ``keep`` is true."""
        return self.pairs.loc[keep, ["row_a", "row_b", "cosine"]].reset_index(drop=True)


class Grouper:
    """Builds the grouping graph and its components; the only code that does.

    Parameters
    ----------
    options : GroupOptions, optional
        Default: ``GroupOptions()`` (the run's defaults).
    """

    def __init__(self, options: GroupOptions | None = None) -> None:
        self.options = GroupOptions() if options is None else options

    def __repr__(self) -> str:
        return f"Grouper({self.options!r})"

    def link(
        self,
        neighbors: Neighbors,
        embeddings: Embeddings,
        *,
        cosine_of: Embeddings | None = None,
        func: str = "Grouper.link",
    ) -> Links:
        """Score every pair of the kNN lists (steps 1-2 of the module docstring, no cut yet).

        ``neighbors`` were searched on ``embeddings`` (e.g. the refined vectors);
        ``cosine_of`` holds the same images in the space whose cosine the tables
        report (default ``embeddings``). The labels are not used here
        (:meth:`weigh_labels` adds them).
        """
        embeddings = check_embeddings(embeddings, func)
        reference = embeddings if cosine_of is None else check_embeddings(cosine_of, func)
        if len(reference) != len(embeddings):
            raise InvalidInputError(
                f"The 'cosine_of' parameter of {func} must hold the same {len(embeddings)} "
                f"images as 'embeddings'. Got {len(reference)} instead."
            )
        o = self.options
        scored = score_links(
            neighbors,
            embeddings,
            rerank=o.rerank,
            n_reciprocal=o.n_reciprocal,
            n_expansion=o.n_expansion,
            n_local=o.n_local,
        )
        listed = listed_pairs(scored)
        src = listed["row_a"].to_numpy().astype(np.int32)
        dst = listed["row_b"].to_numpy().astype(np.int32)
        cosine = cosine_of_pairs(reference, src, dst)
        keep = cosine >= o.min_cosine
        pairs = pd.DataFrame(
            {
                "row_a": src[keep],
                "row_b": dst[keep],
                "link": listed["low" if o.mutual else "high"].to_numpy()[keep],
                "cosine": cosine[keep],
            }
        )
        rows = np.repeat(np.arange(len(embeddings)), scored.indices.shape[1])
        cosines = cosine_of_pairs(reference, rows, scored.indices.ravel())
        lists = Neighbors(scored.indices, cosines.reshape(scored.indices.shape))
        return Links(n_images=len(embeddings), neighbors=lists, pairs=pairs)

    def weigh_labels(self, links: Links, labels: np.ndarray) -> Links:
        """The links with the labels as evidence (``label_penalty``; unchanged when 0).

        ``link' = link − label_penalty × max(0, d − label_tolerance)``, ``d`` from
        :func:`label_disagreements` over the columns of ``labels`` (n_images ×
        n_attributes, 0/1, NaN = unknown). Pass only the attributes that describe
        an identity: one that legitimately varies between images of one person
        (``find_varying_attributes``) is no evidence against linking them.
        """
        o = self.options
        if o.label_penalty == 0:
            return links
        pairs = links.pairs
        src, dst = pairs["row_a"].to_numpy(), pairs["row_b"].to_numpy()
        excess = np.maximum(label_disagreements(labels, src, dst) - o.label_tolerance, 0)
        link = pairs["link"].to_numpy()
        weighed = pairs.assign(link=(link - o.label_penalty * excess).astype(link.dtype))
        return Links(n_images=links.n_images, neighbors=links.neighbors, pairs=weighed)

    def search_and_link(
        self, embeddings: Embeddings, *, cosine_of: Embeddings | None = None
    ) -> Links:
        """:meth:`link` over a fresh exact search of ``n_neighbors`` on ``embeddings``."""
        neighbors = search_neighbors(embeddings, n_neighbors=self.options.n_neighbors)
        return self.link(neighbors, embeddings, cosine_of=cosine_of)

    def splitters(self) -> list[Splitter]:
        """The registered grouping methods the options turn on, in order."""
        return [s for s in SPLITTERS.values() if s.enabled(self.options)]

    def components(self, edges: pd.DataFrame, n_images: int) -> np.ndarray:
        """Dense component ids of the edges, split as the options say (step 3)."""
        component_ids = find_components(edges, n_images)
        for splitter in self.splitters():
            component_ids = splitter.split(edges, component_ids, self.options)
        return component_ids

    def group(self, links: Links, min_similarity: float) -> tuple[pd.DataFrame, np.ndarray]:
        """The edges and the component ids at one cut."""
        edges = links.edges(min_similarity)
        return edges, self.components(edges, links.n_images)

    def components_per_cut(self, links: Links, cuts: Sequence[float]) -> Iterator[np.ndarray]:
        """The component ids at each cut, as :meth:`group` makes them.

        Without splits the ids are scipy's connected components of the edges at
        the cut (the same partition as :meth:`components`, not renumbered, which
        no caller needs, and without a DataFrame per cut).
        """
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        splits = bool(self.splitters())
        src, dst = links.pairs["row_a"].to_numpy(), links.pairs["row_b"].to_numpy()
        link = links.pairs["link"].to_numpy()
        for cut in cuts:
            keep = link >= cut
            if splits:
                yield self.components(links.edges_where(keep), links.n_images)
                continue
            graph = coo_matrix(
                (np.ones(int(keep.sum()), dtype=np.int8), (src[keep], dst[keep])),
                shape=(links.n_images, links.n_images),
            )
            yield connected_components(graph, directed=False)[1]


def label_disagreements(labels: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """For each pair, the number of attributes both images have labelled and that differ.

    ``d(i, j) = Σ_a [y_ia known] [y_ja known] [y_ia ≠ y_ja]`` over the columns of
    ``labels`` (NaN = unknown), as int32.
    """
    labels = np.asarray(labels, dtype=np.float32)
    a, b = labels[src], labels[dst]
    return ((a != b) & ~np.isnan(a) & ~np.isnan(b)).sum(axis=1).astype(np.int32)


def link_neighbors(
    neighbors: Neighbors,
    embeddings: Embeddings,
    *,
    cosine_of: Embeddings | None = None,
    min_similarity: float = _DEFAULTS["min_similarity"],
    mutual: bool = _DEFAULTS["mutual"],
    rerank: bool = _DEFAULTS["rerank"],
    n_reciprocal: int = _DEFAULTS["n_reciprocal"],
    n_expansion: int = _DEFAULTS["n_expansion"],
    n_local: int = _DEFAULTS["n_local"],
    min_cosine: float = _DEFAULTS["min_cosine"],
) -> tuple[Neighbors, pd.DataFrame]:
    """The grouping graph from kNN lists at one cut: ``Grouper(...).link(...)`` then the cut.

    The defaults are the run's (:class:`GroupOptions`). The cut ``min_similarity``
    applies to the link similarity (module docstring); the edge table's
    ``cosine`` column stays a plain cosine, of ``cosine_of`` (e.g. the
    unrefined embeddings, so that near-duplicate thresholds keep their meaning)
    or of ``embeddings``. ``min_cosine`` floors that cosine: re-ranking scores
    are relative, and where most images have no true match two unrelated images
    can share enough reciprocal neighbours to pass the cut.

    Returns
    -------
    neighbors : Neighbors
        The kNN lists ordered by link similarity, holding the plain cosines.
    edges : pandas.DataFrame
        ``row_a``, ``row_b``, ``cosine`` (cosine, float32): the contract of
        :func:`clusterclean.graph.edges_from_neighbors`.
    """
    func = "link_neighbors"
    min_similarity = check_float(min_similarity, "min_similarity", func, low=-1.0, high=1.0)
    options = GroupOptions.checked(
        func,
        n_neighbors=max(1, neighbors.indices.shape[1]),
        mutual=mutual,
        rerank=rerank,
        n_reciprocal=n_reciprocal,
        n_expansion=n_expansion,
        n_local=n_local,
        min_cosine=min_cosine,
    )
    links = Grouper(options).link(neighbors, embeddings, cosine_of=cosine_of, func=func)
    return links.neighbors, links.edges(min_similarity)


def components_per_cut(
    embeddings: Embeddings,
    *,
    grouper: Grouper | None = None,
    refinement: Refinement | None = None,
    neighbors: Neighbors | None = None,
    cuts: Sequence[float],
) -> list[np.ndarray]:
    """The grouping at every cut of unrefined ``embeddings``, refined by ``refinement``.

    Same partition as ``run(..., min_similarity=cut)`` with the grouper's options
    for each cut (ids not renumbered). ``neighbors``: lists already searched on
    the refined vectors (default: an exact search).
    """
    grouper = Grouper() if grouper is None else grouper
    links = grouper_links(grouper, embeddings, refinement, neighbors, "components_per_cut")
    return list(grouper.components_per_cut(links, cuts))


def grouper_links(
    grouper: Grouper,
    embeddings: Embeddings,
    refinement: Refinement | None,
    neighbors: Neighbors | None,
    func: str,
) -> Links:
    """The links of unit-normalised ``embeddings`` refined by ``refinement`` (ids = rows)."""
    raw = check_embeddings(embeddings, func).vectors
    unit = raw / np.maximum(np.linalg.norm(raw, axis=1, keepdims=True), 1e-12)
    plain = Embeddings(np.arange(len(raw)).astype(str).astype(object), unit.astype(np.float32))
    refined = plain if refinement is None else refinement.apply(plain)
    if neighbors is None:
        neighbors = search_neighbors(refined, n_neighbors=grouper.options.n_neighbors)
    return grouper.link(neighbors, refined, cosine_of=embeddings, func=func)
