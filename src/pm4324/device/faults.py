"""Device faults of a running meter, from its fault book: energy counters near rollover,
a power cycle (device/device_faults.py, a mixin of the Meter).

The simulator applies measurement faults to the samples; the faults that concern the device
itself are applied here when the book reports their start (in the meter's step thread,
before that second's energy is added).
"""

from __future__ import annotations

from pm4324.device.meter import Meter
from pm4324.sources.faults import Fault, FaultBook

# The uint32 energy registers count 0.01 kWh: they roll over to 0 at 2^32 counts.
ROLLOVER_KWH = 2**32 / 100


def apply_device_faults(meter: Meter, book: FaultBook) -> None:
    """Let ``meter`` follow the device faults that start in ``book``."""

    def heard(event: str, fault: Fault, t: float) -> None:
        if event == "start" and fault.kind == "energy_rollover":
            wh = (ROLLOVER_KWH - fault.params["below_kwh"]) * 1000.0
            index = fault.target.index if fault.target.kind == "meter" else None
            meter.preset_energy(index, wh, f"fault {fault.id}: energy_rollover")
        elif event == "start" and fault.kind == "power_cycle":
            meter.schedule_power_cycle(fault.start_s, fault.end_s)

    book.add_listener(heard)
