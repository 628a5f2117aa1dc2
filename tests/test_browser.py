"""report.html as a user sees it: rendered by headless Chromium, offline.

Chromium comes from the Debian packages ``chromium`` and ``chromium-driver``
(installed by scripts/setup.sh). The page's DOM is read with ``--dump-dom``
and its console messages from Chromium's log (``--enable-logging=stderr``
prints each one as a ``:CONSOLE`` line); a screenshot is kept under
``build/browser/`` for CI to publish. The explorer is clicked through with
chromedriver (tests/webdriver.py): a sort, a filter, the next page, an attribute
of the per-attribute view and a component's anchor, reading what is shown after
each click.
"""

from __future__ import annotations

import importlib.util
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_html import BOLD_ID, XSS, build_report
from webdriver import Browser, chromedriver_binary

from clusterclean.html import write_html
from clusterclean.report import read_report

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location(
    "screenshot_report", ROOT / "scripts" / "screenshot_report.py"
)
browser = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(browser)

pytestmark = pytest.mark.skipif(
    browser.chromium_binary() is None,
    reason="Chromium is not installed (Debian: apt-get install chromium chromium-driver; "
    "scripts/setup.sh does it)",
)
ARTIFACTS = ROOT / "build" / "browser"


class _Dom(HTMLParser):
    """Elements by tag, and the text of every element with a given class."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.texts: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.texts.append(data)

    def elements(self, tag: str, css_class: str | None = None) -> list[dict[str, str | None]]:
        return [
            attrs
            for name, attrs in self.tags
            if name == tag and (css_class is None or css_class in (attrs.get("class") or ""))
        ]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    out = tmp / "report"
    build_report(tmp, out=out)
    page = out / "report.html"
    result = browser.run_chromium(page, "--dump-dom")
    dom = _Dom()
    dom.feed(result.stdout)
    return {"page": page, "dom": dom, "stderr": result.stderr, "out": out}


def test_the_gallery_renders_with_the_expected_components(rendered):
    report = read_report(rendered["out"], load_embeddings=False)
    expected = int((report.components["component_size"] >= 2).sum())
    assert expected == 4  # every component of 2+ images: 4 persons, 25 a page
    sections = rendered["dom"].elements("section", "component")
    assert len(sections) == expected
    thumbs = rendered["dom"].elements("img", "thumb")
    assert thumbs and all(img["src"].startswith("data:image/jpeg;base64,") for img in thumbs)


def test_the_escaped_label_is_text_and_no_script_runs(rendered):
    dom = rendered["dom"]
    assert any(XSS in text for text in dom.texts)  # shown as text ...
    # ... and never parsed as an element: the two scripts are the page's own
    assert dom.elements("script") == [{"type": "application/json", "id": "cc-data"}, {}]
    assert dom.elements("b") == []  # the image id <b>bold</b> is text too
    assert any(BOLD_ID in text for text in dom.texts)
    assert not any(attr.startswith("on") for _, attrs in dom.tags for attr in attrs)
    assert browser.console_lines(rendered["stderr"]) == []


def test_console_messages_are_captured(tmp_path):
    """The control for the check above: a page that logs an error is seen to log it."""
    page = tmp_path / "noisy.html"
    page.write_text(
        "<!DOCTYPE html><html><body><script>console.error('boom')</script></body></html>"
    )
    result = browser.run_chromium(page, "--dump-dom")
    assert any('"boom"' in line for line in browser.console_lines(result.stderr))


def test_the_grouping_warning_shows_when_components_disagree_like_strangers(tmp_path):
    """A run whose labels say its components join different identities opens with the
    grouping check's note (clusterclean.trust.check_grouping), as Chromium renders it."""
    from planted import CHECK_OPTIONS, make_planted, with_stranger_labels

    import clusterclean as cc

    data = make_planted(n_groups=40, max_size=6, n_flips=5, seed=7)
    report = cc.run(labels=with_stranger_labels(data), embeddings=data.embeddings, **CHECK_OPTIONS)
    assert not report.run_info.grouping_check["reliable"]
    page = write_html(report, tmp_path / "report.html")
    dom = _Dom()
    dom.feed(browser.run_chromium(page, "--dump-dom").stdout)
    assert [attrs.get("id") for attrs in dom.elements("p", "note")].count("grouping-warning") == 1
    assert "The grouping looks unreliable." in dom.texts
    assert any("Improve the grouping first" in text for text in dom.texts)


def test_screenshot_is_saved_for_ci(rendered):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    result = browser.screenshot(rendered["page"], shot, width=1280, height=2000)
    assert browser.console_lines(result.stderr) == []
    with Image.open(shot) as image:
        assert image.size == (1280, 2000)
        pixels = np.asarray(image.convert("L"), dtype=np.float32)
    assert pixels.std() > 5  # not a blank page


