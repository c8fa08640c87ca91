"""Alarm rules as pure state machines: thresholds, hysteresis, delays, latching, invalid input.

Inputs are built value by value, so each expected trip second follows from the rule's
definition in device/alarms.py, not from the code under test.
"""

from __future__ import annotations

import math
import tomllib

import numpy as np
import pytest

from pm4324.config.alarm_settings import AlarmRule
from pm4324.config.settings import N_CTS, N_METERS, SettingsError
from pm4324.config.settings_parse import parse_settings
from pm4324.device.alarms import AlarmEngine
from pm4324.snapshot import CtValues, Flag, MainValues, MeterValues


def values(ct_i: float = 0.0, flags: int = 0, main_v=(230.0, 230.0, 230.0), main_flags: int = 0,
           meter_kw: float = 0.0):
    """CT5 current ``ct_i`` A (flags ``flags``), main 1 phase voltages, Meter 2 power (W)."""
    ct = {f: np.zeros(N_CTS) for f in ("v_rms", "i_rms", "p_w", "q_var", "s_va", "pf",
                                       "thd_v_pct", "thd_i_pct", "frequency_hz")}
    ct["i_rms"][4] = ct_i
    ct_flags = np.zeros(N_CTS, dtype=int)
    ct_flags[4] = flags
    meter = {f: np.zeros(N_METERS) for f in ("v_rms", "i_rms", "p_w", "q_var", "s_va",
                                             "s_arith_va", "s_vector_va", "pf", "frequency_hz")}
    meter["p_w"][1] = meter_kw * 1000
    main = MainValues(frequency_hz=np.array([50.0, 50.0]),
                      v_ln=np.array([main_v, (230.0, 230.0, 230.0)]),
                      v_ll=np.full((2, 3), 400.0), thd_v_pct=np.zeros((2, 3)),
                      flags=np.array([main_flags, 0]))
    return (CtValues(**ct, v_harmonics=np.zeros((N_CTS, 51)), i_harmonics=np.zeros((N_CTS, 51)),
                     flags=ct_flags),
            MeterValues(**meter, flags=np.zeros(N_METERS, dtype=int)), main)


OVER_CURRENT = AlarmRule(relay=1, quantity="i", target_kind="ct", target_index=5,
                         comparison="above", threshold=80.0, hysteresis=5.0)


def drive(engine: AlarmEngine, currents, **kw) -> list[bool]:
    """Feed one CT5 current per second; the rule's output after each second."""
    out = []
    for i in currents:
        engine.update(*values(i, **kw))
        out.append(engine.status().active[0])
    return out


def test_threshold_is_strict_and_hysteresis_holds_the_alarm():
    e = AlarmEngine((OVER_CURRENT,))
    #          at limit  past  inside band      below 80 - 5
    got = drive(e, [80.0, 80.1, 79.0, 75.01, 75.0, 90.0])
    assert got == [False, True, True, True, False, True]


def test_on_and_off_delays_count_seconds():
    rule = AlarmRule(**{**OVER_CURRENT.__dict__, "on_delay_s": 2, "off_delay_s": 3})
    e = AlarmEngine((rule,))
    # past the limit at s1, s2, s3 -> raised at s3 (on_delay 2 = two seconds after the first)
    got = drive(e, [0, 90, 90, 90, 90, 0, 0, 0, 0])
    assert got == [False, False, False, True, True, True, True, True, False]


def test_a_short_excursion_does_not_trip_and_restarts_the_delay():
    rule = AlarmRule(**{**OVER_CURRENT.__dict__, "on_delay_s": 2})
    e = AlarmEngine((rule,))
    assert drive(e, [90, 90, 0, 90, 90, 90]) == [False, False, False, False, False, True]


def test_below_and_outside_band_on_the_worst_phase():
    under = AlarmRule(relay=2, quantity="v", target_kind="main", target_index=1,
                      comparison="below", threshold=207.0, hysteresis=3.0)
    band = AlarmRule(relay=2, quantity="v", target_kind="main", target_index=1,
                     comparison="outside", band=(207.0, 253.0), hysteresis=3.0)
    e = AlarmEngine((under, band))
    seen = []
    for phases in [(230, 230, 230), (230, 206.9, 230), (230, 209, 230), (230, 210, 230),
                   (230, 230, 253.5), (230, 230, 250.0)]:
        e.update(*values(main_v=phases))
        seen.append(e.status().active)
    assert seen == [(False, False), (True, True), (True, True), (False, False),
                    (False, True), (False, False)]
    assert e.status().values[1] == 250.0  # the phase furthest out of the band


def test_invalid_input_holds_the_last_state_and_restarts_delays():
    rule = AlarmRule(**{**OVER_CURRENT.__dict__, "on_delay_s": 1})
    e = AlarmEngine((rule,))
    assert drive(e, [90]) == [False]
    assert drive(e, [90], flags=int(Flag.NO_DATA)) == [False]  # not counted
    assert drive(e, [90, 90]) == [False, True]
    assert drive(e, [math.nan, 0, 0], flags=0)[:1] == [True]  # NaN holds it on
    e2 = AlarmEngine((OVER_CURRENT,))
    drive(e2, [90])
    assert drive(e2, [0], flags=int(Flag.INVALID_SAMPLES)) == [True]
    assert drive(e2, [0], flags=int(Flag.UNUSED)) == [True]
    assert drive(e2, [0]) == [False]


