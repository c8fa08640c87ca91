"""The [history] table: where a meter keeps its history, in which time zone, and how long.

``pm4324 run`` keeps a history by default (docs/history.md); these keys bound it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # settings_parse.py imports this module; the reader is only a parameter here
    from pm4324.config.settings_parse import _Reader


@dataclass(frozen=True)
class HistorySettings:
    enabled: bool = True
    path: str = ""  # "" = beside the state file (NAME.history.db); or a postgresql:// URL
    time_zone: str = ""  # IANA name for the local days; "" = the machine's zone at creation
    raw_days: float = 7.0  # 1-second values kept this long
    keep_years: float = 10.0  # 1-minute, 15-minute and daily values kept this long
    flush_s: float = 60.0  # seconds between two writes (one transaction each)


def read_history(r: _Reader) -> HistorySettings:
    d = HistorySettings()
    h = HistorySettings(
        enabled=r.flag("enabled", d.enabled),
        path=r.text("path", d.path),
        time_zone=r.text("time_zone", d.time_zone),
        raw_days=r.number("raw_days", d.raw_days, 0, 3660),
        keep_years=r.number("keep_years", d.keep_years, 0.1, 100),
        flush_s=r.number("flush_s", d.flush_s, 1, 3600),
    )
    if h.time_zone:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(h.time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise r.error("time_zone", h.time_zone, "must be an IANA time zone, e.g. Europe/Berlin"
                          ) from None
    r.finish()
    return h
