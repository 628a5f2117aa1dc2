"""``report.html``: one self-contained page to look at a run.

The page is a list of sections (:data:`SECTIONS`, each an id, a title and a
function of the page's context): a summary (counts, plots), the attributes left
unscored, the components split as possibly two people, the component explorer,
the near-duplicate pairs whose labels differ, the copies that leak across
splits, and the run's parameters.

The explorer lists every component of 2+ images, 25 a page, with sorting,
filters (attribute, flags, minimum size, image id), a per-attribute view and an
anchor per component (``#c12`` opens component 12 alone). Its data is built by
:mod:`clusterclean.explorer` and embedded as JSON in a ``<script
type="application/json">`` element; a small script of our own
(``report_page.js``, allowed by its hash in the Content-Security-Policy, no
other script may run) draws it. A run without labels shows its components as
duplicate groups, largest and tightest first.

Thumbnails and plots are embedded as base64 data, so the file works when moved.
Thumbnails are asked for the first ``n_gallery`` components of the explorer's
initial order (and the tables' images); when the page would grow past
``max_bytes``, later thumbnails are left out, the page says so, and those
images show their id, linked to the file.

Every string that comes from the data (ids, paths, attribute names, splits,
parameters) is escaped with :func:`html.escape` in the markup and by
:func:`clusterclean.explorer.script_json` in the JSON; the script writes text
with ``textContent`` only, so a label named ``<script>`` shows as text.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import logging
import math
import re
import uuid
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ._validation import check_choice, check_int, check_type
from .duplicates import DEFAULT_MIN_DUPLICATE_SIMILARITY
from .errors import printable
from .explorer import FLAGS, attribute_view, explorer_data, script_json, sort_labels
from .scoring import count_flags
from .trust import GROUPING_ADVICE

if TYPE_CHECKING:
    from .report import Report

__all__ = [
    "DEFAULT_MAX_BYTES",
    "SECTIONS",
    "SORT_KEYS",
    "Section",
    "sort_keys",
    "render_html",
    "write_html",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 20 * 2**20


def sort_keys() -> tuple[str, ...]:
    """Component columns the explorer can be sorted by (the keys of
    :func:`clusterclean.explorer.sort_labels` for a labelled run)."""
    return tuple(sort_labels(labelled=True))


#: :func:`sort_keys` with the built-in metrics.
SORT_KEYS = sort_keys()
_SIZE_BINS = ((1, 1), (2, 2), (3, 5), (6, 10), (11, 50), (51, None))
_SCRIPT = Path(__file__).with_name("report_page.js").read_text(encoding="utf-8")
_SCRIPT_HASH = base64.b64encode(hashlib.sha256(_SCRIPT.encode("utf-8")).digest()).decode("ascii")
# the page's one script is allowed by its hash; no other script, inline or not, may run
_CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
    f"script-src 'sha256-{_SCRIPT_HASH}'"
)

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0 2em 3em;color:#222;background:#fafafa}
h1{margin:.6em 0 .2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:2px 8px;
text-align:left;vertical-align:top}th{background:#f0f0f0}td.num{text-align:right}
.cards{display:flex;flex-wrap:wrap;gap:1.5em;align-items:flex-start}
.card{background:#fff;border:1px solid #ddd;padding:.3em 1em}
.plots{display:flex;flex-wrap:wrap;gap:1em;margin-top:1em}
.plots img{max-width:100%;border:1px solid #ddd;background:#fff}
.note{background:#fff4d6;border:1px solid #e5c36b;padding:.4em .8em}
.component{background:#fff;border:1px solid #ccc;margin:1em 0;padding:.5em 1em}
.component h3{margin:.2em 0}.metrics{color:#555}
.images{display:flex;flex-wrap:wrap;gap:10px}
figure{margin:0;width:150px;font-size:12px}figure .id{font-weight:600;word-break:break-all}
.thumb{display:block;max-width:140px;max-height:140px;border:1px solid #bbb}
.placeholder{width:96px;height:96px;display:flex;align-items:center;justify-content:center;
text-align:center;background:#eee;color:#777;border:1px dashed #aaa;font-size:11px;
word-break:break-all;padding:4px}
.chip{display:inline-block;border-radius:3px;padding:0 4px;margin:1px;background:#e8eef7}
.chip.disagree{background:#ffe08a}.chip.issue{background:#f58c8c;font-weight:600}
.chip.absent{text-decoration:line-through}
.controls{display:flex;flex-wrap:wrap;gap:.4em 1.2em;align-items:center;background:#fff;
border:1px solid #ddd;padding:.5em 1em;position:sticky;top:0;z-index:1}
.pager button{margin:0 .5em}
.component h3 a.anchor{color:#888;text-decoration:none;margin-right:.3em}
figure .id{display:block}figure a.id{color:#1a4f9c}
button.attribute{font:inherit;border:1px solid #bbb;background:#fff;cursor:pointer}
"""


