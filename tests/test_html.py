"""report.html on real reports: gallery order, highlights, escaping, size cap, no images."""

from __future__ import annotations

import base64
import io
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
    # a plain cosine graph: these tests are about the page, and their hand-computed
    # gallery assumes each person's views form one component
    report = run(
        labels=dataset,
        embeddings=embeddings,
        out=out,
        progress=False,
        refine=False,
        rerank=False,
        min_similarity=0.9,
    )
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


def _sections(page: str) -> list[int]:
    return [
        int(c)
        for c in re.findall(r'<section class="component"[^>]*data-component-id="(\d+)"', page)
    ]


def _section(page: str, component_id: int) -> str:
    start = page.index(f'data-component-id="{component_id}"')
    return page[start : page.index("</section>", start)]


def test_gallery_shows_the_disagreeing_components_worst_first(report, page):
    # p1: active XSS (m = 1/3) and AMP (m = 0): variance = (1/9) / 2, score = 2 sqrt(1/18)
    # p0 + its copy: active male (m = 0) and hat (m = 1/4): variance = (1/16) / 2
    p0, p1 = _component_of(report, "p0_v0"), _component_of(report, "p1_v0")
    assert _sections(page) == [p1, p0]
    assert f"inconsistency_score {2 * np.sqrt(1 / 18):.3f}" in _section(page, p1)
    assert f"inconsistency_score {2 * np.sqrt(1 / 32):.3f}" in _section(page, p0)
    assert "4 images" in _section(page, p0)


def test_label_counts_and_highlights(report, page):
    p0 = _section(page, _component_of(report, "p0_v0"))
    assert '<span class="chip disagree">hat 1/4</span>' in p0
    assert '<span class="chip ">male 4/4</span>' in p0
    figure = p0[p0.index('data-image-id="p0_v0"') :]
    figure = figure[: figure.index("</figure>")]
    assert '<span class="chip issue">hat</span>' in figure  # the one wrong-looking cell
    p1 = _section(page, _component_of(report, "p1_v2"))
    figure = p1[p1.index('data-image-id="p1_v2"') :]
    figure = figure[: figure.index("</figure>")]
    # p1_v2 lacks the attribute its two peers have: shown struck through, escaped
    assert '<span class="chip issue absent">&lt;script&gt;alert(1)&lt;/script&gt;</span>' in figure
    assert "centroid sim 1.000" in figure or "centroid sim 0.99" in figure


def test_every_data_string_is_escaped(page):
    assert XSS not in page and BOLD_ID not in page
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "a&amp;b &quot;quoted&quot;" in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page
    assert "Content-Security-Policy" in page and "default-src 'none'" in page


def test_thumbnails_are_small_jpegs_and_a_missing_file_is_a_placeholder(page):
    data = re.findall(r'<img class="thumb" src="data:image/jpeg;base64,([^"]+)"', page)
    assert data
    for item in data:
        with Image.open(io.BytesIO(base64.b64decode(item))) as thumb:
            assert thumb.format == "JPEG" and max(thumb.size) <= 128
    assert '<div class="placeholder">p1_v1<br>(unreadable image)</div>' in page


def test_summary_pairs_and_leaks(report, page):
    assert "<td>cross-split leaks (copies to drop)</td><td>1</td>" in page
    assert "<td>exact_file groups (redundant copies)</td><td>1 (1)</td>" in page
    leaks = page[page.index('<div id="leaks">') : page.index('<h2 id="parameters">')]
    assert "<div>p0_copy<br>test</div>" in leaks and "<div>p0_v0<br>train</div>" in leaks
    pairs = page[page.index('<div id="pairs">') : page.index('<h2 id="leaks-title">')]
    assert '<span class="chip disagree">hat: 1 vs 0</span>' in pairs


def test_options_top_sort_and_caps(report):
    one = render_html(report, n_gallery=1)
    assert _sections(one) == [_component_of(report, "p1_v0")]
    by_size = render_html(report, sort_by="size")
    # every component of 2+ images, the 4-image one first, ties by id
    assert _sections(by_size)[0] == _component_of(report, "p0_v0")
    assert len(_sections(by_size)) == 4
    capped = render_html(report, max_images_per_component=1, max_rows=0)
    assert "… and 3 more images." in capped
    assert "Showing the first 0 of" in capped


def test_size_cap_leaves_thumbnails_out_with_a_note(report, page):
    size = len(page.encode("utf-8"))
    smaller = render_html(report, max_bytes=size - 500)
    assert len(smaller.encode("utf-8")) <= size - 500
    assert 'id="size-note"' in smaller and "thumbnails were left out" in smaller
    assert "(omitted: size cap)" in smaller
    assert 'id="size-note"' not in page


def test_without_image_files_the_gallery_shows_ids_and_labels(tmp_path):
    report = build_report(tmp_path, with_paths=False)
    page = render_html(report)
    assert '<img class="thumb"' not in page and 'class="placeholder"' not in page
    assert "No image files in this run" in page
    assert len(_sections(page)) == 2
    assert 'data-image-id="p0_v0"' in page and "<span" in _section(
        page, _component_of(report, "p0_v0")
    )


def test_report_folder_holds_the_page_and_the_cli_rebuilds_it(tmp_path, capsys):
    out = tmp_path / "out"
    build_report(tmp_path, out=out)
    written = (out / "report.html").read_text(encoding="utf-8")
    assert len(_sections(written)) == 2
    again = read_report(out, load_embeddings=False)
    rebuilt = write_html(again, tmp_path / "again.html", n_gallery=1)
    assert len(_sections(rebuilt.read_text(encoding="utf-8"))) == 1
    assert _sections(render_html(again)) == _sections(written)
    code = main(["report", str(out), "--top", "1", "--sort-by", "size", "--max-mb", "5"])
    assert code == 0
    assert capsys.readouterr().out == f"report: {out / 'report.html'}\n"
    page = (out / "report.html").read_text(encoding="utf-8")
    assert len(_sections(page)) == 1 and "highest size" in page
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
            "'variance', 'geometric_variance', 'cubic_variance', 'label_count_std', "
            "'n_label_issues', 'n_disagreeing_attributes', 'size'. Got 'score' instead.",
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
    lonely = replace(report, components=report.components.assign(size=1))
    assert "No component of 2+ images has inconsistency_score above 0." in render_html(lonely)


TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "div"}
TAGS |= {"table", "tr", "th", "td", "span", "section", "figure", "figcaption", "img", "br"}
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
    shown = [a["data-image-id"] for tag, a in parsed.tags if tag == "figure"]
    members = plain_report.images["component_id"].isin(
        [_component_of(plain_report, "p0_v0"), _component_of(plain_report, "p1_v0")]
    )
    assert sorted(shown) == sorted(plain_report.images.loc[members, "image_id"].map(ids))
    text = "".join(parsed.text)
    assert attributes[XSS] in text and attributes["hat"] in text
