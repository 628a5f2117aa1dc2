"""clusterclean and cleanlab side by side on the same embeddings and noisy labels.

    .venv/bin/pip install -e '.[peers]'        # cleanlab 2.9
    .venv/bin/python scripts/compare_peers.py --benchmark benchmarks/fashion --out docs/results

For each noise setting (``--inject``, repeatable; default ``disagreement:0.1``):

* clusterclean: the pipeline on the precomputed embeddings (kNN graph,
  components, scores) -> ``label_issues`` cells, and the ``majority`` strategy;
* cleanlab 2.9: 5-fold cross-validated logistic-regression ``pred_probs`` per
  attribute on the same embeddings (top ``--probe-dim`` principal axes), then
  ``multilabel_classification.filter.find_multilabel_issues_per_class`` to flag
  cells; ``Datalab`` ``near_duplicate`` sets as its grouping.

Both are scored against the planted cells (precision / recall / F1, overall,
visible, invisible), downstream (a probe trained on the labels with the flagged
cells removed, scored on the true test labels) and wall time (the embedding,
shared, is excluded). Writes ``peers.parquet``, ``peers.json``, ``peers.md``.
fastdup is not compared: its licence is non-commercial.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from clusterclean.errors import ClustercleanError, MissingDependencyError

logger = logging.getLogger("compare_peers")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from evaluate_benchmark import (  # noqa: E402  (a sibling script, not a package)
    markdown_table,
    run_config,
    write_json,
    write_parquet,
    write_text,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--benchmark", type=Path, default=Path("benchmarks/fashion"))
    parser.add_argument("--out", type=Path, default=Path("docs/results"))
    parser.add_argument("--inject", action="append", help="KIND:RATE (repeatable)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-similarity", type=float, default=None, help="default: results.json")
    parser.add_argument("--n-neighbors", type=int, default=10)
    parser.add_argument("--mutual", action="store_true", help="mutual kNN edges only")
    parser.add_argument(
        "--run-option", action="append", metavar="KEY=VALUE", help="pipeline option; repeatable"
    )
    parser.add_argument("--probe-dim", type=int, default=64)
    parser.add_argument("--folds", type=int, default=5)
    return parser


def _require_cleanlab():
    try:
        import cleanlab
    except ImportError as exc:
        raise MissingDependencyError(
            "compare_peers needs cleanlab 2.9: pip install -e '.[peers]' "
            "(or pip install cleanlab==2.9.0)."
        ) from exc
    return cleanlab


def cross_val_pred_probs(features: np.ndarray, labels: np.ndarray, folds: int, seed: int):
    """Out-of-fold P(attribute = 1), one logistic regression per attribute; (N, A)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    probs = np.zeros(labels.shape, dtype=np.float64)
    for a in range(labels.shape[1]):
        y = labels[:, a].astype(int)
        if len(np.unique(y)) < 2:
            probs[:, a] = y
            continue
        n_splits = min(folds, int(np.bincount(y).min()))
        if n_splits < 2:
            probs[:, a] = y.mean()
            continue
        splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        for train, test in splitter.split(features, y):
            model = LogisticRegression(max_iter=500, random_state=seed)
            probs[test, a] = model.fit(features[train], y[train]).predict_proba(features[test])[
                :, 1
            ]
    return probs


def cleanlab_cells(ids, attributes, labels: np.ndarray, probs: np.ndarray) -> pd.DataFrame:
    """Cells flagged by cleanlab's per-class multi-label filter."""
    from cleanlab.multilabel_classification.filter import find_multilabel_issues_per_class

    as_lists = [list(np.flatnonzero(row == 1)) for row in labels]
    mask = np.asarray(find_multilabel_issues_per_class(labels=as_lists, pred_probs=probs))
    if mask.shape != labels.shape:  # cleanlab returns (K, N) in some versions
        mask = mask.T
    rows, cols = np.nonzero(mask)
    return pd.DataFrame(
        {"image_id": np.asarray(ids)[rows], "attribute": np.asarray(attributes)[cols]}
    )


def datalab_components(vectors: np.ndarray) -> np.ndarray:
    """Connected components of cleanlab Datalab's near-duplicate sets (singletons kept)."""
    from cleanlab import Datalab
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    lab = Datalab(data={"x": np.arange(len(vectors))}, verbosity=0)
    lab.find_issues(features=vectors, issue_types={"near_duplicate": {}})
    sets = lab.get_issues("near_duplicate")
    info = lab.get_info("near_duplicate")
    src, dst = [], []
    for i, members in enumerate(info["near_duplicate_sets"]):
        for j in members:
            src.append(i)
            dst.append(int(j))
    n = len(vectors)
    graph = coo_matrix((np.ones(len(src)), (src, dst)), shape=(n, n))
    _, components = connected_components(graph, directed=False)
    logger.info("Datalab: %d near-duplicate images", int(sets["is_near_duplicate_issue"].sum()))
    return components


