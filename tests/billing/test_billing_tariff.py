"""TOU windows by season, weekday/weekend, holidays and local time (the calendar is the truth)."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import numpy as np

from pm4324.billing.config import load_building

TZ = ZoneInfo("Europe/Berlin")
TARIFF = """
[building]
time_zone = "Europe/Berlin"
[tariffs.t]
currency = "EUR"
energy = "tou"
prices = { peak = "0.3", night = "0.1", day = "0.2" }
default_period = "day"
holidays = [2026-12-25]
windows = [
  { period = "night", from = "00:00", to = "06:00" },
  { period = "night", from = "22:00", to = "24:00" },
  { period = "peak", days = "weekday", from = "08:00", to = "20:00", months = [10, 11, 12, 1, 2, 3] },
  { period = "peak", days = "weekday", from = "09:00", to = "18:00", months = [4, 5, 6, 7, 8, 9] },
]
[[tenants]]
id = "a"
tariff = "t"
circuits = ["ct1"]
"""


def test_windows(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text(TARIFF)
    tariff = load_building(path).tariffs["t"]
    cases = {  # local time -> period (2026-07-01 and 2026-10-28 are Wednesdays)
        (2026, 7, 1, 8, 30): "day", (2026, 7, 1, 9, 0): "peak", (2026, 7, 1, 17, 45): "peak",
        (2026, 7, 1, 18, 0): "day", (2026, 10, 28, 8, 0): "peak", (2026, 10, 28, 19, 45): "peak",
        (2026, 10, 28, 23, 45): "night", (2026, 10, 31, 12, 0): "day",  # a Saturday
        (2026, 12, 25, 12, 0): "day", (2026, 12, 24, 12, 0): "peak",  # a holiday, a Thursday
        (2026, 10, 25, 2, 30): "night",  # the hour the clocks go back, twice
    }
    t = np.array([datetime(*k, tzinfo=TZ).timestamp() for k in cases])
    assert tariff.classify(t, TZ).tolist() == list(cases.values())
    # 25 October 2026 has 25 local hours: 100 quarter hours; night is 00-06 (7 hours that day) + 22-24
    day = np.arange(datetime(2026, 10, 25, tzinfo=TZ).timestamp(),
                    datetime(2026, 10, 26, tzinfo=TZ).timestamp(), 900)
    labels = tariff.classify(day, TZ).tolist()
    assert len(day) == 100 and labels.count("night") == 4 * (7 + 2) and labels.count("peak") == 0


ICS = """BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//test//holidays//EN
BEGIN:VEVENT
UID:1@test
DTSTART;VALUE=DATE:20261003
SUMMARY:Tag der Deutschen Einheit
END:VEVENT
BEGIN:VEVENT
UID:2@test
DTSTART;VALUE=DATE:20261225
SUMMARY:1. Weihnachtstag
END:VEVENT
END:VCALENDAR
"""


def test_holidays_from_an_icalendar_file(tmp_path):
    (tmp_path / "holidays.ics").write_text(ICS)
    path = tmp_path / "t.toml"
    path.write_text(TARIFF.replace("holidays = [2026-12-25]", 'holiday_calendar = "holidays.ics"'))
    tariff = load_building(path).tariffs["t"]
    assert tariff.holidays == {date(2026, 10, 3), date(2026, 12, 25)}
    friday_noon = datetime(2026, 10, 2, 12, tzinfo=TZ).timestamp()  # the day before: a working day
    assert tariff.classify(np.array([friday_noon]), TZ).tolist() == ["peak"]
