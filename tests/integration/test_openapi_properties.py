"""Property-based tests of the OpenAPI document against a running server (schemathesis):
whatever a generated request holds, in any role, the answer is never a 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.integration.apiserver import RunningApi, running_api

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def running(pg_admin_url: str) -> Iterator[RunningApi]:
    from tests.conftest import scratch_database  # noqa: PLC0415

    with scratch_database(pg_admin_url) as url, running_api(url, customers=10) as api:
        yield api


def test_no_generated_request_gets_a_server_error(running: RunningApi) -> None:
    """Every operation of `/openapi.json`, with requests generated from it by
    schemathesis (driven by hypothesis, run here directly: its pytest plugin does not
    load under this pytest), sent in every role and none."""
    api_schema = schemathesis.openapi.from_url(f"{running.url}/openapi.json")
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 12
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case: Any) -> None:
            for role in (None, "producer", "ops", "auditor", "admin"):
                headers = running.headers(role) if role else {}
                response = case.call(headers=headers, timeout=30)
                assert response.status_code < 500, (
                    f"{case.method} {case.formatted_path} as {role}: {response.status_code} "
                    f"{response.text[:500]}"
                )
                kinds = response.headers.get("content-type") or [""]
                kind = kinds[0] if isinstance(kinds, list) else str(kinds)
                if response.status_code >= 400 and kind.startswith("application/json"):
                    assert {"code", "message"} <= set(response.json())

        check()
