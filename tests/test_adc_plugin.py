"""The ADC plug-in interface: the shipped example runs through the real meter."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from pm4324.config.settings import Settings
from pm4324.device.meter import Meter
from pm4324.sources.base import SampleBlock, Source, SourceError
from pm4324.sources.registry import source_class

EXAMPLE = Path(__file__).resolve().parents[1] / "examples/adc_plugin/pm4324_demo_adc/__init__.py"


def _load_example():
    spec = importlib.util.spec_from_file_location("pm4324_demo_adc", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["pm4324_demo_adc"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_example_plugin_feeds_the_meter():
    mod = _load_example()
    settings = Settings()
    meter = Meter(settings, mod.DemoAdcSource(settings), start_time=0.0)
    snap = [meter.step() for _ in range(3)][-1]
    import math
    # CT1: 0.5 A secondary x CT ratio 100 = 50 A at 230 V, PF cos(0.3)
    assert snap.ct.i_rms[0] == pytest.approx(50.0, rel=1e-5)
    assert snap.ct.p_w[0] == pytest.approx(230 * 50 * math.cos(0.3), rel=1e-5)


def test_unknown_source_is_a_clear_error():
    with pytest.raises(SourceError, match="--source nope: no sample source of that name"):
        source_class("nope")


class _BadShape(Source):
    sample_rate_hz, n_mains = 12800.0, 2

    def _read_internal(self, n):
        import numpy as np
        return SampleBlock(self._next, np.zeros((3, n)), np.zeros((24, n)))


def test_source_shape_is_checked():
    with pytest.raises(SourceError, match=r"expected \(6, n\) and \(24, n\)"):
        _BadShape().read(100)
