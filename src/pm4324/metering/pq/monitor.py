"""The power-quality monitor of a meter: one ``MainEvents`` per main, fed by the engine.

``Engine.pq_hook`` calls ``PqMonitor.add`` once per main and step with the main's buffer and
the step's cycle boundaries; ``take_events`` hands over the events that ended since the last
call, in clock time (``start_time`` = the time of sample 0, as the device keeps it).
"""

from __future__ import annotations

from pm4324.config.pq_settings import PqSettings
from pm4324.config.settings import Settings, Wiring
from pm4324.metering.pq.events import EventLimits, MainEvents, VoltageEvent

THREE_WIRE = (Wiring.W3P3W_3CT, Wiring.W3P3W_2CT)


def line_to_line(settings: Settings, pq: PqSettings, main: int) -> bool:
    """Whether a main's events use L-L voltages: "ll", or "auto" with only 3-wire Meters."""
    if pq.event_voltage != "auto":
        return pq.event_voltage == "ll"
    wirings = [m.wiring for k, m in enumerate(settings.meters)
               if settings.main_of_meter(k + 1) == main]
    return all(w in THREE_WIRE for w in wirings)


class PqMonitor:
    """Voltage events of every main of one meter."""

    def __init__(self, settings: Settings, pq: PqSettings, start_time: float = 0.0):
        self.start_time = start_time
        self.fs = settings.sample_rate_hz
        self.mains = [MainEvents(m, *self._limits(settings, pq, m),
                                 settings.mains[m].nominal_frequency_hz)
                      for m in range(settings.n_mains)]
        self._ended: list[VoltageEvent] = []

    @staticmethod
    def _limits(settings: Settings, pq: PqSettings, m: int) -> tuple[EventLimits, float]:
        ms = settings.mains[m]
        return EventLimits.of(pq, ms.nominal_voltage_v, line_to_line(settings, pq, m)), ms.pt_ratio

    def configure(self, settings: Settings, pq: PqSettings) -> None:
        for m, me in enumerate(self.mains):
            me.configure(*self._limits(settings, pq, m))

    def add(self, main: int, store, bounds, offset: int) -> None:
        """The engine's hook: one main's new cycles of a step."""
        me = self.mains[main]
        rows = me.add(store, bounds, offset)
        if rows.shape[0]:
            self._ended.extend(me.to_events(rows, self.fs, self.start_time))

    def take_events(self) -> list[VoltageEvent]:
        """Events that ended since the last call, oldest first."""
        out, self._ended = self._ended, []
        return out
