"""Tariffs: what a kWh, a peak kW and a kvarh cost, stated in a TOML table.

Money is ``decimal.Decimal`` throughout (prices are read from the TOML text, never through a
binary float), rounded once per invoice line to the tariff's ``decimals`` with its
``rounding`` mode; taxes are computed on the rounded subtotal.

Energy is priced ``flat`` (one price), in ``blocks`` (tiers of kWh within the period, the
limits prorated to the days a tenant occupied the premises), or by time of use (``tou``):
``windows`` map local times to named periods — each window a period name, the months it
applies in (a season), the days (``weekday``, ``weekend`` or ``all``; holidays count as
weekend days) and a ``from``/``to`` local time on quarter hours; the first window that matches
wins, otherwise ``default_period``. Time of use follows local time, so the hours a DST change
adds or removes fall into the period of the local clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

import numpy as np

ROUNDING = {"half_up": ROUND_HALF_UP, "half_even": ROUND_HALF_EVEN}
DAYS = ("weekday", "weekend", "all")
ENERGY_KINDS = ("flat", "blocks", "tou")


@dataclass(frozen=True)
class Block:
    up_to_kwh: Decimal | None  # None: the rest
    price: Decimal


@dataclass(frozen=True)
class Window:
    """Local times [start, end) in minutes of the day (end 1440 = midnight) that bill as ``period``."""

    period: str
    months: frozenset[int]
    days: str
    start_min: int
    end_min: int
    season: str = ""


@dataclass(frozen=True)
class Tariff:
    name: str
    currency: str
    decimals: int
    rounding: str
    energy_kind: str
    flat_price: Decimal = Decimal(0)
    blocks: tuple[Block, ...] = ()
    prices: dict[str, Decimal] = field(default_factory=dict)  # TOU period -> per kWh
    default_period: str = ""
    windows: tuple[Window, ...] = ()
    holidays: frozenset[date] = frozenset()
    demand_price: Decimal | None = None  # per kW of the maximum 15-minute demand
    demand_periods: tuple[str, ...] = ()  # empty: every interval of the period
    reactive_price: Decimal | None = None  # per kvarh beyond the PF threshold
    pf_threshold: Decimal = Decimal("0.9")
    fixed: tuple[tuple[str, Decimal], ...] = ()  # (name, amount per period)
    taxes: tuple[tuple[str, Decimal], ...] = ()  # (name, rate)

    @property
    def quantum(self) -> Decimal:
        return Decimal(1).scaleb(-self.decimals)

    def money(self, x: Decimal) -> Decimal:
        """Round an amount as the tariff states."""
        return x.quantize(self.quantum, rounding=ROUNDING[self.rounding])

    def period_names(self) -> list[str]:
        """The TOU periods in the order the tariff lists their prices (one entry for flat/blocks)."""
        return list(self.prices) if self.energy_kind == "tou" else ["all"]

    def classify(self, t: np.ndarray, tz: ZoneInfo) -> np.ndarray:
        """The TOU period name of each 15-minute interval start ``t`` (local time)."""
        if self.energy_kind != "tou":
            return np.full(len(t), "all", dtype=object)
        out = np.empty(len(t), dtype=object)
        cache: dict[tuple, str] = {}
        for j, ts in enumerate(t.tolist()):
            local = datetime.fromtimestamp(ts, tz)
            key = (local.month, self._weekend(local.date()), local.hour * 60 + local.minute)
            name = cache.get(key)
            if name is None:
                name = cache[key] = self._period_at(*key)
            out[j] = name
        return out

    def _weekend(self, d: date) -> bool:
        return d.weekday() >= 5 or d in self.holidays

    def _period_at(self, month: int, weekend: bool, minute: int) -> str:
        for w in self.windows:
            if month not in w.months:
                continue
            if w.days != "all" and (w.days == "weekend") != weekend:
                continue
            if w.start_min <= minute < w.end_min:
                return w.period
        return self.default_period

    def season_of(self, month: int) -> str:
        seasons = [w.season for w in self.windows if w.season and month in w.months]
        return seasons[0] if seasons else ""


def minutes_of(text: str) -> int:
    """``"08:00"`` -> 480, ``"24:00"`` -> 1440; ValueError unless on a quarter hour."""
    if text == "24:00":
        return 1440
    t = time.fromisoformat(text)
    if t.minute % 15 or t.second:
        raise ValueError("not on a quarter hour")
    return t.hour * 60 + t.minute
