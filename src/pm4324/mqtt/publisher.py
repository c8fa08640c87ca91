"""The MQTT publisher of one meter: live topics, HA discovery, store and forward, commands.

It runs as one asyncio task beside the protocol servers and takes each second's snapshot
dict through ``offer()`` (safe from any thread). While the broker is unreachable it keeps one
reading a minute on disk (``ForwardBuffer``); after reconnecting it sends those to the
history topics with their original times, oldest first, then carries on live. Live topics
never carry old values: Home Assistant stamps a state with its arrival time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import sys
from collections.abc import Callable
from typing import Any

import aiomqtt

from pm4324.config.mqtt_settings import MqttSettings
from pm4324.mqtt.buffer import ForwardBuffer
from pm4324.mqtt.discovery import Discovery
from pm4324.mqtt.topics import base, changed, history_message, minute_reading, state_messages

log = logging.getLogger("pm4324.mqtt")
_client_log = logging.getLogger("pm4324.mqtt.client")
_client_log.setLevel(logging.CRITICAL)  # paho's socket errors: we say what happened in one line

#: (kind, number, value) -> None, or raises ValueError with the reason for a refusal
Command = Callable[[str, int | None, bool | None], None]
BACKLOG_BATCH = 60  # minutes sent (and acknowledged) per step of the backlog
MAX_RETRY_S = 10.0
MAX_IN_FLIGHT = 1000  # QoS 1 messages awaiting the broker's acknowledgement


def _say(text: str) -> None:
    print(f"MQTT: {text}", file=sys.stderr, flush=True)


class MqttPublisher:
    def __init__(self, settings: MqttSettings, *, meter_id: str, model: str, sw_version: str,
                 buffer_path: str, command: Command | None = None):
        self.settings = settings
        self.node = settings.node_id or f"pm4324-{meter_id.replace('-', '')[:12]}"
        self.root = base(settings.topic_prefix, self.node)
        self.discovery = Discovery(discovery_prefix=settings.discovery_prefix, root=self.root,
                                   node=self.node, meter_id=meter_id, model=model,
                                   sw_version=sw_version,
                                   commands=settings.commands == "relays" and command is not None)
        self.buffer = ForwardBuffer(buffer_path, settings.buffer_minutes)
        self.command = command
        self.connected = False
        self._outage = False  # the broker was lost or refused: keep minutes for later
        self._latest: dict[str, Any] | None = None
        self._fresh = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sent: dict[str, dict[str, Any]] = {}  # topic -> last published payload
        self._sent_at: dict[str, float] = {}
        self._last_publish_time = float("-inf")
        self._published_time: float | None = None  # the last second whose topics all went out
        self._last_buffered_minute: int | None = None
        self._discovered_shape: Any = None

    # -- input ---------------------------------------------------------------------------------

    def offer(self, d: dict[str, Any]) -> None:
        """Hand over one second (from the meter's thread or the loop)."""
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._take, d)
        except RuntimeError:  # the loop closed during shutdown
            pass

    def _take(self, d: dict[str, Any]) -> None:
        self._latest = d
        if self._outage:
            self._buffer_minute(d)
        self._fresh.set()

    def _buffer_minute(self, d: dict[str, Any]) -> None:
        t = d.get("time")
        if t is None:
            return
        minute = int(t // 60)
        if minute != self._last_buffered_minute:
            self._last_buffered_minute = minute
            self.buffer.append(minute_reading(d))

    # -- the task ------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, publish, reconnect with back-off, until ``stop`` is set."""
        self._loop = asyncio.get_running_loop()
        delay = 1.0
        where = f"{self.settings.host}:{self.settings.port}"
        while not stop.is_set():
            try:
                async with self._client() as client:
                    self.connected, self._outage, delay = True, False, 1.0
                    _say(f"connected to {where} as {self.root}"
                         + (f" ({len(self.buffer)} buffered minutes to send)" if len(self.buffer)
                            else ""))
                    await self._session(client, stop)
                    await client.publish(f"{self.root}/status", "offline", qos=1, retain=True)
                    return
            except (aiomqtt.MqttError, OSError) as exc:  # ssl.SSLError is an OSError
                if self.connected:
                    _say(f"lost the broker at {where} ({exc}); keeping one reading a minute")
                elif not self._outage:
                    _say(f"cannot reach the broker at {where} ({exc}); retrying, keeping one "
                         "reading a minute")
                self.connected, self._outage = False, True
            if self._latest is not None and self._latest.get("time") != self._published_time:
                self._buffer_minute(self._latest)
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except TimeoutError:
                delay = min(delay * 2, MAX_RETRY_S)

    def _client(self) -> aiomqtt.Client:
        s = self.settings
        user, password = s.credentials
        tls = None
        if s.tls:
            tls = ssl.create_default_context(cafile=s.ca_file or None)
            tls.minimum_version = ssl.TLSVersion.TLSv1_2
            if s.cert_file:
                tls.load_cert_chain(s.cert_file, s.key_file)
        will = aiomqtt.Will(f"{self.root}/status", "offline", qos=1, retain=True)
        return aiomqtt.Client(s.host, s.port, logger=_client_log, username=user, password=password,
                              identifier=s.client_id or self.node, will=will, tls_context=tls,
                              keepalive=max(5, int(3 * s.interval_s) + 5), timeout=10,
                              max_inflight_messages=MAX_IN_FLIGHT)

    async def _session(self, client: aiomqtt.Client, stop: asyncio.Event) -> None:
        await client.publish(f"{self.root}/status", "online", qos=1, retain=True)
        self._sent.clear()
        self._discovered_shape = None
        if self.discovery.commands:
            await client.subscribe(f"{self.root}/relay/+/set", qos=1)
            await client.subscribe(f"{self.root}/alarm/ack", qos=1)
        # aiomqtt fails a publish cut off by a lost broker only at its timeout (10 s, seconds
        # of readings neither sent nor buffered); its message iterator ends at once, so every
        # step of the session races the listener and an outage is noticed at once
        listener = asyncio.create_task(self._listen(client))
        try:
            await self._unless_lost(listener, self._send_backlog(client))
            while True:
                await self._unless_lost(listener, self._fresh_or(stop))
                if self._fresh.is_set() and self._latest is not None:
                    self._fresh.clear()
                    await self._unless_lost(listener, self._publish(client, self._latest))
                if stop.is_set():  # after the last second went out
                    break
        finally:
            listener.cancel()

    @staticmethod
    async def _unless_lost(listener: asyncio.Task, step: Any) -> None:
        work = asyncio.ensure_future(step)
        await asyncio.wait({work, listener}, return_when=asyncio.FIRST_COMPLETED)
        if work.done():
            work.result()
            return
        work.cancel()
        await asyncio.gather(work, return_exceptions=True)  # the step is over before a reconnect
        listener.result()  # raises the MqttError of the lost connection
        raise aiomqtt.MqttError("the connection to the broker ended")

    async def _fresh_or(self, stop: asyncio.Event) -> None:
        waiter = asyncio.create_task(self._fresh.wait())
        stopper = asyncio.create_task(stop.wait())
        _, pending = await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()

    async def _send_backlog(self, client: aiomqtt.Client) -> None:
        total = len(self.buffer)
        sent = 0
        while rows := self.buffer.oldest(BACKLOG_BATCH):
            # all of a batch in flight at once (QoS 1 keeps their order): one acknowledgement
            # round trip per batch, not per message, however busy the loop is
            await asyncio.gather(*(client.publish(*history_message(reading, self.root), qos=1)
                                   for _, reading in rows))
            self.buffer.remove([i for i, _ in rows])
            sent += len(rows)
        if total:
            _say(f"sent {sent} buffered minutes to {self.root}/history")
        self._last_buffered_minute = None

    async def _publish(self, client: aiomqtt.Client, d: dict[str, Any]) -> None:
        s = self.settings
        shape = (len(d.get("mains", [])), len(d.get("meters", [])), len(d.get("cts", [])),
                 tuple(a["alarm"] for a in d.get("alarms", [])))
        if s.discovery and shape != self._discovered_shape:
            # all in flight at once: a few round trips however many entities, however busy
            await asyncio.gather(*(client.publish(topic, payload, qos=1, retain=True)
                                   for topic, payload in self.discovery.messages(d)))
            self._discovered_shape = shape
        t = float(d.get("time") or 0.0)
        if not s.on_change and t - self._last_publish_time < s.interval_s - 0.5:
            return
        self._last_publish_time = t
        for topic, payload in state_messages(d, self.root):
            if s.on_change:  # only then is the last payload of each topic needed
                body = json.loads(payload)
                stale = t - self._sent_at.get(topic, float("-inf")) >= s.heartbeat_s
                if not (stale or changed(self._sent.get(topic), body, s.deadband_pct)):
                    continue
                self._sent[topic], self._sent_at[topic] = body, t
            await client.publish(topic, payload, qos=s.qos, retain=s.retain)
        self._published_time = t

    async def _listen(self, client: aiomqtt.Client) -> None:
        """Apply commands as they come; raises MqttError the moment the broker is lost."""
        async for message in client.messages:
            if not self.discovery.commands:
                continue
            topic, text = str(message.topic), message.payload
            text = text.decode(errors="replace").strip() if isinstance(text, bytes) else str(text)
            try:
                # in a thread: a write waits (<= 50 ms) until it is on disk
                await asyncio.to_thread(self._apply, topic, text)
            except ValueError as exc:
                _say(f"refused {topic} = {text!r}: {exc}")
                await client.publish(f"{self.root}/command/error",
                                     json.dumps({"topic": topic, "payload": text,
                                                 "reason": str(exc)}), qos=1)

    def _apply(self, topic: str, text: str) -> None:
        assert self.command is not None
        parts = topic.removeprefix(self.root + "/").split("/")
        if parts[0] == "relay" and len(parts) == 3 and parts[1] in ("1", "2"):
            if text.upper() not in ("ON", "OFF"):
                raise ValueError('a relay takes "ON" or "OFF"')
            self.command("relay", int(parts[1]), text.upper() == "ON")
        elif parts == ["alarm", "ack"]:
            if text.lower() not in ("all", "1", "2"):
                raise ValueError('alarm/ack takes "1", "2" or "all"')
            self.command("ack", None if text.lower() == "all" else int(text), None)
        else:
            raise ValueError("not a command topic")

    def close(self) -> None:
        self.buffer.close()
