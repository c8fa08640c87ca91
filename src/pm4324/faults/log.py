"""The fault log: one JSON line per start and per end of a fault (docs/faults.md).

A SCADA test reads it to know what it should have seen: which meter, which fault, its
parameters, and when it started and ended on the meter's clock (the clock its snapshots are
stamped with: with `run --speed 10` it runs 10 times faster than the wall clock). Lines are
written and flushed as faults start and end, so the log can be followed while it grows.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO


def iso(t: float | None) -> str | None:
    """Unix seconds as ISO 8601 UTC with milliseconds (None stays None)."""
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class FaultLog:
    """Appends JSON lines to ``path`` (thread-safe: the meter's step thread and the protocol
    servers' loop both write)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO = self.path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def write(self, event: str, meter: str, fault: str, target: str, fault_id: int | str,
              parameters: dict[str, Any], origin: str, start: float,
              end: float | None = None, **extra: Any) -> None:
        """One line: ``event`` is "start" or "end"; start and end are Unix seconds on the
        meter's clock (end None while the fault lasts)."""
        line = {"event": event, "meter": meter, "fault": fault, "target": target,
                "id": fault_id, "parameters": parameters, "origin": origin,
                "start": iso(start), "end": iso(end), "start_unix": start, "end_unix": end,
                **extra}
        with self._lock:
            self._file.write(json.dumps(line) + "\n")
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()
