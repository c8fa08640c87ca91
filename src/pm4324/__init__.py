"""pm4324: a software ICP DAS PM-4324 / PM-4324A multi-circuit power meter and its tools.

Importing the package first chooses where numba caches the compiled metering kernels, before
any kernel module imports numba: beside the sources when that is writable (a checkout, a
user's virtualenv), else ``$XDG_CACHE_HOME/pm4324/numba`` (default ``~/.cache``), else, on a
read-only install run by a user without a writable home, a temporary directory (compiled at
every start, with a warning) — never "cannot cache function". ``NUMBA_CACHE_DIR`` set by the
user wins.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

KERNEL_PACKAGES = ("metering", "sources")  # the packages whose modules hold cached kernels


def _writable(directory: Path) -> bool:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=directory).close()
    except OSError:
        return False
    return True


def _user_cache() -> Path | None:
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"])
    try:
        return Path.home() / ".cache"
    except RuntimeError:  # no HOME and no password entry
        return None


def _choose_kernel_cache() -> None:
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    here = Path(__file__).resolve().parent
    if all(_writable(here / package / "__pycache__") for package in KERNEL_PACKAGES):
        return  # numba's default: __pycache__ beside each module
    user = _user_cache()
    chosen = user / "pm4324" / "numba" if user else None
    if chosen is None or not _writable(chosen):
        chosen = Path(tempfile.mkdtemp(prefix="pm4324-kernels-"))
        atexit.register(shutil.rmtree, chosen, True)
        logging.getLogger("pm4324").warning(
            "pm4324: no writable cache for the compiled kernels (%s is read-only, %s "
            "cannot be created): they are compiled at every start; set XDG_CACHE_HOME or "
            "NUMBA_CACHE_DIR to a writable directory to keep them", here,
            user / "pm4324" / "numba" if user else "$XDG_CACHE_HOME")
    os.environ["NUMBA_CACHE_DIR"] = str(chosen)
    numba = sys.modules.get("numba")
    if numba is not None:  # imported before us: its config has already read the environment
        numba.config.CACHE_DIR = str(chosen)


_choose_kernel_cache()