def _e(value: Any) -> str:
    """Escape any value for HTML text or a quoted attribute.

    Bidi control characters (U+202E reverses the text after it) are shown as
    escapes first, so a file or column name reads as it is.
    """
    return html.escape(printable(value, bidi_only=True), quote=True)


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or pd.isna(value):
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return f"{float(value):.{digits}f}"


def _table(header: Iterable[str], rows: Iterable[Iterable[str]], *, raw: bool = False) -> str:
    """An HTML table; cells are escaped unless ``raw`` (then the caller escaped them)."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{c if raw else _e(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


@dataclass
class _Thumbnails:
    """Thumbnail requests, filled in after the text is known so the size cap is exact.

    ``request`` (markup) and ``request_data`` (JSON) return markers; :meth:`fill`
    replaces them in request order with embedded JPEGs while the byte budget
    lasts, with placeholders after that.
    """

    size: int
    enabled: bool
    requests: list[tuple[str | None, str]] = field(default_factory=list)
    nonce: str = field(default_factory=lambda: uuid.uuid4().hex)
    n_omitted: int = 0
    n_unreadable: int = 0

    kinds: list[str] = field(default_factory=list)

    def request(self, path: Any, name: str) -> str:
        """A marker in the markup: an ``<img>`` or a placeholder once filled."""
        if not self.enabled:
            return ""
        self.requests.append((None if path is None or pd.isna(path) else str(path), name))
        self.kinds.append("html")
        return f"<!--thumb-{self.nonce}-{len(self.requests) - 1}-->"

    def request_data(self, path: Any, name: str) -> str | None:
        """A marker in a JSON string: a ``data:`` URI, or ``!why`` when there is none."""
        if not self.enabled or path is None or pd.isna(path):
            return None
        self.requests.append((str(path), name))
        self.kinds.append("json")
        return f"@@thumb-{self.nonce}-{len(self.requests) - 1}@@"

    def _encode(self, path: str) -> str | None:
        from PIL import Image

        try:
            with Image.open(path) as image:
                image.draft("RGB", (self.size, self.size))  # JPEG: decode at reduced scale
                image = image.convert("RGB")
                image.thumbnail((self.size, self.size))
                buffer = io.BytesIO()
                image.save(buffer, format="JPEG", quality=75)
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            logger.warning("report.html: cannot make a thumbnail of %s (%s)", path, error)
            return None
        return base64.b64encode(buffer.getvalue()).decode("ascii")

    def fill(self, text: str, budget: int) -> str:
        """Replace the markers: images while ``budget`` bytes last, then placeholders."""
        cache: dict[str, str | None] = {}
        used = 0
        out: list[str] = []
        for (path, name), kind in zip(self.requests, self.kinds, strict=True):
            missing = _placeholder if kind == "html" else _why
            if path is None:
                out.append(missing(name, "no image file"))
                continue
            if path not in cache and used < budget:
                cache[path] = self._encode(path)
            data = cache.get(path, "")
            if data is None:
                self.n_unreadable += 1
                out.append(missing(name, "unreadable image"))
                continue
            uri = f"data:image/jpeg;base64,{data}"
            tag = f'<img class="thumb" src="{uri}" alt="{_e(name)}">' if kind == "html" else uri
            if not data or used + len(tag) > budget:
                self.n_omitted += 1
                out.append(missing(name, "omitted: size cap"))
                continue
            used += len(tag)
            out.append(tag)
        pattern = re.compile(f"<!--thumb-{self.nonce}-([0-9]+)-->|@@thumb-{self.nonce}-([0-9]+)@@")
        return pattern.sub(lambda m: out[int(m.group(1) or m.group(2))], text)


def _placeholder(name: str, why: str) -> str:
    return f'<div class="placeholder">{_e(name)}<br>({_e(why)})</div>'


def _why(name: str, why: str) -> str:
    """The JSON side of a placeholder: the page shows ``why`` (plain ASCII, JSON-safe)."""
    return f"!{why}"


def _figure_png(draw, *, left: float = 0.14) -> str:
    """Render ``draw(ax)`` on a small matplotlib figure; an ``<img>`` with the PNG inline.

    Fixed margins instead of a layout engine: one draw instead of two.
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.2, 2.8), dpi=90)
    figure.subplots_adjust(left=left, right=0.97, bottom=0.17, top=0.9)
    draw(figure.add_subplot())
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # an attribute name in a script the font lacks is drawn as boxes; no need to warn
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        figure.savefig(buffer, format="png")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="plot">'


