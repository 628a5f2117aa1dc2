"""A minimal W3C WebDriver client over chromedriver, for clicking through report.html.

Only what tests/test_browser.py needs: open a page, find elements by CSS
selector, click, type, read text and the URL. Plain HTTP+JSON with urllib, so
no extra package; chromedriver comes with Debian's ``chromium-driver``.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # W3C WebDriver element key
# chromedriver is on 127.0.0.1: never through a proxy. urlopen's global opener keeps the
# proxies of the environment it first saw (a test may have set a dead one), so use our own.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def chromedriver_binary() -> str | None:
    return shutil.which("chromedriver")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Browser:
    """One headless Chromium session driven by its own chromedriver process."""

    def __init__(self, chromium: str, *, width: int = 1280, height: int = 2000) -> None:
        self.port = _free_port()
        self.process = subprocess.Popen(
            [chromedriver_binary() or "chromedriver", f"--port={self.port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.profile = tempfile.TemporaryDirectory(prefix="chromium-profile-")
        self.session = None
        deadline = time.monotonic() + 30
        while True:
            try:
                self._call("GET", "/status")
                break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    self.close()
                    raise
                time.sleep(0.1)
        args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            f"--user-data-dir={self.profile.name}",
            f"--window-size={width},{height}",
        ]
        options = {"binary": chromium, "args": args}
        capabilities = {"alwaysMatch": {"goog:chromeOptions": options}}
        self.session = self._call("POST", "/session", {"capabilities": capabilities})["sessionId"]

    def _call(self, method: str, path: str, body: dict | None = None):
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with _OPENER.open(request, timeout=60) as response:
                return json.loads(response.read())["value"]
        except urllib.error.HTTPError as error:
            raise RuntimeError(f"webdriver {method} {path}: {error.read()[:500]!r}") from None

    def _session(self, method: str, path: str, body: dict | None = None):
        return self._call(method, f"/session/{self.session}{path}", body)

    def open(self, page: Path | str) -> None:
        url = page if isinstance(page, str) else page.resolve().as_uri()
        self._session("POST", "/url", {"url": url})

    @property
    def url(self) -> str:
        return self._session("GET", "/url")

    def find_all(self, selector: str) -> list[str]:
        found = self._session("POST", "/elements", {"using": "css selector", "value": selector})
        return [item[ELEMENT] for item in found]

    def find(self, selector: str) -> str:
        found = self.find_all(selector)
        if not found:
            raise LookupError(f"no element matches {selector!r}")
        return found[0]

    def click(self, selector: str) -> None:
        self._session("POST", f"/element/{self.find(selector)}/click", {})

    def type(self, selector: str, text: str) -> None:
        self._session("POST", f"/element/{self.find(selector)}/value", {"text": text})

    def clear(self, selector: str) -> None:
        self._session("POST", f"/element/{self.find(selector)}/clear", {})

    def text(self, selector: str) -> str:
        """The rendered text of the first element matching ``selector``."""
        return self.text_of(self.find(selector))

    def text_of(self, element: str) -> str:
        return self._session("GET", f"/element/{element}/text")

    def attribute(self, element: str, name: str) -> str | None:
        """The attribute as written in the DOM (an href as given)."""
        return self._session("GET", f"/element/{element}/attribute/{name}")

    def property(self, element: str, name: str):
        """The DOM property (an href resolved against the page's URL)."""
        return self._session("GET", f"/element/{element}/property/{name}")

    def script(self, source: str):
        """Run ``source`` (a function body; ``return`` gives its result) in the page at once."""
        return self._session("POST", "/execute/sync", {"script": source, "args": []})

    def displayed(self, selector: str) -> bool:
        return self._session("GET", f"/element/{self.find(selector)}/displayed")

    def close(self) -> None:
        if self.session is not None:
            try:
                self._session("DELETE", "")
            except (RuntimeError, urllib.error.URLError):
                pass
            self.session = None
        self.process.terminate()
        self.process.wait(timeout=30)
        self.profile.cleanup()
