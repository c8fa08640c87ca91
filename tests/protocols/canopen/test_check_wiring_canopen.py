"""`pm4324 check-wiring --canopen`: a PM-4324-CPS on a (virtual) CAN bus, a CT reversed by a
fault, found from the values read over SDO."""

from __future__ import annotations

from dataclasses import replace

from pm4324.cli.cli import main
from pm4324.config.settings import CanopenSettings, Settings
from pm4324.device.meter import Meter
from pm4324.protocols.canopen import CanopenServer
from pm4324.sources.scenario_parse import parse_scenario
from pm4324.sources.simulator import SimulatorSource


def test_check_wiring_over_canopen(channel, capsys):
    settings = replace(Settings(), canopen=CanopenSettings(node_id=9, interface="virtual",
                                                           channel=channel))
    scenario = parse_scenario({"loads": [{"cts": [4, 5, 6], "current_a": 30.0, "pf": 0.95}],
                               "faults": [{"kind": "reversed_ct", "target": "ct6"}]})
    meter = Meter(settings, SimulatorSource(scenario, settings), start_time=0.0)
    with CanopenServer(meter, settings):
        for _ in range(2):
            meter.step()
        code = main(["check-wiring", "--canopen", f"virtual:{channel}", "--node", "9",
                     "--seconds", "1"])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "CT6 reversed (P -6.55 kW at PF 0.95 as wired)" in out
    assert "CT4 ok (P 6.55 kW at PF 0.95 lagging on phase a)" in out
