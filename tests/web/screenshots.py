"""Regenerate docs/screenshots/ (shown in the README): `.venv/bin/python tests/web/screenshots.py`.

Runs the simulated building for a minute (so its history holds today's first energy) and
photographs each page in Debian's chromium, light and dark, desktop and phone. The Trends
page is shown over 90 days of the building's synthesized history (`pm4324 history synth`),
fed live seconds the way a hub feeds its web server.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from web_helpers import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    SETTINGS,
    settings_with_tokens,
    start_live_meter,
    stop_live_meter,
)

OUT = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
SHOTS = (  # (file, path, theme, viewport)
    ("building.png", "", "light", (1400, 1000)),
    ("building-dark.png", "", "dark", (1400, 1000)),
    ("building-phone.png", "", "dark", (390, 844)),
    ("building-wall.png", "", "dark", (2560, 1440)),
    ("meter.png", "meter?m=1", "light", (1400, 1000)),
    ("meter-dark.png", "meter?m=3", "dark", (1400, 1000)),
    ("trends.png", "trends", "light", (1400, 1300)),
    ("trends-dark.png", "trends", "dark", (1400, 1300)),
    ("building-hub.png", "hub", "light", (1400, 720)),
    ("events.png", "events", "light", (1400, 800)),
    ("settings.png", "settings", "light", (1400, 900)),
)


def main() -> int:
    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="pm4324-shots-"))
    (home / "settings.toml").write_text(settings_with_tokens())
    live, thread = start_live_meter(home / "settings.toml", history=home / "history.db")
    live.step(61)  # a whole minute in the history: the Today column has values
    trends = synthesized(home / "synth.db")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            for name, path, theme, (w, h) in SHOTS:
                context = browser.new_context(viewport={"width": w, "height": h},
                                              color_scheme=theme, device_scale_factor=1)
                page = context.new_page()
                server = trends if path in ("trends", "hub") else live
                page.goto(server.url + ("" if path == "hub" else path))
                for _ in range(12):  # a few seconds of live values
                    snap = server.step()
                    page.wait_for_selector(f'#live[data-seq="{snap.seq}"]', timeout=10_000)
                if path == "trends":
                    page.wait_for_selector("#content[data-ready='1']", timeout=30_000)
                    page.select_option("#trend-element", "meter2")  # the shop: a daily profile
                    page.select_option("#trend-range", str(7 * 86400))
                    page.wait_for_selector("#trend[data-element='meter2'][data-span='604800'] svg",
                                           timeout=30_000)
                page.wait_for_load_state("networkidle")
                if path == "hub":
                    page.wait_for_selector("#fleet [data-gaps='1']", timeout=30_000)
                page.screenshot(path=str(OUT / name), full_page=name == "meter.png")
                context.close()
                print(OUT / name)
            browser.close()
    finally:
        stop_live_meter(live, thread)
        trends.web.stop_thread()
    return 0


class _Fed:
    """A hub's web server fed seconds by hand, as the hub feeds it, over a synthesized history:
    "local" live, "annex" offline with a gap."""

    def __init__(self, history: Path):
        from pm4324.config.settings_parse import load_settings
        from pm4324.device.meter import Meter
        from pm4324.history import HistoryStore
        from pm4324.sources.scenario_parse import load_scenario
        from pm4324.sources.simulator import SimulatorSource
        from pm4324.web.server import WebServer

        settings = load_settings(SETTINGS)
        self.meter = Meter(settings, SimulatorSource(load_scenario(None), settings))
        self.web = WebServer(None, "127.0.0.1", 0, keys=["local", "annex"],
                             history=HistoryStore.open(history, readonly=True))
        self.web.start_in_thread()
        self.url = self.web.url

    def step(self):
        snap = self.meter.step()
        self.web.publish("local", snap)
        return snap


def synthesized(path: Path) -> _Fed:
    """90 days of the building up to yesterday, then live seconds on top; an annex with 10
    days up to two days ago and a gap of 90 minutes in them."""
    from pm4324.history import HistoryStore

    last = date.today() - timedelta(days=1)
    for key, first, end in (("local", last - timedelta(days=89), last),
                            ("annex", last - timedelta(days=10), last - timedelta(days=1))):
        subprocess.run([sys.executable, "-m", "pm4324.cli.cli", "history", "synth", "--store", str(path),
                        "--meter-key", key, "--time-zone", "UTC", "--from", str(first), "--to", str(end)],
                       check=True)
    store = HistoryStore.open(path)
    meter = store.find_meter("annex")
    t = store.load_state(meter).last_time - 30 * 3600
    store.write(meter, None, None, gaps=[(t, t + 5400, "offline")])
    store.close()
    return _Fed(path)


if __name__ == "__main__":
    sys.exit(main())
