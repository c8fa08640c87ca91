"""The ``[mqtt]`` settings: where the meter publishes, how often, and what it may be told.

Kept apart from settings.py (which reads the DIP-switch facts) because none of it changes
what the meter measures; it is read with the same reader, so errors name file and key alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

SCHEMES = {"mqtt": 1883, "mqtts": 8883}
COMMANDS = ("none", "relays")
#: 7 days of one reading a minute: the issue's minimum for store and forward
DEFAULT_BUFFER_MINUTES = 7 * 24 * 60


@dataclass(frozen=True)
class MqttSettings:
    """Empty ``url`` = MQTT off. Passwords may sit in the URL or in ``password``."""

    url: str = ""
    username: str = ""
    password: str = ""
    client_id: str = ""  # default: pm4324-<meter id>
    topic_prefix: str = "pm4324"
    node_id: str = ""  # the meter's topic segment; default from the meter identity
    interval_s: float = 1.0
    on_change: bool = False  # publish a topic only when a value moved by more than the dead band
    deadband_pct: float = 1.0
    heartbeat_s: float = 60.0  # with on_change: republish everything at least this often
    qos: int = 0
    retain: bool = True  # live state topics retained, so a new subscriber sees the last second
    discovery: bool = True
    discovery_prefix: str = "homeassistant"
    commands: str = "none"  # "relays": relay switches and alarm acknowledgement via MQTT
    buffer_path: str = ""  # default: mqtt-buffer.db beside the state file
    buffer_minutes: int = DEFAULT_BUFFER_MINUTES
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or SCHEMES[parts.scheme]

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"

    @property
    def credentials(self) -> tuple[str | None, str | None]:
        """(username, password): the settings' keys win over the URL's."""
        parts = urlsplit(self.url)
        user = self.username or (unquote(parts.username) if parts.username else "")
        password = self.password or (unquote(parts.password) if parts.password else "")
        return user or None, password or None


def url_problem(url: str) -> str | None:
    """Why ``url`` is not a broker URL we can use, or None."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"is not a URL ({exc})"
    if parts.scheme not in SCHEMES:
        return 'must start with "mqtt://" or "mqtts://"'
    if not parts.hostname:
        return "names no broker host (mqtt://HOST[:PORT])"
    if port is not None and not 0 < port < 65536:
        return "has a port outside 1..65535"
    if parts.path not in ("", "/"):
        return "must not have a path (the topic prefix is its own setting)"
    return None


def _topic_segment(r: Any, name: str, default: str) -> str:
    value = r.text(name, default)
    if any(c in value for c in "#+") or value.startswith("/") or value.endswith("/"):
        raise r.error(name, value, "must be an MQTT topic without wildcards (#, +) or a leading "
                      "or trailing /")
    return value


def read_mqtt(r: Any) -> MqttSettings:
    """The ``[mqtt]`` table via settings_parse.py's reader (``r``)."""
    url = r.text("url", "")
    if url and (problem := url_problem(url)):
        raise r.error("url", url, problem)
    s = MqttSettings(
        url=url,
        username=r.text("username", ""),
        password=r.text("password", ""),
        client_id=r.text("client_id", ""),
        topic_prefix=_topic_segment(r, "topic_prefix", "pm4324"),
        node_id=_topic_segment(r, "node_id", ""),
        interval_s=r.number("interval_s", 1.0, 1.0, 3600.0),
        on_change=r.flag("on_change", False),
        deadband_pct=r.number("deadband_pct", 1.0, 0.0, 100.0),
        heartbeat_s=r.number("heartbeat_s", 60.0, 1.0, 86400.0),
        qos=r.integer("qos", 0, 0, 2),
        retain=r.flag("retain", True),
        discovery=r.flag("discovery", True),
        discovery_prefix=_topic_segment(r, "discovery_prefix", "homeassistant"),
        commands=r.choice("commands", "none", COMMANDS),
        buffer_path=r.text("buffer_path", ""),
        buffer_minutes=r.integer("buffer_minutes", DEFAULT_BUFFER_MINUTES, 0, 10 * 366 * 1440),
        ca_file=r.text("ca_file", ""),
        cert_file=r.text("cert_file", ""),
        key_file=r.text("key_file", ""),
    )
    if bool(s.cert_file) != bool(s.key_file):
        key = "key_file" if s.cert_file else "cert_file"
        raise r.error(key, "", "a client certificate needs both cert_file and key_file")
    if (s.cert_file or s.ca_file) and url and not s.tls:
        raise r.error("url", url, 'certificates are given: use "mqtts://"')
    r.finish()
    return s
