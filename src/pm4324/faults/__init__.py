"""Faults of a running meter in one place: the simulator's measurement and device faults
(sources/faults.py) and the protocol servers' faults, switched live (``FaultSwitch``) and
written to a machine-readable log (``FaultLog``). Used by `pm4324 run` and by fleets."""
