"""How long a settings write keeps its Modbus reply waiting, and how many saves writes share.

Run from the repository root::

    .venv/bin/python bench/settings_write_bench.py [--writes 200]

A copy of the building's settings file in a temporary directory, a meter on it, and
holding-register writes of Meter 2's CT ratio (alternating 60 / 100) through ``MapBackend``
as the Modbus and CANopen servers call it. Reported: the time ``write_registers`` takes
(what the reply waits for: validation, the check of the file on disk, applying the
settings, rebuilding the register image) for writes one at a time (each save finished
before the next write) and back to back (saves still running), and the part of it that
the settings file costs (``SettingsWriter.submit``: a stat, or a parse when the file was
touched). The save itself (tomlkit edit, fsync, rename) runs in the writer thread. The CPU
time per write (the writing thread's, and the whole process's with the saves) is the figure
least disturbed by other load.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from pm4324.config.settings_parse import load_settings
from pm4324.config.settings_writeback import SettingsWriter
from pm4324.device.meter import Meter
from pm4324.registers.image import MapBackend
from pm4324.sources.scenario_parse import load_scenario
from pm4324.sources.simulator import SimulatorSource

SETTINGS = Path(__file__).resolve().parents[1] / "src/pm4324/data/building-settings.toml"


def _line(name: str, samples: list[float]) -> str:
    return (f"  {name}: median {statistics.median(samples) * 1e3:.2f} ms, "
            f"max {max(samples) * 1e3:.2f} ms ({len(samples)} writes)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--writes", type=int, default=200)
    n = p.parse_args().writes
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "site.toml"
        shutil.copy(SETTINGS, path)
        settings = load_settings(path)
        meter = Meter(settings, SimulatorSource(load_scenario(None), settings),
                      settings_path=str(path), start_time=0.0)
        backend = MapBackend(meter)
        meter.step()
        one, burst = [], []
        for k in range(n):
            t = time.perf_counter()
            backend.write_registers(0x1001, [60 if k % 2 == 0 else 100])
            one.append(time.perf_counter() - t)
            meter.wait_settings_saved()
        saves = meter._settings_file.saves
        cpu0, proc0 = time.thread_time(), time.process_time()
        for k in range(n):
            t = time.perf_counter()
            backend.write_registers(0x1001, [60 if k % 2 == 0 else 100])
            burst.append(time.perf_counter() - t)
        cpu = (time.thread_time() - cpu0) / n
        meter.wait_settings_saved()
        proc = (time.process_time() - proc0) / n
        burst_saves = meter._settings_file.saves - saves
        meter.close()
        writer = SettingsWriter(path, load_settings(path))
        a = load_settings(path)
        b = a.with_meter(2, ct_ratio=300.0)
        check = []
        for _ in range(n):
            t = time.perf_counter()
            writer.submit(a, b)
            check.append(time.perf_counter() - t)
            writer.flush()
            a, b = b, a
        writer.close()
    print(f"settings writes through MapBackend; load average {os.getloadavg()[0]:.2f}, "
          f"{os.cpu_count()} CPUs")
    print(_line("one at a time", one))
    print(_line("back to back", burst) + f": {burst_saves} saves")
    print(f"  CPU per write, back to back: {cpu * 1e3:.3f} ms in the writing thread (what a "
          f"protocol's write thread spends), {proc * 1e3:.3f} ms in the whole process (the "
          "saves included)")
    print(_line("of which the settings file check (SettingsWriter.submit)", check))
    return 0


if __name__ == "__main__":
    sys.exit(main())
