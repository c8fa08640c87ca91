"""Read and configure any PM-4324 (ours or hardware) over Modbus or CANopen.

Results have the shape of ``Snapshot.to_dict()``, so every host service treats a remote meter
like the local one.
"""
