"""Screenshot a report.html with headless Chromium, offline.

    python scripts/screenshot_report.py REPORT_DIR OUT.png [--width 1280] [--height 1600]

Used for docs/report-screenshot.png (from `clusterclean demo`) and by
tests/test_browser.py. Chromium comes from the Debian packages ``chromium`` and
``chromium-driver``. Every run uses a fresh profile and no network.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    # console messages go to stderr as ':CONSOLE' lines
    "--enable-logging=stderr",
    "--v=0",
)


def chromium_binary() -> str | None:
    """The Chromium executable on PATH, or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def run_chromium(page: Path, *extra: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Open a local file in headless Chromium with a fresh profile (e.g. ``--dump-dom``)."""
    binary = chromium_binary()
    if binary is None:
        raise FileNotFoundError(
            "Chromium is not installed: apt-get install chromium chromium-driver"
        )
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        command = [binary, *FLAGS, f"--user-data-dir={profile}", *extra, page.resolve().as_uri()]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=True)


def console_lines(stderr: str) -> list[str]:
    """The page's console messages in Chromium's log."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def screenshot(
    page: Path, out: Path, *, width: int = 1280, height: int = 1600
) -> subprocess.CompletedProcess:
    """Save a PNG of the top ``width`` x ``height`` pixels of ``page``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return run_chromium(page, f"--screenshot={out.resolve()}", f"--window-size={width},{height}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report_dir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1600)
    args = parser.parse_args(argv)
    page = args.report_dir / "report.html"
    if not page.is_file():
        print(f"error: {page} does not exist; run `clusterclean run` or `clusterclean report`.")
        return 1
    result = screenshot(page, args.out, width=args.width, height=args.height)
    for line in console_lines(result.stderr):
        print(f"console: {line}", file=sys.stderr)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
