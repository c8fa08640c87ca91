"""Metering throughput of one PM-4324A on one core, and its peak memory.

Run from the repository root::

    .venv/bin/python bench/metering_bench.py            # or: make bench
    .venv/bin/python bench/metering_bench.py --seconds 120 --runs 5

The process pins itself to one CPU (CPU 1 when there is one, like ``taskset -c 1``) and
limits OpenMP/OpenBLAS to one thread before numpy is imported. The workload is the built-in
building scenario on a PM-4324A (24 currents + 6 voltages at 12.8 kS/s, harmonics included).
Throughput is *meter-seconds per CPU-second*: seconds of signal processed divided by the
``time.process_time()`` they cost (the median of ``--runs`` runs is reported):

* analysis alone: ``Engine.step`` on 20 pre-generated one-second blocks, fed over and over
  with increasing ``start`` (the wrap from block 20 to block 1 is a phase jump once every
  20 s, which the tracker rides through like a real disturbance);
* simulation alone: ``SimulatorSource.read`` of one-second blocks;
* simulation + analysis: ``Meter.step()``, the device loop (source, engine, energy
  registers, snapshot).

``--parts`` adds where the analysis time goes: each compiled kernel and the FFT are timed
(process time, summed per kernel) while the engine runs; the rest of ``Engine.step`` is the
Python around them.

Memory: peak RSS of the process (``ru_maxrss``) after the device loop, measured before the
analysis blocks are generated; with ``tracemalloc``, the numpy buffers an engine holds after
warm-up and the extra peak during one ``Engine.step`` (compiled kernels allocate outside
tracemalloc's view, but only small per-cycle arrays).

Targets (issue): analysis >= 500, simulation + analysis >= 100 meter-seconds per CPU-second;
the table marks them PASS/FAIL (the exit status is 0 either way). Other processes on the
machine slow every figure down: the load average is printed, the best run is shown too.
"""

from __future__ import annotations

import os
import time

_T0 = time.perf_counter()
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"
if hasattr(os, "sched_setaffinity"):
    _cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {1 if 1 in _cpus else _cpus[0]})

import argparse  # noqa: E402
import itertools  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tracemalloc  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from pm4324.config.settings import Settings  # noqa: E402
from pm4324.config.settings_parse import load_settings  # noqa: E402
from pm4324.device.meter import Meter  # noqa: E402
from pm4324.metering.engine import Engine  # noqa: E402
from pm4324.sources.base import SampleBlock  # noqa: E402
from pm4324.sources.scenario_parse import load_scenario  # noqa: E402
from pm4324.sources.simulator import SimulatorSource  # noqa: E402

IMPORT_S = time.perf_counter() - _T0

SETTINGS = Path(__file__).resolve().parents[1] / "src" / "pm4324" / "data" / "building-settings.toml"
N_BLOCKS = 20
TARGETS = {"analysis": 500.0, "simulation + analysis": 100.0}


def _source(settings: Settings) -> SimulatorSource:
    return SimulatorSource(load_scenario(None), settings)


def _rate(seconds: int, run: Callable[[int], None], runs: int) -> list[float]:
    """Meter-seconds per CPU-second of ``run(i)`` for i in range(seconds), per run."""
    rates = []
    for _ in range(runs):
        t0 = time.process_time()
        for i in range(seconds):
            run(i)
        rates.append(seconds / (time.process_time() - t0))
    return rates


def bench_analysis(settings: Settings, blocks: list[SampleBlock], full_scale: tuple,
                   seconds: int, runs: int) -> list[float]:
    engine = Engine(settings)
    n = blocks[0].n
    fed = itertools.count()  # blocks fed so far: ``start`` keeps increasing across runs

    def run(i: int) -> None:
        k = next(fed)
        b = blocks[k % len(blocks)]
        engine.step(b.voltages, b.currents, k * n, full_scale)

    for i in range(2 * N_BLOCKS):  # warm-up (first call costs, buffers reach steady size)
        run(i)
    return _rate(seconds, run, runs)


def bench_simulation(settings: Settings, seconds: int, runs: int) -> list[float]:
    source = _source(settings)
    n = int(settings.sample_rate_hz)
    source.read(n)
    return _rate(seconds, lambda i: source.read(n), runs)


def bench_device(settings: Settings, seconds: int, runs: int) -> list[float]:
    meter = Meter(settings, _source(settings), start_time=0.0)
    for _ in range(3):
        meter.step()
    return _rate(seconds, lambda i: meter.step(), runs)


PART_KERNELS = {
    "pm4324.metering.engine": ("ingest_block", "main_cycles", "window_harmonics", "finish_step"),
    "pm4324.metering.cycles": ("filtered_crossings", "_boundaries"),
    "numpy.fft": ("rfft",),
}


