"""Kill soak of the energy store: SIGKILL `pm4324 run` at random moments, restart, repeat.

    .venv/bin/python bench/soak_kill.py --cycles 1000 --seed 1          # kill soak
    .venv/bin/python bench/soak_kill.py --cycles 0 --commits 100000     # store cost only
    .venv/bin/python bench/soak_kill.py --cycles 0 --commits 3000 --events-every 1  # worst case

Each cycle starts the meter on a fast simulation (`run --speed S --json --no-modbus`, its own
settings and state file in a work directory), reads a random number of JSON lines (seeded;
0 = kill while it starts), SIGKILLs it, drains what it had already printed, reads the state
file's newest record directly (``store.peek``) and starts again. Checked at every kill:

* the record on disk is the last printed second or the one after it (the commit is done
  before the line is printed), with the printed counters when it is the same second: a
  kill loses at most the second being measured, never a published one;
* every counter (all 24 CTs and 8 Meters, all 7 energies) never decreases from record to
  record nor from record to the next boot's first line, and never reads zero again;
* a restart adds at most one second of energy to the record it starts from.

``--commits N`` then measures the store alone, in this process: time per commit, bytes
written to the disk per commit (/proc/self/io), and the files' sizes after N/2 and N
commits. A typical second commits the record alone; ``--events-every K`` adds an event
(a relay toggling) every K commits, 1 being the worst case for the event log.
tests/cli/test_kill.py runs ``run_cycles`` with 50 cycles.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pm4324.device.store import Record, peek
from pm4324.snapshot import ENERGY_KINDS

SETTINGS = """model = "PM-4324"
sample_rate_hz = 2000
[meters.1]
wiring = "3P4W-3CT"
[meters.2]
wiring = "1P2W-1CT"
[store]
path = "var/soak.state.db"
"""
SCENARIO = """name = "kill soak: constant loads"
seed = 1
[mains.1]
voltage_v = 230.0
frequency_hz = 50.0
[[loads]]
cts = [1, 2, 3]
current_a = 40.0
pf = 0.9
[[loads]]
cts = [4]
current_a = 10.0
pf = -0.8
export = true
"""
JSON_KEYS = ("kwh_import", "kwh_export", "kvarh_q1", "kvarh_q2", "kvarh_q3", "kvarh_q4", "kvah")
TOL_WH = 1e-6  # the JSON prints kWh to 12 significant digits
CYCLE_LIMIT_S = 60.0  # a cycle that takes longer is killed and reported (a hang)


@dataclass
class SoakResult:
    cycles: int = 0
    problems: list[str] = field(default_factory=list)
    ahead: list[int] = field(default_factory=list)  # record second - last printed second
    printed: list[int] = field(default_factory=list)  # lines printed per boot
    boots: int = 0
    final: Record | None = None
    seconds: float = 0.0


def prepare(workdir: Path) -> tuple[Path, Path]:
    workdir.mkdir(parents=True, exist_ok=True)
    settings, scenario = workdir / "soak.toml", workdir / "soak-scenario.toml"
    settings.write_text(SETTINGS, encoding="utf-8")
    scenario.write_text(SCENARIO, encoding="utf-8")
    return settings, scenario


def _energies(d: dict, group: str) -> np.ndarray:
    """(n, 7) Wh of the printed CTs or Meters, in the record's column order."""
    return np.array([[x[k] * 1000.0 for k in JSON_KEYS] for x in d[group]])


