"""Helpers: a real Mosquitto per test (own process, free port, own config), a real MQTT
subscriber, and `pm4324 run` as a process.

The machine's broker on 1883 is for development; tests start their own so they can stop and
restart it. Skips with the reason when `mosquitto` is not installed.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto")
                                          else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, timeout: float, what: str, step: float = 0.05):
    """Poll ``condition`` until it is truthy (bounded); fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Broker:
    def __init__(self, workdir: Path, extra: str = "", port: int | None = None):
        self.dir, self.port, self.extra = workdir, port or free_port(), extra
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        conf = self.dir / "mosquitto.conf"
        # as root, mosquitto drops to user "mosquitto", who cannot read pytest's private tmp dir
        user = "user root\n" if os.geteuid() == 0 else ""
        conf.write_text(f"{user}listener {self.port} 127.0.0.1\n{self.extra or 'allow_anonymous true'}\n"
                        f"persistence true\npersistence_location {self.dir}/\n"
                        f"log_dest file {self.dir}/mosquitto.log\n")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        wait_for(self._listening, 10, f"mosquitto on port {self.port}")

    def _listening(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            log = self.dir / "mosquitto.log"
            said = (log.read_text() if log.exists() else "") + (self.proc.stderr.read() or "")
            raise AssertionError(f"mosquitto exited: {said}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


class Subscriber:
    """A real MQTT client (paho) that keeps every message, with a persistent session so a
    restarted broker hands it what was published while it was reconnecting."""

    def __init__(self, port: int, topics: list[str], client_id: str = "test-subscriber", **tls):
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.connected = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=False)
        if tls:
            self.client.tls_set(**tls)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.2, 1)
        self.topics = topics
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        wait_for(self.connected.is_set, 10, "the subscriber to connect")

    def _on_connect(self, client, userdata, flags, reason, properties):
        for t in self.topics:
            client.subscribe(t, qos=1)
        self.connected.set()

    def _on_message(self, client, userdata, msg):
        with self.lock:
            self.messages.append((msg.topic, msg.payload, msg.retain))

    def received(self, prefix: str = "") -> list[tuple[str, bytes, bool]]:
        with self.lock:
            return [m for m in self.messages if m[0].startswith(prefix)]

    def json(self, prefix: str) -> list[tuple[str, dict]]:
        return [(t, json.loads(p)) for t, p, _ in self.received(prefix)
                if p and not t.endswith("/status")]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class MeterProcess:
    """`pm4324 run --json` as a user runs it, its JSON lines collected as they come."""

    def __init__(self, settings: Path, *args: str):
        self.lines: list[dict] = []
        self.stderr: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pm4324.cli.cli", "run", "--settings", str(settings),
             "--json", "--no-modbus", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._read_out, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(json.loads(line))

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    def seq(self) -> int:
        return self.lines[-1]["seq"] if self.lines else -1

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


def meter_settings(tmp_path: Path, mqtt: str, name: str = "m") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(f'[store]\npath = "{tmp_path / name}/state.db"\n\n[mqtt]\n{mqtt}\n')
    return path
