"""Property-based requests from the gateway's own OpenAPI schema (schemathesis): whatever
the body, path or query, the answer is never a server error."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.integration.api.conftest import AUTH, Gateway


def test_no_generated_request_makes_the_gateway_fail(gateway: Gateway) -> None:
    schema = schemathesis.openapi.from_url(f"{gateway.url}/openapi.json")
    # The event stream of a live job only ends with the job; the SSE tests cover it.
    schema = schema.exclude(path_regex=r"/events$")  # type: ignore[assignment]
    tried = []
    for result in schema.get_all_operations():
        operation = result.ok()
        tried.append(f"{operation.method.upper()} {operation.path}")

        @given(case=operation.as_strategy())
        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
        def no_server_error(case: schemathesis.Case) -> None:
            response = case.call(headers=AUTH)
            assert response.status_code < 500, (case.method, case.path, response.text)
            if response.status_code >= 400:
                assert response.json()["error"]["message"], response.text

        no_server_error()
    assert "POST /v1/jobs" in tried and "POST /v1/jobs/batch" in tried and len(tried) >= 8