def _plots(report: Report, sort_by: str) -> str:
    components = report.components
    multi = components[components["component_size"] >= 2]
    parts = []
    if len(multi) and report.dataset.n_attributes:

        def histogram(ax):
            ax.hist(multi[sort_by].to_numpy(dtype=float), bins=30, color="#4c72b0")
            ax.set_xlabel(sort_by)
            ax.set_ylabel("components (>= 2 images)")
            ax.set_title(f"{sort_by} per component")

        parts.append(_figure_png(histogram))
    if len(components):
        sizes = components["component_size"].to_numpy()
        labels = [_bin_label(low, high) for low, high in _SIZE_BINS]
        counts = [_bin_count(sizes, low, high) for low, high in _SIZE_BINS]

        def size_bars(ax):
            bars = ax.bar(labels, counts, color="#55a868")
            ax.bar_label(bars)
            ax.set_xlabel("component size (images)")
            ax.set_ylabel("components")
            ax.set_title("component sizes")

        parts.append(_figure_png(size_bars))
    top = attribute_view(report).head(15)
    if len(top):

        def attribute_bars(ax):
            ax.barh(top["attribute"].astype(str)[::-1], top["n_disagreeing"][::-1], color="#c44e52")
            ax.tick_params(axis="y", labelsize=7)
            ax.set_xlabel("components disagreeing")
            ax.set_title("attributes that disagree most")

        longest = int(top["attribute"].astype(str).str.len().max())
        parts.append(_figure_png(attribute_bars, left=min(0.55, 0.06 + 0.016 * longest)))
    if not parts:
        return "<p>No components to plot.</p>"
    return '<div class="plots">' + "".join(parts) + "</div>"


def _bin_label(low: int, high: int | None) -> str:
    if high is None:
        return f"{low}+"
    return str(low) if low == high else f"{low}-{high}"


def _bin_count(sizes: np.ndarray, low: int, high: int | None) -> int:
    return int(((sizes >= low) & (sizes <= (high if high is not None else np.inf))).sum())


def _duplicate_similarity(report: Report) -> float:
    value = report.run_info.parameters.get("min_duplicate_similarity")
    return float(value) if value is not None else DEFAULT_MIN_DUPLICATE_SIMILARITY


def _near_pairs(report: Report) -> pd.DataFrame:
    pairs = report.pairs
    strong = pairs[pairs["cosine"] >= _duplicate_similarity(report)]
    return strong


def _summary(report: Report) -> str:
    components = report.components
    sizes = components["component_size"].to_numpy() if len(components) else np.zeros(0)
    multi = components[components["component_size"] >= 2]
    issues = report.label_issues
    rows = [("images", _num(report.dataset.n_images))]
    if not report.dataset.n_attributes:
        rows.append(("labels", "no labels: duplicate groups only"))
    else:
        rows.append(("attributes", _num(report.dataset.n_attributes)))
    rows += [
        ("components (singletons included)", _num(len(components))),
        ("components of 2+ images", _num(len(multi))),
        ("largest component", _num(int(sizes.max()) if len(sizes) else 0)),
    ]
    if report.dataset.n_attributes:
        rows.append(
            (
                "components that disagree on an attribute",
                _num(int((multi["n_disagreeing_attributes"] > 0).sum())),
            )
        )
        rows += [
            (f"flagged: {name}", _num(count))
            for name, count in count_flags(
                report.component_flags, report.run_info.thresholds
            ).items()
        ]
        rows += [
            ("suspected wrong label cells", _num(len(issues))),
            ("images with a suspected wrong label", _num(int(issues["image_id"].nunique()))),
        ]
        if "is_flagged" in issues.columns:  # reports written before the trust stage lack it
            rows.append(
                ("cells flagged with confidence (review first)", _num(issues["is_flagged"].sum()))
            )
        if report.grouping_issues is not None:
            rows.append(("images grouped with another identity", _num(len(report.grouping_issues))))
        check = report.run_info.grouping_check
        if check:
            rows.append(("grouping check: label agreement", _num(check["agreement"], 2)))
    near = _near_pairs(report)
    dup_rows = []
    dup_rows.append(
        (
            f"near-duplicate pairs (similarity >= {_duplicate_similarity(report):g})",
            _num(len(near)),
        )
    )
    dup_rows.append(
        (
            "near-duplicate pairs whose labels differ",
            _num(int((near["n_differing_labels"] > 0).sum())),
        )
    )
    dup_rows.append(("graph pairs across splits", _num(int(report.pairs["is_cross_split"].sum()))))
    duplicates = report.duplicates
    if duplicates is None:
        dup_rows.append(("duplicate groups", "not computed"))
    else:
        for kind in ("exact_file", "exact_pixels", "near"):
            part = duplicates[duplicates["kind"] == kind]
            dup_rows.append(
                (
                    f"{kind} groups (redundant copies)",
                    f"{part['duplicate_group_id'].nunique()} ({int((~part['is_kept']).sum())})",
                )
            )
        leaks = duplicates.loc[duplicates["is_leak"], "image_id"].nunique()
        dup_rows.append(("cross-split leaks (copies to drop)", _num(int(leaks))))
    size_rows = [
        (_bin_label(low, high), _num(_bin_count(sizes, low, high))) for low, high in _SIZE_BINS
    ]
    return (
        _grouping_warning(report)
        + '<div class="cards"><div class="card"><h3>Counts</h3>'
        + _table(("", "value"), rows)
        + '</div><div class="card"><h3>Duplicates and leaks</h3>'
        + _table(("", "value"), dup_rows)
        + '</div><div class="card"><h3>Components by size</h3>'
        + _table(("size", "components"), size_rows)
        + "</div></div>"
    )


