"""The dashboard in Debian's chromium (Playwright): every page loads without a console error,
shows the values the API and Modbus serve for the same second, follows the live second, and
writes only with the right credential."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_api import modbus_read

PAGES = ("", "meter", "trends", "events", "settings")
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def wait_for_second(page, seq: int) -> None:
    page.wait_for_selector(f'#live[data-seq="{seq}"]', timeout=10_000)


@pytest.mark.parametrize("slug", PAGES)
def test_each_page_loads_without_console_errors(page, live, slug):
    snap = live.step()
    page.goto(live.url + slug)
    wait_for_second(page, snap.seq)
    page.wait_for_function("document.querySelector('#content').children.length > 0", timeout=10_000)
    assert page.title().endswith("pm4324")
    assert page.errors == []


def raw(page, key: str) -> float:
    return float(page.get_attribute(f'[data-key="{key}"]', "data-raw"))


def test_building_shows_the_same_second_as_the_api_and_modbus(page, live):
    snap = live.step()
    page.goto(live.url)
    wait_for_second(page, snap.seq)
    with live.http() as http:
        api = http.get("/api/snapshot").json()
    mb = modbus_read(live)
    assert api["seq"] == mb["seq"] == snap.seq
    for ct in (1, 8, 24):
        for q in ("p_w", "i_rms", "v_rms"):
            shown = raw(page, f"ct{ct}.{q}")
            assert shown == api["cts"][ct - 1][q]
            assert shown == pytest.approx(mb["cts"][ct - 1][q], rel=1e-6)
    for m in (1, 8):
        assert raw(page, f"meter{m}.p_w") == pytest.approx(mb["meters"][m - 1]["p_w"], rel=1e-6)
    text = page.inner_text('[data-key="meter1.p_w"]')
    assert text.endswith("kW") or text.endswith(" W")  # units everywhere


def test_the_live_view_follows_each_second(page, live):
    snap = live.step()
    page.goto(live.url)
    wait_for_second(page, snap.seq)
    for _ in range(3):
        snap = live.step()
        wait_for_second(page, snap.seq)
        assert raw(page, "ct1.p_w") == pytest.approx(float(snap.ct.p_w[0]), rel=1e-6)


def test_meter_page_draws_phasors_waveforms_and_harmonics(page, live):
    snap = live.step()
    page.goto(live.url + "meter?m=2")
    wait_for_second(page, snap.seq)
    page.wait_for_selector("#harm-i rect[data-order='50']", timeout=10_000)
    assert page.locator("#phasors line").count() >= 6
    assert page.locator("#wave-v polyline").count() == 3
    assert raw(page, "meter2.p_w") == pytest.approx(float(snap.meter.p_w[1]), rel=1e-6)
    assert page.errors == []


def test_settings_edit_is_refused_without_the_credential_and_applied_with_it(page, live):
    live.step()
    page.goto(live.url + "settings")
    field = page.locator('[name="meters.3.ct_ratio"]')
    field.wait_for(timeout=10_000)
    field.fill("150")
    page.click("#settings button[type=submit]")
    page.wait_for_selector("#message.bad", timeout=10_000)
    assert "credential" in page.inner_text("#message")
    assert live.meter.settings.meters[2].ct_ratio == 60
    page.fill("#token", "settings-token-0123456789")
    page.dispatch_event("#token", "change")
    field.fill("0")
    page.click("#settings button[type=submit]")
    page.wait_for_function(
        "document.querySelector('[data-error=\"meters.3.ct_ratio\"]').textContent.length > 0", timeout=10_000)
    assert "1 to 65535" in page.inner_text('[data-error="meters.3.ct_ratio"]')
    field.fill("150")
    page.click("#settings button[type=submit]")
    page.wait_for_function("document.querySelector('#message').textContent === 'settings applied'",
                           timeout=10_000)
    assert live.meter.settings.meters[2].ct_ratio == 150
    assert page.errors == [] or all("401" in e or "422" in e for e in page.errors)
    field.fill("60")
    page.click("#settings button[type=submit]")
    page.wait_for_function("document.querySelector('#message').textContent === 'settings applied'",
                           timeout=10_000)


def test_a_relay_toggles_as_the_policy_allows(page, live):
    snap = live.step()
    page.goto(live.url)
    wait_for_second(page, snap.seq)
    page.click('[data-toggle="2"]')
    page.wait_for_selector("#message.bad", timeout=10_000)
    assert live.meter.relays[1] is False  # no credential: refused
    page.fill("#token", "relays-token-0123456789")
    page.dispatch_event("#token", "change")
    page.click('[data-toggle="2"]')
    page.wait_for_function("document.querySelector('#message').textContent === 'relay 2 closed'",
                           timeout=10_000)
    assert live.meter.relays[1] is True
    snap = live.step()
    wait_for_second(page, snap.seq)
    assert page.get_attribute('[data-toggle="2"]', "data-closed") == "true"
    page.click('[data-toggle="2"]')
    page.wait_for_function("document.querySelector('#message').textContent === 'relay 2 opened'",
                           timeout=10_000)
    assert live.meter.relays[1] is False


def test_trends_follow_the_seconds_and_zoom_by_dragging(page, live):
    snap = live.step()
    page.goto(live.url + "trends")
    wait_for_second(page, snap.seq)
    page.wait_for_selector("#content[data-ready='1']", timeout=10_000)
    page.select_option("#trend-range", "live")
    for _ in range(10):
        snap = live.step()
        wait_for_second(page, snap.seq)

    def points() -> int:
        return len(page.get_attribute("#trend polyline", "points").split())

    assert points() == 11
    box = page.locator("#trend svg").bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.3, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.8, y)
    page.mouse.up()
    assert page.is_visible("#trend-reset")
    assert 3 <= points() < 11
    page.click("#trend-reset")
    assert points() == 11
    assert page.errors == []


def test_alarms_are_acknowledged_from_the_events_page_with_the_credential(page, live):
    snap = live.step()
    page.goto(live.url + "events")
    wait_for_second(page, snap.seq)
    page.wait_for_selector("#ack", timeout=10_000)
    assert "power_up" in page.inner_text("#events")
    page.click("#ack")
    page.wait_for_selector("#message.bad", timeout=10_000)
    page.fill("#token", "relays-token-0123456789")
    page.dispatch_event("#token", "change")
    page.click("#ack")
    page.wait_for_function("document.querySelector('#message').textContent === 'alarms acknowledged'",
                           timeout=10_000)


@pytest.mark.parametrize("slug", PAGES)
def test_pages_ask_nothing_of_any_other_host(page, live, slug):
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url))
    snap = live.step()
    page.goto(live.url + slug)
    wait_for_second(page, snap.seq)
    page.wait_for_load_state("networkidle")
    elsewhere = [u for u in asked if not u.startswith(live.url)]
    assert asked and not elsewhere  # every script, style and icon ships in the package
