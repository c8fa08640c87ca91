"""MQTT for `run` and `hub`: live topics, Home Assistant discovery, store and forward (docs/mqtt.md)."""
