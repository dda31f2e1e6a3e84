"""A bounded schemathesis run over the whole OpenAPI schema of the real app: no input gives a 5xx.

Bounded by examples per operation (hypothesis `max_examples`) and by the test timeout. Most generated
requests are unsigned or badly signed, which is the point: every refusal must be a clean 4xx. Uses
schemathesis' Python API directly (its pytest plugin does not work with this pytest).
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

MAX_EXAMPLES = 25


@pytest.mark.timeout(300)
def test_no_input_causes_a_server_error(app, client):  # `client` runs the app's lifespan around the run
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    statuses: list[int] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def fuzz(case):
            response = case.call()
            statuses.append(response.status_code)
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:200]}"
                )
            case.validate_response(response, checks=[not_a_server_error])

        try:
            fuzz()
        except Exception as exc:  # keep going so one report lists every failing operation
            failures.append(f"{operation.label}: {type(exc).__name__}: {str(exc)[:300]}")
    assert operations >= 10
    assert len(statuses) >= operations * 5, "schemathesis generated too few requests to mean anything"
    print(f"fuzz: {operations} operations, {len(statuses)} requests, statuses {sorted(set(statuses))}")
    assert failures == []
