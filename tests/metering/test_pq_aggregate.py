"""IEC 61000-4-30 aggregation of the mains' voltage: 150/180 cycles, 10 minutes (clock
aligned, resynchronised), 2 hours, 10-s frequency, unbalance and flagging.

Truth: constant-amplitude sines (the RMS of every interval is the amplitude / sqrt 2), the
symmetrical components of the phasors written in the test (u2 = |Va + a^2 Vb + a Vc| /
|Va + a Vb + a^2 Vc|), and the simulator's exact frequency.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from .pq_helpers import run_scenario

U = 230.0
TICK = 1_800_000_000.0  # a 10-minute (and 2-hour) tick


def unbalance(scale: tuple[float, float, float]) -> tuple[float, float]:
    a = complex(math.cos(2 * math.pi / 3), math.sin(2 * math.pi / 3))
    va, vb, vc = (s * a**-k for k, s in enumerate(scale))
    pos, neg, zero = abs(va + a * vb + a * a * vc), abs(va + a * a * vb + a * vc), abs(va + vb + vc)
    return 100 * neg / pos, 100 * zero / pos


@pytest.mark.parametrize("f", [50.0, 60.0])
def test_150_180_cycle_values_and_unbalance(f: float) -> None:
    scale = (1.0, 0.93, 1.03)
    _, intervals = run_scenario({"phase_scale": list(scale)}, 12, TICK + 100, f)
    short = [iv for iv in intervals if iv.interval == "150/180 cycles"]
    assert len(short) >= 3
    u2, u0 = unbalance(scale)
    for iv in short[1:]:  # the first one starts with the tracker
        assert iv.seconds == pytest.approx(3.0, abs=1e-6)
        assert iv.v_rms == pytest.approx([U * s for s in scale], rel=1e-6)
        assert iv.u2_pct == pytest.approx(u2, abs=1e-4)
        assert iv.u0_pct == pytest.approx(u0, abs=1e-4)
        assert not iv.flagged


@pytest.mark.parametrize("f", [50.0, 60.0])
def test_ten_minute_tick_resynchronises(f: float) -> None:
    """Start 4.5 s before a tick: at the tick the running 150/180-cycle interval ends early
    and the 10-minute value (RMS of the basic values since start-up) is stamped at the tick."""
    _, intervals = run_scenario({}, 9, TICK - 4.5, f)
    ten = [iv for iv in intervals if iv.interval == "10 min"]
    assert len(ten) == 1 and ten[0].end_s == TICK
    assert ten[0].v_rms == pytest.approx([U] * 3, rel=1e-6)
    assert ten[0].seconds == pytest.approx(4.5, abs=0.1)  # less the tracker's first cycle
    short = [iv for iv in intervals if iv.interval == "150/180 cycles"]
    ends = [iv.end_s for iv in short]
    at_tick = [iv for iv in short if abs(iv.end_s - TICK) < 1 / f]
    assert len(at_tick) == 1 and at_tick[0].seconds < 3.0
    after = [iv for iv in short if iv.end_s > TICK + 1 / f]
    assert after and after[0].seconds == pytest.approx(3.0, abs=1e-6)
    assert ends == sorted(ends)


def test_ten_second_frequency() -> None:
    """Whole cycles within each 10-s clock interval over their duration: the simulator's
    exact 50.03 Hz (the cycles across each tick are discarded)."""
    _, intervals = run_scenario({"frequency_hz": 50.03}, 32, TICK + 3.0)
    tens = [iv for iv in intervals if iv.interval == "10 s"]
    assert [round(iv.end_s - TICK) for iv in tens] == [10, 20, 30]
    for iv in tens[1:]:
        assert iv.frequency_hz == pytest.approx(50.03, abs=1e-6)
        assert 9.9 < iv.seconds < 10.0


def test_dip_flags_its_intervals_only() -> None:
    """A 100 ms dip at t = 4.2 s flags the 150/180-cycle interval 3-6 s, the 10-s interval
    and the 10-minute interval holding it; the intervals around it are not flagged."""
    T = 0.02
    events, intervals = run_scenario(
        {"sags": [{"start_s": 4.2 + 0.75 * T, "duration_s": 0.1, "retained": 0.5}]}, 14,
        TICK - 12.0)
    assert [e.kind for e in events] == ["dip"]
    short = [iv for iv in intervals if iv.interval == "150/180 cycles"]
    dip_at = events[0].start_s
    for iv in short:
        holds = iv.end_s - iv.seconds <= dip_at < iv.end_s + 0.05
        assert iv.flagged == holds, iv
    assert sum(iv.flagged for iv in short) == 1
    ten_min = [iv for iv in intervals if iv.interval == "10 min"]
    assert len(ten_min) == 1 and ten_min[0].flagged
    ten_s = [iv for iv in intervals if iv.interval == "10 s"]
    assert [(iv.end_s - TICK, iv.flagged) for iv in ten_s] == [(-10.0, False), (0.0, True)]


def test_interruption_across_the_tick_flags_both_sides() -> None:
    """An interruption from 1 s before to 1 s after a 10-minute tick: one event; the
    10-minute value ending at the tick and the 150/180-cycle values on both sides flagged."""
    T = 0.02
    start = 6.0 + 0.75 * T
    events, intervals = run_scenario(
        {"sags": [{"start_s": start, "duration_s": 2.0, "retained": 0.0}]}, 14, TICK - 7.0)
    assert [e.kind for e in events] == ["interruption"]
    assert events[0].start_s < TICK < events[0].start_s + events[0].duration_s
    ten_min = [iv for iv in intervals if iv.interval == "10 min"]
    assert len(ten_min) == 1 and ten_min[0].end_s == TICK and ten_min[0].flagged
    short = [iv for iv in intervals if iv.interval == "150/180 cycles"]
    at_tick = [k for k, iv in enumerate(short) if TICK <= iv.end_s < TICK + T / 2]
    assert len(at_tick) == 1
    k = at_tick[0]
    assert short[k].seconds < 3.0  # ended early by the tick
    assert short[k].flagged and short[k + 1].flagged  # both sides of the tick
    assert not short[k - 1].flagged and not short[-1].flagged


def test_two_hour_value_is_the_rms_of_its_ten_minute_values() -> None:
    from pm4324.metering.pq.monitor import two_hours
    from pm4324.metering.pq.stream import Interval

    tens = [Interval("10 min", 1, TICK - 600 * k, (v, v, v), 1.0, 0.5, 0.0, k == 3, 600.0)
            for k, v in enumerate((230.0, 232.0, 228.0, 240.0))]
    iv = two_hours(tens)
    assert iv.v_rms[0] == pytest.approx(np.sqrt(np.mean(np.square([230, 232, 228, 240]))))
    assert iv.flagged and iv.seconds == 2400.0 and iv.interval == "2 h"
