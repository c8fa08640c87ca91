"""The fixed channel layout of one PM-4324 in the history, and one second as flat arrays.

Local (``Snapshot``) and remote (``Snapshot.to_dict()`` keys, as ``client/`` reads them) seconds
both become a ``Frame``: one float64 value per channel and one float64 Wh counter per energy
register, so the aggregation and the store never care where a second came from. Missing
values (a real unit without our registers, a second without data) are NaN.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pm4324.snapshot import ENERGY_KINDS, Snapshot

N_CT, N_METER, N_MAIN = 24, 8, 2
CT_QUANTITIES = ("v_rms", "i_rms", "p_w", "q_var", "s_va", "pf", "thd_v_pct", "thd_i_pct",
                 "frequency_hz")
METER_QUANTITIES = ("v_rms", "i_rms", "p_w", "q_var", "s_va", "pf", "frequency_hz")
MAIN_QUANTITIES = ("frequency_hz", "v_ln_a", "v_ln_b", "v_ln_c", "v_ll_ab", "v_ll_bc", "v_ll_ca",
                   "thd_v_a", "thd_v_b", "thd_v_c")
#: 1-minute series per element: the means of these, and min/max of MINUTE_EXTREMES
MINUTE_MEANS = {"ct": ("p_w", "q_var", "s_va", "i_rms"), "meter": ("p_w", "q_var", "s_va", "i_rms"),
                "main": ("v_ln_a", "v_ln_b", "v_ln_c")}
MINUTE_EXTREMES = {"ct": ("p_w", "i_rms"), "meter": ("p_w", "i_rms"), "main": ()}
#: energy registers per CT and Meter (Wh / varh / VAh), in this order
REGISTERS = ENERGY_KINDS
STATS = ("mean", "min", "max")


@dataclass(frozen=True)
class Element:
    kind: str  # "ct", "meter" or "main"
    number: int  # 1-based

    @property
    def key(self) -> str:
        return f"{self.kind}{self.number}"


def _elements() -> tuple[Element, ...]:
    return (tuple(Element("ct", k) for k in range(1, N_CT + 1))
            + tuple(Element("meter", m) for m in range(1, N_METER + 1))
            + tuple(Element("main", n) for n in range(1, N_MAIN + 1)))


ELEMENTS = _elements()
ENERGY_ELEMENTS = ELEMENTS[: N_CT + N_METER]  # CTs and Meters have energy registers
QUANTITIES = {"ct": CT_QUANTITIES, "meter": METER_QUANTITIES, "main": MAIN_QUANTITIES}


def parse_element(text: str) -> Element:
    """``ct7``, ``meter3`` or ``main1`` -> Element; ValueError otherwise."""
    for kind, count in (("ct", N_CT), ("meter", N_METER), ("main", N_MAIN)):
        rest = text.removeprefix(kind)
        if rest != text and rest.isdigit() and 1 <= int(rest) <= count:
            return Element(kind, int(rest))
    raise ValueError(f"{text!r}: expected ct1..ct{N_CT}, meter1..meter{N_METER} or main1..main{N_MAIN}")


class Layout:
    """Channel numbers: ``channel[(element key, quantity)]`` in the full per-second vector."""

    def __init__(self) -> None:
        self.channels: dict[tuple[str, str], int] = {}
        for e in ELEMENTS:
            for q in QUANTITIES[e.kind]:
                self.channels[(e.key, q)] = len(self.channels)
        self.n_channels = len(self.channels)
        # the 1-minute series: (element key, quantity, stat) -> (full channel, stat index)
        self.minute_series: dict[tuple[str, str, str], tuple[int, int]] = {}
        for e in ELEMENTS:
            for q in MINUTE_MEANS[e.kind]:
                self.minute_series[(e.key, q, "mean")] = (self.channels[(e.key, q)], 0)
            for q in MINUTE_EXTREMES[e.kind]:
                for s, stat in ((1, "min"), (2, "max")):
                    self.minute_series[(e.key, q, stat)] = (self.channels[(e.key, q)], s)
        self.n_minute = len(self.minute_series)
        self.minute_index = {k: n for n, k in enumerate(self.minute_series)}
        # raw seconds keep the 1-minute means' channels
        self.raw_channels = np.array([ch for (_, _, st), (ch, _) in self.minute_series.items()
                                      if st == "mean"])
        self.raw_index = {(e, q): n for n, (e, q, st) in enumerate(
            k for k in self.minute_series if k[2] == "mean")}
        self._minute_pick = np.array([(s, ch) for ch, s in self.minute_series.values()])
        # packed days: one block per element and quantity ("ct7.p_w": its mean, min, max)
        self.blocks: dict[str, list[str]] = {}
        self.block_rows: dict[str, list[int]] = {}
        for n, (e, q, st) in enumerate(self.minute_series):
            self.blocks.setdefault(f"{e}.{q}", []).append(st)
            self.block_rows.setdefault(f"{e}.{q}", []).append(n)

    def minute_values(self, stats: np.ndarray) -> np.ndarray:
        """(3, n_channels) mean/min/max -> the 1-minute series vector (n_minute,)."""
        return stats[self._minute_pick[:, 0], self._minute_pick[:, 1]]



LAYOUT = Layout()


@dataclass
class Frame:
    """One second of one meter: channel values (n_channels,) and counters (32, 7) in Wh."""

    time: float
    values: np.ndarray
    counters: np.ndarray
    status: int = 0


def frame_from_snapshot(snap: Snapshot) -> Frame:
    """A local meter's second (numpy arrays straight from the snapshot, no dict in between)."""
    v = np.full(LAYOUT.n_channels, np.nan)
    ct, mt, mn = snap.ct, snap.meter, snap.main
    _put(v, "ct", N_CT, [ct.v_rms, ct.i_rms, ct.p_w, ct.q_var, ct.s_va, ct.pf, ct.thd_v_pct,
                         ct.thd_i_pct, ct.frequency_hz])
    _put(v, "meter", N_METER, [mt.v_rms, mt.i_rms, mt.p_w, mt.q_var, mt.s_va, mt.pf,
                               mt.frequency_hz])
    n = len(mn.frequency_hz)
    if n:
        cols = [mn.frequency_hz, *np.asarray(mn.v_ln).T, *np.asarray(mn.v_ll).T,
                *np.asarray(mn.thd_v_pct).T]
        _put(v, "main", n, cols)
    counters = np.stack([np.concatenate([getattr(snap.ct_energy, k), getattr(snap.meter_energy, k)])
                         for k in REGISTERS], axis=1).astype(float)
    return Frame(snap.time, v, counters, int(snap.status))


