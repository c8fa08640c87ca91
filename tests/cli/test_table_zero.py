"""The table never prints "-0.000": values that round to zero show unsigned."""

from __future__ import annotations

from pm4324.cli.display import render_table


def test_negative_values_rounding_to_zero_print_unsigned():
    ct = {"ct": 1, "v_rms": 230.0, "i_rms": 0.00004, "p_w": -0.4, "q_var": -0.0001,
          "s_va": 0.0, "pf": -0.0004, "lead_lag": "lead", "thd_v_pct": -0.01,
          "thd_i_pct": 0.0, "kwh_import": 0.0, "kwh_export": -0.00001, "flags": []}
    meter = {**ct, "meter": 1, "wiring": "3P4W-3CT"}
    table = render_table({"model": "PM-4324", "seq": 0, "time": 0.0, "relays": [False, False],
                          "mains": [], "cts": [ct], "meters": [meter]})
    assert "-0.0" not in table
    assert " 0.000C" in table  # PF keeps its lead/lag mark
    # a real negative value keeps its sign
    ct["p_w"] = -1500.0
    assert "-1.500" in render_table({"cts": [ct], "meters": [meter]})
