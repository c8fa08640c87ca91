"""Reading a TOML configuration file, and checking its tables, with one-line errors.

The fleet, hub and billing files are read the same way: a missing file, an unreadable one and
invalid TOML each become one error line naming the file, never a traceback. Each loader passes
its own error class, built as ``error(source, key, value, allowed)``. The fleet and hub files
also check their tables' keys and numbers the same way (``SettingsError``, as the settings),
and the scenario file with its own error class.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pm4324.config.settings import SettingsError

ConfigError = Callable[[str, str, Any, str], Exception]


def read_toml(path: str | Path, error: ConfigError = SettingsError) -> dict[str, Any]:
    """The TOML table of the file at ``path``, or ``error(...)`` raised with one plain line."""
    p = Path(path)
    src = str(p)
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(src, "(file)", src, "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(src, "(file)", src, f"cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(src, "(syntax)", str(exc), "must be valid TOML") from None


def check_keys(src: str, t: Any, allowed: set[str], prefix: str,
               error: ConfigError = SettingsError, what: str = "key") -> None:
    """``t`` is a table whose keys are all in ``allowed`` (``prefix``: its place, "meters.2.");
    ``what`` names them in the error ("scenario key")."""
    if not isinstance(t, dict):
        raise error(src, prefix.rstrip(".") or "(file)", t, "must be a table")
    for k in t:
        if k not in allowed:
            raise error(src, prefix + k, t[k], f"is not a known {what}; known: "
                        + ", ".join(sorted(allowed)))


def whole_number(src: str, t: dict, key: str, default: int, lo: int, hi: int, prefix: str) -> int:
    """``t[key]`` (``default`` when absent): a whole number from ``lo`` to ``hi``."""
    v = t.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise SettingsError(src, prefix + key, v, f"must be a whole number from {lo} to {hi}")
    return v


def number(src: str, t: dict, key: str, default: float, lo: float, hi: float, prefix: str,
           error: ConfigError = SettingsError) -> float:
    """``t[key]`` (``default`` when absent): a finite number from ``lo`` to ``hi``."""
    v = t.get(key, default)
    if (isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v)
            or not lo <= v <= hi):
        raise error(src, prefix + key, v, f"must be a number from {lo:g} to {hi:g}")
    return float(v)
