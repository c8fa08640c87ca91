"""`/api/pq` on a live meter: the mains' aggregates and the voltage events of the log.

Truth: the building scenario's mains (230 V; main 1 sags to 60 % for 0.3 s at 45 s).
"""

from __future__ import annotations

import pytest


def test_pq_shows_the_mains_and_the_dip_of_the_building(live):
    snap = live.step(1)
    already = snap.seq + 1  # seconds measured so far
    live.step(max(1, 47 - already))
    with live.http() as http:
        answer = http.get("/api/pq")
        assert answer.status_code == 200
        d = answer.json()
        none = http.get("/api/pq", params={"device": "nope"})
    assert none.status_code == 404
    main1 = d["mains"][0]
    assert main1["main"] == 1 and main1["udin_v"] == 230.0 and main1["voltages"] == "ln"
    assert main1["short"]["interval"] == "150/180 cycles"
    assert all(200 < v < 260 for v in main1["short"]["v_rms"])
    assert d["cts"] == []  # no 10-minute value yet
    dips = [e for e in d["events"] if e["kind"] == "voltage_dip"]
    assert len(dips) == 1 and "main 1 phases abc: residual" in dips[0]["text"]
    residual = float(dips[0]["text"].split("residual ")[1].split(" V")[0])
    assert residual == pytest.approx(0.6 * 230, rel=0.01)
