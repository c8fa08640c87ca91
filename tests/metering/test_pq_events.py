"""Voltage events (IEC 61000-4-30 class S): Urms(1/2), dips, swells, interruptions, RVCs.

Truth is closed form. The signals here are sines whose amplitude steps at zero crossings, so
every Urms(1/2) window (one cycle, refreshed each half cycle) holds whole half cycles at known
levels: a window half in a step to r reads U * sqrt((r^2 + 1) / 2), a window wholly in it U * r.
The first value beyond a threshold, and so each event's start, duration and residual, follow
exactly from the threshold rules. The cycle tracker's filter moves the boundaries near an
amplitude step by a few samples (< 2 % of a cycle), hence the time tolerance; residuals and
maxima come from windows wholly inside the event and are exact.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from pm4324.config.pq_settings import PqSettings
from pm4324.config.settings import Settings, Wiring
from pm4324.metering.engine import Engine
from pm4324.metering.pq.monitor import PqMonitor

from .pq_helpers import FS, run_scenario, settings_for

U = 230.0
TICK = 1_800_000_000.0  # a 10-minute tick (multiple of 600 s)


def envelope_signal(f: float, seconds: float, steps: list[tuple[float, float, str, float]]
                    ) -> np.ndarray:
    """(6, n) phase voltages of both mains: 230 V sines (rising zero crossing of va at
    t = 0), main 1's phases scaled by r from t_a to t_b for each (t_a, t_b, phases, r)."""
    t = np.arange(int(seconds * FS)) / FS
    v = np.empty((6, t.size))
    for p in range(3):
        v[p] = v[p + 3] = math.sqrt(2) * U * np.sin(2 * math.pi * f * t - 2 * math.pi * p / 3)
    for t_a, t_b, phases, r in steps:
        span = (t >= t_a) & (t < t_b)
        for ph in phases:
            v["abc".index(ph), span] *= r
    return v


def run(settings: Settings, v: np.ndarray, start_time: float = 0.0,
        pq: PqSettings | None = None) -> list:
    engine = Engine(settings)
    monitor = PqMonitor(settings, pq or PqSettings(), start_time)
    engine.pq_hook = monitor.add
    currents = np.zeros((24, v.shape[1]))
    block = int(FS)
    for start in range(0, v.shape[1], block):
        engine.step(v[:, start : start + block], currents[:, start : start + block], start)
    return monitor.take_events()


def only(events: list, kind: str):
    found = [e for e in events if e.kind == kind]
    assert len(found) == 1, events
    return found[0]


def assert_event(e, start: float, duration: float, extreme_v: float, channels: str,
                 f: float) -> None:
    tol = 0.02 / f  # 2 % of a cycle: the tracker's boundaries near an amplitude step
    assert e.start_s == pytest.approx(start, abs=tol)
    assert e.duration_s == pytest.approx(duration, abs=tol)
    assert e.extreme_v == pytest.approx(extreme_v, rel=1e-6, abs=1e-6)
    assert e.channels == channels
    assert e.main == 1


@pytest.mark.parametrize("f", [50.0, 60.0])
def test_deep_dip_on_all_phases(f: float) -> None:
    """r = 0.3: the half-in window (0.74 U) is already below 90 % and still below 92 % at
    the end, so start = t_a + T/2 and duration = D + T/2."""
    half = 0.5 / f
    events = run(settings_for(f), envelope_signal(f, 3, [(1.0, 1.1, "abc", 0.3)]))
    assert [e.kind for e in events] == ["dip"]
    assert_event(events[0], 1.0 + half, 0.1 + half, 0.3 * U, "abc", f)
    assert events[0].extreme_pct == pytest.approx(30.0)


@pytest.mark.parametrize("f", [50.0, 60.0])
def test_shallow_dip_on_one_phase_only(f: float) -> None:
    """r = 0.85 on phase a: the half-in window (0.928 U) is above 90 % and also above 92 %,
    so start = t_a + T and duration = D - T/2; phases b and c never cross."""
    half = 0.5 / f
    events = run(settings_for(f), envelope_signal(f, 3, [(1.0, 1.25, "a", 0.85)]))
    assert [e.kind for e in events] == ["dip"]
    assert_event(events[0], 1.0 + 2 * half, 0.25 - half, 0.85 * U, "a", f)


@pytest.mark.parametrize("f", [50.0, 60.0])
def test_swell_on_two_phases(f: float) -> None:
    """r = 1.25 on b and c: half-in 1.132 U is above 110 % and above 108 %."""
    half = 0.5 / f
    events = run(settings_for(f), envelope_signal(f, 3, [(1.5, 1.6, "bc", 1.25)]))
    assert [e.kind for e in events] == ["swell"]
    assert_event(events[0], 1.5 + half, 0.1 + half, 1.25 * U, "bc", f)