@pytest.mark.parametrize(("quantity", "flag", "valid"), [
    ("i", Flag.VOLTAGE_ABSENT, True),  # a current is measured without voltage
    ("i", Flag.CLIPPING, True),  # an over-range current is what over-current is for
    ("pf", Flag.VOLTAGE_ABSENT, False),
    ("hz", Flag.UNSYNCHRONISED, False),
    ("v", Flag.VOLTAGE_ABSENT, True),  # 0 V is what an under-voltage rule is for
])
def test_which_flags_make_a_quantity_invalid(quantity, flag, valid):
    rule = AlarmRule(relay=1, quantity=quantity, target_kind="ct", target_index=5,
                     comparison="below", threshold=1e9)  # always past the limit when valid
    e = AlarmEngine((rule,))
    e.update(*values(1.0, flags=int(flag)))
    assert e.status().active[0] is valid


def test_latch_holds_until_acknowledged_and_cleared():
    rule = AlarmRule(**{**OVER_CURRENT.__dict__, "latch": True})
    e = AlarmEngine((rule,))
    changes = [c.kind for c in e.update(*values(90))]
    assert changes == ["raised"]
    assert [c.kind for c in e.update(*values(0))] == ["held"]
    assert e.status().active == (True,) and e.status().unacked == (True,)
    assert [c.kind for c in e.acknowledge(2)] == []  # another relay's rules only
    assert [c.kind for c in e.acknowledge(None)] == ["acknowledged", "cleared"]
    assert e.status().active == (False,)
    # acknowledged while still past the limit: clears by itself once the current drops
    e.update(*values(90))
    assert [c.kind for c in e.acknowledge(1)] == ["acknowledged"]
    assert e.status().active == (True,)
    assert [c.kind for c in e.update(*values(0))] == ["cleared"]


def test_latches_survive_a_restart_only_for_the_same_rule():
    rule = AlarmRule(**{**OVER_CURRENT.__dict__, "latch": True})
    e = AlarmEngine((rule,))
    e.update(*values(90))
    e.update(*values(0))
    saved = e.latched()
    assert saved == {1: rule.fingerprint()}
    assert AlarmEngine((rule,), saved).status().active == (True,)
    changed = AlarmRule(**{**rule.__dict__, "threshold": 100.0})
    assert AlarmEngine((changed,), saved).status().active == (False,)


def test_any_and_all_per_relay():
    other = AlarmRule(relay=1, quantity="kw", target_kind="meter", target_index=2,
                      comparison="above", threshold=10.0)
    free = AlarmRule()  # a free slot: never evaluated
    e = AlarmEngine((OVER_CURRENT, other, free))
    e.update(*values(90, meter_kw=5.0))
    assert e.demand(1, "any") and not e.demand(1, "all") and not e.demand(2, "any")
    e.update(*values(90, meter_kw=12.0))
    assert e.demand(1, "all")
    assert e.status().active == (True, True, False)


def test_changing_rules_keeps_unchanged_slots_only():
    e = AlarmEngine((OVER_CURRENT,))
    e.update(*values(90))
    assert e.configure((OVER_CURRENT,)) == [] and e.status().active == (True,)
    stricter = AlarmRule(**{**OVER_CURRENT.__dict__, "threshold": 95.0})
    assert [c.kind for c in e.configure((stricter,))] == ["cleared"]
    assert e.status().active == (False,)


ALARM_TOML = """
[relays.1]
mode = "alarm"
combine = "all"
[[alarms]]
relay = 1
quantity = "{quantity}"
target = "{target}"
comparison = "{comparison}"
{limit}
"""


@pytest.mark.parametrize(("quantity", "target", "comparison", "limit", "key", "fragment"), [
    ("i", "ct:25", "above", "threshold = 1", "alarms.1.target", "numbered 1 to 24"),
    ("thd_i", "meter:2", "above", "threshold = 1", "alarms.1.quantity", "a meter has"),
    ("v", "main:2", "below", "threshold = 1", None, None),  # PM-4324A: main 2 exists
    ("v", "main:1", "outside", "band = [253, 207]", "alarms.1.band", "low < high"),
    ("v", "main:1", "outside", "threshold = 3", "alarms.1.threshold", "uses band"),
    ("v", "main:1", "above", "band = [1, 2]", "alarms.1.band", "only to comparison"),
    ("v", "main:1", "outside", "band = [207, 253]\nhysteresis = 30",
     "alarms.1.hysteresis", "never clears"),
    ("i", "ct:1", "above", "threshold = 1\non_delay_s = 5000", "alarms.1.on_delay_s", "0 to 3600"),
])
def test_rule_validation_names_key_and_allowed(quantity, target, comparison, limit, key,
                                              fragment):
    text = ALARM_TOML.format(quantity=quantity, target=target, comparison=comparison,
                             limit=limit)
    if key is None:
        assert parse_settings(tomllib.loads(text), "my.toml").alarms[0].target == target
        return
    with pytest.raises(SettingsError) as info:
        parse_settings(tomllib.loads(text), "my.toml")
    assert info.value.key == key and fragment in str(info.value)
    assert str(info.value).startswith("my.toml: ")


def test_relay_settings_validation():
    with pytest.raises(SettingsError, match="relays.2.mode = 'auto'"):
        parse_settings({"relays": {"2": {"mode": "auto"}}}, "x.toml")
    with pytest.raises(SettingsError, match="gpio_lines"):
        parse_settings({"relays": {"driver": "gpio"}}, "x.toml")
    with pytest.raises(SettingsError, match="relays.3"):
        parse_settings({"relays": {"3": {"mode": "alarm"}}}, "x.toml")