def _grouping_warning(report: Report) -> str:
    """A note when the labels suggest that many components join different identities."""
    check = report.run_info.grouping_check
    if not check or check["reliable"]:
        return ""
    return (
        '<p class="note" id="grouping-warning"><b>The grouping looks unreliable.</b> Linked '
        f"images disagree on {check['within_disagreement']:.2f} attributes on average, "
        f"nearest images of different components on {check['outside_disagreement']:.2f} "
        f"(label agreement {check['agreement']:.2f}, below {check['min_agreement']:g}). Many "
        "components likely join different identities, so many suspected cells below are "
        f"differences between identities, not label errors. {_e(GROUPING_ADVICE)}</p>"
    )


def _parameters(report: Report) -> str:
    info = report.run_info
    rows = [(key, _format_value(value)) for key, value in sorted(info.parameters.items())]
    embedding = info.embedding
    rows += [(f"embedding {key}", _format_value(value)) for key, value in sorted(embedding.items())]
    rows += [(f"threshold {key}", _num(value)) for key, value in sorted(info.thresholds.items())]
    timings = ", ".join(
        f"{k} {v:.2f} s" for k, v in sorted(info.timings.items()) if isinstance(v, (int, float))
    )
    versions = ", ".join(f"{k} {v}" for k, v in sorted(info.versions.items()))
    rows += [("timings", timings or "–"), ("versions", versions or "–")]
    return _table(("parameter", "value"), rows)


def _format_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) if value else "–"
    return "–" if value is None else str(value)


@dataclass(frozen=True)
class _Lookup:
    """Row positions and labels, to find an image's labels by id."""

    position: pd.Index
    labels: np.ndarray
    attributes: np.ndarray
    paths: dict[str, Any]

    def value(self, image_id: str, attribute_col: int) -> str:
        value = self.labels[self.position.get_loc(image_id), attribute_col]
        return "?" if np.isnan(value) else str(int(value))


def _known(value: Any) -> bool:
    """True unless ``value`` is None or a missing marker (NaN, NA)."""
    return value is not None and not (np.ndim(value) == 0 and pd.isna(value))


def _chip(text: str, classes: str = "") -> str:
    return f'<span class="chip {classes}">{_e(text)}</span>'


def _capped(frame: pd.DataFrame, max_rows: int, what: str) -> tuple[pd.DataFrame, str]:
    if len(frame) <= max_rows:
        return frame, ""
    note = f'<p class="note">Showing the first {max_rows} of {len(frame)} {_e(what)}.</p>'
    return frame.head(max_rows), note


def _pairs_section(report: Report, lookup: _Lookup, thumbs: _Thumbnails, max_rows: int) -> str:
    near = _near_pairs(report)
    differ = near[near["n_differing_labels"] > 0].sort_values(
        ["cosine", "n_differing_labels"], ascending=[False, False], kind="stable"
    )
    if differ.empty:
        return '<p id="pairs">No near-duplicate pair has differing labels.</p>'
    differ, note = _capped(differ, max_rows, "pairs")
    column = {name: i for i, name in enumerate(lookup.attributes)}
    rows = []
    for pair in differ.itertuples():
        values = "".join(
            _chip(
                f"{a}: {lookup.value(pair.image_id_a, column[a])} vs "
                f"{lookup.value(pair.image_id_b, column[a])}",
                "disagree",
            )
            for a in pair.differing_attributes
        )
        rows.append(
            (
                _image_cell(pair.image_id_a, pair.split_a, lookup, thumbs),
                _image_cell(pair.image_id_b, pair.split_b, lookup, thumbs),
                _num(pair.cosine),
                values,
            )
        )
    return (
        '<div id="pairs">'
        + note
        + _table(
            ("image a", "image b", "cosine similarity", "labels that differ (a vs b)"),
            rows,
            raw=True,
        )
        + "</div>"
    )


