"""Seeded synthetic data with planted structure, shared by the tests.

Like faiss ``contrib/datasets.py``'s SyntheticDataset: tight groups of
near-identical vectors ("persons"), consistent labels per group, and a chosen
set of flipped cells.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from clusterclean import Dataset, Embeddings, as_embeddings


@dataclass(frozen=True)
class Planted:
    dataset: Dataset
    embeddings: Embeddings
    groups: np.ndarray  # true group per row
    flipped: set  # {(image_id, attribute)}


def make_planted(
    *,
    n_groups: int = 30,
    max_size: int = 5,
    dim: int = 32,
    n_attributes: int = 6,
    n_flips: int = 5,
    noise: float = 0.02,
    seed: int = 1338,
) -> Planted:
    """Groups of 1..max_size vectors around random centres, labels per group, then flips.

    A flip changes one cell of a group of >= 3 images, at most one cell per
    (group, attribute), so the flipped value is always a strict minority.
    """
    rng = np.random.default_rng(seed)
    ids, vectors, labels, groups = [], [], [], []
    for g in range(n_groups):
        centre = rng.normal(size=dim)
        group_labels = rng.integers(0, 2, size=n_attributes).astype(np.float32)
        for v in range(int(rng.integers(1, max_size + 1))):
            ids.append(f"g{g:03d}_v{v}")
            vectors.append(centre / np.linalg.norm(centre) + noise * rng.normal(size=dim))
            labels.append(group_labels.copy())
            groups.append(g)
    labels = np.array(labels, dtype=np.float32)
    groups = np.array(groups)
    attributes = tuple(f"attr_{a}" for a in range(n_attributes))
    flipped = set()
    sizes = np.bincount(groups)
    candidates = [(g, a) for g in np.flatnonzero(sizes >= 3) for a in range(n_attributes)]
    for index in rng.permutation(len(candidates))[:n_flips]:
        g, a = candidates[index]
        row = int(rng.choice(np.flatnonzero(groups == g)))
        labels[row, a] = 1 - labels[row, a]
        flipped.add((ids[row], attributes[a]))
    table = pd.DataFrame(
        {"image_id": ids, "path": None, "split": "train", "group": groups.astype(str)}
    )
    dataset = Dataset(table=table, labels=labels, attributes=attributes)
    return Planted(dataset, as_embeddings(ids, np.array(vectors)), groups, flipped)


#: Run options that leave labels out of the grouping, so a grouping check sees the
#: components the vectors alone make.
CHECK_OPTIONS = {"label_penalty": 0.0, "detect_varying_attributes": False, "progress": False}


def with_stranger_labels(data: Planted, seed: int = 0) -> Dataset:
    """``data``'s dataset with every image's labels drawn afresh: the vectors still group
    the views of one subject, but its linked images now disagree like strangers."""
    from dataclasses import replace

    labels = np.random.default_rng(seed).integers(0, 2, data.dataset.labels.shape)
    return replace(data.dataset, labels=labels.astype(np.float32))
