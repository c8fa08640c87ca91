"""Configuration shared by every layer: the settings (DIP switches) and their file.

It imports nothing else from pm4324, so sources, metering, device, registers and protocols
can all depend on it without any of them depending on a higher layer.
"""
