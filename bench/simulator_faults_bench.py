"""What faults cost the simulator: the fault-free path against another revision, and the
same building with faults active, in one process on one pinned core.

Run from the repository root::

    .venv/bin/python bench/simulator_faults_bench.py c020a49      # the simulator before faults
    .venv/bin/python bench/simulator_faults_bench.py c020a49 --rounds 80

Alternating chunks of 10 one-second blocks (``SimulatorSource.read``) between the sources,
the medians of the chunks compared (as bench/metering_ab.py does for the engine: on a shared
VM only an interleaved comparison resolves a few per cent). The other revision reads its own
copy of the building's settings (older revisions do not know ``[cts.N]``).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"
if hasattr(os, "sched_setaffinity"):
    _cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {1 if 1 in _cpus else _cpus[0]})

import argparse  # noqa: E402
import importlib  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import tomllib  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_util import print_ms_table  # noqa: E402
from metering_ab import ROOT, extract  # noqa: E402

DATA = ROOT / "src" / "pm4324" / "data"
FAULTS = [{"kind": "reversed_ct", "target": "ct5"},  # linear: in the phasors
          {"kind": "ct_saturation", "target": "ct1", "clip_a": 60.0},  # on the samples
          {"kind": "dc_offset", "target": "ct2", "offset": 1.0}]
CHUNK = 10


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("revision", help="git revision whose simulator to compare with")
    ap.add_argument("--rounds", type=int, default=40, help=f"chunks of {CHUNK} s per source")
    args = ap.parse_args(argv)

    from pm4324.config.settings_parse import load_settings
    from pm4324.sources.scenario_parse import parse_scenario
    from pm4324.sources.simulator import SimulatorSource

    settings = load_settings(DATA / "building-settings.toml")
    data = tomllib.loads((DATA / "building.toml").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        extract(args.revision, Path(tmp))
        sys.path.insert(0, tmp)
        o_settings = importlib.import_module("pm4324_ab.config.settings")
        o_sim = importlib.import_module("pm4324_ab.sources.simulator")
        # the scenario reader has its own module since the split; older revisions kept it here
        o_parse = getattr(o_sim, "parse_scenario", None) or importlib.import_module(
            "pm4324_ab.sources.scenario_parse").parse_scenario
        old = o_settings.load_settings(Path(tmp) / "pm4324_ab" / "data" / "building-settings.toml")
        sources = {
            f"{args.revision}, no faults": o_sim.SimulatorSource(o_parse(data), old),
            "working tree, no faults": SimulatorSource(parse_scenario(data), settings),
            "working tree, 3 faults active": SimulatorSource(
                parse_scenario({**data, "faults": FAULTS}), settings),
        }
        n = int(settings.sample_rate_hz)
        ms: dict[str, list[float]] = {k: [] for k in sources}
        for s in sources.values():  # warm-up: compiled kernels, buffers at size
            for _ in range(CHUNK):
                s.read(n)
        for _ in range(args.rounds):
            for name, s in sources.items():
                t0 = time.process_time()
                for _ in range(CHUNK):
                    s.read(n)
                ms[name].append(1000 * (time.process_time() - t0) / CHUNK)
    print(f"# simulator, ms CPU per meter-second ({args.rounds} chunks of {CHUNK} s each)")
    print_ms_table("source", ms)
    return 0


if __name__ == "__main__":
    sys.exit(main())
