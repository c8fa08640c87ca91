"""Analysis speed of the working tree's engine against another git revision's, in one process.

Run from the repository root::

    .venv/bin/python bench/metering_ab.py 88add34            # or any revision
    .venv/bin/python bench/metering_ab.py HEAD~1 --rounds 60

On a shared VM the CPU time of the same code drifts by up to 1.6x within seconds, so two
separate benchmark runs cannot resolve a 10 % change. This feeds both engines the same 20
pre-generated blocks (as bench/metering_bench.py's analysis does), alternating in chunks of
20 steps on one pinned core, and compares the medians of the chunks: both see the same
drift. The other revision's ``src/pm4324`` is extracted with ``git archive`` into a
temporary directory as a package named ``pm4324_ab`` (its imports rewritten), so both
import side by side.
"""

from __future__ import annotations

import os
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"
if hasattr(os, "sched_setaffinity"):
    _cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {1 if 1 in _cpus else _cpus[0]})

import argparse  # noqa: E402
import importlib  # noqa: E402
import io  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tarfile  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

from bench_util import print_ms_table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ROOT / "src" / "pm4324" / "data" / "building-settings.toml"
N_BLOCKS = 20
CHUNK = 20


def extract(revision: str, into: Path) -> None:
    """``src/pm4324`` of ``revision`` as package ``pm4324_ab`` under ``into``."""
    tar = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "src/pm4324"],
                         check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        archive.extractall(into, filter="data")
    package = into / "pm4324_ab"
    (into / "src" / "pm4324").rename(package)
    for path in package.rglob("*.py"):
        text = path.read_text()
        path.write_text(re.sub(r"\bpm4324(?=[.\s])", "pm4324_ab", text))


def attach_pq(package: str, engine: object) -> None:
    """Hook ``package``'s power-quality monitor into ``engine`` if that revision has one."""
    try:
        monitor = importlib.import_module(f"{package}.metering.pq.monitor")
    except ModuleNotFoundError:
        return
    if hasattr(monitor, "attach"):
        monitor.attach(engine)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("revision", help="git revision to compare with the working tree")
    ap.add_argument("--rounds", type=int, default=40, help=f"chunks of {CHUNK} steps per engine")
    ap.add_argument("--no-pq", action="store_true", help="engines without the PQ monitor")
    args = ap.parse_args(argv)

    from pm4324.config.settings_parse import load_settings
    from pm4324.metering.engine import Engine
    from pm4324.sources.scenario_parse import load_scenario
    from pm4324.sources.simulator import SimulatorSource

    with tempfile.TemporaryDirectory() as tmp:
        extract(args.revision, Path(tmp))
        sys.path.insert(0, tmp)
        # the settings file reader moved to settings_parse; older revisions have it in settings
        other_settings = importlib.import_module(
            "pm4324_ab.config.settings_parse"
            if (Path(tmp) / "pm4324_ab/config/settings_parse.py").exists()
            else "pm4324_ab.config.settings")
        other_engine = importlib.import_module("pm4324_ab.metering.engine")
        settings = load_settings(SETTINGS)
        source = SimulatorSource(load_scenario(None), settings)
        blocks = [source.read(int(settings.sample_rate_hz)) for _ in range(N_BLOCKS)]
        full_scale = (source.full_scale_v, source.full_scale_i)
        engines = {args.revision: other_engine.Engine(other_settings.load_settings(SETTINGS)),
                   "working tree": Engine(settings)}
        if not args.no_pq:  # the power-quality monitor, as the device runs it, where it exists
            for engine, package in zip(engines.values(), ("pm4324_ab", "pm4324")):
                attach_pq(package, engine)
        fed = dict.fromkeys(engines, 0)

        def run(name: str, steps: int) -> None:
            engine = engines[name]
            for _ in range(steps):
                k = fed[name]
                b = blocks[k % N_BLOCKS]
                engine.step(b.voltages, b.currents, k * b.n, full_scale)
                fed[name] += 1

        for name in engines:  # warm-up: compiled kernels loaded, buffers at size
            run(name, 2 * N_BLOCKS)
        ms: dict[str, list[float]] = {name: [] for name in engines}
        for _ in range(args.rounds):
            for name in engines:
                t0 = time.process_time()
                run(name, CHUNK)
                ms[name].append(1000 * (time.process_time() - t0) / CHUNK)

    print(f"# analysis, ms CPU per meter-second ({args.rounds} chunks of {CHUNK} steps each)")
    print_ms_table("engine", ms)
    base, new = (statistics.median(v) for v in ms.values())
    print(f"\nworking tree / {args.revision}: {new / base:.3f} of the CPU time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