def _warm_up() -> None:
    """Import what both tools load lazily, so that no timing includes imports."""
    import faiss  # noqa: F401
    import sklearn.linear_model  # noqa: F401
    import sklearn.model_selection  # noqa: F401
    from cleanlab.multilabel_classification import filter  # noqa: F401

    from clusterclean import graph, pipeline, refine, scoring, strategies  # noqa: F401


def compare(args: argparse.Namespace) -> pd.DataFrame:
    _require_cleanlab()
    from clusterclean.evaluate import (
        detection_scores,
        evaluate_cleaning,
        grouping_scores,
        macro_f1,
        parse_injection,
        pca_features,
        probe_f1,
        read_benchmark,
    )

    bench = read_benchmark(args.benchmark)
    labels, embeddings, groups, confusions = (
        bench.labels,
        bench.embeddings,
        bench.groups,
        bench.confusions,
    )
    cut = args.min_similarity
    if cut is None:
        results = args.out / "results.json"
        cut = json.loads(results.read_text())["min_similarity"] if results.is_file() else 0.9
    config = run_config(args, cut)
    _warm_up()
    rows = []
    for spec in args.inject or ["disagreement:0.1"]:
        kind, rate = parse_injection(spec)
        started = time.perf_counter()
        ours = evaluate_cleaning(
            labels,
            kind=kind,
            rate=rate,
            seed=args.seed,
            embeddings=embeddings,
            config=config,
            strategies=["majority"],
            attribute_groups=groups,
            confusions=confusions if kind == "class_conditional" else None,
            probe=False,
        )
        our_seconds = time.perf_counter() - started
        noisy, truth = ours.noisy, ours.truth
        split = labels.set_index("image_id").loc[noisy.index, "split"]
        train_ids, test_ids = noisy.index[split == "train"], noisy.index[split == "test"]
        features = pca_features(embeddings, train_ids, args.probe_dim)
        index = pd.Index(features.ids.astype(str))
        x = features.vectors[index.get_indexer(noisy.index)].astype(np.float64)

        started = time.perf_counter()
        probs = cross_val_pred_probs(x, noisy.to_numpy(), args.folds, args.seed)
        theirs = cleanlab_cells(noisy.index, noisy.columns, noisy.to_numpy(), probs)
        their_seconds = time.perf_counter() - started
        started = time.perf_counter()
        their_components = datalab_components(embeddings.vectors)
        datalab_seconds = time.perf_counter() - started

        pruned = noisy.copy()
        for attribute, cells in theirs.groupby("attribute"):
            pruned.loc[cells["image_id"], attribute] = np.nan
        person = labels.set_index("image_id").loc[noisy.index, "group"].to_numpy()
        methods = {
            "clusterclean label_issues": (ours.report.label_issues, None),
            "cleanlab per-class issues": (theirs, pruned),
        }
        their_grouping = grouping_scores(their_components, person)
        for method, (flagged, train_labels) in methods.items():
            if train_labels is None:  # ours: the cleaned labels of the majority strategy
                train_labels = ours.cleaned["majority"]
            train = train_labels.loc[train_labels.index.intersection(train_ids)]
            probe = probe_f1(features, train, truth.loc[test_ids], seed=args.seed)
            seconds = our_seconds if method.startswith("clusterclean") else their_seconds
            for scope, members in {"all": None, **groups}.items():
                found = detection_scores(flagged, ours.planted, attributes=members)
                row = {"noise": spec, "method": method, "attributes": scope, **found}
                if scope == "all":
                    row.update(macro_f1(probe, groups), seconds=seconds)
                rows.append(row)
        rows.append(
            {
                "noise": spec,
                "method": "cleanlab Datalab near_duplicate (grouping)",
                "attributes": "grouping",
                "pair_f1": their_grouping["pair_f1"],
                "pair_precision": their_grouping["pair_precision"],
                "pair_recall": their_grouping["pair_recall"],
                "seconds": datalab_seconds,
            }
        )
        rows.append(
            {
                "noise": spec,
                "method": "clusterclean components (grouping)",
                "attributes": "grouping",
                "pair_f1": ours.grouping["pair_f1"],
                "pair_precision": ours.grouping["pair_precision"],
                "pair_recall": ours.grouping["pair_recall"],
                "seconds": our_seconds,
            }
        )
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("clusterclean", "faiss"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        table = compare(args)
    except ClustercleanError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    write_parquet(table, args.out / "peers.parquet")
    write_json(table.to_dict("records"), args.out / "peers.json")
    shown = table.drop(columns=[c for c in ("n_flagged", "n_true_positives") if c in table])
    text = "# clusterclean vs cleanlab\n\n" + markdown_table(shown.round(3)) + "\n"
    write_text(text, args.out / "peers.md")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
