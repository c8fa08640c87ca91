"""What every sample source gives the meter: blocks of terminal-level samples.

A source delivers voltages in volts at the meter's voltage terminals (after any external PT)
and currents in secondary amperes at the CT inputs (1.0 A = the CT's rated current, see
``config.settings.CT_SECONDARY_RATED_A``), or in volts on the 333 mV CT inputs of a PM-4324P
(``ct_input = "333mV"``: 0.333 V = rated). The meter applies PT/CT ratios and calibration.

Plug-ins (a real ADC board) subclass ``Source`` and override ``_read_internal``; the public
``read`` checks shapes and dtypes once, here, so the metering engine can trust its input.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

N_CURRENTS = 24


class SourceError(RuntimeError):
    """A source cannot deliver samples (bad file, bad scenario, broken hardware)."""


@dataclass(frozen=True)
class SampleBlock:
    """Consecutive samples of every input.

    start: absolute index of the first sample since the source started.
    voltages: (3 * n_mains, n) float64, V at the terminals, rows V1a V1b V1c [V2a V2b V2c].
    currents: (24, n) float64, secondary A, rows CT1..CT24.
    """

    start: int
    voltages: np.ndarray
    currents: np.ndarray

    @property
    def n(self) -> int:
        return self.voltages.shape[1]


class Source(ABC):
    """A stream of sample blocks at a fixed sample rate."""

    #: samples per second
    sample_rate_hz: float
    #: 1 (PM-4324) or 2 (PM-4324A) mains
    n_mains: int
    #: True when blocks stand for the present (simulator, ADC): the device paces itself
    realtime: bool = True
    #: peak value an input can represent (None: unknown); used for clipping flags
    full_scale_v: float | None = None
    full_scale_i: float | None = None

    def __init__(self) -> None:
        self._next = 0

    def read(self, n: int) -> SampleBlock | None:
        """The next ``n`` samples of every input; fewer at the end of a finite source, None after."""
        if n <= 0:
            raise ValueError(f"block length must be positive, got {n}")
        block = self._read_internal(n)
        if block is None:
            return None
        v = np.asarray(block.voltages, dtype=np.float64)
        i = np.asarray(block.currents, dtype=np.float64)
        nv = 3 * self.n_mains
        if v.ndim != 2 or v.shape[0] != nv or i.ndim != 2 or i.shape[0] != N_CURRENTS:
            raise SourceError(
                f"{type(self).__name__} gave voltages {v.shape} and currents {i.shape};"
                f" expected ({nv}, n) and ({N_CURRENTS}, n)"
            )
        if v.shape[1] != i.shape[1] or v.shape[1] == 0 or v.shape[1] > n:
            name = type(self).__name__
            raise SourceError(f"{name} gave a block of {v.shape[1]}/{i.shape[1]} samples for {n}")
        if block.start != self._next:
            raise SourceError(f"{type(self).__name__} skipped samples: block starts at {block.start},"
                              f" expected {self._next}")
        self._next += v.shape[1]
        return SampleBlock(block.start, v, i)

    @abstractmethod
    def _read_internal(self, n: int) -> SampleBlock | None:
        """Produce up to ``n`` samples starting at ``self._next``; None when exhausted."""

    def close(self) -> None:
        """Release hardware or files."""
