"""A hub that missed 105 minutes across a midnight fetches them from the software meter's
web backfill endpoint: afterwards its days, its 15-minute demand and its trend equal the
meter's known values (history_fixture.py), and the month's energy did not change."""

from __future__ import annotations

import socket
from datetime import timedelta

import numpy as np
import pytest
from history_fixture import BASE_W, FIRST, GAP, LAST, day_wh, midnight, write_site

from pm4324.history import HistoryStore, query
from pm4324.hub.backfill import Backfiller, open_gaps
from pm4324.web.server import WebServer

WAIT_S = 30.0  # bound on one fetch of the local web server


@pytest.fixture(scope="module")
def meter_web(tmp_path_factory):
    """The software meter's side: its full history behind its web server."""
    path = str(tmp_path_factory.mktemp("meter") / "meter.db")
    write_site(path, key="local").close()
    web = WebServer(None, "127.0.0.1", 0, keys=["local"], history=HistoryStore.open(path, readonly=True))
    web.start_in_thread()
    yield web
    web.stop_thread()


def days(store: HistoryStore, meter: int) -> dict[str, float]:
    return {r.period: r.energy["wh_import"] for r in query.energy(store, meter, "meter1", FIRST, LAST)}


def backfill_once(hub, meter, url: str) -> tuple[Backfiller, list[str]]:
    """The hub's backfiller for meter "site" at ``url``, after one reading: what it did and
    what it said."""
    said: list[str] = []
    backfill = Backfiller(hub, {"site": meter}, {"site": url}, say=said.append)
    backfill.start()
    try:
        backfill.on_reading("site")
        backfill.apply(wait_s=WAIT_S)
    finally:
        backfill.stop()
    return backfill, said


def test_a_gap_across_midnight_is_filled_from_the_meters_history(tmp_path, meter_web):
    hub = write_site(str(tmp_path / "hub.db"), key="site", skip_gap=True)
    meter = hub.find_meter("site")
    before = days(hub, meter)
    assert before["2026-03-29"] < day_wh(FIRST + timedelta(days=2)) - 60  # the gap's part is
    assert before["2026-03-30"] > day_wh(LAST) + 5  # counted on the day after (counter difference)
    month = query.energy(hub, meter, "meter1", FIRST, LAST, "month")[0].energy["wh_import"]
    backfill, said = backfill_once(hub, meter, meter_web.url.rstrip("/"))
    assert backfill.filled == 1 and "backfilled 105 minutes" in said[0], said
    after = days(hub, meter)
    for k in range(4):
        d = FIRST + timedelta(days=k)
        assert after[d.isoformat()] == pytest.approx(day_wh(d), rel=1e-9)
    assert query.energy(hub, meter, "meter1", FIRST, LAST, "month")[0].energy["wh_import"] == \
        pytest.approx(month, rel=1e-12)
    start, end = GAP[0] - 3600, GAP[1] + 3600  # 22:07 .. 01:52: all base load
    d = query.demand(hub, meter, ["meter1"], start, end)
    assert len(d.t) == 16 and np.allclose(d.kw[:, 0], BASE_W / 1000, rtol=1e-6)
    trend = query.trend(hub, meter, "meter1", "p_w", GAP[0], GAP[1], resolution="1min", max_points=None)
    assert len(trend) == 105 and np.allclose(trend.mean, BASE_W)
    assert [g[2] for g in query.gaps(hub, meter, midnight(FIRST), midnight(LAST) + 86400)] == [
        "offline, backfilled"]
    assert open_gaps(hub, meter) == []  # not asked again
    hub.close()


def test_a_meter_that_does_not_answer_is_asked_again_later(tmp_path):
    hub = write_site(str(tmp_path / "hub.db"), key="site", skip_gap=True)
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    backfill, said = backfill_once(hub, hub.find_meter("site"), url)
    assert backfill.filled == 0 and "failed" in said[0] and "again in 60 s" in said[0], said
    assert len(open_gaps(hub, hub.find_meter("site"))) == 1
    hub.close()
