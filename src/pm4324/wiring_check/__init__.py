"""The wiring check: from a few seconds of readings, per CT, whether it is wired as the
settings say, and the settings change that fixes it where a setting can (docs/wiring-check.md).

Pure functions over snapshots (``check.check_wiring``) and their words (``text``): the same
check serves `pm4324 check-wiring` (a running meter over Modbus, or the local simulation)
and the dashboard (`/api/wiring`).
"""

from pm4324.wiring_check.check import CtVerdict, MainVerdict, WiringReport, check_wiring

__all__ = ["CtVerdict", "MainVerdict", "WiringReport", "check_wiring"]
