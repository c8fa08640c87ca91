"""The history store against analytic truth: seconds with known values in, exact minutes,
intervals, demand and energy out; DST days in two zones, gaps, resets, rollovers."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from snapshot_factory import make_snapshot

from pm4324.config.settings import Settings
from pm4324.history import HistoryError, HistoryStore, HistoryWriter, query
from pm4324.history.aggregate import ROLLOVER_WH
from pm4324.history.layout import LAYOUT, REGISTERS, Frame, frame_from_dict, frame_from_snapshot

P_CT1 = 3600.0  # W on CT1: 1 Wh per second
CH_P = LAYOUT.channels[("ct1", "p_w")]
WH = REGISTERS.index("wh_import")


def frame(t: float, wh: float, p: float = P_CT1) -> Frame:
    v = np.full(LAYOUT.n_channels, 1.0)
    v[CH_P] = p
    c = np.zeros((32, 7))
    c[0, WH] = wh
    return Frame(float(t), v, c)


def feed(w: HistoryWriter, t0: float, seconds: int, wh0: float = 0.0, p_of=None) -> float:
    """CT1 at P_CT1 (its counter climbing 1 Wh/s) for ``seconds``; returns the last counter."""
    for s in range(seconds):
        w.add(frame(t0 + s, wh0 + s, P_CT1 if p_of is None else p_of(s)))
    return wh0 + seconds - 1


@pytest.fixture
def store(store_url):
    s = HistoryStore.open(store_url, time_zone="UTC")
    yield s
    s.close()


def test_minutes_hold_means_minima_and_maxima(store):
    w = HistoryWriter(store, "m")
    t0 = 1_780_000_020 // 60 * 60
    feed(w, t0, 180, p_of=lambda s: 1000.0 + s % 60)  # 1000..1059 W each minute
    w.close()
    tr = query.trend(store, w.meter, "ct1", "p_w", t0, t0 + 180, "1min")
    assert tr.t.tolist() == [t0, t0 + 60, t0 + 120]
    assert tr.mean.tolist() == [1029.5] * 3 and tr.min.tolist() == [1000] * 3
    assert tr.max.tolist() == [1059] * 3
    raw = query.trend(store, w.meter, "ct1", "p_w", t0, t0 + 180, "raw")
    assert len(raw) == 180 and raw.mean[61] == 1001.0


def test_downsampling_keeps_the_envelope(store):
    w = HistoryWriter(store, "m")
    t0 = 1_780_000_020 // 86400 * 86400
    feed(w, t0, 4 * 3600, p_of=lambda s: 5000.0 if s == 7777 else 100.0)
    w.close()
    tr = query.trend(store, w.meter, "ct1", "p_w", t0, t0 + 4 * 3600, "1min", max_points=10)
    assert len(tr) == 10
    assert np.nanmax(tr.max) == 5000.0 and np.nanmin(tr.min) == 100.0


@pytest.mark.parametrize(("zone", "day", "hours"), [
    ("Europe/Berlin", date(2026, 3, 29), 23), ("Europe/Berlin", date(2026, 10, 25), 25),
    ("America/New_York", date(2026, 3, 8), 23), ("America/New_York", date(2026, 11, 1), 25),
])
def test_dst_days_have_23_and_25_hours(store_url, zone, day, hours):
    store = HistoryStore.open(store_url, time_zone=zone)
    tz = ZoneInfo(zone)
    start = datetime(day.year, day.month, day.day, tzinfo=tz).timestamp() - 1800
    w = HistoryWriter(store, "m", keep_raw=False)
    feed(w, start, hours * 3600 + 3600)  # from 23:30 the day before to 00:30 the day after
    w.close()
    rows = query.energy(store, w.meter, "ct1", day, day)
    assert rows[0].seconds == hours * 3600
    assert rows[0].energy["wh_import"] == pytest.approx(hours * 3600.0, abs=1e-6)
    assert rows[0].first["wh_import"] == pytest.approx(1799.0)  # the reading at 23:59:59
    d = query.demand(store, w.meter, ["ct1"], start + 1800, start + 1800 + hours * 3600)
    assert len(d.t) == hours * 4 and np.allclose(d.kw, P_CT1 / 1000)
    store.close()


def test_a_gap_is_a_gap_and_energy_across_it_is_exact(store):
    w = HistoryWriter(store, "m")
    t0 = 1_780_000_200 // 900 * 900
    last = feed(w, t0, 600)
    feed(w, t0 + 1800, 600, wh0=last + 1201)  # 20 minutes away; the counter ran on
    w.close()
    (gap,) = query.gaps(store, w.meter, t0, t0 + 3600)
    assert gap[:2] == (t0 + 599, t0 + 1800)
    tr = query.trend(store, w.meter, "ct1", "p_w", t0, t0 + 2400, "1min")
    assert len(tr) == 20  # no minute invented in the gap
    (day,) = query.energy(store, w.meter, "ct1", date(2026, 5, 28), date(2026, 5, 29))
    assert day.energy["wh_import"] == pytest.approx(2399.0)  # last - first counter


def test_reset_keeps_the_pre_reset_value_and_counts_from_zero(store):
    w = HistoryWriter(store, "m")
    t0 = 1_780_000_200 // 900 * 900
    feed(w, t0, 100, wh0=5000.0)  # 5000 .. 5099
    feed(w, t0 + 100, 100, wh0=0.0)  # reset-energy: 0 .. 99
    w.close()
    (day,) = query.energy(store, w.meter, "ct1", date(2026, 5, 28), date(2026, 5, 29))
    assert day.energy["wh_import"] == pytest.approx(99.0 + 0.0 + 99.0)
    (ev,) = query.events(store, w.meter, t0, t0 + 1000)
    assert ev[1] == "reset" and "5099.000 Wh -> 0.000 Wh" in ev[2]


def test_uint32_rollover_is_energy_not_a_reset(store):
    w = HistoryWriter(store, "m")
    t0 = 1_780_000_200 // 900 * 900
    feed(w, t0, 10, wh0=ROLLOVER_WH - 50.0)
    feed(w, t0 + 10, 10, wh0=0.0 + 10.0)  # wrapped: ...-41 then 10
    w.close()
    (day,) = query.energy(store, w.meter, "ct1", date(2026, 5, 28), date(2026, 5, 29))
    assert day.energy["wh_import"] == pytest.approx(9 + 51 + 9)
    assert query.events(store, w.meter, t0, t0 + 100)[0][1] == "rollover"


def test_a_restarted_writer_continues_and_utc_days_pack(store_url):
    path = store_url
    t0 = 1_780_000_000 // 86400 * 86400 + 86400 - 600  # ten minutes before UTC midnight
    s = HistoryStore.open(path, time_zone="UTC")
    w = HistoryWriter(s, "m")
    last = feed(w, t0, 300)
    w.close()
    s.close()
    s = HistoryStore.open(path)
    w = HistoryWriter(s, "m")
    feed(w, t0 + 300, 900, wh0=last + 1)
    w.close()
    assert s.db.execute(f"SELECT COUNT(*) FROM {s.db.t('minute_block')}")[0][0] >= 1  # the old day is packed
    tr = query.trend(s, w.meter, "ct1", "p_w", t0, t0 + 1200, "1min")
    assert len(tr) == 20 and np.all(tr.mean == P_CT1)
    days = query.energy(s, w.meter, "ct1", date(2026, 1, 1), date(2026, 12, 31))
    assert sum(r.energy["wh_import"] for r in days) == pytest.approx(1199.0)
    assert query.gaps(s, w.meter, 0, 2e9) == []
    s.close()


def test_local_and_remote_seconds_are_the_same_frame():
    snap = make_snapshot(Settings())
    a, b = frame_from_snapshot(snap), frame_from_dict(snap.to_dict())
    assert np.allclose(a.values, b.values, rtol=1e-6, equal_nan=True)
    assert np.allclose(a.counters, b.counters, rtol=1e-8)


def test_time_zone_is_fixed_at_creation(tmp_path):
    HistoryStore.open(tmp_path / "h.sqlite", time_zone="Europe/Berlin").close()
    with pytest.raises(HistoryError, match="Europe/Berlin"):
        HistoryStore.open(tmp_path / "h.sqlite", time_zone="UTC")
    with pytest.raises(HistoryError, match="unknown"):
        HistoryStore.open(tmp_path / "x.sqlite", time_zone="Mars/Olympus")


def test_retention_drops_what_is_older_than_keep_years(tmp_path):
    store = HistoryStore.open(tmp_path / "h.sqlite", time_zone="UTC", keep_years=2 / 365.25)
    w = HistoryWriter(store, "m", keep_raw=False)
    t0 = 1_780_000_000 // 86400 * 86400
    last = 0.0
    for day in range(4):  # an hour a day for four days; two days are kept
        last = feed(w, t0 + day * 86400, 3600, wh0=last + 1)
    w.close()
    days = query.energy(store, w.meter, "ct1", date(2026, 1, 1), date(2026, 12, 31))
    assert [d.period for d in days] == ["2026-05-29", "2026-05-30", "2026-05-31"]
    assert len(query.trend(store, w.meter, "ct1", "p_w", 0, 2e9, "1min", None)) == 3 * 60
    store.close()
