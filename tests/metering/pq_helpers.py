"""The power-quality tests' shared setup: settings at a nominal frequency, and a simulated
scenario run through the engine into a ``PqMonitor``."""

from __future__ import annotations

from pm4324.config.pq_settings import PqSettings
from pm4324.config.settings import Settings
from pm4324.metering.engine import Engine
from pm4324.metering.pq.monitor import PqMonitor
from pm4324.sources.scenario_parse import parse_scenario
from pm4324.sources.simulator import SimulatorSource

FS = 12800.0


def settings_for(f: float) -> Settings:
    return Settings().with_main(1, nominal_frequency_hz=f).with_main(2, nominal_frequency_hz=f)


def run_scenario(main1: dict, seconds: int, start_time: float, f: float = 50.0):
    """``seconds`` of the simulator with main 1 as ``main1`` says (over a clean sine at ``f``):
    the monitor's events, and its intervals of main 1."""
    settings = settings_for(f)
    sc = parse_scenario({"mains": {"1": {"frequency_hz": f, **main1},
                                   "2": {"frequency_hz": f}}})
    source = SimulatorSource(sc, settings)
    engine = Engine(settings)
    monitor = PqMonitor(settings, PqSettings(), start_time)
    engine.pq_hook = monitor.add
    for _ in range(seconds):
        b = source.read(int(FS))
        engine.step(b.voltages, b.currents, b.start)
    events, intervals = monitor.take()
    return events, [iv for iv in intervals if iv.main == 1]
