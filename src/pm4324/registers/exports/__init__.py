"""Integration files generated from the register table (`pm4324 export`, docs/integrations.md)."""
