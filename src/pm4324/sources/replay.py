"""Replay a recorded waveform file through the meter.

``settings.replay.inputs`` maps meter inputs (V1a..V1c, V2a..V2c on a PM-4324A, CT1..CT24)
to recording columns, each times a scale (e.g. 1000 for a kV column). Recordings usually
hold primary values (volts on the line, amperes in the cable) while a source delivers
terminal values (see ``base``), so with ``replay.primary`` voltages are divided by their
main's PT ratio and currents by their Meter's CT ratio (into volts on a 333 mV CT input,
``ct_input = "333mV"``); the meter multiplies them back.
Inputs left unmapped read zero. NaN samples (missing in the file) pass through as NaN for
the engine to flag. Blocks are built on demand, so a long recording costs no extra memory.
"""

from __future__ import annotations

import numpy as np

from pm4324.config.settings import CTS_PER_METER, N_CTS, Settings, input_names
from pm4324.sources.base import SampleBlock, Source
from pm4324.sources.recording import Recording, RecordingError


class ReplaySource(Source):
    """A finite, non-realtime source that plays a ``Recording`` from its first sample."""

    realtime = False

    def __init__(self, recording: Recording, settings: Settings):
        super().__init__()
        self.recording = recording
        self.sample_rate_hz = recording.sample_rate_hz
        self.n_mains = settings.n_mains
        #: (is_voltage, input row, recording row, factor) for every mapped input
        self._routes = self._route(recording, settings)

    @staticmethod
    def _route(rec: Recording, settings: Settings) -> list[tuple[bool, int, int, float]]:
        where = f"{rec.path}: replay settings {settings.source_path}"
        columns = ", ".join(rec.channels) or "(none)"
        mapping = settings.replay.inputs
        if not mapping:
            example = rec.channels[0] if rec.channels else "U1"
            raise RecordingError(
                f"{where}: no meter input is mapped to the recording. Its columns are:"
                f' {columns}. Map them under [replay.inputs], e.g. V1a = "{example}" or'
                f' CT1 = {{ channel = "{example}", scale = 1.0 }}'
            )
        valid = input_names(settings.n_mains)
        routes = []
        for name, spec in mapping.items():
            if name not in valid:
                raise RecordingError(
                    f"{where}: {name} is not an input of the {settings.model}; use"
                    f" {valid[0]}..{valid[3 * settings.n_mains - 1]} or CT1..CT{N_CTS}"
                )
            count = rec.channels.count(spec.channel)
            if count != 1:
                problem = "is not a column" if count == 0 else f"appears {count} times"
                raise RecordingError(
                    f"{where}: {name} = {spec.channel!r}, which {problem} of the recording;"
                    f" its columns are: {columns}"
                )
            factor = spec.scale
            if name.startswith("V"):
                main, row = int(name[1]) - 1, valid.index(name)
                if settings.replay.primary:
                    factor /= settings.mains[main].pt_ratio
                routes.append((True, row, rec.channels.index(spec.channel), factor))
            else:
                ct = int(name[2:])
                if settings.replay.primary:
                    factor /= settings.amperes_per_input((ct - 1) // CTS_PER_METER)
                routes.append((False, ct - 1, rec.channels.index(spec.channel), factor))
        return routes

    def _read_internal(self, n: int) -> SampleBlock | None:
        start = self._next
        stop = min(start + n, self.recording.n_samples)
        if start >= stop:
            return None
        v = np.zeros((3 * self.n_mains, stop - start))
        i = np.zeros((N_CTS, stop - start))
        for is_voltage, row, col, factor in self._routes:
            (v if is_voltage else i)[row] = self.recording.data[col, start:stop] * factor
        return SampleBlock(start, v, i)
