"""`pospal-server check`: one line per problem, exit 1; a good configuration passes (nothing sent or paid)."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from server import cli
from server.billing.stripe import API_VERSION
from server.check import WEBHOOK_EVENTS, Finding, check_email, run_checks
from server.config import Settings
from server.errors import ConfigError
from tests.server.conftest import free_port

STRIPE_KEY = "sk_live_checkkey"
PRICE = "price_monthly"
PUBLIC_URL = "https://license.example.com"


def _endpoint(**changes) -> dict:
    """The webhook endpoint README's Stripe section asks for, as Stripe lists it."""
    return {
        "id": "we_1",
        "object": "webhook_endpoint",
        "url": f"{PUBLIC_URL}/v1/webhooks/stripe",
        "status": "enabled",
        "api_version": API_VERSION,
        "enabled_events": sorted(WEBHOOK_EVENTS),
        **changes,
    }


def _serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class _StripeHandler(BaseHTTPRequestHandler):
    """Stripe-shaped answers: GET /v1/prices/{id} (one live price, one archived, 404 otherwise) and
    GET /v1/webhook_endpoints (`endpoints`), 401 for another key, 400 for a Stripe-Version it does not know
    (as Stripe answers)."""

    requests: list[tuple[str, str]] = []
    versions: set[str] = {API_VERSION}
    endpoints: list[dict] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        type(self).requests.append((self.command, self.path))
        prices = {
            PRICE: {"id": PRICE, "object": "price", "livemode": True, "active": True},
            "price_old": {"id": "price_old", "object": "price", "livemode": True, "active": False},
        }
        price = self.path.removeprefix("/v1/prices/")
        version = self.headers.get("Stripe-Version")
        if self.headers.get("Authorization") != f"Bearer {STRIPE_KEY}":
            self._answer(401, {"error": {"type": "invalid_request_error", "message": "Invalid API Key"}})
        elif version not in type(self).versions:
            message = f"Invalid Stripe API version: {version}"
            self._answer(400, {"error": {"type": "invalid_request_error", "message": message}})
        elif self.path == "/v1/webhook_endpoints?limit=100":
            self._answer(200, {"object": "list", "data": type(self).endpoints, "has_more": False})
        elif price in prices:
            self._answer(200, prices[price])
        else:
            self._answer(404, {"error": {"type": "invalid_request_error", "code": "resource_missing"}})

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_args) -> None:
        pass


class _ResendHandler(_StripeHandler):
    """Resend-shaped answers for GET /domains: one full key, one sending-only key, 401 otherwise."""

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        type(self).requests.append((self.command, self.path))
        key = self.headers.get("Authorization", "")
        if self.path != "/domains":
            self._answer(404, {"name": "not_found"})
        elif key == "Bearer re_full":
            self._answer(200, {"data": []})
        elif key == "Bearer re_send_only":
            self._answer(401, {"name": "restricted_api_key", "message": "sending only"})
        else:
            self._answer(401, {"name": "validation_error", "message": "API key is invalid"})


@pytest.fixture
def stripe_stub() -> Iterator[str]:
    _StripeHandler.requests = []
    _StripeHandler.versions = {API_VERSION}
    _StripeHandler.endpoints = [_endpoint()]
    yield from _serve(_StripeHandler)


@pytest.fixture
def resend_stub() -> Iterator[str]:
    _ResendHandler.requests = []
    yield from _serve(_ResendHandler)


class _Sink:
    """An SMTP server that wants a login (user/secret) and counts messages (there must be none)."""

    def __init__(self) -> None:
        self.messages = 0
        self.logins: list[bytes] = []

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 - aiosmtpd API
        self.messages += 1
        return "250 OK"

    def authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        self.logins.append(auth_data.login)
        ok = (auth_data.login, auth_data.password) == (b"user", b"secret")
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself


@pytest.fixture
def smtp_server() -> Iterator[tuple[_Sink, int]]:
    sink = _Sink()
    port = free_port()
    controller = Controller(
        sink, hostname="127.0.0.1", port=port, authenticator=sink.authenticate, auth_require_tls=False
    )
    controller.start()
    try:
        yield sink, port
    finally:
        controller.stop()