def _printed(lines: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    return _energies(lines[-1], "cts"), _energies(lines[-1], "meters")


def _record_part(r: Record, line: dict) -> tuple[np.ndarray, np.ndarray]:
    """The record's registers for the CTs and Meters the line shows."""
    cts = [c["ct"] - 1 for c in line["cts"]]
    meters = [m["meter"] - 1 for m in line["meters"]]
    return r.ct.values()[cts], r.meter.values()[meters]


def _one_boot(settings: Path, scenario: Path, speed: float, lines_wanted: int
              ) -> tuple[list[dict], str]:
    """Start the meter, SIGKILL it, return every line it printed and its stderr.

    ``lines_wanted`` -1: kill at once (while Python starts); 0: as soon as it has opened its
    state file (while it powers up); N: after reading N lines.
    """
    cmd = [sys.executable, "-m", "pm4324.cli.cli", "run", "--speed", str(speed), "--json",
           "--no-modbus", "--settings", str(settings), "--scenario", str(scenario)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    watchdog = threading.Timer(CYCLE_LIMIT_S, proc.kill)  # bounds a hang, never paces
    watchdog.start()
    try:
        err = [proc.stderr.readline()] if lines_wanted >= 0 else []  # "State file ..."
        raw = [proc.stdout.readline() for _ in range(max(lines_wanted, 0))]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        raw.append(proc.stdout.read())  # what it printed before it died
        err.append(proc.stderr.read())
    finally:
        watchdog.cancel()
        proc.stdout.close()
        proc.stderr.close()
    text = b"".join(raw).decode()
    lines = [json.loads(x) for x in text.split("\n")[:-1] if x]  # drop a torn last line
    return lines, b"".join(err).decode()


def run_cycles(workdir: Path, cycles: int, seed: int = 1, speed: float = 50.0,
               max_lines: int = 6) -> SoakResult:
    settings, scenario = prepare(workdir)
    db = workdir / "var" / "soak.state.db"
    rng = random.Random(seed)
    result = SoakResult()
    floor: Record | None = None  # the newest record seen: nothing may go below it
    step = None  # largest one-second increment seen, per register (Wh)
    t0 = time.perf_counter()
    for cycle in range(cycles):
        lines, err = _one_boot(settings, scenario, speed, rng.randint(-1, max_lines))
        result.cycles += 1
        record = peek(db) if db.exists() else None
        where = f"cycle {cycle}"
        if "error" in err or "Traceback" in err:
            result.problems.append(f"{where}: the meter failed: {err.strip()[-300:]}")
        if [d["seq"] for d in lines] != list(range(len(lines))):
            result.problems.append(f"{where}: seconds printed out of order")
            continue
        result.printed.append(len(lines))
        if record is None:
            if lines or floor is not None:
                result.problems.append(f"{where}: no intact record after the kill")
            continue
        result.boots = record.boot
        for a, b in zip(lines, lines[1:]):
            inc = np.concatenate([x.ravel() for x in _printed([b])]) - np.concatenate(
                [x.ravel() for x in _printed([a])])
            step = inc if step is None else np.maximum(step, inc)
        if lines:
            result.problems += _check_kill(where, lines, record, floor, step)
            result.ahead.append(record.second - lines[-1]["seq"])
        if floor is not None:
            for name, now, before in (("CT", record.ct.values(), floor.ct.values()),
                                      ("Meter", record.meter.values(), floor.meter.values())):
                if np.any(now < before - TOL_WH):
                    i, k = np.argwhere(now < before - TOL_WH)[0]
                    result.problems.append(
                        f"{where}: {name} {i + 1} {ENERGY_KINDS[k]} went down: {before[i, k]!r} "
                        f"-> {now[i, k]!r} Wh")
        floor = record
    result.final = floor
    result.seconds = time.perf_counter() - t0
    return result


def _check_kill(where: str, lines: list[dict], record: Record, floor: Record | None,
                step: np.ndarray | None) -> list[str]:
    last = lines[-1]
    problems = []
    if record.second not in (last["seq"], last["seq"] + 1):
        problems.append(f"{where}: record is second {record.second}, last printed "
                        f"{last['seq']}: a commit is not done before its line is printed")
        return problems
    got = np.concatenate([x.ravel() for x in _record_part(record, last)])
    shown = np.concatenate([x.ravel() for x in _printed(lines)])
    if record.second == last["seq"] and np.any(np.abs(got - shown) > TOL_WH):
        problems.append(f"{where}: record of second {record.second} differs from its line")
    if np.any(got < shown - TOL_WH):
        problems.append(f"{where}: record below the last printed counters")
    if floor is not None:  # the boot's first line: the floor plus at most one second
        first = np.concatenate([x.ravel() for x in _printed(lines[:1])])
        base = np.concatenate([x.ravel() for x in _record_part(floor, lines[0])])
        if np.any(first < base - TOL_WH):
            problems.append(f"{where}: first second after restart below the saved counters")
        if step is not None and np.any(first - base > 1.5 * step + TOL_WH):
            problems.append(f"{where}: restart added more than one second of energy")
    return problems


def store_cost(workdir: Path, commits: int, events_every: int = 0) -> dict[str, float]:
    """Commit ``commits`` records in this process, with an event (a relay toggling) every
    ``events_every`` commits (0: none); time, disk bytes and file sizes."""
    from pm4324.device.energy import EnergyRegisters
    from pm4324.device.events import Event
    from pm4324.device.store import Store

    directory = workdir / "cost"
    directory.mkdir(parents=True, exist_ok=True)
    for p in directory.glob("*"):
        p.unlink()
    db = directory / "cost.state.db"
    wal = db.with_name(db.name + "-wal")
    store = Store.open(db, directory / "cost.meter-id")
    ct, meter = EnergyRegisters(24), EnergyRegisters(8)
    before = _io()
    times, wal_max, db_at = [], 0, {}
    for n in range(commits):
        ct.add(np.full((24, 7), 0.0111))
        meter.add(np.full((8, 7), 0.0333))
        events = [Event(time.time(), 1, n, "relay", f"relay 1 {'closed' if n % 2 else 'open'}"
                        " (alarm)")] if events_every and n % events_every == 0 else []
        t = time.perf_counter()
        store.save(n, ct, meter, (n % 2 == 0, False), {}, events)
        times.append(time.perf_counter() - t)
        if n % 100 == 0:
            wal_max = max(wal_max, wal.stat().st_size if wal.exists() else 0)
            db_at[n] = db.stat().st_size
    after = _io()
    store.close()
    ms = sorted(1e3 * x for x in times)
    half = max(k for k in db_at if k <= commits // 2)
    return {
        "commits": commits,
        "commit_ms_mean": statistics.fmean(ms),
        "commit_ms_p50": ms[len(ms) // 2],
        "commit_ms_p99": ms[int(len(ms) * 0.99)],
        "commit_ms_max": ms[-1],
        "disk_bytes_per_commit": (after["write_bytes"] - before["write_bytes"]) / commits,
        "write_calls_per_commit": (after["syscw"] - before["syscw"]) / commits,
        f"db_bytes_after_{half}": db_at[half],
        f"db_bytes_after_{commits}": db.stat().st_size,
        "wal_bytes_max_seen": wal_max,
    }


def _io() -> dict[str, int]:
    rows = Path("/proc/self/io").read_text().split("\n")
    return {k: int(v) for k, v in (r.split(": ") for r in rows if r)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cycles", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--speed", type=float, default=50.0)
    ap.add_argument("--max-lines", type=int, default=6)
    ap.add_argument("--commits", type=int, default=0, help="also measure the store alone")
    ap.add_argument("--events-every", type=int, default=0,
                    help="with --commits: an event every K commits (0: none)")
    ap.add_argument("--workdir", type=Path, default=Path("var/soak"))
    args = ap.parse_args()
    if args.cycles:
        r = run_cycles(args.workdir, args.cycles, args.seed, args.speed, args.max_lines)
        print(f"kill cycles: {r.cycles} in {r.seconds:.0f} s (seed {args.seed}, speed "
              f"{args.speed:g}, 0..{args.max_lines} lines before each kill)")
        print(f"boots recorded in the state file: {r.boots}")
        print(f"seconds printed per boot: mean {statistics.fmean(r.printed):.1f}, "
              f"max {max(r.printed)}")
        for ahead in sorted(set(r.ahead)):
            print(f"record = last printed second + {ahead}: {r.ahead.count(ahead)} kills")
        if r.final is not None:
            print(f"final Meter 1 import: {r.final.meter.values()[0, 0] / 1000:.6f} kWh")
        print(f"problems: {len(r.problems)}")
        for p in r.problems[:20]:
            print("  " + p)
    if args.commits:
        for k, v in store_cost(args.workdir, args.commits, args.events_every).items():
            print(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}")


if __name__ == "__main__":
    main()
