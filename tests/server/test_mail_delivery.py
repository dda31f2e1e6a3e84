"""No e-mail is dropped: wrong settings, rate limits and expired codes, on real SMTP and a Resend stub.

Each test drives `OutboxWorker` with a fake clock on both databases. aiosmtpd plays an SMTP server that
refuses our login (535) until the password is fixed; the Resend stub answers 401, then 429 with
`Retry-After`, then 200. In every case each message is delivered exactly once.
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from sqlalchemy import select

from server import admin
from server.cli import build_parser
from server.errors import ConfigError, MailConfigError
from server.mail import OutgoingEmail, ResendMailer, SmtpMailer
from server.models import Outbox
from server.outbox import OutboxWorker, enqueue, retry_config_waits
from tests.server.resend_stub import start_resend_stub
from tests.server.smtp_sink import SmtpSink


class AuthSink(SmtpSink):
    """An SMTP server that needs a login, and accepts only `password` (which a test may change)."""

    def __init__(self, password: str) -> None:
        super().__init__()
        self.password = password
        self.logins: list[tuple[str, bool]] = []

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = data.password.decode() == self.password
        self.logins.append((data.login.decode(), ok))
        return AuthResult(success=ok, handled=False)  # not handled: aiosmtpd answers 535

    def start(self) -> None:
        if self._controller is None:
            self._controller = Controller(
                self,
                hostname="127.0.0.1",
                port=self.port,
                authenticator=self.authenticate,
                auth_required=True,
                auth_require_tls=False,  # loopback test server; the client side is `?tls=none`
            )
            self._controller.start()

    def url_for(self, password: str) -> str:
        return f"smtp://owner:{password}@127.0.0.1:{self.port}?tls=none"


pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")


@pytest.fixture
def auth_sink():
    sink = AuthSink(password="right")
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture
def resend():
    stub, server = start_resend_stub()
    yield stub
    server.shutdown()
    server.server_close()


def _queue(database, clock, keys: list[str], template: str = "payment_recovered", **kw: Any) -> None:
    with database.transaction() as session:
        for key in keys:
            enqueue(session, f"{key}@cafe.gr", template, "en", kw.get("context", {}), key, now=clock.now())


def _rows(database) -> dict[str, Outbox]:
    with database.transaction() as session:
        return {r.idempotency_key: r for r in session.scalars(select(Outbox).order_by(Outbox.id))}


def _admin_outbox(database, clock, *flags: str) -> dict:
    args = build_parser().parse_args(["admin", "outbox", *flags])
    printed: list[dict] = []
    with database.transaction() as session:
        assert admin.run(session, args, clock.now(), printed.append) == 0
    return printed[0]


def test_smtp_login_refused_keeps_mail_pending_until_the_password_is_fixed(
    database, clock, auth_sink, caplog
):
    _queue(database, clock, ["a", "b", "c"])
    wrong = OutboxWorker(database, SmtpMailer(auth_sink.url_for("wrong"), "no-reply@pospal.gr"), clock)
    with caplog.at_level(logging.ERROR, logger="pospal.outbox"):
        for _ in range(3):  # three passes, 5 minutes apart: all inside one alert interval
            result = wrong.run_once()
            assert result.sent == 0 and result.failed == 0
            clock.advance(minutes=5)
    assert auth_sink.messages == []
    # The first message of each pass is tried; the batch then waits instead of hammering the server.
    assert [ok for _, ok in auth_sink.logins] == [False, False, False]
    assert {r.status for r in _rows(database).values()} == {"pending"}
    alerts = [r for r in caplog.records if r.getMessage() == "email_config_error"]
    assert len(alerts) == 1 and alerts[0].waiting >= 1
    assert wrong.config_errors._value.get() == 3

    report = _admin_outbox(database, clock)
    assert report["by_reason"] == {"config": 1}
    assert "535" in report["messages"][0]["error"]

    # The operator fixes SMTP_URL and restarts: the waiting mail goes at once, each message once.
    fixed = OutboxWorker(database, SmtpMailer(auth_sink.url_for("right"), "no-reply@pospal.gr"), clock)
    assert retry_config_waits(database, clock) == 1
    assert fixed.drain().sent == 3
    assert sorted(str(m["To"]) for m in auth_sink.messages) == ["a@cafe.gr", "b@cafe.gr", "c@cafe.gr"]
    assert {r.status for r in _rows(database).values()} == {"sent"}
    assert _admin_outbox(database, clock)["stuck"] == 0


def test_resend_401_then_429_then_200_delivers_each_message_once(database, clock, resend):
    _queue(database, clock, ["k1", "k2"])
    resend.script = [
        (401, {"name": "restricted_api_key", "message": "This API key is restricted"}, {}),
        (429, {"name": "rate_limit_exceeded", "message": "Too many requests"}, {"retry-after": "120"}),
    ]
    worker = OutboxWorker(
        database, ResendMailer("re_test_key", "no-reply@pospal.gr", base_url=resend.url), clock
    )
    assert worker.run_once().retried == 1  # 401: the key is wrong, both wait (one request made)
    assert len(resend.requests) == 1
    assert _admin_outbox(database, clock)["by_reason"] == {"config": 1}
    clock.advance(minutes=5)
    assert worker.run_once().retried == 1  # 429: both wait Retry-After, not the 30 s backoff
    assert len(resend.requests) == 2
    rows = _rows(database)
    assert {r.next_attempt_at.replace(tzinfo=None) for r in rows.values()} == {
        (clock.now() + timedelta(seconds=120)).replace(tzinfo=None)
    }
    clock.advance(seconds=60)
    assert worker.run_once().handled == 0  # still inside Retry-After: nothing is sent
    clock.advance(seconds=61)
    assert worker.drain().sent == 2
    assert sorted(d["key"] for d in resend.delivered) == ["k1", "k2"]
    assert worker.drain().handled == 0
    assert len(resend.delivered) == 2


def test_a_code_past_its_life_is_not_sent_late(database, clock, resend):
    with database.transaction() as session:
        enqueue(
            session,
            "owner@cafe.gr",
            "activation_code",
            "el",
            {"code": "424242", "minutes": 15},
            "code:1",
            now=clock.now(),
        )
    _queue(database, clock, ["welcome-later"])
    resend.script = [(401, {"name": "missing_api_key"}, {})]
    worker = OutboxWorker(
        database, ResendMailer("re_test_key", "no-reply@pospal.gr", base_url=resend.url), clock
    )
    worker.run_once()
    clock.advance(minutes=20)  # the operator fixes the key, but too late for the code
    assert retry_config_waits(database, clock) == 1
    worker.drain()
    assert [d["key"] for d in resend.delivered] == ["welcome-later"]
    rows = _rows(database)
    assert rows["code:1"].status == "failed" and rows["code:1"].last_error.startswith("expired")
    report = _admin_outbox(database, clock, "--all")
    assert report["by_reason"] == {"expired": 1}


def test_smtp_never_sends_the_password_without_tls(database, clock):
    # A server on another port that offers no STARTTLS: we refuse to log in, and say it is our setting.
    sink = AuthSink(password="right")
    sink.start()
    try:
        mailer = SmtpMailer(f"smtp://owner:right@127.0.0.1:{sink.port}", "no-reply@pospal.gr")
        assert mailer.starttls
        _queue(database, clock, ["x"])
        assert OutboxWorker(database, mailer, clock).run_once().retried == 1
        assert sink.logins == [] and sink.messages == []
        assert "STARTTLS" in _rows(database)["x"].last_error
        with pytest.raises(MailConfigError):
            mailer.send(OutgoingEmail("a@cafe.gr", "s", "t", "<p>t</p>", "direct"))
    finally:
        sink.stop()


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("smtp://u:p@mail.example.com:25", True),
        ("smtp://u:p@mail.example.com:2525", True),
        ("smtps://u:p@mail.example.com", True),
        ("smtp://127.0.0.1:1025?tls=none", True),
        ("smtp://localhost:1025?tls=none", True),
        ("smtp://mail.example.com:25?tls=none", False),
        ("smtps://127.0.0.1:465?tls=none", False),
        ("smtp://127.0.0.1:25?tls=maybe", False),
    ],
)
def test_plain_smtp_only_when_asked_and_only_on_loopback(url, ok):
    if not ok:
        with pytest.raises(ConfigError):
            SmtpMailer(url, "no-reply@pospal.gr")
        return
    mailer = SmtpMailer(url, "no-reply@pospal.gr")
    # Every smtp:// port upgrades with STARTTLS unless plain text was asked for on loopback.
    assert mailer.starttls == (url.startswith("smtp://") and "tls=none" not in url)


def test_concurrent_workers_after_a_config_error_still_send_once(database, clock, resend):
    _queue(database, clock, [f"m{i}" for i in range(6)])
    resend.script = [(403, {"name": "invalid_from_address"}, {})]
    mailer = ResendMailer("re_test_key", "no-reply@pospal.gr", base_url=resend.url)
    OutboxWorker(database, mailer, clock).run_once()
    clock.advance(minutes=6)
    workers = [OutboxWorker(database, mailer, clock, batch_size=2) for _ in range(3)]
    threads = [threading.Thread(target=w.drain) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(d["key"] for d in resend.delivered) == sorted(f"m{i}" for i in range(6))


def test_config_errors_are_counted_in_the_registry_metrics_serves(database, clock, resend):
    from prometheus_client import generate_latest

    from server.api.health import Metrics

    registry = Metrics().registry  # the app passes its own registry to the worker (server/app.py)
    resend.script = [(401, {"name": "missing_api_key"}, {}), (401, {"name": "missing_api_key"}, {})]
    _queue(database, clock, ["m1", "m2"])
    worker = OutboxWorker(
        database,
        ResendMailer("re_test_key", "no-reply@pospal.gr", base_url=resend.url),
        clock,
        registry=registry,
    )
    worker.run_once()
    clock.advance(minutes=6)
    worker.run_once()
    assert b"pospal_email_config_errors_total 2.0" in generate_latest(registry)


def _self_signed(tmp_path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context trusting it) for 127.0.0.1, made on the spot."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_path, key_path)
    client = ssl.create_default_context(cafile=str(cert_path))
    return server, client


def test_starttls_on_a_port_other_than_587_then_login_and_delivery(database, clock, tmp_path):
    server_tls, client_tls = _self_signed(tmp_path)
    sink = AuthSink(password="right")
    controller = Controller(
        sink,
        hostname="127.0.0.1",
        port=sink.port,
        authenticator=sink.authenticate,
        auth_required=True,
        tls_context=server_tls,
        require_starttls=True,  # the server refuses AUTH and MAIL before TLS, as real relays do
    )
    controller.start()
    try:
        mailer = SmtpMailer(
            f"smtp://owner:right@127.0.0.1:{sink.port}", "no-reply@pospal.gr", tls_context=client_tls
        )
        assert sink.port != 587 and mailer.starttls
        _queue(database, clock, ["tls"])
        assert OutboxWorker(database, mailer, clock).run_once().sent == 1
        assert [ok for _, ok in sink.logins] == [True]
        assert [str(m["To"]) for m in sink.messages] == ["tls@cafe.gr"]
    finally:
        controller.stop()
