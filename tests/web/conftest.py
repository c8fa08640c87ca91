"""Fixtures of the web tests: a live meter behind the web server, a headless chromium and a
page of it that collects the console's errors and uncaught exceptions (``page.errors``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from web_helpers import (
    CHROMIUM,
    CHROMIUM_ARGS,
    LiveMeter,
    settings_with_tokens,
    start_live_meter,
    stop_live_meter,
)


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> Iterator[LiveMeter]:
    home = tmp_path_factory.mktemp("web")
    settings_file = home / "settings.toml"
    settings_file.write_text(settings_with_tokens())
    meter, thread = start_live_meter(settings_file, history=home / "history.db")
    yield meter
    stop_live_meter(meter, thread)


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.errors = errors
    yield pg
    context.close()
