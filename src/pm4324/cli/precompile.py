"""Compile (and cache) the metering kernels ahead of the first `pm4324 run`.

numba compiles each kernel on its first call and caches the result on disk, which makes the
very first run after an install spend 20-30 s of CPU before its first reading. `make setup`
runs ``python -m pm4324.cli.precompile`` once, so `make run` shows a reading within seconds;
`pm4324 run` itself says what is happening when it has to compile.
"""

from __future__ import annotations

import sys
from types import ModuleType

KERNEL_MODULES = ("pm4324.metering.cycles", "pm4324.metering.resample",
                  "pm4324.metering.step_kernels",
                  "pm4324.metering.pq.kernels", "pm4324.metering.pq.aggregate",
                  "pm4324.metering.pq.flicker",
                  "pm4324.sources.simulator")


def _kernels(module: ModuleType) -> list:
    from numba.core.dispatcher import Dispatcher

    # inline="always" kernels are compiled into their callers only, never cached alone
    return [obj for obj in vars(module).values() if isinstance(obj, Dispatcher)
            and obj.targetoptions.get("inline") != "always"]


def kernels_cached() -> bool:
    """Whether every kernel has a cache entry for its current source (numba's own index)."""
    import importlib

    try:
        for name in KERNEL_MODULES:
            for kernel in _kernels(importlib.import_module(name)):
                cache = getattr(kernel, "_cache", None)
                if cache is None or not cache._cache_file._load_index():
                    return False
    except (AttributeError, OSError):  # numba's internals moved: do not guess
        return True
    return True


def compile_kernels() -> None:
    """Run every kernel on a few seconds of the simulated building (no state file)."""
    from pm4324.cli.cli import _default_settings_path
    from pm4324.config.settings_parse import load_settings
    from pm4324.device.meter import Meter
    from pm4324.sources.scenario_parse import load_scenario
    from pm4324.sources.simulator import SimulatorSource

    settings = load_settings(_default_settings_path())
    # with the harmonic angles, so that their kernel (`--harmonics`) is compiled too
    meter = Meter(settings, SimulatorSource(load_scenario(None), settings), start_time=0.0,
                  harmonic_angles=True)
    for _ in range(2):
        meter.step()


def main() -> int:
    if kernels_cached():
        print("pm4324: metering kernels already compiled", file=sys.stderr)
        return 0
    print("pm4324: compiling the metering kernels once (20-30 s)...", file=sys.stderr, flush=True)
    compile_kernels()
    print("pm4324: kernels compiled and cached", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