def _per_image_section(report: Report) -> str:
    """The attributes left unscored: the user's, and those detected as varying with figures."""
    info = report.run_info
    user = list(info.parameters.get("exclude_attributes", []))
    varying = info.varying_attributes
    if not report.dataset.n_attributes:
        return '<p id="per-image">No labels: duplicate groups only.</p>'
    text = "Given by the user (never scored): " + (_e(", ".join(user)) or "none") + ". "
    if not varying.get("detected"):
        return f'<p id="per-image">{text}Automatic detection was off.</p>'
    kept = set(varying.get("kept_by_user", []))
    rows = [
        (
            r["attribute"],
            _num(r["n_components"]),
            _num(r["n_varying"]),
            _num(r["varying_share"]),
            _num(r["ratio_to_median"]),
            "kept consistent by the user" if r["attribute"] in kept else "not scored",
        )
        for r in varying.get("table", [])
        if r["is_per_image"]
    ]
    header = ("attribute", "components", "varying in", "share", "share / median", "treated as")
    return (
        f'<div id="per-image"><p>{text}Detected: attributes that vary inside components far '
        "more often than the others (share of the components where they vary, against the "
        "median share).</p>"
        + (_table(header, rows) if rows else "<p>None detected.</p>")
        + "</div>"
    )


def _mixed_section(report: Report, lookup: _Lookup, thumbs: _Thumbnails, max_rows: int) -> str:
    """Components split because their labels and embedding both said two people."""
    mixed = report.run_info.mixed_components
    if not report.dataset.n_attributes:
        return '<p id="mixed">No labels: duplicate groups only.</p>'
    if not mixed.get("detected"):
        return '<p id="mixed">Detection of components mixing two people was off.</p>'
    splits = pd.DataFrame(mixed.get("components", []))
    if splits.empty:
        return '<p id="mixed">No component looks like two people.</p>'
    splits, note = _capped(splits, max_rows, "splits")
    first = report.images.drop_duplicates("component_id").set_index("component_id")
    rows = [
        (
            _image_cell(first.at[s.component_id_a, "image_id"], None, lookup, thumbs)
            + f"<div>component {s.component_id_a}: {s.n_side_a} images</div>",
            _image_cell(first.at[s.component_id_b, "image_id"], None, lookup, thumbs)
            + f"<div>component {s.component_id_b}: {s.n_side_b} images</div>",
            _e(", ".join(s.attributes)),
            _num(s.within_similarity),
            _num(s.between_similarity),
        )
        for s in splits.itertuples()
    ]
    header = ("side a", "side b", "labels that split them", "similarity within", "across")
    return (
        '<div id="mixed"><p>Each component below was one graph component whose labels split '
        "it in two on several attributes the same way, and whose embedding agrees (each "
        "side closer to itself than to the other). It was split in two before scoring, so "
        "the two people's differences are not reported as label errors.</p>"
        + note
        + _table(header, rows, raw=True)
        + "</div>"
    )


def _grouping_section(report: Report, lookup: _Lookup, thumbs: _Thumbnails, max_rows: int) -> str:
    """Images whose many minority labels say they were grouped with another identity."""
    issues = report.grouping_issues
    if not report.dataset.n_attributes:
        return '<p id="grouping">No labels: duplicate groups only.</p>'
    if issues is None:
        return (
            '<p id="grouping">This report was written before grouping problems were told apart.</p>'
        )
    if issues.empty:
        off = report.run_info.parameters.get("min_grouping_attributes") is None
        why = " (off: min_grouping_attributes is none)" if off else ""
        return f'<p id="grouping">No image was reported as grouped with another identity{why}.</p>'
    issues, note = _capped(issues, max_rows, "images")
    images = report.images
    sizes = images.groupby("component_id")["image_id"].size()
    others = images.drop_duplicates("component_id").set_index("component_id")["image_id"]
    rows = []
    for row in issues.itertuples():
        component = int(row.component_id)
        other = others.get(component)
        if other == row.image_id:  # show another member than the image itself
            members = images.loc[images["component_id"] == component, "image_id"]
            other = next((m for m in members if m != row.image_id), None)
        rows.append(
            (
                _image_cell(row.image_id, None, lookup, thumbs),
                (_image_cell(other, None, lookup, thumbs) if other is not None else "")
                + f"<div>component {component}: {int(sizes.get(component, 0))} images</div>",
                _num(row.n_disagreeing_attributes),
                _e(", ".join(str(a) for a in row.disagreeing_attributes)),
            )
        )
    header = ("image", "its component", "attributes in the minority", "which")
    return (
        '<div id="grouping"><p>Each image below disagrees with its component on many '
        "attributes at once: more likely another person grouped in by the embedding than as "
        "many annotator mistakes. Its cells are not reported as label errors; check the "
        "grouping (grouping_issues.parquet).</p>" + note + _table(header, rows, raw=True) + "</div>"
    )


