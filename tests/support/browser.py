"""A real headless browser for the Studio's tests: Debian's chromium, driven by Playwright
(its own browser download is not used), and where screenshots are kept."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, Page, expect, sync_playwright

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-artifacts" / "studio"
# the browser itself: /usr/bin/chromium is Debian's launcher script
CHROMIUM = (
    "/usr/lib/chromium/chromium"
    if Path("/usr/lib/chromium/chromium").is_file()
    else shutil.which("chromium")
)


# What the page shows often waits on the Studio, the cluster and the agents: on a loaded
# 2-core machine 5 s (Playwright's default) is too short to mean "it never came".
expect.set_options(timeout=15_000)


@contextmanager
def chromium() -> Iterator[Browser]:
    assert CHROMIUM, "Debian's chromium is missing: scripts/setup.sh installs it"
    with sync_playwright() as playwright:
        # --no-sandbox: the tests run as root, where chromium's sandbox refuses to start
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


@contextmanager
def new_page(browser: Browser, *, width: int = 1280, height: int = 800) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": width, "height": height})
    try:
        yield context.new_page()
    finally:
        context.close()


def shot(page: Page, name: str) -> None:
    """Keep a screenshot of the page as a test artifact."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
