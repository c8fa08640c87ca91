"""Wiring modes as linear algebra: each CT is one measuring element (voltage, current).

An element's voltage is a fixed linear combination of its main's three phase inputs
(va, vb, vc measured against the meter's N terminal). Every wiring mode of metering-standards.md
§3.4 is then one coefficient row per CT, and all metering is a broadcast over elements:

===========  ==================  ======================================================
mode         element voltage      notes
===========  ==================  ======================================================
3P4W-3CT     va, vb, vc           three-element, phase-to-neutral
3P3W-3CT     va', vb', vc'        virtual neutral: va' = va - (va+vb+vc)/3 = (vab-vca)/3
3P3W-2CT     vab, -, vcb          Aron / two-wattmeter; CT b unused
1P3W-2CT     va, vb, -            split phase (two legs against N); CT c unused
1P2W-1CT     chosen phase each    three independent single-phase circuits
===========  ==================  ======================================================

Differences of inputs cancel any common-mode offset of the N terminal, so the 3-wire modes
are exact whether the N terminal is connected or floating.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pm4324.config.settings import PHASES, MeterSettings, Wiring

_THIRD = 1.0 / 3.0
_ROWS: dict[Wiring, tuple[tuple[float, float, float], ...]] = {
    Wiring.W3P4W_3CT: ((1, 0, 0), (0, 1, 0), (0, 0, 1)),
    Wiring.W3P3W_3CT: (
        (2 * _THIRD, -_THIRD, -_THIRD),
        (-_THIRD, 2 * _THIRD, -_THIRD),
        (-_THIRD, -_THIRD, 2 * _THIRD),
    ),
    Wiring.W3P3W_2CT: ((1, -1, 0), (0, 0, 0), (0, -1, 1)),
    Wiring.W1P3W_2CT: ((1, 0, 0), (0, 1, 0), (0, 0, 0)),
}
# Phasors of a balanced positive-sequence set, to size each element's nominal voltage.
_BALANCED = np.exp(-2j * np.pi / 3 * np.arange(3))


@dataclass(frozen=True)
class MeterWiring:
    """The elements of one Meter: (3, 3) voltage coefficients and which CTs count."""

    wiring: Wiring
    coefficients: np.ndarray  # rows: CT a, b, c; columns: va, vb, vc of the Meter's main
    used: np.ndarray  # (3,) bool

    @property
    def nominal_factor(self) -> np.ndarray:
        """Element voltage / phase-to-neutral voltage for a balanced supply (1, sqrt 3, 0)."""
        return np.abs(self.coefficients @ _BALANCED)


def meter_wiring(meter: MeterSettings) -> MeterWiring:
    """The Meter's elements; on 3P4W-3CT and 1P2W-1CT each CT against its circuit phase
    (``circuit_phases``, ``[cts.N] phase``)."""
    if meter.wiring is Wiring.W1P2W_1CT or (meter.wiring is Wiring.W3P4W_3CT
                                            and tuple(meter.circuit_phases) != PHASES):
        rows = np.zeros((3, 3))
        for k, phase in enumerate(meter.circuit_phases):
            rows[k, PHASES.index(phase)] = 1.0
    else:
        rows = np.array(_ROWS[meter.wiring], dtype=np.float64)
    used = np.array(meter.wiring.used_cts)
    return MeterWiring(meter.wiring, rows, used)


def current_signs(meters: tuple[MeterSettings, ...]) -> np.ndarray:
    """(3 * Meters,) -1 for each CT set ``reverse`` (its current is inverted), else 1."""
    return np.array([-1.0 if r else 1.0 for m in meters for r in m.ct_reverse])
