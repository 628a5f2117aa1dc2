"""report.html as a user sees it: rendered by headless Chromium, offline.

Chromium comes from the Debian packages ``chromium`` and ``chromium-driver``
(installed by scripts/setup.sh). The page's DOM is read with ``--dump-dom``
and its console messages from Chromium's log (``--enable-logging=stderr``
prints each one as a ``:CONSOLE`` line); a screenshot is kept under
``build/browser/`` for CI to publish.
"""

from __future__ import annotations

import importlib.util
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_html import XSS, build_report

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
    components = report.components
    expected = int(((components["size"] >= 2) & (components["inconsistency_score"] > 0)).sum())
    assert expected == 2
    sections = rendered["dom"].elements("section", "component")
    assert len(sections) == expected
    thumbs = rendered["dom"].elements("img", "thumb")
    assert thumbs and all(img["src"].startswith("data:image/jpeg;base64,") for img in thumbs)


def test_the_escaped_label_is_text_and_no_script_runs(rendered):
    dom = rendered["dom"]
    assert any(XSS in text for text in dom.texts)  # shown as text ...
    assert dom.elements("script") == []  # ... and never parsed as an element
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
