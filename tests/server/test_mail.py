"""Mailers and templates: real SMTP delivery to aiosmtpd, Resend through a stub, escaping, Greek."""

from __future__ import annotations

import io
import json
from email.header import decode_header, make_header

import pytest

from server.errors import ConfigError, MailConfigError, MailRejected, MailTemporaryError, TemplateError
from server.mail import ConsoleMailer, OutgoingEmail, ResendMailer, SmtpMailer
from server.mail.templates import CATALOGUE, LOCALES, placeholders, render
from tests.server.resend_stub import start_resend_stub
from tests.server.smtp_sink import SmtpSink


@pytest.fixture
def sink():
    smtp = SmtpSink()
    smtp.start()
    yield smtp
    smtp.stop()


@pytest.fixture
def resend():
    stub, server = start_resend_stub()
    yield stub
    server.shutdown()
    server.server_close()


def _message(key: str = "k1", to: str = "owner@taverna.gr") -> OutgoingEmail:
    rendered = render("activation_code", "el", {"code": "123456", "minutes": 15})
    return OutgoingEmail(to, rendered.subject, rendered.text, rendered.html, key)


def _context(template: str) -> dict[str, object]:
    return {
        name: f"<{name}>" if not name.endswith("_url") else "https://pospal.test/x?a=1&b=2"
        for name in placeholders(template)
    }


def test_every_template_renders_in_english_and_greek_with_html_escaped():
    for template, variants in CATALOGUE.items():
        for locale in LOCALES:
            out = render(template, locale, _context(template))
            assert out.subject and "\n" not in out.subject
            # Values reach the HTML escaped, never as markup; URLs become escaped links.
            assert "<name>" not in out.html and "<code>" not in out.html
            if any(n.endswith("_url") for n in placeholders(template)):
                assert 'href="https://pospal.test/x?a=1&amp;b=2"' in out.html
            if locale == "el" and "el" in variants:
                # Real Greek text, not an English fallback.
                assert any("\u0370" <= ch <= "\u03ff" for ch in out.text)


def test_markup_in_a_restaurant_name_is_shown_as_text_in_html():
    out = render(
        "welcome", "en", {"name": "<script>alert(1)</script>", "seats": 2, "manage_url": "https://p.t/m"}
    )
    assert "<script>" in out.text
    assert "<script>" not in out.html and "&lt;script&gt;" in out.html


def test_missing_context_and_unknown_template_are_refused():
    with pytest.raises(TemplateError):
        render("activation_code", "en", {"code": "1"})
    with pytest.raises(TemplateError):
        render("no_such_template", "en", {})


def test_unknown_locale_falls_back_to_english():
    out = render("activation_code", "de-DE", {"code": "654321", "minutes": 15})
    assert out.subject == "Your POSPal code: 654321"


def test_smtp_delivers_text_and_html_to_a_real_smtp_server(sink):
    mailer = SmtpMailer(sink.url, "POSPal <no-reply@pospal.gr>")
    mailer.send(_message("code:42"))
    assert len(sink.messages) == 1
    msg = sink.messages[0]
    assert sink.envelopes[0][1] == ["owner@taverna.gr"]
    assert str(make_header(decode_header(msg["Subject"]))) == "Ο κωδικός σας POSPal: 123456"
    parts = {
        p.get_content_type(): p.get_payload(decode=True).decode() for p in msg.walk() if not p.is_multipart()
    }
    assert "123456" in parts["text/plain"] and "123456" in parts["text/html"]
    # The outbox key is the Message-ID, so a resend after a lost reply can be recognised.
    again = SmtpMailer(sink.url, "no-reply@pospal.gr").build(_message("code:42"))
    assert msg["Message-ID"].split("@")[0] == again["Message-ID"].split("@")[0]


def test_smtp_down_is_a_temporary_error():
    down = SmtpSink()  # never started: connection refused
    with pytest.raises(MailTemporaryError):
        SmtpMailer(down.url, "no-reply@pospal.gr", timeout=2).send(_message())