@pytest.fixture
def production_env(db_url, tmp_path, stripe_stub, smtp_server) -> dict[str, str]:
    key_dir = tmp_path / "keys"
    key_dir.mkdir(mode=0o700)
    (key_dir / "k1.pem").write_bytes(b"private")
    os.chmod(key_dir / "k1.pem", 0o600)
    return {
        "POSPAL_DATABASE_URL": db_url,
        "POSPAL_SERVER_DATA_DIR": str(tmp_path / "data"),
        "POSPAL_SIGNING_KEY_DIR": str(key_dir),
        "POSPAL_PUBLIC_URL": PUBLIC_URL,
        "POSPAL_BILLING": "stripe",
        "STRIPE_SECRET_KEY": STRIPE_KEY,
        "STRIPE_WEBHOOK_SECRET": "whsec_abc123",
        "STRIPE_PRICE_ID": PRICE,
        "STRIPE_API_BASE": stripe_stub,
        "POSPAL_EMAIL": "smtp",
        "SMTP_URL": f"smtp://user:secret@127.0.0.1:{smtp_server[1]}?tls=none",
    }


def _check(monkeypatch, capsys, env: dict[str, str]) -> tuple[int, list[str]]:
    for name in list(os.environ):
        if name.startswith(("POSPAL_", "STRIPE_", "SMTP_", "RESEND_")):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    status = cli.main(["check"])
    return status, capsys.readouterr().out.splitlines()


def test_check_passes_a_good_production_config(monkeypatch, capsys, production_env, smtp_server):
    status, lines = _check(monkeypatch, capsys, production_env)
    assert status == 0, lines
    assert all(line.startswith("ok") for line in lines)
    assert any("live mode" in line for line in lines)
    assert any(f"{PRICE} exists" in line for line in lines)
    sink, _port = smtp_server
    assert sink.logins == [b"user"] and sink.messages == 0  # logged in, sent nothing
    assert "ok   Stripe API version: 2026-10-28.endive accepted" in lines
    assert (
        "ok   Stripe webhook endpoint: we_1 at https://license.example.com/v1/webhooks/stripe, enabled, "
        "2026-10-28.endive" in lines
    )
    # Stripe was only read.
    assert _StripeHandler.requests == [
        ("GET", f"/v1/prices/{PRICE}"),
        ("GET", "/v1/webhook_endpoints?limit=100"),
    ]


def test_check_reports_one_line_per_problem(monkeypatch, capsys, production_env, tmp_path):
    os.chmod(production_env["POSPAL_SIGNING_KEY_DIR"], 0o755)
    bad = {
        **production_env,
        "POSPAL_PUBLIC_URL": "http://license.example.com",
        "STRIPE_WEBHOOK_SECRET": "we_notasecret",
        "STRIPE_PRICE_ID": "price_missing",
        "SMTP_URL": production_env["SMTP_URL"].replace(":secret@", ":wrong@"),
        "POSPAL_DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}",
    }
    status, lines = _check(monkeypatch, capsys, bad)
    assert status == 1
    failures = [line for line in lines if line.startswith("FAIL")]
    expected = [
        "POSPAL_PUBLIC_URL",
        "STRIPE_WEBHOOK_SECRET",
        "STRIPE_PRICE_ID",
        "chmod 0700",
        "migrate",
        "SMTP_URL",
    ]
    assert len(failures) == len(expected), lines
    for word, line in zip(expected, failures, strict=True):
        assert word in line, (word, line)


def test_check_refuses_a_test_stripe_key_on_production(monkeypatch, capsys, production_env):
    status, lines = _check(monkeypatch, capsys, {**production_env, "STRIPE_SECRET_KEY": "sk_test_x"})
    assert status == 1
    assert any(line.startswith("FAIL Stripe key") and "test key" in line for line in lines)


def test_check_refuses_an_archived_price(monkeypatch, capsys, production_env):
    status, lines = _check(monkeypatch, capsys, {**production_env, "STRIPE_PRICE_ID": "price_old"})
    assert status == 1
    assert any("archived" in line for line in lines)


def test_check_names_each_stripe_problem_one_line_each(monkeypatch, capsys, production_env):
    """A live key Stripe accepts, with a wrong webhook secret, a missing price and an endpoint in another
    API version: three FAIL lines, the key and API version ok."""
    _StripeHandler.endpoints = [_endpoint(api_version="2024-06-20")]
    env = {**production_env, "STRIPE_WEBHOOK_SECRET": "sk_oops", "STRIPE_PRICE_ID": "price_gone"}
    status, lines = _check(monkeypatch, capsys, env)
    assert status == 1
    stripe_lines = [line for line in lines if "Stripe" in line]
    assert [line.split(":")[0] for line in stripe_lines] == [
        "FAIL Stripe webhook secret",
        "ok   Stripe key",
        "ok   Stripe API version",
        "FAIL Stripe price",
        "FAIL Stripe webhook endpoint",
    ]
    assert "price_gone does not exist" in stripe_lines[3]
    assert "API version 2024-06-20, this server reads 2026-10-28.endive" in stripe_lines[4]


