"""Many meters on one host (``pm4324 fleet``, docs/fleet.md): the fleet file, the shared
energy store, the truth and physics levels, and their interfaces."""
