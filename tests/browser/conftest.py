"""Fixtures for the browser tests: Debian's Chromium driven by Playwright.

Never downloads a browser: Chromium is /usr/bin/chromium (override with
COLLAB_CHROMIUM).  Each test gets the `server` fixture from tests/conftest.py
(a real `python -m collab serve` on a fresh database) and opens pages on it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from serverproc import ROOT

CHROMIUM = os.environ.get("COLLAB_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="package")
def browser():
    # Package scope, not session: Playwright's sync API keeps an asyncio loop
    # running while it is open, which would break the asyncio tests that
    # run after this package.
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists() and not shutil.which(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        yield b
        b.close()


@pytest.fixture
def contexts(browser):
    """Factory for browser contexts (separate people: separate localStorage); all closed at the end."""
    made = []

    def make(**kw):
        kw.setdefault("viewport", {"width": 1000, "height": 640})
        ctx = browser.new_context(**kw)
        ctx.set_default_timeout(15000)
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        try:
            ctx.close()
        except Exception:
            pass


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
