"""The ``broker`` fixture: a Mosquitto of the test's own (skips with the reason if absent)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from mqtt_helpers import MOSQUITTO, Broker


@pytest.fixture
def broker(tmp_path) -> Iterator[Broker]:
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()


