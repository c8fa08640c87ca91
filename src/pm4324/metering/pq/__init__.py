"""Power quality (IEC 61000-4-30 class S methods, IEC 61000-4-7 harmonics) on every main and CT.

Pure numpy / numba functions and small streaming objects around them; no I/O and no clock:
``monitor.PqMonitor`` is hooked into ``metering.engine.Engine`` and fed each step's cycles.
"""
