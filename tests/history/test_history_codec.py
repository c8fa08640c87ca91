"""The short-float form of the history's long-kept series: what it stores is the value
rounded to 16 mantissa bits (relative error at most 7.6 ppm), energies stay exact, and
blocks written before the short form still read."""

from __future__ import annotations

import numpy as np

from pm4324.history import HistoryStore, HistoryWriter, query
from pm4324.history.codec import SHORT_RELATIVE_ERROR, pack, shorten, unpack
from pm4324.history.layout import LAYOUT, Frame


def test_short_form_is_the_value_within_the_stated_error():
    rng = np.random.default_rng(3)
    x = (230 + 0.23 * rng.standard_normal((9, 1440))).astype("<f4")
    x[0, :100] = rng.uniform(-1e6, 1e6, 100)
    x[1, 3], x[1, 4], x[1, 5], x[1, 6] = np.nan, np.inf, -np.inf, -0.0
    x[2, :4] = [3.4028235e38, 1e-40, 1.0, 2.0**-20]
    got = unpack(pack(x, short=True))
    assert got.dtype == np.float32 and np.array_equal(got, shorten(x), equal_nan=True)
    assert np.signbit(got[1, 6]) and np.isposinf(got[1, 4]) and np.isneginf(got[1, 5])
    normal = np.isfinite(x) & (np.abs(x) >= np.finfo(np.float32).tiny)
    rel = np.abs(got[normal].astype(float) / x[normal] - 1)
    assert rel.max() <= SHORT_RELATIVE_ERROR == 2.0**-17  # 7.63 ppm
    assert np.array_equal(unpack(pack(got, short=True)), got, equal_nan=True)  # idempotent
    assert np.array_equal(unpack(pack(x[0], short=True)), shorten(x[0]))  # 1-D too


def test_the_plain_forms_stay_exact():
    e = np.array([[1234567.891, 0.0, 9.87654321e9]])
    assert np.array_equal(unpack(pack(e)), e)
    x = np.float32([1.2345678, np.nan])
    assert np.array_equal(unpack(pack(x)), x, equal_nan=True)


def test_blocks_of_an_older_store_still_read(tmp_path):
    path = str(tmp_path / "h.db")
    t0 = 1_780_000_000 // 86400 * 86400 - 600  # ten minutes before a UTC midnight
    s = HistoryStore.open(path, time_zone="UTC")
    w = HistoryWriter(s, "m")
    ch = LAYOUT.channels[("ct1", "p_w")]
    for k in range(1200):  # across midnight: the first day is packed into blocks
        v = np.full(LAYOUT.n_channels, 1.0)
        v[ch] = 1000.0 + 0.123456789 * k
        w.add(Frame(float(t0 + k), v, np.zeros((32, 7))))
    w.close()
    new = query.trend(s, w.meter, "ct1", "p_w", t0, t0 + 1200, "1min")
    truth = 1000.0 + 0.123456789 * (np.arange(20) * 60 + 29.5)
    assert np.allclose(new.mean, truth, rtol=SHORT_RELATIVE_ERROR + 1e-7)
    db = s.db  # rewrite the packed day as a store before the short form wrote it
    for meter, element, day, data in db.execute(f"SELECT meter, element, day, data FROM "
                                                f"{db.t('minute_block')}"):
        db.execute(f"UPDATE {db.t('minute_block')} SET data = ? WHERE meter = ? AND element = ?"
                   " AND day = ?", (pack(unpack(bytes(data))), meter, element, day))
    s.close()
    s = HistoryStore.open(path, readonly=True)
    old = query.trend(s, w.meter, "ct1", "p_w", t0, t0 + 1200, "1min")
    assert np.array_equal(old.mean, new.mean) and np.array_equal(old.max, new.max)
    s.close()