def _image_cell(image_id: str, split: Any, lookup: _Lookup, thumbs: _Thumbnails) -> str:
    path = lookup.paths.get(image_id)
    split_text = f"<br>{_e(split)}" if _known(split) else ""
    return thumbs.request(path, image_id) + f"<div>{_e(image_id)}{split_text}</div>"


def _paths(report: Report) -> dict[str, Any]:
    images = report.images
    if "path" not in images.columns:
        return {}
    return dict(zip(images["image_id"].astype(str), images["path"], strict=True))


def _leaks_section(report: Report, lookup: _Lookup, thumbs: _Thumbnails, max_rows: int) -> str:
    duplicates = report.duplicates
    if duplicates is None:
        return '<p id="leaks">Duplicate groups were not computed for this report.</p>'
    leaks = duplicates[duplicates["is_leak"]].drop_duplicates("image_id", keep="first")
    if leaks.empty:
        return '<p id="leaks">No duplicate crosses splits.</p>'
    kept = duplicates[duplicates["is_kept"]].set_index(["kind", "duplicate_group_id"])["image_id"]
    leaks, note = _capped(leaks, max_rows, "leaking copies")
    rows = []
    for leak in leaks.itertuples():
        keeper = kept.loc[(leak.kind, leak.duplicate_group_id)]
        rows.append(
            (
                _image_cell(leak.image_id, leak.split, lookup, thumbs),
                _e(leak.split),
                _image_cell(keeper, leak.home_split, lookup, thumbs),
                _e(leak.kind),
                _e(", ".join(leak.differing_attributes)) or "–",
            )
        )
    header = ("copy to drop", "drop from split", "kept copy", "kind", "labels that differ")
    return (
        '<div id="leaks"><p>Rule: each duplicate group keeps its copies in its best split '
        "(train, then val, then test); copies in other splits should be dropped from them.</p>"
        + note
        + _table(header, rows, raw=True)
        + "</div>"
    )


@dataclass(frozen=True)
class Page:
    """What a section is rendered from: the report and the page's options.

    ``thumbs.request(path, name)`` returns a marker that becomes a thumbnail (or
    a placeholder) once the page's size is known; ``lookup`` finds an image's
    labels and path by id.
    """

    report: Report
    lookup: _Lookup
    thumbs: _Thumbnails
    sort_by: str
    n_gallery: int
    max_images: int
    max_rows: int
    page_size: int
    page_folder: str | Path | None

    @property
    def labelled(self) -> bool:
        return bool(self.report.dataset.n_attributes)


@dataclass(frozen=True)
class Section:
    """One part of the page: ``<h2 id=heading_id>title</h2>`` then ``render(page)``.

    ``title`` may be a function of the :class:`Page`. Sections with
    ``thumbnails_first`` are rendered first, so their thumbnails get the byte
    budget before the others' (their place on the page is unchanged).
    """

    heading_id: str
    title: str | Callable[[Page], str]
    render: Callable[[Page], str]
    thumbnails_first: bool = False


def _explorer_title(page: Page) -> str:
    return "Components" if page.labelled else "Duplicate groups"


