"""Shared fixtures: a small dict-backed ``RegisterBackend`` with known contents.

Map (all 0-based protocol addresses):

* coils 0..99 (writable) and 0x1000..0x1001; discrete inputs 0..49 (odd ones set);
* holding 0..99 writable (value = address initially, register 50 accepts only <= 1000),
  holding 100..119 read-only (write -> 02), holding 200 raises a bug (-> 04);
* input registers 0..299, value = 1000 + address.

Anything else is unmapped (-> 02), so a range that is only partly mapped fails.
"""

from __future__ import annotations

import pytest

from pm4324.registers.backend import AccessError, ExceptionCode

DEVICE_ID = {
    0: b"ICP DAS",
    1: b"PM-4324",
    2: b"1.05",
    3: b"https://example.invalid/pm4324",
    4: b"PM-4324 software meter",
    5: b"PM-4324-MTCP",
}


class FakeBackend:
    """Dict-backed backend implementing the ``RegisterBackend`` protocol."""

    def __init__(self) -> None:
        self.coils = {a: False for a in range(100)} | {0x1000: False, 0x1001: False}
        self.discrete = {a: bool(a % 2) for a in range(50)}
        self.holding = {a: a for a in range(120)}
        self.holding[200] = 0
        self.input = {a: 1000 + a for a in range(300)}
        self.read_only = set(range(100, 120))
        self.writes: list[tuple[str, int, list]] = []
        self.reads = 0
        self.device_id = dict(DEVICE_ID)

    @staticmethod
    def _check(table: dict, address: int, count: int) -> None:
        if any(a not in table for a in range(address, address + count)):
            raise AccessError(ExceptionCode.ILLEGAL_DATA_ADDRESS)

    def read_bits(self, table: str, address: int, count: int) -> list[bool]:
        self.reads += 1
        t = self.coils if table == "coil" else self.discrete
        self._check(t, address, count)
        return [t[a] for a in range(address, address + count)]

    def read_registers(self, table: str, address: int, count: int) -> list[int]:
        self.reads += 1
        t = self.holding if table == "holding" else self.input
        self._check(t, address, count)
        if table == "holding" and address <= 200 < address + count:
            raise RuntimeError("simulated backend bug")
        return [t[a] for a in range(address, address + count)]

    def write_coils(self, address: int, values: list[bool]) -> None:
        self._check(self.coils, address, len(values))
        self.writes.append(("coil", address, list(values)))
        for i, v in enumerate(values):
            self.coils[address + i] = v

    def write_registers(self, address: int, values: list[int]) -> None:
        self._check(self.holding, address, len(values))
        rng = range(address, address + len(values))
        if any(a in self.read_only for a in rng):
            raise AccessError(ExceptionCode.ILLEGAL_DATA_ADDRESS)
        if 200 in rng:
            raise RuntimeError("simulated backend bug")
        if 50 in rng and values[50 - address] > 1000:
            raise AccessError(ExceptionCode.ILLEGAL_DATA_VALUE)
        self.writes.append(("holding", address, list(values)))
        for i, v in enumerate(values):
            self.holding[address + i] = v

    def device_identification(self) -> dict[int, bytes]:
        return dict(self.device_id)


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture(scope="session")
def backend_class() -> type[FakeBackend]:
    """For fixtures wider than a function (hypothesis runs many examples per test)."""
    return FakeBackend