def test_check_fails_an_api_version_stripe_does_not_accept(monkeypatch, capsys, production_env):
    _StripeHandler.versions = {"2025-01-01.acacia"}
    status, lines = _check(monkeypatch, capsys, production_env)
    assert status == 1
    [failed] = [line for line in lines if line.startswith("FAIL")]
    assert failed.startswith("FAIL Stripe API version: Stripe does not accept API version 2026-10-28.endive")


def test_check_fails_a_key_stripe_refuses_once(monkeypatch, capsys, production_env):
    status, lines = _check(monkeypatch, capsys, {**production_env, "STRIPE_SECRET_KEY": "sk_live_revoked"})
    assert status == 1
    assert [line for line in lines if line.startswith("FAIL")] == [
        "FAIL Stripe key: Stripe refused STRIPE_SECRET_KEY (401): use a current key"
    ]


@pytest.mark.parametrize(
    ("endpoints", "needle"),
    [
        ([], "no endpoint sends to https://license.example.com/v1/webhooks/stripe: create one"),
        ([_endpoint(url="https://old.example.com/v1/webhooks/stripe")], "no endpoint sends to"),
        (
            [_endpoint(status="disabled")],
            "we_1 at https://license.example.com/v1/webhooks/stripe is disabled",
        ),
        ([_endpoint(enabled_events=["checkout.session.completed"])], "does not send charge.dispute.created"),
    ],
)
def test_check_fails_a_missing_or_wrong_webhook_endpoint(
    monkeypatch, capsys, production_env, endpoints, needle
):
    _StripeHandler.endpoints = endpoints
    status, lines = _check(monkeypatch, capsys, production_env)
    assert status == 1
    [failed] = [line for line in lines if line.startswith("FAIL")]
    assert failed.startswith("FAIL Stripe webhook endpoint: ") and needle in failed, failed


def test_an_endpoint_sending_every_event_passes(monkeypatch, capsys, production_env):
    _StripeHandler.endpoints = [_endpoint(enabled_events=["*"])]
    status, lines = _check(monkeypatch, capsys, production_env)
    assert status == 0, lines


def test_check_names_the_guard_when_production_uses_the_fakes(monkeypatch, capsys, production_env):
    status, lines = _check(monkeypatch, capsys, {**production_env, "POSPAL_EMAIL": "console"})
    assert status == 1
    assert [line for line in lines if line.startswith("FAIL")] == [
        next(line for line in lines if "POSPAL_EMAIL is console" in line)
    ]


def test_check_names_every_problem_of_a_production_config_one_line_each(monkeypatch, capsys, production_env):
    env = {
        **production_env,
        "POSPAL_BILLING": "sandbox",  # 1: sandbox billing in production
        "POSPAL_EMAIL": "console",  # 2: console e-mail in production
        "POSPAL_ENABLE_TEST_HOOKS": "1",  # 3: test hooks in production
        "POSPAL_SEAT_IDLE_DAYS": "abc",  # 4: not a number of days
        "POSPAL_AUTO_MIGRATE": "maybe",  # 5: not a flag
        "POSPAL_LOG_LEVEL": "LOUD",  # 6: not a level
    }
    status, lines = _check(monkeypatch, capsys, env)
    assert status == 1
    failed = [line for line in lines if line.startswith("FAIL settings: ")]
    assert len(failed) == 6, lines
    for needle in (
        "POSPAL_BILLING is sandbox",
        "POSPAL_EMAIL is console",
        "POSPAL_ENABLE_TEST_HOOKS is set",
        "POSPAL_SEAT_IDLE_DAYS must be a whole number",
        "POSPAL_AUTO_MIGRATE must be 1/0",
        "POSPAL_LOG_LEVEL must be",
    ):
        assert sum(needle in line for line in failed) == 1, (needle, failed)


def test_stripe_billing_names_each_missing_setting(monkeypatch, capsys, production_env):
    env = {k: v for k, v in production_env.items() if not k.startswith("STRIPE_")}
    status, lines = _check(
        monkeypatch, capsys, {**env, "POSPAL_BILLING": "stripe", "STRIPE_SECRET_KEY": STRIPE_KEY}
    )
    assert status == 1
    failed = [line for line in lines if line.startswith("FAIL")]
    assert len(failed) == 2 and "STRIPE_WEBHOOK_SECRET" in failed[0] and "STRIPE_PRICE_ID" in failed[1]


def _run_refusal(capsys) -> tuple[int, list[str]]:
    """`pospal-server run` in this process: with a settings problem it returns before serving anything."""
    status = cli.main(["run", "--port", "1"])
    out, err = capsys.readouterr()
    assert out == ""
    return status, err.splitlines()


