"""schemathesis against the running server's own OpenAPI document: no 5xx, every answer
conforms to the schema (status code, content type, headers, body)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings

schemathesis = pytest.importorskip("schemathesis")


@pytest.fixture(scope="module")
def api_schema(live):
    schema = schemathesis.openapi.from_url(live.url + "openapi.json")
    return schema.exclude(path="/api/stream")  # never ends by design: tested in test_api.py


# filters of the lazy schema (the fixture's own are not kept): the history endpoints are run
# against a store with known energies in test_history_api.py
schema = schemathesis.pytest.from_fixture("api_schema").exclude(
    path="/api/stream").exclude(path_regex="^/api/history/")


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi_document(case, live):
    case.call_and_validate(timeout=10)
