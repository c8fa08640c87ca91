"""A minimal ADC plug-in: how a real acquisition board feeds pm4324.

A board driver subclasses ``Source``, says its sample rate and number of mains, and
implements ``_read_internal(n)``: return up to n samples of every input, scaled to volts at
the voltage terminals and secondary amperes at the CT inputs (1.0 A = rated). Here a fake
"board" returns a clean 50 Hz supply and one 0.5 A load on CT1, as raw int32 counts would be
converted by a real driver.
"""

from __future__ import annotations

import numpy as np

from pm4324.config.settings import Settings
from pm4324.sources.base import SampleBlock, Source

COUNTS_PER_VOLT = 10_000.0  # what the board's datasheet would say
COUNTS_PER_AMP = 1_000_000.0


class DemoAdcSource(Source):
    realtime = True  # blocks stand for "now": the meter paces itself against the clock
    full_scale_v = 2**31 / COUNTS_PER_VOLT
    full_scale_i = 2**31 / COUNTS_PER_AMP

    def __init__(self, settings: Settings):
        super().__init__()
        self.sample_rate_hz = settings.sample_rate_hz
        self.n_mains = settings.n_mains

    def _read_counts(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Stand-in for the board's DMA read: int32 counts per channel."""
        t = (self._next + np.arange(n)) / self.sample_rate_hz
        phases = np.array([0.0, -2 * np.pi / 3, 2 * np.pi / 3] * self.n_mains)
        v = 230 * np.sqrt(2) * np.cos(2 * np.pi * 50 * t + phases[:, None])
        i = np.zeros((24, n))
        i[0] = 0.5 * np.sqrt(2) * np.cos(2 * np.pi * 50 * t - 0.3)
        return (v * COUNTS_PER_VOLT).astype(np.int32), (i * COUNTS_PER_AMP).astype(np.int32)

    def _read_internal(self, n: int) -> SampleBlock:
        v_counts, i_counts = self._read_counts(n)
        return SampleBlock(self._next, v_counts / COUNTS_PER_VOLT, i_counts / COUNTS_PER_AMP)