def test_smtp_url_must_be_smtp():
    with pytest.raises(ConfigError):
        SmtpMailer("http://example.com", "no-reply@pospal.gr")
    mailer = SmtpMailer("smtp://user:p%40ss@mail.example.com:587", "no-reply@pospal.gr")
    assert mailer.starttls and mailer.username == "user" and "p@ss" not in repr(mailer)


def test_resend_sends_payload_with_idempotency_key(resend):
    mailer = ResendMailer("re_test_key", "POSPal <no-reply@pospal.gr>", base_url=resend.url)
    mailer.send(_message("activation:abc"))
    assert len(resend.delivered) == 1
    headers, body = resend.requests[0]
    assert headers["idempotency-key"] == "activation:abc"
    assert headers["authorization"] == "Bearer re_test_key"
    assert body["to"] == ["owner@taverna.gr"] and body["from"] == "POSPal <no-reply@pospal.gr>"
    assert "123456" in body["subject"] and "123456" in body["text"] and "123456" in body["html"]


def test_resend_lost_reply_retried_with_same_key_delivers_once(resend):
    resend.lose_replies = 1
    mailer = ResendMailer("re_test_key", "no-reply@pospal.gr", base_url=resend.url)
    with pytest.raises(MailTemporaryError):
        mailer.send(_message("welcome:sub_1"))
    mailer.send(_message("welcome:sub_1"))
    assert len(resend.requests) == 2 and len(resend.delivered) == 1


def test_resend_errors_are_classified(resend):
    # A wrong key, a forbidden domain or an invalid sender is our configuration, never the message's.
    for status in (401, 403, 422):
        with pytest.raises(MailConfigError):
            resend.script.append((status, {"name": "validation_error"}, {}))
            ResendMailer("re_test_key", "no-reply@pospal.gr", base_url=resend.url).send(_message())
    with pytest.raises(MailConfigError):
        ResendMailer("wrong", "no-reply@pospal.gr", base_url=resend.url).send(_message())
    resend.script.append((400, {"name": "invalid_to"}, {}))
    with pytest.raises(MailRejected):
        ResendMailer("re_test_key", "no-reply@pospal.gr", base_url=resend.url).send(_message())
    resend.script.append((429, {"name": "rate_limit_exceeded"}, {"retry-after": "7"}))
    with pytest.raises(MailTemporaryError) as limited:
        ResendMailer("re_test_key", "no-reply@pospal.gr", base_url=resend.url).send(_message())
    assert limited.value.retry_after == 7
    resend.fail_next = 1
    with pytest.raises(MailTemporaryError):
        ResendMailer("re_test_key", "no-reply@pospal.gr", base_url=resend.url).send(_message())
    with pytest.raises(MailTemporaryError):
        ResendMailer("re_test_key", "no-reply@pospal.gr", base_url="http://127.0.0.1:9", timeout=2).send(
            _message()
        )


def test_console_mailer_prints_or_appends_json_lines(tmp_path):
    stream = io.StringIO()
    ConsoleMailer(stream=stream).send(_message())
    assert "owner@taverna.gr" in stream.getvalue() and "123456" in stream.getvalue()
    path = tmp_path / "mail" / "mail.jsonl"
    mailer = ConsoleMailer(path=path)
    mailer.send(_message("a"))
    mailer.send(_message("b"))
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [line["idempotency_key"] for line in lines] == ["a", "b"]
    assert "123456" in lines[0]["text"]


def test_resend_requests_are_paced_under_the_providers_limit(resend):
    now = [100.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    mailer = ResendMailer(
        "re_test_key", "no-reply@pospal.gr", base_url=resend.url, monotonic=lambda: now[0], sleep=sleep
    )
    for i in range(5):
        mailer.send(_message(f"paced:{i}"))
    # Five back-to-back sends take 2 s of pacing: at most 2 requests per second reach Resend.
    assert len(resend.delivered) == 5 and sum(waits) == pytest.approx(2.0)
