"""A full filesystem and read-only state files, for real.

Where the machine allows it (root, `unshare -m`), each case runs in a private mount
namespace: a 1 MiB tmpfs for the full disk, read-only bind mounts for read-only files. The
mounts vanish with the process. Without that, the full disk falls back to RLIMIT_FSIZE (the
kernel refuses to grow a file past a size, as a full disk refuses a new block); the
read-only cases then use file modes (they bind a non-root user only). Each test records
which harness ran (``record_property("harness", ...)``, shown by ``pytest -rA -s``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from peers import SMALL_SCENARIO, pm4324

LIMIT_S = 120.0
SETTINGS = """model = "PM-4324"
sample_rate_hz = 2000
[store]
path = "var/f.state.db"
"""


def _namespaces() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    r = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                       capture_output=True, timeout=LIMIT_S)
    return r.returncode == 0


NAMESPACES = _namespaces()

DISK_FULL_SCRIPT = textwrap.dedent('''
    import errno, json, os, resource, signal, subprocess, sys
    from pathlib import Path
    here, harness = Path(sys.argv[1]), sys.argv[2]
    if harness == "tmpfs":
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(here)], check=True)
    from pm4324.config.settings_parse import parse_settings
    from pm4324.device.meter import Meter
    from pm4324.device.store import Store, peek, read_events
    from pm4324.registers.image import MapBackend
    from pm4324.sources.simulator import SimulatorSource
    from pm4324.sources.scenario_parse import parse_scenario
    settings = parse_settings({"model": "PM-4324", "sample_rate_hz": 2000})
    scenario = parse_scenario({"loads": [{"cts": [1, 2, 3], "current_a": 20.0}]})
    db = here / "var" / "f.state.db"
    def meter():
        store = Store.open(db, here / "f.meter-id")
        return Meter(settings, SimulatorSource(scenario, settings), store=store)
    m = meter()
    backend = MapBackend(m)
    for _ in range(3):
        m.step()
    filler = here / "filler"
    if harness == "tmpfs":
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(fd, b"x" * 4096):
                pass
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        os.close(fd)
    else:
        for k in range(30):  # grow the event log's WAL past the ring's size
            m.set_relay(0, k % 2 == 0).result()
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        limit = (db.parent / "f.state.ring").stat().st_size  # the ring fits, the WAL does not
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    out = {"harness": harness}
    out["reset_acknowledged"] = m.reset_energy(1).result()
    out["status_now"] = backend.read_registers("input", 0x1005, 1)[0]
    published = []
    for _ in range(4):
        snap = m.step()
        published.append((snap.status, float(snap.meter_energy.wh_import[0])))
    out["published"] = published
    out["on_disk_while_full"] = float(peek(db).meter.values()[0, 0])
    if harness == "tmpfs":
        filler.unlink()
    else:
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
    for _ in range(2):
        snap = m.step()
    out["status_after"] = snap.status
    out["last"] = float(snap.meter_energy.wh_import[0])
    m.close()
    m = meter()
    out["restored"] = float(m.snapshot.meter_energy.wh_import[0])
    m.close()
    out["events"] = [(e.kind, e.text) for e in read_events(db)]
    print(json.dumps(out))
''')


def test_a_full_disk_while_running_is_flagged_and_loses_nothing(tmp_path, record_property):
    """The issue: 31 s published but never saved, then 71.5 Wh instead of 173.7 Wh."""
    from pm4324.snapshot import Status

    harness = "tmpfs" if NAMESPACES else "fsize"
    record_property("harness", "tmpfs in a private mount namespace" if NAMESPACES
                    else "RLIMIT_FSIZE")
    here = tmp_path / "meter"
    here.mkdir()
    script = tmp_path / "full.py"
    script.write_text(DISK_FULL_SCRIPT)
    cmd = [sys.executable, str(script), str(here), harness]
    r = subprocess.run(["unshare", "-m", *cmd] if NAMESPACES else cmd, capture_output=True,
                       text=True, timeout=LIMIT_S)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.splitlines()[-1])
    print(f"disk-full harness: {out['harness']}")
    assert out["reset_acknowledged"] is False  # its event cannot be saved: no ack
    assert out["status_now"] & Status.NOT_SAVED  # shown at once, between two seconds
    assert all(status & Status.NOT_SAVED for status, _ in out["published"])
    # the energies themselves never stopped being saved (the ring is preallocated)
    assert out["on_disk_while_full"] == pytest.approx(out["published"][-1][1], abs=1e-6)
    assert not out["status_after"] & Status.NOT_SAVED
    assert out["restored"] == pytest.approx(out["last"], abs=1e-6)
    kinds = [k for k, _ in out["events"]]
    assert "energy_reset" in kinds and kinds.count("store_error") == 2
    assert "no space" in out["events"][kinds.index("store_error")][1].lower() or \
        "full" in out["events"][kinds.index("store_error")][1].lower() or harness == "fsize"


def _meter_dir(tmp_path: Path) -> list[str]:
    (tmp_path / "f.toml").write_text(SETTINGS)
    (tmp_path / "sc.toml").write_text(SMALL_SCENARIO)
    args = ["run", "--settings", str(tmp_path / "f.toml"), "--scenario",
            str(tmp_path / "sc.toml"), "--json", "--no-modbus", "--speed", "50", "--seconds", "2"]
    r = pm4324(*args, timeout=LIMIT_S)
    assert r.returncode == 0, r.stderr
    return args


def _run_in_namespace(setup: str, args: list[str]) -> subprocess.CompletedProcess:
    cmd = " ".join(["exec", sys.executable, "-m", "pm4324.cli.cli", *args])
    return subprocess.run(["unshare", "-m", "sh", "-c", f"{setup} && {cmd}"],
                          capture_output=True, text=True, timeout=LIMIT_S)


@pytest.mark.parametrize("what", ["directory", "ring", "event log"])
def test_read_only_state_is_refused_with_one_line(tmp_path, what, record_property):
    """The issue: a read-only state file ran, exited 0 and saved nothing."""
    args = _meter_dir(tmp_path)
    var = tmp_path / "var"
    target = {"directory": var, "ring": var / "f.state.ring", "event log": var / "f.state.db"}[what]
    if NAMESPACES:
        record_property("harness", "read-only bind mount in a private mount namespace")
        r = _run_in_namespace(f"mount --bind {target} {target} && "
                              f"mount -o remount,bind,ro {target}", args)
    elif os.geteuid() != 0:
        record_property("harness", "file modes")
        target.chmod(0o555 if target.is_dir() else 0o444)
        r = pm4324(*args, timeout=LIMIT_S)
    else:
        pytest.skip("root without mount namespaces: file modes do not bind root")
    assert r.returncode == 2 and r.stdout == "" and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and ("Read-only" in lines[0] or "Permission" in lines[0]), lines
    assert str(var) in lines[0]


def test_a_full_disk_at_start_renames_nothing(tmp_path, record_property):
    """The issue: the healthy file was renamed .damaged-<time> and the meter crashed."""
    if not NAMESPACES:
        pytest.skip("needs a tmpfs in a private mount namespace (root and unshare)")
    record_property("harness", "tmpfs in a private mount namespace")
    args = _meter_dir(tmp_path)
    var = tmp_path / "var"
    saved = tmp_path / "saved"
    shutil.copytree(var, saved)
    names = sorted(p.name for p in var.iterdir())
    fill = f"dd if=/dev/zero of={var}/filler bs=4k 2>/dev/null; true"
    r = _run_in_namespace(f"mount -t tmpfs -o size=600k tmpfs {var} && cp -a {saved}/. {var} "
                          f"&& {fill} && sh -c 'ls {var} > {tmp_path}/seen'", args)
    assert "Traceback" not in r.stderr, r.stderr
    seen = (tmp_path / "seen").read_text().split()
    assert sorted(n for n in seen if n != "filler") == names  # nothing renamed aside
    if r.returncode != 0:
        lines = [x for x in r.stderr.strip().splitlines() if "error" in x]
        assert r.returncode == 2 and len(lines) == 1, r.stderr
        assert "full" in lines[0] and str(var) in lines[0]
