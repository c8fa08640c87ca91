"""Regenerate docs/screenshots/ (shown in the README): `.venv/bin/python tests/web/screenshots.py`.

Runs the simulated building for a few seconds and photographs each page in Debian's
chromium, light and dark, desktop and phone.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from web_helpers import CHROMIUM, CHROMIUM_ARGS, start_live_meter, stop_live_meter  # noqa: E402

OUT = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
SHOTS = (  # (file, path, theme, viewport)
    ("building.png", "", "light", (1400, 1000)),
    ("building-dark.png", "", "dark", (1400, 1000)),
    ("building-phone.png", "", "dark", (390, 844)),
    ("building-wall.png", "", "dark", (2560, 1440)),
    ("meter.png", "meter?m=1", "light", (1400, 1000)),
    ("meter-dark.png", "meter?m=3", "dark", (1400, 1000)),
    ("trends.png", "trends", "light", (1400, 700)),
    ("events.png", "events", "light", (1400, 800)),
    ("settings.png", "settings", "light", (1400, 900)),
)


def main() -> int:
    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    live, thread = start_live_meter()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            for name, path, theme, (w, h) in SHOTS:
                context = browser.new_context(viewport={"width": w, "height": h},
                                              color_scheme=theme, device_scale_factor=1)
                page = context.new_page()
                page.goto(live.url + path)
                for _ in range(12):  # a few seconds of trend
                    snap = live.step()
                    page.wait_for_selector(f'#live[data-seq="{snap.seq}"]', timeout=10_000)
                page.wait_for_load_state("networkidle")
                page.screenshot(path=str(OUT / name), full_page=name == "meter.png")
                context.close()
                print(OUT / name)
            browser.close()
    finally:
        stop_live_meter(live, thread)
    return 0


if __name__ == "__main__":
    sys.exit(main())
