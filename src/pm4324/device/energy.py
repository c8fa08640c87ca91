"""Energy registers that do not drift.

A float32 register at 10 MWh cannot add 0.28 Wh at all, and a float64 one drifts by 2e-4 Wh
after 1e6 additions (metering-standards.md §5.5). Each register here is an int64 count of
micro-units (µWh, µvarh, µVAh: int64 holds 9.2e12 kWh) plus a float64 remainder below one
micro-unit that is carried into the next addition, so a year at 1 kW is exact to < 1 µWh.
"""

from __future__ import annotations

import numpy as np

from pm4324.snapshot import ENERGY_KINDS, Energies

MICRO = 1_000_000


class EnergyRegisters:
    """(rows, 7) registers: wh_import, wh_export, varh_q1..q4, vah."""

    def __init__(self, rows: int):
        self.micro = np.zeros((rows, len(ENERGY_KINDS)), dtype=np.int64)
        self.remainder = np.zeros((rows, len(ENERGY_KINDS)))

    def add(self, increments_wh: np.ndarray) -> None:
        """Add non-negative increments (same shape, in Wh/varh/VAh)."""
        total = self.remainder + np.asarray(increments_wh) * MICRO
        whole = np.floor(total)
        self.micro += whole.astype(np.int64)
        self.remainder = total - whole

    def reset(self, rows: np.ndarray | slice | None = None) -> None:
        sel = slice(None) if rows is None else rows
        self.micro[sel] = 0
        self.remainder[sel] = 0.0

    def preset(self, rows: np.ndarray | slice, wh: float) -> None:
        """Set every register of ``rows`` to ``wh`` (a fault: counters near their rollover)."""
        self.micro[rows] = round(wh * MICRO)
        self.remainder[rows] = 0.0

    def values(self) -> np.ndarray:
        """Register values in Wh (float64; exact to the µWh)."""
        return (self.micro + self.remainder) / MICRO

    def energies(self) -> Energies:
        v = self.values()
        return Energies(*(v[:, k] for k in range(len(ENERGY_KINDS))))