def test_run_refuses_on_the_same_problems_with_the_same_lines(monkeypatch, capsys, production_env):
    env = {
        **production_env,
        "POSPAL_BILLING": "sandbox",
        "POSPAL_EMAIL": "console",
        "POSPAL_TEST_CLOCK_FILE": "/tmp/clock",
        "POSPAL_SEAT_IDLE_DAYS": "abc",
        "POSPAL_OUTBOX_WORKER": "sometimes",
    }
    status, check_lines = _check(monkeypatch, capsys, env)
    failed = [line for line in check_lines if line.startswith("FAIL")]
    assert status == 1 and len(failed) == 5, check_lines
    assert _run_refusal(capsys) == (1, failed)


def test_a_wrong_choice_is_named_once_not_also_as_the_fallback(monkeypatch, capsys, production_env):
    env = {**production_env, "POSPAL_EMAIL": "pigeon", "POSPAL_BILLING": "paypal"}
    status, lines = _check(monkeypatch, capsys, env)
    assert status == 1
    assert [line for line in lines if line.startswith("FAIL")] == [
        "FAIL settings: POSPAL_BILLING must be one of stripe, sandbox, not 'paypal'",
        "FAIL settings: POSPAL_EMAIL must be one of console, smtp, resend, not 'pigeon'",
    ]


def test_idle_days_below_the_lease_are_refused(monkeypatch, capsys, production_env):
    """Issue 28, case 8: a seat freed after 3 idle days let till B in while A's token ran 11 more days."""
    status, lines = _check(monkeypatch, capsys, {**production_env, "POSPAL_SEAT_IDLE_DAYS": "3"})
    assert status == 1
    [failed] = [line for line in lines if line.startswith("FAIL")]
    assert failed.startswith(
        "FAIL settings: POSPAL_SEAT_IDLE_DAYS=3 is shorter than the 14-day offline lease"
    )
    assert "set it to 14 or more" in failed
    assert _run_refusal(capsys) == (1, [failed])  # the server does not start with it either
    with pytest.raises(ConfigError, match="POSPAL_SEAT_IDLE_DAYS"):
        Settings.from_env({**production_env, "POSPAL_SEAT_IDLE_DAYS": "13"})
    assert Settings.from_env({**production_env, "POSPAL_SEAT_IDLE_DAYS": "14"}).seat_idle_days == 14


def test_check_pings_the_configured_redis(monkeypatch, capsys, production_env, redis_url):
    status, lines = _check(monkeypatch, capsys, {**production_env, "POSPAL_REDIS_URL": redis_url})
    assert status == 0, lines
    assert "ok   Redis: answers PING" in lines


def test_check_fails_an_unreachable_redis_without_printing_its_password(monkeypatch, capsys, production_env):
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"  # nothing listens there
    status, lines = _check(monkeypatch, capsys, {**production_env, "POSPAL_REDIS_URL": url})
    assert status == 1
    [failed] = [line for line in lines if line.startswith("FAIL")]
    assert failed.startswith("FAIL Redis: cannot reach POSPAL_REDIS_URL's Redis (ConnectionError)")
    assert "hunter2" not in "\n".join(lines)


@pytest.mark.parametrize(("key", "ok"), [("re_full", True), ("re_send_only", True), ("re_revoked", False)])
def test_check_logs_in_to_resend_without_sending(resend_stub, key, ok):
    settings = Settings.from_env(
        {"POSPAL_EMAIL": "resend", "RESEND_API_KEY": key, "RESEND_API_BASE": resend_stub}
    )
    [finding] = check_email(settings)
    assert finding.ok is ok
    if not ok:
        assert "RESEND_API_KEY" in finding.detail
    assert _ResendHandler.requests == [("GET", "/domains")]


def test_a_check_that_crashes_is_a_problem_not_a_traceback(tmp_path):
    def broken(_settings):
        raise RuntimeError("boom")

    findings = run_checks(Settings.from_env({"POSPAL_SERVER_DATA_DIR": str(tmp_path)}), [broken])
    assert findings == [Finding(False, "broken", "check failed: RuntimeError('boom')")]


def test_readme_asks_for_the_webhook_events_check_asks_for():
    """An endpoint set up as README's Stripe section says passes check: the same events, no more, no less."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    listed = readme.split("and these events: ", 1)[1].split("Its\n", 1)[0].split(". Its", 1)[0]
    assert set(re.findall(r"`([a-z_.]+)`", listed)) == WEBHOOK_EVENTS