def _put(v: np.ndarray, kind: str, count: int, columns: list[np.ndarray]) -> None:
    base = LAYOUT.channels[(f"{kind}1", QUANTITIES[kind][0])]
    width = len(QUANTITIES[kind])
    block = np.asarray(columns, dtype=float)[:, :count].T  # (count, width)
    v[base: base + count * width] = block.reshape(-1)


def frame_from_dict(d: dict[str, Any]) -> Frame:
    """A second in the keys of ``Snapshot.to_dict()`` (a remote meter); None values -> NaN."""
    v = np.full(LAYOUT.n_channels, np.nan)
    counters = np.full((len(ENERGY_ELEMENTS), len(REGISTERS)), np.nan)
    ch = LAYOUT.channels
    for item in d.get("cts", []):
        key = f"ct{item['ct']}"
        for q in CT_QUANTITIES:
            v[ch[(key, q)]] = _f(item.get(q))
        counters[item["ct"] - 1] = [_f(item.get("k" + r)) * 1000.0 for r in REGISTERS]
    for item in d.get("meters", []):
        key = f"meter{item['meter']}"
        for q in METER_QUANTITIES:
            v[ch[(key, q)]] = _f(item.get(q))
        counters[N_CT + item["meter"] - 1] = [_f(item.get("k" + r)) * 1000.0 for r in REGISTERS]
    for item in d.get("mains", []):
        key = f"main{item['main']}"
        v[ch[(key, "frequency_hz")]] = _f(item.get("frequency_hz"))
        for name, phases in (("v_ln", "abc"), ("v_ll", ("ab", "bc", "ca")), ("thd_v", "abc")):
            src = item.get("thd_v_pct" if name == "thd_v" else name) or [None] * 3
            for j, ph in enumerate(phases):
                v[ch[(key, f"{name}_{ph}")]] = _f(src[j] if j < len(src) else None)
    status = d.get("status") or []
    return Frame(float(d.get("time") or 0.0), v, counters, len(status))


def _f(x: Any) -> float:
    return float("nan") if x is None else float(x)
