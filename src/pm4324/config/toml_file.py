"""Reading a TOML configuration file with one-line errors.

The fleet, hub and billing files are read the same way: a missing file, an unreadable one and
invalid TOML each become one error line naming the file, never a traceback. Each loader passes
its own error class, built as ``error(source, key, value, allowed)``.
"""

from __future__ import annotations

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
