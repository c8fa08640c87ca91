"""Voltage events of one main from its cycles: dips, swells, interruptions, RVCs.

``MainEvents`` is the streaming state around the compiled kernels (``kernels``): feed it each
step's buffer and new cycle boundaries and it returns the events that ended, stamped in
absolute sample positions; ``VoltageEvent`` turns them into clock time. No I/O, no clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pm4324.config.pq_settings import PqSettings
from pm4324.metering.pq import kernels as K

KINDS = ("dip", "swell", "interruption", "rvc")
MAX_EVENTS = 64  # per main and step; hysteresis keeps real counts far below


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


class MainEvents:
    """Urms(1/2) and the event state machine of one main.

    ``limits``: from ``EventLimits.of``; ``pt``: the main's PT ratio (terminal -> primary);
    ``nominal_hz`` picks the RVC's one-second ring (100 or 120 half cycles). After ``add``,
    ``urms`` / ``stamps`` / ``flags`` hold the step's values (views, valid until the next call).
    """

    def __init__(self, main: int, limits: EventLimits, pt: float, nominal_hz: float):
        self.main, self.lim, self.pt = main, limits, pt
        self.carry = np.zeros(5)
        self.grid_at: float | None = None  # where the half-cycle grid has got to (absolute)
        self.state = np.zeros(K.STATE_SIZE)
        n_ring = 100 if nominal_hz == 50 else 120
        self.ring = np.zeros((3, n_ring))
        self.ring_t = np.zeros(n_ring)
        self.events = np.zeros((MAX_EVENTS, K.EVENT_COLUMNS))
        self._urms = np.empty((3, 0))
        self._stamps = np.empty(0)
        self._flags = np.empty(0, dtype=np.bool_)
        self.urms, self.stamps, self.flags = self._urms, self._stamps, self._flags

    def configure(self, limits: EventLimits, pt: float) -> None:
        """New thresholds or PT ratio; events in progress continue."""
        self.lim, self.pt = limits, pt

    def add(self, store: np.ndarray, bounds: np.ndarray, offset: int) -> np.ndarray:
        """One step's cycles (``bounds`` relative to ``store``, whose column 0 is absolute
        sample ``offset``); returns the events that ended, rows as ``kernels.scan_events``
        writes them with start/end in absolute samples."""
        points = self._half_cycles(bounds + offset) - offset
        n = max(0, points.size - 1)
        if self._urms.shape[1] < n:
            self._urms = np.empty((3, n + n // 4))
            self._stamps = np.empty(n + n // 4)
            self._flags = np.empty(n + n // 4, dtype=np.bool_)
        got = K.urms_half(store, points, self.lim.line_to_line, self.pt, self.carry, self._urms,
                          self._stamps) if n else 0
        self.urms, self.stamps = self._urms[:, :got], self._stamps[:got]
        self.stamps += offset
        self.flags = self._flags[:got]
        k = K.scan_events(self.urms, self.stamps, self.lim.limits, self.state, self.ring,
                          self.ring_t, self.events, self.flags)
        return self.events[: min(k, MAX_EVENTS)]

    def _half_cycles(self, bounds: np.ndarray) -> np.ndarray:
        """The step's half-cycle grid (absolute positions), continuing the last one.

        Not the tracker's boundaries themselves: its filter moves a boundary near a deep
        amplitude step by up to ~15 % of a cycle, and a window that is not one whole cycle
        misreads a sine's RMS. The grid steps by half the step's median cycle and is moved
        onto the nearest boundary when it has drifted 2 % of a cycle off one (regular
        cycles only), so it stays on the zero crossings as the frequency wanders.
        """
        if bounds.size < 2:
            return np.empty(0)
        lengths = np.diff(bounds)
        period = float(np.median(lengths))
        g = self.grid_at if self.grid_at is not None else float(bounds[0])
        if np.ptp(lengths) < 0.01 * period:
            near = float(bounds[np.argmin(np.abs(bounds - g))])
            if abs(near - g) > 0.02 * period:
                g = near
        k = int((bounds[-1] - g) / (0.5 * period) + 1e-9)
        if k < 1:
            return np.empty(0)
        points = g + 0.5 * period * np.arange(k + 1)
        self.grid_at = float(points[-1])
        return points

    def in_progress(self) -> list[str]:
        """Kinds of the events under way (dip, swell, interruption, rvc)."""
        slots = (0, 5, 9, 12)
        return [KINDS[q] for q, s in enumerate(slots) if self.state[s] != 0.0]

    def to_events(self, rows: np.ndarray, fs: float, t0: float) -> list[VoltageEvent]:
        """Rows of ``add`` as events, with sample positions turned into t0 + position / fs."""
        names = ("ab", "bc", "ca") if self.lim.line_to_line else ("a", "b", "c")
        sep = "," if self.lim.line_to_line else ""
        out = []
        for kind, start, end, extreme, mask, delta_ss, _ in rows.tolist():
            chans = sep.join(nm for r, nm in enumerate(names) if int(mask) >> r & 1)
            out.append(VoltageEvent(KINDS[int(kind)], self.main + 1, chans, t0 + start / fs,
                                    (end - start) / fs, extreme, 100 * extreme / self.lim.udin,
                                    delta_ss))
        return out
