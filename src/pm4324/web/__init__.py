"""The HTTP service: a REST API (OpenAPI 3), the dashboard pages and Prometheus ``/metrics``.

Fed only by the one-second snapshot (and the ``MeterControl`` seam for writes), so it shows
exactly what Modbus and CANopen serve for the same second. See docs/web.md.
"""