def _explorer(page: Page) -> str:
    """The controls and the empty list the script fills from the embedded JSON."""
    report = page.report
    data = explorer_data(
        report,
        sort_by=page.sort_by,
        n_thumbnail_components=page.n_gallery,
        max_images=page.max_images,
        thumbnail=page.thumbs.request_data,
        page_folder=page.page_folder,
    )
    components = data["components"]
    if not components:
        return '<div id="explorer"><p>No component of 2+ images.</p></div>'
    data = {"pageSize": page.page_size, "hasPaths": page.thumbs.enabled, **data}
    n = len(components)
    thumbnails = (
        f"Thumbnails are embedded for the first {data['nThumbnails']} components of the "
        "initial order (within the page's size cap); every image's id links to its file."
        if page.thumbs.enabled
        else "No image files: images show their ids and labels."
    )
    if page.labelled:
        intro = (
            f"All {n} components of 2+ images, {page.page_size} a page. By default the "
            "components with suspected wrong labels come first, then the highest "
            f"inconsistency score. {thumbnails} Highlighted: "
            f"{_chip('attribute the component disagrees on', 'disagree')} "
            f"{_chip('suspected wrong label of this image', 'issue')} "
            f"{_chip('a label this image lacks but its component has', 'issue absent')}"
        )
    else:
        intro = (
            f"No labels: duplicate groups only. The {n} components of 2+ images (groups of "
            f"near-duplicate images), largest and tightest first, {page.page_size} a page. "
            + thumbnails
        )
    sorts = "".join(
        f'<option value="{_e(s["key"])}"{" selected" if s["key"] == data["sort"] else ""}>'
        f"{_e(s['label'])}</option>"
        for s in data["sorts"]
    )
    controls = [f'<label>sort by <select id="cc-sort">{sorts}</select></label>']
    if page.labelled:
        disagreeing = attribute_view(report)
        column = {a: i for i, a in enumerate(report.dataset.attributes)}
        options = "".join(
            f'<option value="{column[a]}">{_e(a)}</option>' for a in disagreeing["attribute"]
        )
        controls.append(
            '<label>attribute disagrees <select id="cc-attribute"><option value="-1">any'
            f"</option>{options}</select></label>"
        )
        controls += [
            f'<label><input type="checkbox" data-flag="{_e(key)}"> {_e(label)}</label>'
            for key, label in FLAGS.items()
        ]
    controls += [
        '<label>min size <input id="cc-min-size" type="number" min="2" value="2" size="4"></label>',
        '<label>image id <input id="cc-text" type="search" placeholder="contains…"></label>',
        '<span id="cc-count"></span>',
    ]
    controls.append(
        '<span class="pager"><button type="button" id="cc-prev">previous</button>'
        '<span id="cc-page"></span> <button type="button" id="cc-next">next</button>'
        '<button type="button" id="cc-only" hidden>show all components</button></span>'
    )
    return (
        f'<div id="explorer"><p>{intro}</p>'
        f'<div class="controls">{"".join(controls)}</div>'
        '<div id="cc-list"><noscript><p class="note">The component list needs JavaScript '
        "(the page's own script; no other runs).</p></noscript></div>"
        f'<script type="application/json" id="cc-data">{script_json(data)}</script></div>'
    )


def _attributes_section(page: Page) -> str:
    """Which attributes disagree most; a click filters the explorer on one."""
    if not page.labelled:
        return '<p id="attributes">No labels: duplicate groups only.</p>'
    view = attribute_view(page.report)
    if view.empty:
        return '<p id="attributes">No attribute disagrees inside a component.</p>'
    column = {a: i for i, a in enumerate(page.report.dataset.attributes)}
    rows = [
        (
            f'<button type="button" class="attribute" data-attribute="{column[r.attribute]}">'
            f"{_e(r.attribute)}</button>",
            _num(r.n_disagreeing),
            _num(r.n_components),
            _num(r.share),
            _num(r.n_label_issues),
        )
        for r in view.itertuples()
    ]
    header = (
        "attribute",
        "components disagreeing",
        "components with it known",
        "share",
        "suspected wrong cells",
    )
    return (
        '<div id="attributes"><p>Attributes by the number of components (2+ images) whose '
        "images disagree on them. Click one to list those components.</p>"
        + _table(header, rows, raw=True)
        + "</div>"
    )


#: The page, in order. Add a section with one entry (its function takes a :class:`Page`).
SECTIONS: list[Section] = [
    Section(
        "summary", "Summary", lambda page: _summary(page.report) + _plots(page.report, page.sort_by)
    ),
    Section(
        "per-image-title",
        "Attributes treated as per-image",
        lambda page: _per_image_section(page.report),
    ),
    Section(
        "mixed-title",
        "Possibly two people",
        lambda page: _mixed_section(page.report, page.lookup, page.thumbs, page.max_rows),
    ),
    Section(
        "grouping-title",
        "Grouped with another identity",
        lambda page: _grouping_section(page.report, page.lookup, page.thumbs, page.max_rows),
    ),
    Section("attributes-title", "Attributes that disagree", _attributes_section),
    Section("explorer-title", _explorer_title, _explorer, thumbnails_first=True),
    Section(
        "pairs-title",
        "Near-duplicate pairs whose labels differ",
        lambda page: _pairs_section(page.report, page.lookup, page.thumbs, page.max_rows),
    ),
    Section(
        "leaks-title",
        "Cross-split leaks",
        lambda page: _leaks_section(page.report, page.lookup, page.thumbs, page.max_rows),
    ),
    Section("parameters", "Run parameters", lambda page: _parameters(page.report)),
]


