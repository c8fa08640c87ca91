"""Security as a user meets it: `pm4324 certs`, the exposure check of `pm4324 run --listen`,
and a meter run with Modbus/TCP Security whose writes a pymodbus TLS client makes and
`pm4324 audit` then shows."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import ssl
import subprocess
import sys
from pathlib import Path

from pymodbus.client import AsyncModbusTlsClient

from peers import SMALL_SCENARIO, pm4324

LIMIT = 60.0


def test_certs_command(tmp_path):
    r = pm4324("certs", str(tmp_path / "pki"), "--role", "relays", "--host", "127.0.0.1")
    assert r.returncode == 0, r.stderr
    names = sorted(Path(p).name for p in r.stdout.split())
    assert names == ["ca.key", "ca.pem", "client-relays.key", "client-relays.pem", "server.key",
                     "server.pem"]
    assert (tmp_path / "pki" / "client-relays.key").stat().st_mode & 0o077 == 0
    bad = pm4324("certs", str(tmp_path / "x"), "--days", "0")
    assert bad.returncode == 2 and bad.stderr.strip() == "pm4324 certs: --days must be 1..36500"


def test_exposed_writes_need_a_flag(tmp_path):
    (tmp_path / "v.toml").write_text('model = "PM-4324"\n[security]\nprofile = "vendor"\n')
    args = ["run", "--settings", str(tmp_path / "v.toml"), "--listen", "0.0.0.0:0",
            "--seconds", "1", "--speed", "50", "--json"]
    r = pm4324(*args)
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("pm4324 run: Modbus TCP on 0.0.0.0:0 would let any host in 0.0.0.0/0")
    assert "--allow-exposed-writes" in last and "Traceback" not in r.stderr
    assert "write policy for other hosts: all + energy reset" in r.stderr
    assert not (tmp_path / "var").exists()  # refused before the state file was opened
    ok = pm4324(*args, "--allow-exposed-writes")
    assert ok.returncode == 0, ok.stderr
    # the default policy on every interface: reported, but only loopback clients are admitted
    (tmp_path / "d.toml").write_text('model = "PM-4324"\n')
    d = pm4324("run", "--settings", str(tmp_path / "d.toml"), "--listen", "0.0.0.0:0",
               "--seconds", "1", "--speed", "50", "--json")
    assert d.returncode == 0, d.stderr
    assert "but only loopback clients are admitted" in d.stderr


async def test_run_with_tls_writes_and_audit(tmp_path):
    assert pm4324("certs", str(tmp_path / "pki"), "--role", "energy-reset", "--role",
                  "relays").returncode == 0
    settings = tmp_path / "m.toml"
    settings.write_text('model = "PM-4324"\nsample_rate_hz = 2000\n[modbus]\n'
                        'tcp_listen = "127.0.0.1:0"\n[security.tls]\nenabled = true\n'
                        'listen = "127.0.0.1:0"\ncertificate = "pki/server.pem"\n'
                        'key = "pki/server.key"\nca = "pki/ca.pem"\n')
    (tmp_path / "sc.toml").write_text(SMALL_SCENARIO)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pm4324.cli.cli", "run", "--settings", str(settings), "--scenario",
        str(tmp_path / "sc.toml"), "--json", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        port = None
        for _ in range(50):  # bounded: the lines `run` prints before serving
            line = (await asyncio.wait_for(proc.stderr.readline(), LIMIT)).decode()
            if m := re.match(r"Modbus/TCP Security \(TLS\) on 127\.0\.0\.1:(\d+)", line):
                port = int(m[1])
                break
        assert port, "no TLS listener line"
        for role, expect_ok in (("relays", False), ("energy-reset", True)):
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.load_verify_locations(tmp_path / "pki" / "ca.pem")
            ctx.load_cert_chain(tmp_path / "pki" / f"client-{role}.pem",
                                tmp_path / "pki" / f"client-{role}.key")
            client = AsyncModbusTlsClient("127.0.0.1", port=port, sslctx=ctx, timeout=5, retries=0)
            await client.connect()
            try:
                rsp = await client.write_register(0x1013, 9, device_id=1)
            finally:
                client.close()
            assert rsp.isError() != expect_ok
    finally:
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.wait(), LIMIT)
    assert proc.returncode == 0
    r = pm4324("audit", "--settings", str(settings), "--json")
    assert r.returncode == 0, r.stderr
    entries = [json.loads(line) for line in r.stdout.splitlines()]
    assert [(e["outcome"], e["interface"], e["subject"], e["role"], e["target"], e["new"])
            for e in entries] == [
        ("refused", "modbus-tls", "relays client", "relays", "holding 0x1013 energy_reset", "9"),
        ("accepted", "modbus-tls", "energy-reset client", "energy-reset",
         "holding 0x1013 energy_reset", "9")]
    events = pm4324("events", "--settings", str(settings)).stdout
    assert "energy_reset" in events and "all Meters" in events


def test_missing_tls_file_is_one_line(tmp_path):
    (tmp_path / "t.toml").write_text('[security.tls]\nenabled = true\ncertificate = "pki/s.pem"\n'
                                     'key = "pki/s.key"\nca = "pki/ca.pem"\n')
    r = pm4324("run", "--settings", str(tmp_path / "t.toml"), "--seconds", "1")
    assert r.returncode == 2 and r.stderr.splitlines() == [
        f"pm4324 run: [security.tls] certificate = 'pki/s.pem': no such file "
        f"({tmp_path / 'pki' / 's.pem'})"]