@pytest.fixture(scope="module")
def explorer(rendered):
    """The report's page rebuilt 2 components a page, in a driven browser."""
    if chromedriver_binary() is None:
        pytest.skip("chromedriver is not installed (Debian: apt-get install chromium-driver)")
    out = rendered["out"]
    report = read_report(out, load_embeddings=False)
    page = write_html(report, out.parent / "paged.html", page_size=2)
    ids = report.images.set_index("image_id")["component_id"].astype(int)
    session = Browser(browser.chromium_binary())
    try:
        yield {
            "browser": session,
            "page": page,
            # p1 (score 0.471, 1 issue), p0 + copy (0.354, 1 issue, 4 images), p2, p3 (0)
            "p0": ids["p0_v0"],
            "p1": ids["p1_v0"],
            "p2": ids["p2_v0"],
            "p3": ids["p3_v0"],
        }
    finally:
        session.close()


def _shown(session: Browser) -> list[int]:
    """The listed components' ids, once two reads 50 ms apart agree.

    The page renders the list again on ``hashchange``, a task after a click, so ids
    are read in one script (no element can go stale between finding and reading it)
    and read until the list has settled.
    """
    source = (
        "return Array.from(document.querySelectorAll('#cc-list section.component'), "
        "e => Number(e.getAttribute('data-component-id')));"
    )
    last = session.script(source)
    for _ in range(40):
        time.sleep(0.05)
        now = session.script(source)
        if now == last:
            return now
        last = now
    return last


def _open(explorer, fragment: str = "") -> Browser:
    session = explorer["browser"]
    session.open(explorer["page"].resolve().as_uri() + fragment)
    return session


def test_default_order_then_the_next_page(explorer):
    session = _open(explorer)
    p0, p1, p2, p3 = (explorer[k] for k in ("p0", "p1", "p2", "p3"))
    # components with label issues first: p1 (0.471) then p0 (0.354); then p2, p3 by id
    assert _shown(session) == [p1, p0]
    assert session.text("#cc-page") == "page 1 of 2"
    assert session.text("#cc-count") == "4 of 4 components"
    session.click("#cc-next")
    assert _shown(session) == sorted([p2, p3])
    assert session.text("#cc-page") == "page 2 of 2"
    assert session.attribute(session.find("#cc-next"), "disabled") == "true"


def test_sort_by_size(explorer):
    session = _open(explorer)
    session.click('#cc-sort option[value="component_size"]')
    shown = _shown(session)
    assert shown[0] == explorer["p0"] and len(shown) == 2  # 4 images, then a 3-image one
    assert "4 images" in session.text(f"#c{explorer['p0']} h3")


def test_filters_issues_size_and_image_id(explorer):
    session = _open(explorer)
    session.click('input[data-flag="issues"]')
    assert _shown(session) == [explorer["p1"], explorer["p0"]]
    assert session.text("#cc-count") == "2 of 4 components"
    assert session.text("#cc-page") == "page 1 of 1"
    session.click('input[data-flag="mixed"]')  # nothing was split as two people
    assert _shown(session) == []
    assert session.text("#cc-list") == "No component matches these filters."
    session.click('input[data-flag="mixed"]')
    session.click('input[data-flag="issues"]')
    session.type("#cc-text", "COPY")  # case-insensitive: p0_copy
    assert _shown(session) == [explorer["p0"]]
    session.clear("#cc-text")
    assert len(_shown(session)) == 2 and session.text("#cc-count") == "4 of 4 components"
    session.clear("#cc-min-size")
    session.type("#cc-min-size", "4")
    assert _shown(session) == [explorer["p0"]]


def test_an_attribute_of_the_per_attribute_view_filters(explorer):
    session = _open(explorer)
    buttons = session.find_all("#attributes button.attribute")
    # XSS and hat disagree in one component each; ties by name ('<' before 'h')
    assert [session.text_of(b) for b in buttons] == [XSS, "hat"]
    session.click('#attributes button[data-attribute="2"]')  # hat
    assert _shown(session) == [explorer["p0"]]
    chips = session.text(f"#c{explorer['p0']} .counts")
    assert "hat 1/4" in chips and "male 4/4" in chips
    session.click('#attributes button[data-attribute="1"]')  # the attribute named <script>
    assert _shown(session) == [explorer["p1"]]
    assert f"{XSS} 2/3" in session.text(f"#c{explorer['p1']} .counts")


def test_an_anchor_opens_one_component(explorer):
    session = _open(explorer)
    p0 = explorer["p0"]
    session.click(f"#c{p0} h3 a.anchor")
    assert session.url.endswith(f"#c{p0}")
    assert _shown(session) == [p0]
    assert session.displayed("#cc-only")
    session.click("#cc-only")
    assert _shown(session) == [explorer["p1"], p0]
    session = _open(explorer, f"#c{explorer['p3']}")  # a link from elsewhere
    assert _shown(session) == [explorer["p3"]]


def test_each_image_shows_its_id_and_links_to_its_file(explorer):
    session = _open(explorer)
    link = session.find(f"#c{explorer['p0']} figure a.id")
    assert session.text_of(link) == "p0_v0"  # the image with a suspected wrong label first
    href = session.property(link, "href")
    assert href.startswith("file:///") and Path(href[len("file://") :]).is_file()
    assert session.attribute(link, "href") == "images/00.png"  # relative to the page
    figures = session.text(f"#c{explorer['p0']} .images")
    assert BOLD_ID in figures  # the id <b>bold</b> as text
    assert session.find_all("#cc-list b") == []
