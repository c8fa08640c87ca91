"""The tenants file (TOML): the building, its tariffs, tenants with their circuits, common areas.

Every mistake is one ``BillingConfigError`` line naming the file, the key, the value and what
is allowed, so a bad file never reaches the invoices. docs/billing.md shows a full file.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pm4324.billing.tariff import DAYS, ENERGY_KINDS, ROUNDING, Block, Tariff, Window, minutes_of
from pm4324.config.toml_file import read_toml

SPLITS = ("area", "consumption", "fixed")
_ELEMENT_KINDS = (("ct", 24), ("meter", 8))


class BillingConfigError(Exception):
    def __init__(self, src: str, key: str, value: Any, allowed: str):
        shown = value.isoformat() if isinstance(value, date) else repr(value)
        super().__init__(f"{src}: {key} = {shown}: {allowed}")


@dataclass(frozen=True)
class Circuit:
    """A CT or Meter of one meter in the history, and the share of it that is billed."""

    meter_key: str | None  # None: the only meter in the history
    element: str  # "ct7", "meter3"
    share: Decimal = Decimal(1)

    @property
    def ref(self) -> str:
        return f"{self.meter_key}:{self.element}" if self.meter_key else self.element


@dataclass(frozen=True)
class Tenant:
    id: str
    name: str
    tariff: str
    circuits: tuple[Circuit, ...]
    area_m2: Decimal = Decimal(0)
    move_in: datetime | None = None  # local; None: before the period
    move_out: datetime | None = None  # local, exclusive; None: after the period
    address: str = ""


@dataclass(frozen=True)
class CommonArea:
    name: str
    circuits: tuple[Circuit, ...]
    split: str
    shares: dict[str, Decimal]  # tenant id -> fixed share (split = "fixed")


@dataclass(frozen=True)
class Building:
    name: str
    time_zone: str
    main: tuple[Circuit, ...]
    tariffs: dict[str, Tariff]
    tenants: tuple[Tenant, ...]
    common: tuple[CommonArea, ...]
    address: str = ""

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)


def load_building(path: str | Path) -> Building:
    src = str(path)
    data = read_toml(path, BillingConfigError)
    _keys(src, "", data, {"building", "tariffs", "tenants", "common"})
    b = _table(src, "building", data.get("building", {}))
    _keys(src, "building.", b, {"name", "time_zone", "main", "address"})
    tz = b.get("time_zone", "")
    try:
        ZoneInfo(str(tz))
    except (ZoneInfoNotFoundError, ValueError):
        raise BillingConfigError(src, "building.time_zone", tz, "an IANA zone like Europe/Berlin") from None
    tariffs = {name: _tariff(src, f"tariffs.{name}", name, _table(src, f"tariffs.{name}", t))
               for name, t in _table(src, "tariffs", data.get("tariffs", {})).items()}
    if not tariffs:
        raise BillingConfigError(src, "tariffs", {}, "at least one [tariffs.NAME] table")
    tenants = tuple(_tenant(src, f"tenants[{n}]", t, tariffs, tz)
                    for n, t in enumerate(_list(src, "tenants", data.get("tenants", []))))
    if not tenants:
        raise BillingConfigError(src, "tenants", [], "at least one [[tenants]] entry")
    ids = [t.id for t in tenants]
    for t in tenants:
        if ids.count(t.id) > 1:
            raise BillingConfigError(src, "tenants.id", t.id, "each tenant id once")
    common = tuple(_common(src, f"common[{n}]", c, ids, tenants)
                   for n, c in enumerate(_list(src, "common", data.get("common", []))))
    main = _circuits(src, "building.main", b.get("main", []), allow_empty=True)
    return Building(str(b.get("name", "")), str(tz), main, tariffs, tenants, common,
                    str(b.get("address", "")))


def _tariff(src: str, key: str, name: str, t: dict) -> Tariff:
    _keys(src, key + ".", t, {"currency", "decimals", "rounding", "energy", "price", "blocks", "prices",
                              "default_period", "windows", "holidays", "holiday_calendar", "demand",
                              "reactive", "fixed", "taxes"})
    kind = t.get("energy", "flat")
    if kind not in ENERGY_KINDS:
        raise BillingConfigError(src, f"{key}.energy", kind, "one of " + ", ".join(ENERGY_KINDS))
    rounding = t.get("rounding", "half_up")
    if rounding not in ROUNDING:
        raise BillingConfigError(src, f"{key}.rounding", rounding, "one of " + ", ".join(ROUNDING))
    decimals = t.get("decimals", 2)
    if not isinstance(decimals, int) or not 0 <= decimals <= 6:
        raise BillingConfigError(src, f"{key}.decimals", decimals, "an integer 0..6")
    currency = t.get("currency", "")
    if not (isinstance(currency, str) and len(currency) == 3 and currency.isalpha()):
        raise BillingConfigError(src, f"{key}.currency", currency, "a 3-letter ISO 4217 code like EUR")
    args: dict[str, Any] = {}
    if kind == "flat":
        args["flat_price"] = _money(src, f"{key}.price", t.get("price"))
    elif kind == "blocks":
        args["blocks"] = _blocks(src, f"{key}.blocks", t.get("blocks"))
    else:
        args.update(_tou(src, key, t))
    if "demand" in t:
        d = _table(src, f"{key}.demand", t["demand"])
        _keys(src, f"{key}.demand.", d, {"price_per_kw", "periods"})
        args["demand_price"] = _money(src, f"{key}.demand.price_per_kw", d.get("price_per_kw"))
        periods = d.get("periods", [])
        for p in _list(src, f"{key}.demand.periods", periods):
            if p not in args.get("prices", {}):
                raise BillingConfigError(src, f"{key}.demand.periods", p, "a TOU period of this tariff: "
                                         + ", ".join(args.get("prices", {})) if kind == "tou" else
                                         "TOU periods need energy = \"tou\"")
        args["demand_periods"] = tuple(periods)
    if "reactive" in t:
        r = _table(src, f"{key}.reactive", t["reactive"])
        _keys(src, f"{key}.reactive.", r, {"price_per_kvarh", "pf_threshold"})
        args["reactive_price"] = _money(src, f"{key}.reactive.price_per_kvarh", r.get("price_per_kvarh"))
        pf = _decimal(src, f"{key}.reactive.pf_threshold", r.get("pf_threshold", "0.9"))
        if not Decimal(0) < pf <= Decimal(1):
            raise BillingConfigError(src, f"{key}.reactive.pf_threshold", pf, "a power factor in (0, 1]")
        args["pf_threshold"] = pf
    args["fixed"] = tuple(_named(src, f"{key}.fixed", t.get("fixed", []), "amount"))
    args["taxes"] = tuple(_named(src, f"{key}.taxes", t.get("taxes", []), "rate"))
    return Tariff(name, currency.upper(), decimals, rounding, kind, **args)


def _tou(src: str, key: str, t: dict) -> dict:
    prices = {str(p): _money(src, f"{key}.prices.{p}", v)
              for p, v in _table(src, f"{key}.prices", t.get("prices", {})).items()}
    if not prices:
        raise BillingConfigError(src, f"{key}.prices", {}, "a price per kWh for each TOU period")
    default = t.get("default_period", "")
    if default not in prices:
        raise BillingConfigError(src, f"{key}.default_period", default, "one of " + ", ".join(prices))
    windows = []
    for n, w in enumerate(_list(src, f"{key}.windows", t.get("windows", []))):
        wk = f"{key}.windows[{n}]"
        w = _table(src, wk, w)
        _keys(src, wk + ".", w, {"period", "months", "days", "from", "to", "season"})
        if w.get("period") not in prices:
            raise BillingConfigError(src, f"{wk}.period", w.get("period"), "one of " + ", ".join(prices))
        months = w.get("months", list(range(1, 13)))
        if not (isinstance(months, list) and months and all(isinstance(m, int) and 1 <= m <= 12
                                                             for m in months)):
            raise BillingConfigError(src, f"{wk}.months", months, "a list of month numbers 1..12")
        days = w.get("days", "all")
        if days not in DAYS:
            raise BillingConfigError(src, f"{wk}.days", days, "one of " + ", ".join(DAYS))
        bounds = []
        for edge in ("from", "to"):
            try:
                bounds.append(minutes_of(str(w.get(edge, ""))))
            except ValueError:
                raise BillingConfigError(src, f"{wk}.{edge}", w.get(edge), "a local time HH:MM on a "
                                         "quarter hour (00:00..24:00)") from None
        if bounds[1] <= bounds[0]:
            raise BillingConfigError(src, f"{wk}.to", w.get("to"), "later than from (split a window "
                                     "that spans midnight in two)")
        windows.append(Window(w["period"], frozenset(months), days, *bounds, str(w.get("season", ""))))
    holidays = _list(src, f"{key}.holidays", t.get("holidays", []))
    for h in holidays:
        if not isinstance(h, date) or isinstance(h, datetime):
            raise BillingConfigError(src, f"{key}.holidays", h, "TOML dates like 2026-12-25")
    if "holiday_calendar" in t:
        holidays += _calendar_days(src, f"{key}.holiday_calendar", t["holiday_calendar"])
    return {"prices": prices, "default_period": default, "windows": tuple(windows),
            "holidays": frozenset(holidays)}


def _calendar_days(src: str, key: str, value: Any) -> list[date]:
    """The all-day events (``DTSTART;VALUE=DATE:20261225``) of an iCalendar file, the form
    public-holiday calendars are published in; the path is relative to the tenants file."""
    path = Path(src).parent / str(value)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BillingConfigError(src, key, value, f"a readable .ics file ({exc.strerror})") from None
    days = []
    for line in text.splitlines():
        name, _, stamp = line.strip().partition(":")
        if name.upper().startswith("DTSTART") and len(stamp) == 8 and stamp.isdigit():
            days.append(date(int(stamp[:4]), int(stamp[4:6]), int(stamp[6:])))
    if not days:
        raise BillingConfigError(src, key, value, "an iCalendar file with all-day events "
                                 "(DTSTART;VALUE=DATE:YYYYMMDD)")
    return days


def _blocks(src: str, key: str, value: Any) -> tuple[Block, ...]:
    blocks = []
    last = Decimal(0)
    items = _list(src, key, value)
    for n, b in enumerate(items):
        b = _table(src, f"{key}[{n}]", b)
        _keys(src, f"{key}[{n}].", b, {"up_to_kwh", "price"})
        limit = None
        if "up_to_kwh" in b:
            limit = _decimal(src, f"{key}[{n}].up_to_kwh", b["up_to_kwh"])
            if limit <= last:
                raise BillingConfigError(src, f"{key}[{n}].up_to_kwh", b["up_to_kwh"],
                                         "larger than the block before")
            last = limit
        elif n != len(items) - 1:
            raise BillingConfigError(src, f"{key}[{n}]", b, "up_to_kwh (only the last block is open)")
        blocks.append(Block(limit, _money(src, f"{key}[{n}].price", b.get("price"))))
    if not blocks or blocks[-1].up_to_kwh is not None:
        raise BillingConfigError(src, key, value, "blocks ending with one without up_to_kwh (the rest)")
    return tuple(blocks)


def _tenant(src: str, key: str, t: Any, tariffs: dict[str, Tariff], tz: str) -> Tenant:
    t = _table(src, key, t)
    _keys(src, key + ".", t, {"id", "name", "tariff", "circuits", "area_m2", "move_in", "move_out",
                              "address"})
    tid = t.get("id")
    if not (isinstance(tid, str) and tid and tid.replace("-", "").replace("_", "").isalnum()):
        raise BillingConfigError(src, f"{key}.id", tid, "letters, digits, - and _ (used in file names)")
    if t.get("tariff") not in tariffs:
        raise BillingConfigError(src, f"{key}.tariff", t.get("tariff"), "one of " + ", ".join(tariffs))
    area = _decimal(src, f"{key}.area_m2", t.get("area_m2", 0))
    move_in = _moment(src, f"{key}.move_in", t.get("move_in"))
    move_out = _moment(src, f"{key}.move_out", t.get("move_out"))
    if move_in and move_out and move_out <= move_in:
        raise BillingConfigError(src, f"{key}.move_out", t.get("move_out"), "after move_in")
    return Tenant(tid, str(t.get("name", tid)), t["tariff"], _circuits(src, f"{key}.circuits",
                  t.get("circuits")), area, move_in, move_out, str(t.get("address", "")))


def _common(src: str, key: str, c: Any, ids: list[str], tenants: tuple[Tenant, ...]) -> CommonArea:
    c = _table(src, key, c)
    _keys(src, key + ".", c, {"name", "circuits", "split", "shares"})
    split = c.get("split", "area")
    if split not in SPLITS:
        raise BillingConfigError(src, f"{key}.split", split, "one of " + ", ".join(SPLITS))
    shares = {}
    if split == "fixed":
        raw = _table(src, f"{key}.shares", c.get("shares", {}))
        for tid, v in raw.items():
            if tid not in ids:
                raise BillingConfigError(src, f"{key}.shares.{tid}", v, "a tenant id: " + ", ".join(ids))
            shares[tid] = _decimal(src, f"{key}.shares.{tid}", v)
        if sum(shares.values(), Decimal(0)) != 1:
            raise BillingConfigError(src, f"{key}.shares", raw, "shares that add up to 1")
    elif split == "area" and not any(t.area_m2 > 0 for t in tenants):
        raise BillingConfigError(src, f"{key}.split", split, "tenants with area_m2 (or another split)")
    return CommonArea(str(c.get("name", key)), _circuits(src, f"{key}.circuits", c.get("circuits")),
                      split, shares)


def _circuits(src: str, key: str, value: Any, allow_empty: bool = False) -> tuple[Circuit, ...]:
    items = _list(src, key, value if value is not None else [])
    if not items and not allow_empty:
        raise BillingConfigError(src, key, value, "a list of circuits like \"meter3\", \"hub-a:ct7\" "
                                 "or {circuit = \"ct7\", share = 0.5}")
    out = []
    for n, item in enumerate(items):
        share: Any = 1
        if isinstance(item, dict):
            _keys(src, f"{key}[{n}].", item, {"circuit", "share"})
            share, item = item.get("share", 1), item.get("circuit")
        out.append(_circuit(src, f"{key}[{n}]", item, share))
    return tuple(out)


def _circuit(src: str, key: str, text: Any, share: Any) -> Circuit:
    meter, _, element = str(text).rpartition(":")
    ok = isinstance(text, str) and any(
        element.startswith(k) and element[len(k):].isdigit() and 1 <= int(element[len(k):]) <= n
        for k, n in _ELEMENT_KINDS)
    if not ok:
        raise BillingConfigError(src, key, text, "ct1..ct24 or meter1..meter8, optionally after the "
                                 "meter's history key (\"hub-a:meter3\")")
    s = _decimal(src, f"{key}.share", share)
    if not Decimal(0) < s <= 1:
        raise BillingConfigError(src, f"{key}.share", share, "a share in (0, 1]")
    return Circuit(meter or None, element, s)


def _moment(src: str, key: str, value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime) and value.tzinfo is None:
        moment = value
    elif isinstance(value, date) and not isinstance(value, datetime):
        moment = datetime.combine(value, time(0))
    else:
        raise BillingConfigError(src, key, value, "a TOML local date (2026-11-16) or local date-time")
    if moment.minute % 15 or moment.second or moment.microsecond:
        raise BillingConfigError(src, key, value, "a time on a quarter hour")
    return moment


def _money(src: str, key: str, value: Any) -> Decimal:
    d = _decimal(src, key, value)
    if d < 0:
        raise BillingConfigError(src, key, value, "a price or amount >= 0")
    return d


def _decimal(src: str, key: str, value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise BillingConfigError(src, key, value, "a number (a string like \"0.2875\" keeps every digit)")
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        raise BillingConfigError(src, key, value, "a decimal number") from None
    if not d.is_finite():
        raise BillingConfigError(src, key, value, "a finite number")
    return d


def _named(src: str, key: str, value: Any, what: str) -> list[tuple[str, Decimal]]:
    out = []
    for n, item in enumerate(_list(src, key, value)):
        item = _table(src, f"{key}[{n}]", item)
        _keys(src, f"{key}[{n}].", item, {"name", what})
        if not isinstance(item.get("name"), str):
            raise BillingConfigError(src, f"{key}[{n}].name", item.get("name"), "a text")
        out.append((item["name"], _money(src, f"{key}[{n}].{what}", item.get(what))))
    return out


def _table(src: str, key: str, value: Any) -> dict:
    if not isinstance(value, dict):
        raise BillingConfigError(src, key, value, "a table")
    return value


def _list(src: str, key: str, value: Any) -> list:
    if not isinstance(value, list):
        raise BillingConfigError(src, key, value, "a list")
    return value


def _keys(src: str, prefix: str, table: dict, allowed: set[str]) -> None:
    for k in table:
        if k not in allowed:
            raise BillingConfigError(src, prefix + k, table[k], "unknown key; allowed: "
                                     + ", ".join(sorted(allowed)))
