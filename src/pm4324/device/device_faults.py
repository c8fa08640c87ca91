"""Device faults of the meter (a mixin of ``device.meter.Meter``, which owns the state these
methods use under its lock): energy counters preset near their rollover, and a power cycle.

``power_cycle``: the meter is switched off for a while and powers up again.

While off, the meter measures and publishes nothing: the samples of those seconds are
dropped, no energy is counted, listeners (console, history, MQTT) hear nothing, the relays
drop out (open), and what is served is a power-up snapshot (NaN values, status ``no_data``).
``power_listeners`` hear False/True (app.py takes the protocol servers offline meanwhile).
At power-up: a fresh metering engine (and power-quality aggregation: a real meter loses
what it had not saved), the energy registers as they were at power-down (committed then),
the relays per their power-up rule (alarm mode: the rules; ``power_up = "last"``: as before
the power cut; else open or closed), and a ``power_up`` event. Off periods are whole
seconds (the meter's blocks): from the start of second ``start_s`` to ``end_s``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

from pm4324.device.powerup import no_data_snapshot
from pm4324.snapshot import Status

OFF = object()  # what ``Meter._measure`` returns for a second the meter is off


class DeviceFaults:
    """Presetting energy, switching off and on, for ``Meter`` (see the module docstring)."""

    _lock: threading.RLock
    _relays: tuple[bool, bool]
    _off_period: tuple[float, float] | None = None  # scenario seconds [from, until)
    _powered = True
    _relays_at_cut: tuple[bool, bool] = (False, False)
    _off_seconds = 0  # seconds spent off: the run loop paces by them too
    _event: Callable[[str, str], None]
    _switch: Callable[..., None]
    _save_now: Callable[[], bool]
    _request_commit: Callable[[], Any]

    def preset_energy(self, meter: int | None, wh: float, why: str) -> Any:
        """Set every energy counter of one Meter (and its CTs), or of all, to ``wh``: the
        ``energy_rollover`` fault. Logged, and committed at once."""
        m: Any = self
        with self._lock:
            rows = slice(None) if meter is None else slice(3 * (meter - 1), 3 * meter)
            m.ct_registers.preset(rows, wh)
            m.meter_registers.preset(slice(None) if meter is None else
                                     slice(meter - 1, meter), wh)
            self._event("energy_preset", f"{'all Meters' if meter is None else f'Meter {meter}'}"
                        f" set to {wh / 1000:,.2f} kWh ({why})")
            return self._request_commit()

    def schedule_power_cycle(self, start_s: float, end_s: float) -> None:
        """Be off from second ``start_s`` until ``end_s`` (scenario seconds)."""
        self._off_period = (start_s, end_s)

    def add_power_listener(self, callback: Callable[[bool], None]) -> None:
        if "power_listeners" not in self.__dict__:
            self.power_listeners: list[Callable[[bool], None]] = []
        self.power_listeners.append(callback)

    def _powered_for(self, start_sample: int) -> bool:
        """Whether the meter is on for the block starting at ``start_sample`` (switching
        off or on first when that changes)."""
        if self._off_period is None and self._powered:
            return True
        t0 = start_sample / self._settings.sample_rate_hz  # type: ignore[attr-defined]
        frm, until = self._off_period or (math.inf, math.inf)
        off = frm - 1e-9 <= t0 < until - 1e-9
        if off and self._powered:
            self._power_down(until - frm)
        elif not off and not self._powered:
            self._power_up(until - frm)
        return not off

    def _power_down(self, off_s: float) -> None:
        m: Any = self
        with self._lock:
            self._event("power_down", f"power cut for {off_s:g} s (power_cycle fault)")
            self._relays_at_cut = self._relays
            for k in range(2):
                self._switch(k, False, "power off")
            m._snapshot = no_data_snapshot(
                m._settings, m.ct_registers, m.meter_registers, self._relays,
                m.alarms.status(), m._last_end, int(Status.NO_DATA))
            self._powered = False
        self._save_now()
        self._tell(False)

    def _power_up(self, off_s: float) -> None:
        from pm4324.device.pq import DevicePq
        from pm4324.metering.engine import Engine

        m: Any = self
        with self._lock:
            m.engine = Engine(m._settings, m.engine.harmonic_angles)
            m.pq = DevicePq(m.engine, m._settings, m.start_time)
            for k, relay in enumerate(m._settings.relays.relays):
                if relay.mode == "alarm":
                    closed, why = m.alarms.demand(k + 1, relay.combine), "power-up, alarm mode"
                elif relay.power_up == "last":
                    closed, why = self._relays_at_cut[k], "power-up, last state"
                else:
                    closed, why = relay.power_up == "closed", f"power-up {relay.power_up}"
                self._switch(k, closed, why, always=True)
            self._event("power_up", f"after a power cut of {off_s:g} s (power_cycle fault): "
                        "energy kept, relays per their power-up rule")
            self._powered, self._off_period = True, None
            self._request_commit()
        self._tell(True)

    def _tell(self, on: bool) -> None:
        for callback in self.__dict__.get("power_listeners", ()):
            callback(on)
