"""clusterclean: find near-duplicate images and the label inconsistencies among them.

Importing the package is cheap: every name below is loaded on first use, and
torch and faiss load only when a stage needs them.

>>> import clusterclean as cc
>>> report = cc.run(images="imgs/", labels="labels.csv", out="report/")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib

__version__ = "0.2.0"

# public name -> module that defines it
_EXPORTS = {
    "ClustercleanError": "errors",
    "InvalidInputError": "errors",
    "InvalidTypeError": "errors",
    "Dataset": "_contracts",
    "Embeddings": "_contracts",
    "Neighbors": "_contracts",
    "as_embeddings": "_contracts",
    "load_dataset": "dataset",
    "load_peta": "dataset",
    "list_images": "dataset",
    "Backbone": "backbones",
    "available_backbones": "backbones",
    "load_backbone": "backbones",
    "load_onnx_backbone": "backbones",
    "register_backbone": "backbones",
    "register_backbone_family": "backbones",
    "embed_images": "embed",
    "load_embeddings": "embed",
    "search_neighbors": "graph",
    "edges_from_neighbors": "graph",
    "build_knn_graph": "graph",
    "link_neighbors": "group",
    "register_splitter": "group",
    "Grouper": "group",
    "GroupOptions": "group",
    "refine_embeddings": "refine",
    "fit_refinement": "refine",
    "load_refinement": "refine",
    "Refinement": "refine",
    "AugmentedViews": "views",
    "embed_views": "views",
    "Adaptation": "adapt",
    "fit_adaptation": "adapt",
    "adapt_embeddings": "adapt",
    "load_adaptation": "adapt",
    "find_components": "components",
    "split_components": "components",
    "calibrate_cut": "calibrate",
    "Calibration": "calibrate",
    "score_components": "scoring",
    "register_metric": "scoring",
    "find_mixed_components": "mixed",
    "split_mixed_components": "mixed",
    "rank_label_issues": "trust",
    "find_pairs": "duplicates",
    "Report": "report",
    "write_report": "publish",
    "read_report": "report",
    "RunRecord": "run_record",
    "STRATEGIES": "strategies",
    "CleanResult": "strategies",
    "clean_labels": "strategies",
    "register_strategy": "strategies",
    "write_cleaned": "strategies",
    "add_images": "incremental",
    "run_distributed": "distributed",
    "RunConfig": "pipeline",
    "run": "pipeline",
    "summarize": "pipeline",
    "find_label_issues": "find",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'clusterclean' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
