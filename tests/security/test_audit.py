"""The audit log's bounds: age, size per outcome, a dropped counter that survives restarts and
is served as a register; a storm of refusals neither evicts accepted writes nor grows it."""

from __future__ import annotations

from snapshot_factory import FakeMeter, make_snapshot

from pm4324.config.settings import Settings
from pm4324.registers.image import MapBackend
from pm4324.security.audit import DAY_S, AuditEntry, AuditLog
from pm4324.security.guard import Guard


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def entry(t: float, outcome: str = "accepted", new: str = "1", address: str = "10.0.0.1:5") -> AuditEntry:
    return AuditEntry(t, outcome, "modbus-tcp", address, "", None, "coil 0x1000 relay1", "0", new)


def test_size_bound_per_outcome_and_dropped_counter_persists(tmp_path):
    path = tmp_path / "a.sqlite"
    clock = Clock()
    log = AuditLog(path, max_entries=100, clock=clock)
    for i in range(30):
        log.record(entry(clock.now, new=str(i)))
    log.flush()
    for i in range(1000):  # a storm of refusals, each value different (no coalescing)
        log.record(entry(clock.now, "refused", new=str(i)))
        if i % 250 == 249:
            log.flush()
    assert len(log.entries(outcome="accepted")) == 30  # the accepted writes survive the storm
    refused = log.entries(outcome="refused")
    assert len(refused) == 100 and refused[-1].new == "999" and refused[0].new == "900"
    assert log.dropped == 900
    log.close()
    again = AuditLog.reader(path)
    assert again.dropped == 900 and len(again.entries()) == 130
    again.close()


def test_age_bound_is_retention_not_loss():
    clock = Clock()
    log = AuditLog(None, max_age_s=10 * DAY_S, clock=clock)
    log.record(entry(clock.now, new="old"))
    log.flush()
    clock.now += 11 * DAY_S
    log.record(entry(clock.now, new="new"))
    log.flush()
    assert [e.new for e in log.entries()] == ["new"] and log.dropped == 0


def test_identical_refusals_coalesce_and_a_full_queue_counts_as_dropped():
    clock = Clock()
    log = AuditLog(None, max_pending=3, clock=clock)
    for port in range(500):  # one client hammering one register from many source ports
        log.record(entry(clock.now, "refused", address=f"10.0.0.1:{port}"))
    for i in range(4):
        log.record(entry(clock.now, new=str(i)))
    log.flush()
    refused = log.entries(outcome="refused")
    assert [(e.count, e.address) for e in refused] == [(500, "10.0.0.1:0")]
    assert [e.new for e in log.entries(outcome="accepted")] == ["0", "1"]
    assert log.dropped == 2


def test_dropped_counter_is_a_register():
    clock = Clock()
    log = AuditLog(None, max_entries=100, clock=clock)
    settings = Settings()
    meter = FakeMeter(settings, make_snapshot(settings))
    backend = MapBackend(meter, guard=Guard(None, log))
    for i in range(70_000 + 100):
        log.record(entry(clock.now, new=str(i)))
        if i % 5000 == 4999:
            log.flush()
    log.flush()
    assert log.dropped == 70_000
    meter.publish(make_snapshot(settings, seq=8))  # the counters are served as of each second
    assert backend.read_registers("input", 0x1082, 2) == [70_000 - 65536, 1]  # uint32, low first


def test_relay_toggling_does_not_evict_an_energy_reset():
    clock = Clock()
    log = AuditLog(None, max_entries=100, clock=clock)
    log.record(AuditEntry(clock.now, "accepted", "modbus-tls", "10.0.0.2:7", "billing", "energy-reset",
                          "holding 0x1013 energy_reset", "import M3 12.00 kWh", "3",
                          right="energy-reset"))
    for i in range(1000):  # an authorised client switching a relay, 10x the bound
        log.record(AuditEntry(clock.now, "accepted", "modbus-tcp", "127.0.0.1:9", "", None,
                              "coil 0x1000 relay1", str(i & 1), str(~i & 1), right="relays"))
        if i % 100 == 99:
            log.flush()
    resets = [e for e in log.entries() if e.right == "energy-reset"]
    assert [(e.subject, e.old) for e in resets] == [("billing", "import M3 12.00 kWh")]
    assert len(log.entries()) == 101 and log.dropped == 900


def test_a_failing_disk_loses_entries_visibly_and_an_old_log_is_upgraded(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)  # a log as written before entries named their right
    db.executescript("CREATE TABLE audit (id INTEGER PRIMARY KEY, time REAL NOT NULL, outcome TEXT"
                     " NOT NULL, interface TEXT NOT NULL, address TEXT NOT NULL, subject TEXT NOT"
                     " NULL, role TEXT, target TEXT NOT NULL, old TEXT NOT NULL, new TEXT NOT NULL,"
                     " reason TEXT NOT NULL, count INTEGER NOT NULL DEFAULT 1);")
    db.close()
    clock = Clock()
    log = AuditLog(path, clock=clock)
    log.record(entry(clock.now, new="kept"))
    log.flush()
    assert [e.new for e in log.entries()] == ["kept"]
    log._db.execute("DROP TABLE audit")  # stands in for a disk that stopped taking writes
    log.record(entry(clock.now, "refused"))
    log.record(entry(clock.now, "refused", address="10.0.0.1:6"))  # coalesced: count 2
    log.flush()  # logged, not raised
    assert log.dropped == 2
