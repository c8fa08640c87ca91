"""MQTT for many meters at once (``pm4324 hub``): one publisher per meter, on one event loop
in a thread of its own, fed from the hub's polling threads.

Each meter gets its own broker connection, node id (``<node_id or "hub">-<meter key>``),
last will, Home Assistant device and store-and-forward buffer, so a hub's meters appear in
Home Assistant exactly as software meters publishing for themselves do.
"""

from __future__ import annotations

import asyncio
import re
import threading
from dataclasses import replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

from pm4324.config.mqtt_settings import MqttSettings
from pm4324.mqtt.publisher import MqttPublisher


def _segment(key: str) -> str:
    """A meter key as a topic segment (no wildcards, no slashes)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", key)


class HubPublishers:
    def __init__(self, settings: MqttSettings, keys: list[str], buffer_dir: str | Path):
        node = settings.node_id or "hub"
        self.publishers = {
            key: MqttPublisher(replace(settings, node_id=f"{node}-{_segment(key)}",
                                       client_id=""),
                               meter_id=f"{node}-{_segment(key)}", model="PM-4324",
                               sw_version=version("pm4324"),
                               buffer_path=str(Path(buffer_dir) / f"{_segment(key)}.db"))
            for key in keys}
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="mqtt", daemon=True)
        self._started = threading.Event()

    def start(self) -> None:
        self._thread.start()
        self._started.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._stop = asyncio.Event()
        tasks = [p.run(self._stop) for p in self.publishers.values()]
        self._started.set()
        self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        for p in self.publishers.values():
            p.close()

    def offer(self, key: str, d: dict[str, Any]) -> None:
        """One reading of meter ``key`` (from any thread)."""
        publisher = self.publishers.get(key)
        if publisher is not None:
            model = d.get("model")
            if model and publisher.discovery.device["model"] != model:  # known once it answers
                publisher.discovery.device.update(model=model, name=f"{model} {publisher.node}")
            publisher.offer(d)

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