@pytest.mark.parametrize("f", [50.0, 60.0])
def test_interruption_across_a_ten_minute_boundary(f: float) -> None:
    """All phases to 0 for 0.5 s, the 10-minute tick in the middle: one interruption, whole
    (start = t_a + T, ends at the first half-in window (0.71 U >= 12 %): duration D - T/2);
    the dip around it is not reported separately."""
    half = 0.5 / f
    start_time = TICK - 1.25  # sample 0; the tick falls at t = 1.25 s
    events = run(settings_for(f), envelope_signal(f, 3, [(1.0, 1.5, "abc", 0.0)]), start_time)
    assert [e.kind for e in events] == ["interruption"]
    e = events[0]
    assert_event(e, start_time + 1.0 + 2 * half, 0.5 - half, 0.0, "abc", f)
    assert e.start_s < TICK < e.start_s + e.duration_s


def test_thresholds_are_configurable() -> None:
    """The same 0.85 dip is no event with an 80 % dip threshold."""
    v = envelope_signal(50.0, 3, [(1.0, 1.25, "a", 0.85)])
    assert run(settings_for(50.0), v, pq=PqSettings(dip_pct=80.0)) == []


@pytest.mark.parametrize("f", [50.0, 60.0])
def test_rapid_voltage_change(f: float) -> None:
    """A lasting step to 93 % (outside 5 % of the mean, not a dip): one RVC starting with the
    first window wholly after the step. The mean before is that of the preceding second's
    values (100 at 50 Hz, 120 at 60 Hz), the last of which is the half-in window."""
    events = run(settings_for(f), envelope_signal(f, 4, [(2.0, 9.0, "abc", 0.93)]))
    e = only(events, "rvc")
    assert len(events) == 1
    n = 100 if f == 50 else 120
    before = U * (n - 1 + math.sqrt((1 + 0.93**2) / 2)) / n
    assert e.start_s == pytest.approx(2.0 + 1.0 / f, abs=0.02 / f)
    assert e.extreme_v == pytest.approx(before - 0.93 * U, rel=1e-6)
    assert e.delta_ss_v == pytest.approx(0.93 * U - before, rel=1e-6)


def test_dip_is_not_also_an_rvc() -> None:
    events = run(settings_for(50.0), envelope_signal(50.0, 4, [(2.0, 2.2, "abc", 0.5)]))
    assert [e.kind for e in events] == ["dip"]


def test_line_to_line_events_in_three_wire_mains() -> None:
    """Every Meter 3P3W: events use Uab, Ubc, Uca against Udin = 400 V; phase a at 0.5
    puts Uab and Uca at |1/2 - e^{-j120}| / sqrt 3 = 0.661 of nominal."""
    s = settings_for(50.0)
    for m in range(1, 9):
        s = s.with_meter(m, wiring=Wiring.W3P3W_3CT)
    events = run(s, envelope_signal(50.0, 3, [(1.0, 1.2, "a", 0.5)]))
    e = only(events, "dip")
    ratio = abs(0.5 - complex(math.cos(-2 * math.pi / 3), math.sin(-2 * math.pi / 3)))
    assert e.extreme_v == pytest.approx(ratio * U, rel=1e-6)
    assert e.extreme_pct == pytest.approx(100 * ratio / math.sqrt(3), rel=1e-6)
    assert e.channels == "ab,ca"


# -- simulator scenarios ---------------------------------------------------------------------


@pytest.mark.parametrize("f", [50.0, 60.0])
def test_simulator_scenario_with_known_events(f: float) -> None:
    """The simulator's va is a cosine: rising zero crossings at t = (k + 3/4) T."""
    T = 1.0 / f
    t1, t2, t3 = 1.0 + 0.75 * T, 2.0 + 0.75 * T, 3.0 + 0.75 * T
    sags = [{"start_s": t1, "duration_s": 0.1, "retained": 0.4, "phases": "b"},
            {"start_s": t2, "duration_s": 0.2, "retained": 1.2},
            {"start_s": t3, "duration_s": 1.0, "retained": 0.0}]
    start_time = TICK - 3.5
    events, _ = run_scenario({"sags": sags}, 6, start_time, f)
    assert [e.kind for e in events] == ["dip", "swell", "interruption"]
    dip, swell, intr = events
    assert_event(dip, start_time + t1 + T / 2, 0.1 + T / 2, 0.4 * U, "b", f)
    assert_event(swell, start_time + t2 + T / 2, 0.2 + T / 2, 1.2 * U, "abc", f)
    assert_event(intr, start_time + t3 + T, 1.0 - T / 2, 0.0, "abc", f)
    assert intr.start_s < TICK < intr.start_s + intr.duration_s
