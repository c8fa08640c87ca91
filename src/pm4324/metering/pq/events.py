"""Voltage events of a main (dips, swells, interruptions, RVCs): thresholds and records.

The detection itself is compiled (``kernels.scan_events``); ``stream.MainPq`` runs it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pm4324.config.pq_settings import PqSettings

KINDS = ("dip", "swell", "interruption", "rvc")


@dataclass(frozen=True)
class VoltageEvent:
    """One event of a main. Times are seconds (sample clock, or epoch once placed)."""

    kind: str  # dip | swell | interruption | rvc
    main: int  # 1-based
    channels: str  # phases that crossed the threshold: "a", "bc", "abc"; L-L: "ab", "ab,ca"
    start_s: float  # time stamp of the first Urms(1/2) value beyond the threshold
    duration_s: float
    extreme_v: float  # residual (dip, interruption), maximum (swell), max deviation (rvc)
    extreme_pct: float  # the same in % of Udin
    delta_ss_v: float = 0.0  # rvc: steady-state change (mean after - mean before)

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class EventLimits:
    """Udin and the kernel's threshold vector for one main."""

    udin: float
    line_to_line: bool
    limits: np.ndarray  # (8,) volts, kernels.DIP_ON .. RVC_STEADY

    @classmethod
    def of(cls, pq: PqSettings, nominal_ln: float, line_to_line: bool) -> EventLimits:
        udin = pq.declared_voltage_v or nominal_ln * (math.sqrt(3) if line_to_line else 1.0)
        h = pq.hysteresis_pct
        pct = np.array([pq.dip_pct, pq.dip_pct + h, pq.swell_pct, pq.swell_pct - h,
                        pq.interruption_pct, pq.interruption_pct + h, pq.rvc_pct,
                        pq.rvc_pct - pq.rvc_hysteresis_pct])
        return cls(udin, line_to_line, pct / 100 * udin)


def to_events(rows: np.ndarray, main: int, limits: EventLimits, fs: float,
              t0: float) -> list[VoltageEvent]:
    """Rows of ``kernels.scan_events`` (absolute sample positions) as events of 0-based
    ``main``, with positions turned into t0 + position / fs."""
    names = ("ab", "bc", "ca") if limits.line_to_line else ("a", "b", "c")
    sep = "," if limits.line_to_line else ""
    out = []
    for kind, start, end, extreme, mask, delta_ss, _ in rows.tolist():
        chans = sep.join(nm for r, nm in enumerate(names) if int(mask) >> r & 1)
        out.append(VoltageEvent(KINDS[int(kind)], main + 1, chans, t0 + start / fs,
                                (end - start) / fs, extreme, 100 * extreme / limits.udin,
                                delta_ss))
    return out