def analysis_parts(settings: Settings, blocks: list[SampleBlock], full_scale: tuple,
                   seconds: int) -> dict[str, float]:
    """ms of CPU per meter-second in each compiled kernel (and the FFT) and in the rest."""
    spent: dict[str, float] = {}
    originals = []
    for module_name, names in PART_KERNELS.items():
        module = sys.modules[module_name]
        for name in names:
            original = getattr(module, name)
            originals.append((module, name, original))

            def timed(*args, _f=original, _name=name, **kwargs):
                t0 = time.process_time()
                try:
                    return _f(*args, **kwargs)
                finally:
                    spent[_name] = spent.get(_name, 0.0) + time.process_time() - t0

            setattr(module, name, timed)
    try:
        engine = Engine(settings)
        n = blocks[0].n
        for k in range(2 * N_BLOCKS + seconds):
            if k == 2 * N_BLOCKS:  # after the warm-up
                spent.clear()
                t0 = time.process_time()
            b = blocks[k % len(blocks)]
            engine.step(b.voltages, b.currents, k * n, full_scale)
        total = time.process_time() - t0
    finally:
        for module, name, original in originals:
            setattr(module, name, original)
    parts = {name: 1000 * t / seconds for name, t in spent.items()}
    parts["Python around them"] = 1000 * (total - sum(spent.values())) / seconds
    parts["total"] = 1000 * total / seconds
    return parts


def engine_memory(settings: Settings, blocks: list[SampleBlock]) -> tuple[int, int]:
    """(bytes held by a warmed-up engine, extra peak bytes during one step), traced."""
    n = blocks[0].n
    tracemalloc.start()
    engine = Engine(settings)
    for k in range(3):
        engine.step(blocks[k].voltages, blocks[k].currents, k * n)
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    engine.step(blocks[3].voltages, blocks[3].currents, 3 * n)
    peak = tracemalloc.get_traced_memory()[1] - held
    tracemalloc.stop()
    return held, peak


def _first_step_s(settings: Settings, blocks: list[SampleBlock]) -> float:
    """Wall time of a fresh engine's first step (includes any JIT or cache loading)."""
    t0 = time.perf_counter()
    Engine(settings).step(blocks[0].voltages, blocks[0].currents, 0)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=60, help="signal seconds per run (default 60)")
    ap.add_argument("--runs", type=int, default=3, help="runs per measurement (median shown)")
    ap.add_argument("--parts", action="store_true", help="also time each analysis kernel")
    args = ap.parse_args(argv)
    settings = load_settings(SETTINGS)
    assert settings.n_mains == 2 and settings.sample_rate_hz == 12800.0
    load0 = os.getloadavg()

    gen = _source(settings)
    first = [gen.read(int(settings.sample_rate_hz)) for _ in range(1)]
    first_step = _first_step_s(settings, first)
    rows = {
        "simulation + analysis": bench_device(settings, args.seconds, args.runs),
        "simulation": bench_simulation(settings, args.seconds, args.runs),
    }
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    blocks = first + [gen.read(int(settings.sample_rate_hz)) for _ in range(N_BLOCKS - 1)]
    full_scale = (gen.full_scale_v, gen.full_scale_i)
    rows["analysis"] = bench_analysis(settings, blocks, full_scale, args.seconds, args.runs)
    held, peak = engine_memory(settings, blocks)
    parts = analysis_parts(settings, blocks, full_scale, args.seconds) if args.parts else {}

    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    print(f"# PM-4324A metering benchmark ({time.strftime('%Y-%m-%d')})")
    versions = f"Python {platform.python_version()}, numpy {np.__version__}"
    if "numba" in sys.modules:
        versions += f", numba {sys.modules['numba'].__version__}"
    print(f"CPU {cpu}, {os.cpu_count()} cores, pinned to {affinity}; {versions}")
    print(f"{args.seconds} s x {args.runs} runs; load average before {load0[0]:.2f}, "
          f"after {os.getloadavg()[0]:.2f}")
    print()
    print("| workload | meter-s / CPU-s: median | best | worst | ms CPU per meter-s (median)"
          " | target |")
    print("|---|---:|---:|---:|---:|---|")
    for name in ("analysis", "simulation", "simulation + analysis"):
        r = rows[name]
        med = statistics.median(r)
        target = TARGETS.get(name)
        mark = "" if target is None else f">= {target:g}: {'PASS' if med >= target else 'FAIL'}"
        print(f"| {name} | {med:.0f} | {max(r):.0f} | {min(r):.0f} | {1000 / med:.2f} | {mark} |")
    print()
    print(f"- peak RSS after the device loop (process, ru_maxrss): {rss_mib:.0f} MiB")
    print(f"- numpy buffers held by a warmed-up Engine: {held / 2**20:.1f} MiB; extra peak "
          f"during one step: {peak / 2**20:.1f} MiB (tracemalloc)")
    print(f"- imports (numpy, pm4324{', numba' if 'numba' in sys.modules else ''}): "
          f"{IMPORT_S:.2f} s wall; first Engine.step of a fresh engine: "
          f"{1000 * first_step:.0f} ms wall (one-off costs included)")
    if parts:
        print()
        print("| analysis part | ms CPU per meter-s |")
        print("|---|---:|")
        for name, ms in sorted(parts.items(), key=lambda item: -item[1]):
            print(f"| {name} | {ms:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
