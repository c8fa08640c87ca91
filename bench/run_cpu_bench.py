"""What one `pm4324 run` costs in real time: CPU seconds per meter-second, startup excluded.

Run from the repository root::

    .venv/bin/python bench/run_cpu_bench.py                  # 25 s minus 5 s, as shipped
    .venv/bin/python bench/run_cpu_bench.py --env OPENBLAS_NUM_THREADS=1

The metering benchmark (metering_bench.py) pins itself to one thread and one CPU, so it
cannot see what the shipped program spends on thread pools. This runs the program itself,
as a user does: ``pm4324 run --seconds N --json --no-modbus`` in real time on the built-in
building (a copy of its settings in a temporary directory, so its state file is private),
twice, with N = ``--long`` and ``--short``. The CPU each child used (user + system, from
``getrusage(RUSAGE_CHILDREN)``) differs by the cost of ``long - short`` meter-seconds with
the same startup, so

    CPU per meter-second = (cpu(long) - cpu(short)) / (long - short)

and the startup cost is cpu(short) - short * that. Other processes on the machine add to
the wall time but hardly to the CPU a process is charged with; the load average is printed.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ROOT / "src" / "pm4324" / "data" / "building-settings.toml"


def child_cpu(seconds: float, env: dict[str, str], settings: Path) -> float:
    """CPU seconds (user + system) of one `pm4324 run --seconds N` in real time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-m", "pm4324.cli.cli", "run", "--settings", str(settings),
                    "--seconds", f"{seconds:g}", "--json", "--no-modbus"],
                   stdout=subprocess.DEVNULL, env=env, check=True, timeout=seconds + 120)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--long", type=float, default=25.0)
    p.add_argument("--short", type=float, default=5.0)
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="extra environment for the meter (repeatable)")
    args = p.parse_args()
    env = dict(os.environ)
    env.update(item.split("=", 1) for item in args.env)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Path(tmp) / "bench.toml"
        shutil.copy(SETTINGS, settings)
        child_cpu(1, env, settings)  # kernels compiled and cached, state file created
        short = child_cpu(args.short, env, settings)
        long = child_cpu(args.long, env, settings)
    per_second = (long - short) / (args.long - args.short)
    startup = short - args.short * per_second
    print(f"pm4324 run, real time, {' '.join(args.env) or 'as shipped'}; "
          f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs")
    print(f"  cpu({args.short:g} s) = {short:.3f} s, cpu({args.long:g} s) = {long:.3f} s")
    print(f"  CPU per meter-second: {per_second * 1e3:.1f} ms ({per_second * 100:.1f} % of one core)")
    print(f"  startup: {startup:.2f} CPU s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
