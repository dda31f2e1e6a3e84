"""/health (live, ready and the first shape), /metrics and the JSON error contract: no stack traces."""

from __future__ import annotations

from sqlalchemy import text

from pospal_protocol import __version__

GONE = "postgresql+psycopg://nobody@127.0.0.1:1/none"


def _checks(response) -> dict[str, bool]:
    return {check["name"]: check["ok"] for check in response.json()["checks"]}


def test_health_reports_ok_and_version(client):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"ok": True, "version": __version__, "database": "ok"}


def test_health_is_503_when_the_database_is_gone(client, app, settings):
    from server.db import Database

    app.state.services.db = Database("postgresql+psycopg://nobody@127.0.0.1:1/none")
    response = client.get("/health")
    assert response.status_code == 503
    assert response.json()["ok"] is False


def test_live_answers_while_the_database_is_gone(client, app):
    from server.db import Database

    app.state.services.db = Database(GONE)
    assert client.get("/health/live").json() == {"ok": True, "version": __version__}
    assert client.get("/health/ready").status_code == 503


def test_ready_lists_its_checks_when_all_pass(client):
    response = client.get("/health/ready")
    assert response.status_code == 200
    assert response.json()["ok"] is True
    assert _checks(response) == {"database": True, "schema": True, "signing_keys": True}  # no Redis set


def test_ready_is_503_when_the_database_is_gone(client, app):
    from server.db import Database

    app.state.services.db = Database(GONE)
    response = client.get("/health/ready")
    assert response.status_code == 503
    assert _checks(response) == {"database": False, "schema": False, "signing_keys": False}
    assert "nobody" not in response.text  # no URL in the answer


def test_ready_is_503_when_the_schema_is_behind_the_migration_head(client, database):
    from server.db import head_revision

    head = head_revision()
    with database.engine.begin() as connection:  # a deploy of newer code on a database not yet migrated
        connection.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    try:
        response = client.get("/health/ready")
    finally:
        with database.engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = :head"), {"head": head})
    assert response.status_code == 503
    assert _checks(response) == {"database": True, "schema": False, "signing_keys": True}
    assert client.get("/health/ready").status_code == 200


def test_ready_is_503_when_the_signing_key_file_is_missing(client, settings):
    for pem in settings.signing_key_dir.glob("*.pem"):
        pem.unlink()
    app_keys = client.app.state.services.keys
    app_keys._private.clear()  # the key an instance read at start: gone with its volume
    response = client.get("/health/ready")
    assert response.status_code == 503
    assert _checks(response)["signing_keys"] is False


def test_ready_is_503_when_the_configured_redis_does_not_answer(server_env, clock, database, mailer):
    from fastapi.testclient import TestClient

    from server.app import create_app
    from server.config import Settings
    from tests.server.conftest import free_port

    settings = Settings.from_env({**server_env, "POSPAL_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    app = create_app(settings, clock=clock, db=database, mailer=mailer, start_worker=False)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/health/ready")
    assert response.status_code == 503
    assert _checks(response) == {"database": True, "schema": True, "signing_keys": True, "redis": False}


def test_ready_checks_a_configured_redis_that_answers(server_env, clock, database, mailer, redis_url):
    from fastapi.testclient import TestClient

    from server.app import create_app
    from server.config import Settings

    settings = Settings.from_env({**server_env, "POSPAL_REDIS_URL": redis_url})
    app = create_app(settings, clock=clock, db=database, mailer=mailer, start_worker=False)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/health/ready")
    assert response.status_code == 200
    assert _checks(response)["redis"] is True


def test_metrics_count_requests_by_route(client, make_machine):
    make_machine().start_trial(client)
    client.get("/health")
    text = client.get("/metrics").text
    assert 'pospal_http_requests_total{method="POST",route="/v1/trials",status="200"} 1.0' in text
    assert 'pospal_http_request_seconds_bucket{le="0.05",route="/health"}' in text


def test_unknown_path_is_a_json_404(client):
    response = client.get("/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_crash_gives_json_500_without_a_stack_trace(client, app, monkeypatch):
    from server import licensing

    def boom(*_args, **_kwargs):
        raise RuntimeError("secret internal detail at /srv/app.py line 12")

    monkeypatch.setattr(licensing, "trial_claims", boom)
    from tests.server.conftest import MachineKey

    response = MachineKey(clock=app.state.services.clock).start_trial(client)
    assert response.status_code == 500
    assert response.json() == {
        "error": "internal",
        "message": "Something went wrong on the server. Try again later.",
    }
    assert "Traceback" not in response.text and "secret internal" not in response.text


def test_oversized_body_is_413(client):
    response = client.post(
        "/v1/codes", content=b"x" * (1024 * 1024 + 1), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["error"] == "too_large"


def test_no_cors_unless_configured(client):
    response = client.get("/v1/keys", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in response.headers


def test_openapi_documents_the_v1_api(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/v1/trials",
        "/v1/codes",
        "/v1/activations",
        "/v1/refresh",
        "/v1/deactivate",
        "/v1/terminals",
        "/v1/terminals/remove",
        "/v1/portal",
        "/v1/keys",
        "/health",
        "/health/live",
        "/health/ready",
    ):
        assert path in paths


def test_a_database_outage_is_a_retryable_503_and_a_log_line_not_a_traceback(
    client, app, make_machine, caplog, monkeypatch
):
    import logging

    from server.db import Database
    from server.logs import DatabaseOutageLog

    machine = make_machine()
    assert machine.start_trial(client).status_code == 200
    for module in ("server.app", "server.api.refresh_fast"):  # fresh rate limits for this test
        monkeypatch.setattr(f"{module}._OUTAGE_LOG", DatabaseOutageLog(logging.getLogger(module)))
    app.state.services.db = Database("postgresql+psycopg://nobody@127.0.0.1:1/none")
    with caplog.at_level(logging.WARNING):
        answers = []
        for _ in range(3):
            answers.append(machine.refresh(client))  # the fast path
            answers.append(client.post("/v1/codes", json={"email": "a@cafe.gr", "purpose": "activate"}))
    for answer in answers:
        assert answer.status_code == 503
        assert answer.json()["error"] == "unavailable"
        assert answer.headers["Retry-After"] == "5"
    outage_lines = [r for r in caplog.records if r.getMessage() == "database_unavailable"]
    assert len(outage_lines) == 2  # one per path's limiter, not one per request
    assert not any(r.exc_info for r in caplog.records)


def test_the_outage_log_counts_what_it_does_not_log_and_never_logs_parameters(caplog):
    import logging

    from sqlalchemy.exc import OperationalError

    from pospal_protocol.clock import FakeClock
    from server.logs import DatabaseOutageLog

    clock = FakeClock()
    outage = DatabaseOutageLog(logging.getLogger("test.outage"), every_s=5, monotonic=clock.monotonic)
    error = OperationalError("SELECT * FROM login_codes WHERE code = %s", ("493021",), Exception("gone"))
    with caplog.at_level(logging.WARNING, logger="test.outage"):
        for _ in range(10):
            outage.failed("/v1/codes", error)
            clock.advance(0.4)  # ten failures within 5 s: one line, the rest counted
        outage.failed("/v1/codes", error)  # 4 s after the first: still counted
        clock.advance(1.1)
        outage.failed("/v1/codes", error)  # past 5 s: the next line, with the count
    first, second = caplog.records
    assert first.reason == "gone" and first.similar_failures_not_logged == 0
    assert second.similar_failures_not_logged == 10
    assert "493021" not in caplog.text and "login_codes" not in caplog.text
