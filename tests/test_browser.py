"""The clock demo in headless Chromium: the README's first command, seen by a browser."""

from __future__ import annotations

import os
import shutil

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from gateway_helpers import REPO

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture
def browser():
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail("chromium is missing (apt-get install chromium)")
        pytest.skip("chromium is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run", "--disable-quic",
                "--disable-sync",
            ],
        )
        yield b
        b.close()


def test_clock_page_ticks_with_embedded_redis(gateway_factory, browser, tmp_path) -> None:
    # cwd elsewhere: rules/clock.ini finds its files through %d
    gw = gateway_factory(REPO / "rules" / "clock.ini", redis="embedded", cwd=tmp_path)
    gw.start()
    page = browser.new_page()
    page.goto(f"http://127.0.0.1:{gw.port}/clock")
    # Record each distinct value #clock shows; the publisher sends the epoch every second,
    # so three distinct values mean the div changed at least twice.
    track = """() => {
        const text = document.getElementById('clock').textContent.trim();
        const seen = (window.__seen = window.__seen || []);
        if (text && seen[seen.length - 1] !== text) seen.push(text);
        return seen.length >= 3;
    }"""
    try:
        page.wait_for_function(track, polling=100, timeout=20000)
    except PlaywrightTimeoutError:
        pass  # the assertion below reports what was seen, with the gateway's log
    seen = page.evaluate("() => window.__seen || []")
    assert len(seen) >= 3, f"#clock showed {seen}; gateway log:\n{gw.log()}"
    assert all(s.isdigit() for s in seen)
    assert int(seen[-1]) > int(seen[0])
