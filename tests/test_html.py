"""report.html on real reports: gallery order, highlights, escaping, size cap, no images."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from clusterclean._contracts import Dataset, as_embeddings
from clusterclean.cli import main
from clusterclean.errors import InvalidInputError, InvalidTypeError
from clusterclean.explorer import component_order, file_link
from clusterclean.html import render_html, write_html
from clusterclean.pipeline import run
from clusterclean.report import read_report

XSS = "<script>alert(1)</script>"
AMP = 'a&b "quoted"'
BOLD_ID = "<b>bold</b>"
ATTRIBUTES = ("male", XSS, "hat", AMP)
# person -> (split, labels of each view); hand-computed scores in test_gallery_order
PERSONS = {
    "p0": ("train", [[1, 0, 1, 0], [1, 0, 0, 0], [1, 0, 0, 0]]),
    "p1": ("val", [[0, 1, 0, 1], [0, 1, 0, 1], [0, 0, 0, 1]]),
    "p2": ("train", [[1, 0, 0, 1]] * 3),
    "p3": ("test", [[0, 0, 0, 0]] * 3),
}


def _plain_run(dataset, embeddings, out):
    """A plain cosine graph: these tests are about the page, and their hand-computed
    galleries assume each planted group forms one component."""
    return run(
        labels=dataset,
        embeddings=embeddings,
        out=out,
        progress=False,
        refine=False,
        rerank=False,
        min_similarity=0.9,
    )


def build_report(
    tmp_path: Path, *, with_paths: bool = True, out: Path | None = None, image_size=(24, 48)
):
    """A real run on PNG files: 4 persons x 3 views, a singleton, an exact copy of p0_v0
    in the test split (a leak), one image deleted after the run, and data strings made
    of HTML (an attribute named <script>, an image id <b>bold</b>)."""
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    rng = np.random.default_rng(7)
    rows, vectors, labels = [], [], []

    def add(image_id, split, label, vector, pixels):
        path = images / f"{len(rows):02d}.png"
        Image.fromarray(pixels).save(path)
        rows.append({"image_id": image_id, "path": str(path), "split": split})
        vectors.append(vector)
        labels.append(label)

    for p, (person, (split, views)) in enumerate(PERSONS.items()):
        base = rng.normal(size=8)
        colour = np.array([60 * p, 255 - 60 * p, 40 + 50 * p], dtype=np.uint8)
        for v, label in enumerate(views):
            pixels = np.empty((image_size[1], image_size[0], 3), dtype=np.uint8)
            pixels[:] = colour
            pixels[v * 4 : v * 4 + 4] = 255
            image_id = BOLD_ID if (person, v) == ("p0", 1) else f"{person}_v{v}"
            add(image_id, split, label, base + 0.01 * rng.normal(size=8), pixels)
    copy_path = images / "copy.png"
    copy_path.write_bytes(Path(rows[0]["path"]).read_bytes())
    rows.append({"image_id": "p0_copy", "path": str(copy_path), "split": "test"})
    vectors.append(vectors[0])
    labels.append([1, 0, 0, 0])
    add("single", "train", [1, 1, 1, 1], rng.normal(size=8), np.zeros((8, 8, 3), np.uint8))

    table = pd.DataFrame(rows)
    if not with_paths:
        table = table.drop(columns="path")
    dataset = Dataset(
        table=table, labels=np.asarray(labels, dtype=np.float32), attributes=ATTRIBUTES
    )
    embeddings = as_embeddings(table["image_id"], np.asarray(vectors))
    report = _plain_run(dataset, embeddings, out)
    if with_paths:
        Path(rows[4]["path"]).unlink()  # p1_v1: its thumbnail must become a placeholder
    return report


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return build_report(tmp_path_factory.mktemp("html"))


@pytest.fixture(scope="module")
def page(report):
    return render_html(report)


def _component_of(report, image_id: str) -> int:
    images = report.images
    return int(images.loc[images["image_id"] == image_id, "component_id"].iloc[0])


def _data(page: str) -> dict:
    """The explorer's JSON, as the page's script reads it."""
    match = re.search(r'<script type="application/json" id="cc-data">(.*?)</script>', page, re.S)
    return json.loads(match.group(1))


def _sections(page: str) -> list[int]:
    """Component ids of the explorer, in its initial order."""
    return [c["id"] for c in _data(page)["components"]]


def _component(page: str, component_id: int) -> dict:
    return next(c for c in _data(page)["components"] if c["id"] == component_id)


def _image(component: dict, image_id: str) -> dict:
    return next(m for m in component["images"] if m["id"] == image_id)


def test_every_component_is_listed_label_issues_first(report, page):
    # p1: active XSS (m = 1/3) and AMP (m = 0): variance = (1/9) / 2, score = 2 sqrt(1/18),
    #     1 label issue (p1_v2 lacks XSS)
    # p0 + its copy: active male (m = 0) and hat (m = 1/4): variance = (1/16) / 2, 1 issue
    # p2, p3: consistent, score 0, no issue, 3 images each: by id
    p0, p1 = _component_of(report, "p0_v0"), _component_of(report, "p1_v0")
    p2, p3 = _component_of(report, "p2_v0"), _component_of(report, "p3_v0")
    assert _sections(page) == [p1, p0, *sorted([p2, p3])]
    assert ["inconsistency_score", f"{2 * np.sqrt(1 / 18):.3f}"] in _component(page, p1)["facts"]
    assert ["inconsistency_score", f"{2 * np.sqrt(1 / 32):.3f}"] in _component(page, p0)["facts"]
    assert _component(page, p0)["size"] == 4
    assert _component(page, p0)["flags"] == ["issues"] and _component(page, p2)["flags"] == []
    members = {c["id"]: sorted(m["id"] for m in c["images"]) for c in _data(page)["components"]}
    assert members[p0] == sorted(["p0_v0", BOLD_ID, "p0_v2", "p0_copy"])
    assert members[p3] == ["p3_v0", "p3_v1", "p3_v2"]


def test_label_counts_and_highlights(report, page):
    data = _data(page)
    index = {a: i for i, a in enumerate(data["attributes"])}
    assert data["attributes"] == list(ATTRIBUTES)
    p0 = _component(page, _component_of(report, "p0_v0"))
    assert [index["hat"], 1, 4, True] in p0["counts"]
    assert [index["male"], 4, 4, False] in p0["counts"]
    assert p0["disagree"] == [index["hat"]]
    first = _image(p0, "p0_v0")  # the one wrong-looking cell: hat
    assert first["pos"] == [index["male"], index["hat"]] and first["rare"] == [index["hat"]]
    (issue,) = first["issues"]
    assert issue["attribute"] == index["hat"] and issue["given_label"] == 1
    assert issue["component_majority"] == 0 and issue["label_issue_score"] == 0.75
    assert set(data["issueFields"]) >= {"attribute", "given_label", "label_issue_score"}
    p1 = _component(page, _component_of(report, "p1_v2"))
    # p1_v2 lacks the attribute its two peers have: rare, not among its positives
    lacking = _image(p1, "p1_v2")
    assert lacking["rare"] == [index[XSS]] and lacking["pos"] == [index[AMP]]
    assert lacking["sim"] > 0.99 and lacking["where"] == "val"


def test_every_data_string_is_escaped(page):
    assert XSS not in page and BOLD_ID not in page
    # two script elements, both ours: the JSON data and the page's script
    assert page.lower().count("<script") == 2 and page.lower().count("</script") == 2
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # per-attribute view, filter
    assert "\\u003cscript\\u003ealert(1)\\u003c/script\\u003e" in page  # the JSON
    assert 'a\\u0026b \\"quoted\\"' in page  # only in the JSON: it never disagrees
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page).group(1)
    assert "unsafe-inline" not in csp.split("script-src")[1]
    script = re.search(r"<script>(.*?)</script>", page, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in csp


def test_thumbnails_are_small_jpegs_and_a_missing_file_is_a_placeholder(page):
    thumbs = [m["thumb"] for c in _data(page)["components"] for m in c["images"]]
    data = [t.split(",", 1)[1] for t in thumbs if t.startswith("data:image/jpeg;base64,")]
    assert len(data) == len(thumbs) - 1
    data += re.findall(r'<img class="thumb" src="data:image/jpeg;base64,([^"]+)"', page)
    for item in data:
        with Image.open(io.BytesIO(base64.b64decode(item))) as thumb:
            assert thumb.format == "JPEG" and max(thumb.size) <= 128
    assert "!unreadable image" in thumbs  # p1_v1's file was deleted after the run


def test_summary_pairs_and_leaks(report, page):
    assert "<td>cross-split leaks (copies to drop)</td><td>1</td>" in page
    assert "<td>exact_file groups (redundant copies)</td><td>1 (1)</td>" in page
    leaks = page[page.index('<div id="leaks">') : page.index('<h2 id="parameters">')]
    assert "<div>p0_copy<br>test</div>" in leaks and "<div>p0_v0<br>train</div>" in leaks
    pairs = page[page.index('<div id="pairs">') : page.index('<h2 id="leaks-title">')]
    assert '<span class="chip disagree">hat: 1 vs 0</span>' in pairs


def test_options_top_sort_and_caps(report):
    one = _data(render_html(report, n_gallery=1))
    thumbs = [[m["thumb"] is not None for m in c["images"]] for c in one["components"]]
    assert one["nThumbnails"] == 1 and thumbs[0] == [True] * 3 and not any(sum(thumbs[1:], []))
    assert len(one["components"]) == 4  # every component is still listed
    by_size = render_html(report, sort_by="component_size")
    # the 4-image component first, then the rest
    assert _data(by_size)["sort"] == "component_size"
    assert _sections(by_size)[0] == _component_of(report, "p0_v0")
    capped = render_html(report, max_images_per_component=1, max_rows=0, page_size=2)
    p0 = _component(capped, _component_of(report, "p0_v0"))
    assert len(p0["images"]) == 1 and len(p0["otherIds"]) == 3
    assert _data(capped)["pageSize"] == 2
    assert "Showing the first 0 of" in capped


def test_size_cap_leaves_thumbnails_out_with_a_note(report, page):
    size = len(page.encode("utf-8"))
    smaller = render_html(report, max_bytes=size - 500)
    assert len(smaller.encode("utf-8")) <= size - 500
    assert 'id="size-note"' in smaller and "thumbnails were left out" in smaller
    assert "(omitted: size cap)" in smaller or "!omitted: size cap" in smaller
    assert 'id="size-note"' not in page
    # the explorer's thumbnails come first: with room for nothing else, they are kept
    tiny = render_html(report, max_bytes=0)
    assert all(m["thumb"] == "!omitted: size cap" for m in _component(tiny, 0)["images"])
    assert _sections(tiny) == _sections(page)  # the data is never cut


def test_without_image_files_the_gallery_shows_ids_and_labels(tmp_path):
    report = build_report(tmp_path, with_paths=False)
    page = render_html(report)
    assert '<img class="thumb"' not in page and 'class="placeholder"' not in page
    assert "No image files in this run" in page
    data = _data(page)
    assert not data["hasPaths"] and len(data["components"]) == 4
    p0 = _component(page, _component_of(report, "p0_v0"))
    assert all(m["thumb"] is None and m["href"] is None for m in p0["images"])
    assert _image(p0, "p0_v0")["pos"] == [0, 2]


def test_report_folder_holds_the_page_and_the_cli_rebuilds_it(tmp_path, capsys):
    out = tmp_path / "out"
    build_report(tmp_path, out=out)
    written = (out / "report.html").read_text(encoding="utf-8")
    assert len(_sections(written)) == 4
    again = read_report(out, load_embeddings=False)
    rebuilt = write_html(again, tmp_path / "again.html", n_gallery=1)
    assert _data(rebuilt.read_text(encoding="utf-8"))["nThumbnails"] == 1
    assert _sections(render_html(again)) == _sections(written)
    assert render_html(again) == render_html(again)  # same inputs, same bytes
    code = main(["report", str(out), "--top", "1", "--sort-by", "component_size", "--max-mb", "5"])
    assert code == 0
    assert capsys.readouterr().out == f"report: {out / 'report.html'}\n"
    page = (out / "report.html").read_text(encoding="utf-8")
    assert _data(page)["nThumbnails"] == 1 and _data(page)["sort"] == "component_size"
    assert main(["report", str(out), "--max-mb", "-1"]) == 1
    assert capsys.readouterr().err == (
        "clusterclean: error: --max-mb must be a number of MiB >= 0; got -1.0.\n"
    )
    (out / "duplicates.parquet").unlink()  # a report from before duplicates existed
    old = render_html(read_report(out, load_embeddings=False))
    assert "Duplicate groups were not computed for this report." in old
    assert "<td>duplicate groups</td><td>not computed</td>" in old
    capsys.readouterr()  # the warning about the deleted image
    missing = tmp_path / "nothing"
    assert main(["report", str(missing)]) == 1
    assert capsys.readouterr().err == (
        f"clusterclean: error: {missing} is not a clusterclean report (no run.json); run "
        f"`clusterclean run ... --out {missing}` first.\n"
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"sort_by": "score"},
            InvalidInputError,
            "The 'sort_by' parameter of render_html must be one of 'inconsistency_score', "
            "'n_label_issues', 'component_size', 'variance', 'geometric_variance', "
            "'cubic_variance', 'label_count_std', 'n_disagreeing_attributes', "
            "'mean_edge_cosine'. Got 'score' instead.",
        ),
        (
            {"n_gallery": -1},
            InvalidInputError,
            "The 'n_gallery' parameter of render_html must be an int >= 0. Got -1 instead.",
        ),
        (
            {"max_bytes": 1.5},
            InvalidTypeError,
            "The 'max_bytes' parameter of render_html must be an int >= 0. Got 1.5 instead.",
        ),
    ],
)
def test_bad_options_are_rejected(report, kwargs, error, message):
    with pytest.raises(error) as info:
        render_html(report, **kwargs)
    assert str(info.value) == message


def test_a_report_is_required():
    with pytest.raises(InvalidTypeError, match="must be a Report .from run.. or read_report"):
        render_html({"components": []})


def test_no_multi_image_component(report):
    lonely = replace(report, components=report.components.assign(component_size=1))
    page = render_html(lonely)
    assert "<p>No component of 2+ images.</p>" in page and 'id="cc-data"' not in page


TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "div"}
TAGS |= {"table", "tr", "th", "td", "span", "img", "br", "script", "label", "select", "option"}
TAGS |= {"input", "button", "noscript"}
# NUL is not allowed in ids and names (Dataset rejects it, as load_dataset does)
# bidi controls are shown as escapes (tests/reliability/test_no_loss.py), so they are not
# among the texts that must read back exactly
TEXT = st.text(
    st.characters(
        blacklist_categories=("Cs",),
        blacklist_characters="\x00\u200e\u200f\u061c\u202a\u202b\u202c\u202d\u202e"
        "\u2066\u2067\u2068\u2069",
    ),
    min_size=1,
    max_size=10,
)


class _Parsed(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def _renamed(report, attributes: dict, ids: dict):
    """The same report with every attribute name and image id replaced."""

    def names(values):
        return [attributes[a] for a in values]

    dataset = report.dataset
    table = dataset.table.assign(image_id=dataset.table["image_id"].map(ids))
    images = report.images.assign(
        image_id=report.images["image_id"].map(ids),
        nearest_id=report.images["nearest_id"].map(ids),
        rare_labels=report.images["rare_labels"].map(names),
    )
    pairs = report.pairs.assign(
        image_id_a=report.pairs["image_id_a"].map(ids),
        image_id_b=report.pairs["image_id_b"].map(ids),
        differing_attributes=report.pairs["differing_attributes"].map(names),
    )
    duplicates = report.duplicates.assign(
        image_id=report.duplicates["image_id"].map(ids),
        differing_attributes=report.duplicates["differing_attributes"].map(names),
    )
    return replace(
        report,
        dataset=replace(dataset, table=table, attributes=tuple(names(dataset.attributes))),
        images=images,
        pairs=pairs,
        duplicates=duplicates,
        component_attributes=report.component_attributes.assign(
            attribute=report.component_attributes["attribute"].map(attributes)
        ),
        label_issues=report.label_issues.assign(
            image_id=report.label_issues["image_id"].map(ids),
            attribute=report.label_issues["attribute"].map(attributes),
        ),
    )


@pytest.fixture(scope="module")
def plain_report(tmp_path_factory):
    return build_report(tmp_path_factory.mktemp("plain"), with_paths=False)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    new_attributes=st.lists(TEXT, min_size=4, max_size=4, unique=True),
    new_ids=st.lists(TEXT, min_size=14, max_size=14, unique=True),
)
def test_any_data_text_stays_text(plain_report, new_attributes, new_ids):
    """Whatever the names and ids, the page parses to our own tags only, and every id
    in the gallery reads back exactly (so quotes cannot break out of an attribute)."""
    attributes = dict(zip(plain_report.dataset.attributes, new_attributes, strict=True))
    ids = dict(zip(plain_report.dataset.ids, new_ids, strict=True))
    page = render_html(_renamed(plain_report, attributes, ids))
    parsed = _Parsed()
    parsed.feed(page)
    assert {tag for tag, _ in parsed.tags} <= TAGS
    assert not any(key.startswith("on") for _, attrs in parsed.tags for key in attrs)
    scripts = [attrs for tag, attrs in parsed.tags if tag == "script"]
    assert scripts == [{"type": "application/json", "id": "cc-data"}, {}]
    shown = [m["id"] for c in _data(page)["components"] for m in c["images"]]
    members = plain_report.images["component_size"] >= 2
    assert sorted(shown) == sorted(plain_report.images.loc[members, "image_id"].map(ids))
    text = "".join(parsed.text)
    assert attributes[XSS] in text and attributes["hat"] in text


def test_ranking_puts_label_issues_before_a_tie():
    # a: a 1:1 tie (score 1, no cell can be called wrong); b: one suspected wrong cell;
    # c: the largest, consistent; d: as tight as it gets, 2 images
    components = pd.DataFrame(
        {
            "component_id": [0, 1, 2, 3],
            "component_size": [2, 3, 5, 2],
            "inconsistency_score": [1.0, 0.471, 0.0, 0.0],
            "n_label_issues": [0, 1, 0, 0],
            "mean_edge_cosine": [0.95, 0.96, 0.93, 0.99],
        }
    )
    assert component_order(components, "inconsistency_score").tolist() == [1, 0, 2, 3]
    assert component_order(components, "n_label_issues").tolist() == [1, 0, 2, 3]
    assert component_order(components, "component_size").tolist() == [2, 1, 3, 0]
    assert component_order(components, "mean_edge_cosine").tolist() == [3, 1, 0, 2]


def test_hostile_ids_cannot_leave_the_json(plain_report):
    hostile = [
        "</script><script>alert(1)</script>",
        "<!--<script>",
        "\u202eevil.png",
        "line\u2028break",
        "esc\x1b[31m",
        "&amp;",
    ]
    ids = {old: old for old in plain_report.dataset.ids}
    for old, new in zip(["p0_v0", "p1_v0", "p1_v2", "p2_v0", "p3_v1", "p0_copy"], hostile):
        ids[old] = new
    attributes = {a: a for a in plain_report.dataset.attributes}
    page = render_html(_renamed(plain_report, attributes, ids))
    assert page.lower().count("<script") == 2 and page.lower().count("</script") == 2
    assert "<!--<" not in page and "\u202e" not in page and "\u2028" not in page
    assert "\x1b" not in page
    shown = {m["id"] for c in _data(page)["components"] for m in c["images"]}
    # bidi controls read as their escape; the rest reads back exactly
    assert "\\u202eevil.png" in shown
    assert set(hostile) - {"\u202eevil.png"} <= shown


def test_a_run_without_labels_is_a_gallery_of_duplicate_groups(tmp_path):
    rng = np.random.default_rng(3)
    images = tmp_path / "images"
    images.mkdir()
    # groups of 3, 2 and 2 near-identical images (the second pair tighter), a singleton
    sizes, noise = [3, 2, 2, 1], [0.02, 0.02, 0.001, 0.0]
    rows, vectors = [], []
    for g, (size, scale) in enumerate(zip(sizes, noise)):
        base = rng.normal(size=8)
        for v in range(size):
            path = images / f"g{g}_{v}.png"
            Image.fromarray(np.full((16, 16, 3), 40 * g, np.uint8)).save(path)
            rows.append({"image_id": f"g{g}_{v}", "path": str(path)})
            vectors.append(base + scale * rng.normal(size=8))
    table = pd.DataFrame(rows)
    dataset = Dataset(table=table, labels=np.zeros((len(rows), 0), np.float32), attributes=())
    _plain_run(dataset, as_embeddings(table["image_id"], np.asarray(vectors)), tmp_path / "out")
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    data = _data(page)
    assert not data["labelled"] and data["sort"] == "component_size"
    assert [s["key"] for s in data["sorts"]] == ["component_size", "mean_edge_cosine"]
    # largest first, then the tighter of the two pairs
    order = [sorted(m["id"] for m in c["images"]) for c in data["components"]]
    assert order == [["g0_0", "g0_1", "g0_2"], ["g2_0", "g2_1"], ["g1_0", "g1_1"]]
    first = data["components"][0]["images"][0]
    assert first["thumb"].startswith("data:image/jpeg;base64,")
    assert first["href"] == "../images/g0_0.png" and first["pos"] == []
    assert "<td>labels</td><td>no labels: duplicate groups only</td>" in page
    assert '<h2 id="explorer-title">Duplicate groups</h2>' in page
    assert "No labels: duplicate groups only. The 3 components of 2+ images" in page
    assert "detection was off" not in page.lower() and "suspected wrong" not in page
    assert "No component of 2+ images" not in page
    assert '<select id="cc-attribute">' not in page and '<input type="checkbox"' not in page


def test_image_links_are_relative_to_the_page_or_file_uris(tmp_path):
    folder = tmp_path / "report"
    assert file_link(tmp_path / "images" / "a b#1.png", folder) == "../images/a%20b%231.png"
    assert file_link("javascript:alert(1).png", None).startswith("file:///")
    assert file_link(tmp_path / "javascript:x.png", tmp_path) == "javascript%3Ax.png"
    assert file_link(tmp_path / "x.png", None) == (tmp_path / "x.png").as_uri()
    assert file_link(None, folder) is None and file_link(float("nan"), folder) is None


def test_the_cli_summary_of_a_run_without_labels(tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    names = [f"i{i}.png" for i in range(6)]
    for i, name in enumerate(names):
        Image.fromarray(np.full((8, 8, 3), 30 * i, np.uint8)).save(folder / name)
    rng = np.random.default_rng(0)
    vectors = np.repeat(rng.normal(size=(3, 8)), 2, axis=0) + 0.01 * rng.normal(size=(6, 8))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    frame = pd.DataFrame({"image_id": names, "embedding": list(vectors.astype("float32"))})
    frame.to_parquet(tmp_path / "e.parquet")
    args = ["run", "--images", str(folder), "--embeddings", str(tmp_path / "e.parquet")]
    args += ["--out", str(tmp_path / "out"), "--no-progress", "--no-refine", "--no-rerank"]
    assert main([*args, "--min-similarity", "0.9"]) == 0
    out = capsys.readouterr().out
    assert "components: 3 (3 with 2+ images, largest 2)\nno labels: duplicate groups only\n" in out
    assert "label cells" not in out and "two people" not in out
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert [len(c["images"]) for c in _data(page)["components"]] == [2, 2, 2]


def test_trust_fields_and_grouping_reach_the_explorer(report):
    """Columns added to label_issues reach each issue; grouping issues set a flag."""
    page = render_html(report)
    assert {"confidence", "is_flagged"} <= set(_data(page)["issueFields"])
    p0 = _component(page, _component_of(report, "p0_v0"))
    (issue,) = _image(p0, "p0_v0")["issues"]
    assert 0 <= issue["confidence"] <= 1 and isinstance(issue["is_flagged"], bool)
    p2 = _component_of(report, "p2_v0")
    grouping = pd.DataFrame(
        {
            "image_id": ["p2_v0"],
            "component_id": np.array([p2], dtype=np.int32),
            "n_disagreeing_attributes": [3],
            "disagreeing_attributes": [["male", "hat", AMP]],
        }
    )
    flagged = _data(render_html(replace(report, grouping_issues=grouping)))
    assert [c["id"] for c in flagged["components"] if "grouping" in c["flags"]] == [p2]
