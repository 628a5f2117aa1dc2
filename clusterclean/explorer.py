"""The data behind report.html's component explorer.

:func:`explorer_data` turns a report into one JSON-ready dict: every component
of 2+ images with its images (id, link to the file, labels, suspected wrong
cells), the orders the page can sort by, and per-attribute counts. The page's
own script (``report_page.js``) only filters, pages and draws what this module
decided, so the rules (which component ranks first, which image links where)
live here, in Python, where the tests read them.

Ranking (:func:`component_order`), highest first, ties broken by the next key:

* a score (``inconsistency_score``, a registered metric,
  ``n_disagreeing_attributes``): components with label issues first, then the
  score, then size, then ``component_id`` ascending. So a component whose
  members split 1:1 on an attribute (score 1, but no cell can be called wrong)
  never outranks one with a suspected wrong label.
* ``n_label_issues``: the count, then ``inconsistency_score``, size, id.
* ``component_size``: the size, then ``mean_edge_cosine`` (tightest first), id.
* ``mean_edge_cosine``: the similarity, then size, id.

A run without labels (0 attributes) offers only ``component_size`` and
``mean_edge_cosine``: its components are duplicate groups, largest and
tightest first.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np
import pandas as pd

from .errors import printable
from .scoring import METRICS

if TYPE_CHECKING:
    from .report import Report

__all__ = [
    "FLAGS",
    "attribute_view",
    "component_order",
    "explorer_data",
    "file_link",
    "script_json",
    "sort_labels",
]

#: Component flags the page can filter on: key -> checkbox label. A flag is set on a
#: component by :func:`explorer_data` (``flags`` list); a new flag is one entry here
#: and one line there.
FLAGS: dict[str, str] = {
    "issues": "has label issues",
    "mixed": "possibly two people (split)",
    "grouping": "an image grouped with another identity",
}
_ISSUE_KEYS = ("image_id", "component_id")


def sort_labels(*, labelled: bool) -> dict[str, str]:
    """Sort keys the page offers (component columns) -> the label of each."""
    if not labelled:
        return {
            "component_size": "size (then tightest)",
            "mean_edge_cosine": "tightness (mean similarity)",
        }
    return {
        "inconsistency_score": "score (label issues first)",
        "n_label_issues": "number of label issues",
        "component_size": "size",
        **{name: f"{name} (label issues first)" for name in METRICS},
        "n_disagreeing_attributes": "disagreeing attributes (label issues first)",
        "mean_edge_cosine": "tightness (mean similarity)",
    }


def component_order(components: pd.DataFrame, key: str) -> np.ndarray:
    """``component_id`` of ``components`` in the page's order for ``key`` (see module doc).

    Parameters
    ----------
    components : DataFrame
        Rows of the components table (any subset).
    key : str
        A component column: a score, ``n_label_issues``, ``component_size`` or
        ``mean_edge_cosine``.

    Returns
    -------
    ndarray of shape (n_components,), dtype int64
    """
    frame = pd.DataFrame(
        {
            "id": components["component_id"].to_numpy(dtype=np.int64),
            "size": components["component_size"].to_numpy(dtype=np.int64),
            "issues": _column(components, "n_label_issues"),
            "score": _column(components, "inconsistency_score"),
            "tight": _column(components, "mean_edge_cosine", missing=-np.inf),
            "key": _column(components, key),
        }
    )
    frame["has_issues"] = frame["issues"] > 0
    if key == "component_size":
        by = ["size", "tight"]
    elif key == "mean_edge_cosine":
        by = ["tight", "size"]
    elif key == "n_label_issues":
        by = ["issues", "score", "size"]
    else:
        by = ["has_issues", "key", "size"]
    ordered = frame.sort_values([*by, "id"], ascending=[False] * len(by) + [True], kind="stable")
    return ordered["id"].to_numpy()


def _column(frame: pd.DataFrame, name: str, *, missing: float = 0.0) -> np.ndarray:
    if name not in frame.columns:
        return np.full(len(frame), missing)
    return frame[name].to_numpy(dtype=np.float64, na_value=missing)


class FileLinks:
    """URLs of image files from one page folder: :func:`file_link` for many paths.

    The folder's absolute path is taken once and each directory's encoded relative
    path is kept, so an image costs one ``quote`` of its file name (the page lists
    every image of a large run).
    """

    def __init__(self, folder: str | Path | None) -> None:
        self.folder = None if folder is None else os.path.abspath(str(folder))
        self._directories: dict[str, str | None] = {}

    def _directory(self, directory: str) -> str | None:
        """``directory`` relative to the folder, each segment encoded and a trailing "/"."""
        if directory not in self._directories:
            try:
                relative = os.path.relpath(directory, self.folder)
            except ValueError:  # another drive (Windows)
                encoded = None
            else:
                parts = Path(relative).parts if relative != "." else ()
                encoded = "".join(quote(part, safe="") + "/" for part in parts)
            self._directories[directory] = encoded
        return self._directories[directory]

    def __call__(self, path: Any) -> str | None:
        if path is None or (not isinstance(path, str) and pd.isna(path)):
            return None
        absolute = os.path.abspath(str(path))
        if self.folder is not None:
            directory, name = os.path.split(absolute)
            encoded = self._directory(directory)
            if encoded is not None:
                return encoded + quote(name, safe="")
        return Path(absolute).as_uri()


def file_link(path: Any, folder: str | Path | None) -> str | None:
    """A URL for ``path``: relative to ``folder`` when both are known, else a file:// URI.

    Each segment is percent-encoded, so the result never carries a scheme of its
    own (``javascript:x.png`` becomes ``javascript%3Ax.png``) nor HTML.
    """
    return FileLinks(folder)(path)


def script_json(data: Any) -> str:
    """``data`` as JSON safe inside ``<script type="application/json">``.

    Every non-ASCII character is escaped (bidi controls, U+2028), and ``<``,
    ``>``, ``&`` too, so no string in it can close the element (``</script>``)
    or open a comment. Keys keep their order, so the same data gives the same
    bytes.
    """
    text = json.dumps(data, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _plain(value: Any) -> Any:
    """A JSON value: numpy scalars made Python, NaN/NA made null, floats rounded."""
    if type(value) is float:  # the common case first (a similarity, a confidence)
        return None if math.isinf(value) or math.isnan(value) else round(value, 4)
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if value is None or (np.ndim(value) == 0 and pd.isna(value)):
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if math.isinf(value) else round(float(value), 4)
    return printable(value, bidi_only=True)


def _fact(value: Any) -> str:
    if value is None or pd.isna(value):
        return "–"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return f"{float(value):.3f}"


def explorer_data(
    report: Report,
    *,
    sort_by: str,
    n_thumbnail_components: int,
    max_images: int,
    thumbnail: Callable[[Any, str], str | None],
    page_folder: str | Path | None,
) -> dict[str, Any]:
    """Every component of 2+ images of ``report`` as the page's JSON data.

    Parameters
    ----------
    report : Report
    sort_by : str
        The initial sort key (a key of :func:`sort_labels`; a run without labels
        falls back to ``size``).
    n_thumbnail_components : int
        Components, in the initial order, whose images ask ``thumbnail`` for a
        picture; the others show ids and links only.
    max_images : int
        Images listed per component with their labels (those with the most rare
        labels first); the ids of the rest are kept for the id filter.
    thumbnail : callable (path, image_id) -> str or None
        Returns the value of an image's ``thumb`` field (a marker the page fills).
    page_folder : path or None
        Folder the page lives in; image links are relative to it.

    Returns
    -------
    dict
        ``attributes``, ``labelled``, ``sort``, ``sorts`` ({key, label, order}),
        ``flags``, ``components`` (in the initial order) and ``nThumbnails``.
    """
    attributes = [printable(a, bidi_only=True) for a in report.dataset.attributes]
    labelled = len(attributes) > 0
    sorts = sort_labels(labelled=labelled)
    if sort_by not in sorts:
        sort_by = "inconsistency_score" if labelled else "component_size"
    components = report.components
    multi = components[components["component_size"] >= 2]
    order = component_order(multi, sort_by)
    position = {int(cid): i for i, cid in enumerate(order)}
    multi = multi.set_index("component_id").loc[order].reset_index()

    # one sort and one pass per table, grouped by component (no per-component pandas work)
    images = report.images.assign(row=np.arange(len(report.images)))
    images = images[images["component_id"].isin(list(position))].sort_values(
        ["component_id", "n_rare_labels", "row"], ascending=[True, False, True], kind="stable"
    )
    members: dict[int, list[dict[str, Any]]] = {}
    for member in images.to_dict("records"):
        members.setdefault(int(member["component_id"]), []).append(member)
    table = report.component_attributes
    column = {a: i for i, a in enumerate(report.dataset.attributes)}
    active = table[(table["n_positive"] > 0) & table["component_id"].isin(list(position))]
    active = active.assign(disagree=active["minority_fraction"] > 0).sort_values(
        ["component_id", "disagree", "n_positive", "attribute"],
        ascending=[True, False, False, True],
        kind="stable",
    )
    counts: dict[int, list[list[Any]]] = {}
    for cid, name, n_positive, n_known, disagree in zip(
        active["component_id"].tolist(),
        active["attribute"].tolist(),
        active["n_positive"].tolist(),
        active["n_known"].tolist(),
        active["disagree"].tolist(),
        strict=True,
    ):
        counts.setdefault(int(cid), []).append([column[name], n_positive, n_known, disagree])
    issues = report.label_issues
    issue_fields = [c for c in issues.columns if c not in _ISSUE_KEYS]
    by_image: dict[str, list[dict[str, Any]]] = {}
    for record in issues[[*_ISSUE_KEYS[:1], *issue_fields]].itertuples(index=False):
        entry = {
            name: (column.get(value, -1) if name == "attribute" else _plain(value))
            for name, value in zip(issue_fields, record[1:], strict=True)
        }
        by_image.setdefault(record[0], []).append(entry)
    grouping = getattr(report, "grouping_issues", None)
    grouped = set() if grouping is None else set(grouping["component_id"].astype(int).tolist())
    row_of = {image_id: row for row, image_id in enumerate(report.dataset.ids.astype(str))}
    positive = report.dataset.labels == 1

    fact_names = (
        ("inconsistency_score", *METRICS, "n_label_issues", "mean_edge_cosine", "min_edge_cosine")
        if labelled
        else ("mean_edge_cosine", "min_edge_cosine", "n_hops")
    )
    links = FileLinks(page_folder)
    records = []
    for i, component in enumerate(multi.to_dict("records")):
        cid = int(component["component_id"])
        rows = counts.get(cid, [])
        group = members[cid]
        shown = []
        for member in group[:max_images]:
            image_id = str(member["image_id"])
            rare = member.get("rare_labels")
            rare = list(rare) if isinstance(rare, (list, np.ndarray)) else []
            where = [_plain(member.get(c)) for c in ("split", "group")]
            path = member.get("path")
            shown.append(
                {
                    "id": printable(image_id, bidi_only=True),
                    "href": links(path),
                    "thumb": thumbnail(path, image_id) if i < n_thumbnail_components else None,
                    "sim": _plain(member.get("centroid_cosine")),
                    "where": " · ".join(w for w in where if w is not None),
                    "pos": np.flatnonzero(positive[row_of[image_id]]).tolist(),
                    "rare": sorted(column[a] for a in rare if a in column),
                    "issues": by_image.get(image_id, []),
                }
            )
        flags = [
            name
            for name, on in (
                ("issues", component.get("n_label_issues", 0) > 0),
                ("mixed", bool(component.get("is_possibly_two_people", False))),
                ("grouping", cid in grouped),
            )
            if on
        ]
        records.append(
            {
                "id": cid,
                "size": int(component["component_size"]),
                "facts": [
                    [name, _fact(component[name])] for name in fact_names if name in component
                ],
                "flags": flags,
                "disagree": sorted(row[0] for row in rows if row[3]),
                "counts": rows,
                "images": shown,
                "otherIds": [printable(m["image_id"], bidi_only=True) for m in group[max_images:]],
            }
        )
    orders = {key: [position[int(cid)] for cid in component_order(multi, key)] for key in sorts}
    return {
        "attributes": attributes,
        "labelled": labelled,
        "sort": sort_by,
        "sorts": [{"key": k, "label": label, "order": orders[k]} for k, label in sorts.items()],
        "flags": [{"key": k, "label": label} for k, label in FLAGS.items()],
        "issueFields": issue_fields,
        "nThumbnails": min(n_thumbnail_components, len(records)),
        "components": records,
    }


def attribute_view(report: Report) -> pd.DataFrame:
    """Per attribute that disagrees somewhere: in how many components (>= 2 images) it
    disagrees, of how many where it is known, the share, and its suspected wrong cells.

    Sorted by ``n_disagreeing`` (descending), then name.
    """
    table = report.component_attributes
    columns = ["attribute", "n_disagreeing", "n_components", "share", "n_label_issues"]
    if table.empty:
        return pd.DataFrame(columns=columns)
    grouped = table.assign(disagree=table["minority_fraction"] > 0).groupby("attribute")
    counts = pd.DataFrame(
        {"n_disagreeing": grouped["disagree"].sum(), "n_components": grouped["disagree"].size()}
    )
    counts["share"] = counts["n_disagreeing"] / counts["n_components"]
    issues = report.label_issues["attribute"].value_counts()
    counts["n_label_issues"] = issues.reindex(counts.index, fill_value=0).astype(int)
    counts = counts[counts["n_disagreeing"] > 0].reset_index()
    return counts.sort_values(
        ["n_disagreeing", "attribute"], ascending=[False, True], kind="stable"
    )[columns].reset_index(drop=True)