def render_html(
    report: Report,
    *,
    n_gallery: int = 100,
    sort_by: str = "inconsistency_score",
    max_bytes: int = DEFAULT_MAX_BYTES,
    thumbnail_size: int = 128,
    max_images_per_component: int = 24,
    max_rows: int = 200,
    page_size: int = 25,
    page_folder: str | Path | None = None,
) -> str:
    """Render the report as one self-contained HTML page.

    Parameters
    ----------
    report : Report
        A run's report (from :func:`clusterclean.pipeline.run` or
        :func:`clusterclean.report.read_report`).
    n_gallery : int, default=100
        Components, in the explorer's initial order, whose images get embedded
        thumbnails. Every component of 2+ images is listed either way; the
        others show each image's id linked to its file.
    sort_by : str, default="inconsistency_score"
        Initial order of the explorer, highest first; one of :func:`sort_keys`
        (see :func:`clusterclean.explorer.component_order`: for a score,
        components with label issues come first). A run without labels starts
        by size.
    max_bytes : int, default=20 MiB
        Size cap of the page. Thumbnails are embedded (explorer first, then the
        tables) while they fit; the rest are replaced by a placeholder and a
        note says how many were left out. The explorer's data (ids, links,
        labels) is never cut.
    thumbnail_size : int, default=128
        Longest side of a thumbnail, in pixels.
    max_images_per_component : int, default=24
        Images shown per component (those with the most suspected wrong
        labels first); the others' ids still match the id filter.
    max_rows : int, default=200
        Rows shown in the pairs, leaks and possibly-two-people tables.
    page_size : int, default=25
        Components per page of the explorer.
    page_folder : path, optional
        Folder the page will be saved in: each image links to its file by a
        path relative to it. Default: the report's folder; with neither, links
        are absolute ``file://`` URIs.

    Returns
    -------
    str
        The page; the same report and options give the same bytes.
    """
    from .report import Report

    func = "render_html"
    check_type(report, Report, "report", func, "a Report (from run() or read_report())")
    n_gallery = check_int(n_gallery, "n_gallery", func, min_value=0)
    sort_by = check_choice(sort_by, "sort_by", func, sort_keys())
    max_bytes = check_int(max_bytes, "max_bytes", func, min_value=0)
    thumbnail_size = check_int(thumbnail_size, "thumbnail_size", func, min_value=8)
    max_images = check_int(max_images_per_component, "max_images_per_component", func, min_value=1)
    max_rows = check_int(max_rows, "max_rows", func, min_value=0)
    page_size = check_int(page_size, "page_size", func, min_value=1)

    has_paths = "path" in report.images.columns and report.images["path"].notna().any()
    thumbs = _Thumbnails(size=thumbnail_size, enabled=bool(has_paths))
    lookup = _Lookup(
        position=pd.Index(report.dataset.ids.astype(str)),
        labels=report.dataset.labels,
        attributes=np.asarray(report.dataset.attributes, dtype=object),
        paths=_paths(report),
    )
    context = Page(
        report=report,
        lookup=lookup,
        thumbs=thumbs,
        sort_by=sort_by,
        n_gallery=n_gallery,
        max_images=max_images,
        max_rows=max_rows,
        page_size=page_size,
        page_folder=report.folder if page_folder is None else page_folder,
    )
    title = "clusterclean report"
    if report.folder is not None:
        title += f" — {Path(report.folder).resolve().parent.name}/{Path(report.folder).name}"
    no_paths = (
        ""
        if has_paths
        else '<p class="note">No image files in this run (embeddings were given): the '
        "components show ids and labels without thumbnails.</p>"
    )
    first = sorted(range(len(SECTIONS)), key=lambda i: not SECTIONS[i].thumbnails_first)
    rendered = {i: SECTIONS[i].render(context) for i in first}
    body = f"<h1>{_e(title)}</h1>{no_paths}<!--size-note-->" + "".join(
        f'<h2 id="{_e(section.heading_id)}">'
        f"{_e(section.title(context) if callable(section.title) else section.title)}</h2>"
        + rendered[i]
        for i, section in enumerate(SECTIONS)
    )
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>{body}"
        f"<script>{_SCRIPT}</script></body></html>\n"
    )
    reserve = 400  # room for the size note
    budget = max(max_bytes - len(page.encode("utf-8")) - reserve, 0)
    page = thumbs.fill(page, budget)
    note = ""
    if thumbs.n_omitted:
        note = (
            f'<p class="note" id="size-note">This page is capped at {max_bytes / 2**20:.1f} MiB: '
            f"{thumbs.n_omitted} thumbnails were left out (their images show the id, linked "
            "to the file). Rebuild it with a larger cap or fewer thumbnails: "
            "clusterclean report REPORT_DIR --max-mb M --top N.</p>"
        )
        logger.warning("report.html: %d thumbnails left out by the size cap", thumbs.n_omitted)
    return page.replace("<!--size-note-->", note, 1)


def write_html(report: Report, path: str | Path, **options: Any) -> Path:
    """Render :func:`render_html` (same keyword options) and write it atomically to ``path``.

    Image links are relative to ``path``'s folder unless ``page_folder`` is given.
    """
    from .atomic import atomic_write

    path = Path(path)
    options.setdefault("page_folder", path.parent)
    text = render_html(report, **options)
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    logger.info("report.html written to %s (%.1f KiB)", path, len(text.encode("utf-8")) / 1024)
    return path
