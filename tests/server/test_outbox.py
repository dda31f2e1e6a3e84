"""The outbox: written in the caller's transaction, delivered by workers exactly once per message.

Runs on SQLite and, when POSPAL_TEST_DATABASE_URL is set, PostgreSQL (where claims use
FOR UPDATE SKIP LOCKED).
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from server.errors import MailRejected, MailTemporaryError, TemplateError
from server.mail import ResendMailer, SmtpMailer
from server.mail.base import OutgoingEmail
from server.models import Checkout, Customer, Outbox, Trial
from server.outbox import OutboxWorker, backoff, enqueue
from server.reminders import enqueue_trial_reminders
from server.worker import run_worker
from tests.server.resend_stub import start_resend_stub
from tests.server.smtp_sink import SmtpSink

CODE = {"code": "123456", "minutes": 15}


class Recorder:
    """A mailer that remembers what it sent; optionally fails first, or signals each send."""

    def __init__(self, fail_with: Exception | None = None) -> None:
        self.sent: list[OutgoingEmail] = []
        self.fail_with = fail_with
        self.lock = threading.Lock()
        self.sent_event = threading.Event()

    def send(self, message: OutgoingEmail) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        with self.lock:
            self.sent.append(message)
        self.sent_event.set()


def _enqueue(database, clock, n: int, prefix: str = "m") -> None:
    with database.transaction() as session:
        for i in range(n):
            enqueue(
                session, f"user{i}@cafe.gr", "activation_code", "en", CODE, f"{prefix}:{i}", now=clock.now()
            )


def _rows(database) -> list[Outbox]:
    with database.transaction() as session:
        return list(session.scalars(select(Outbox).order_by(Outbox.id)))


def test_enqueue_rolls_back_with_the_callers_transaction(database, clock):
    with pytest.raises(RuntimeError), database.transaction() as session:
        enqueue(session, "a@cafe.gr", "activation_code", "el", CODE, "k1", now=clock.now())
        raise RuntimeError("the change this email reports failed")
    assert _rows(database) == []


def test_same_idempotency_key_keeps_one_row(database, clock):
    with database.transaction() as session:
        assert enqueue(session, "A@Cafe.gr", "activation_code", "el", CODE, "k1", now=clock.now())
    with database.transaction() as session:
        assert not enqueue(session, "a@cafe.gr", "activation_code", "el", CODE, "k1", now=clock.now())
    rows = _rows(database)
    assert len(rows) == 1 and rows[0].to_email == "a@cafe.gr" and rows[0].locale == "el"


def test_bad_template_fails_inside_the_transaction(database, clock):
    with pytest.raises(TemplateError), database.transaction() as session:
        enqueue(session, "a@cafe.gr", "activation_code", "en", {"code": "1"}, "k1", now=clock.now())
    assert _rows(database) == []


def test_smtp_down_three_attempts_then_up_delivers_each_message_once(database, clock):
    sink = SmtpSink()  # port chosen now, server started later: connections are refused until then
    worker = OutboxWorker(database, SmtpMailer(sink.url, "no-reply@pospal.gr", timeout=5), clock)
    _enqueue(database, clock, 3)
    try:
        for attempt in (1, 2, 3):
            assert worker.run_once().retried == 3
            # Not due again until the backoff has passed.
            assert worker.run_once().handled == 0
            clock.advance(backoff(attempt, worker.base_delay_s, worker.max_delay_s).total_seconds())
        assert [r.attempts for r in _rows(database)] == [3, 3, 3]
        sink.start()
        assert worker.drain().sent == 3
        assert worker.drain().handled == 0
    finally:
        sink.stop()
    recipients = sorted(rcpts[0] for _, rcpts in sink.envelopes)
    assert recipients == ["user0@cafe.gr", "user1@cafe.gr", "user2@cafe.gr"]
    rows = _rows(database)
    assert {r.status for r in rows} == {"sent"} and all(r.attempts == 4 for r in rows)


def test_backoff_doubles_up_to_the_cap():
    delays = [backoff(n, 30, 3600).total_seconds() for n in range(1, 10)]
    assert delays[:4] == [30, 60, 120, 240] and delays[-1] == 3600


def test_concurrent_workers_send_each_message_once(database, clock):
    _enqueue(database, clock, 40)
    mailer = Recorder()
    workers = [OutboxWorker(database, mailer, clock, batch_size=3, worker_id=f"w{i}") for i in range(4)]
    barrier = threading.Barrier(len(workers))
    errors: list[BaseException] = []

    def work(worker: OutboxWorker) -> None:
        try:
            barrier.wait(timeout=10)
            for _ in range(50):
                if worker.run_once().handled == 0:
                    break
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    keys = [m.idempotency_key for m in mailer.sent]
    assert len(keys) == 40 and len(set(keys)) == 40
    assert {r.status for r in _rows(database)} == {"sent"}


def test_a_dead_workers_claim_expires_and_another_worker_sends(database, clock):
    _enqueue(database, clock, 1)
    crashed = OutboxWorker(database, Recorder(), clock, worker_id="crashed")
    token, rows = crashed.claim()
    assert len(rows) == 1
    survivor_mail = Recorder()
    survivor = OutboxWorker(database, survivor_mail, clock, worker_id="survivor")
    assert survivor.run_once().handled == 0  # still leased
    clock.advance(crashed.lease.total_seconds() + 1)
    assert survivor.run_once().sent == 1
    assert [m.idempotency_key for m in survivor_mail.sent] == ["m:0"]


def test_rejected_message_fails_without_retry(database, clock):
    _enqueue(database, clock, 1)
    worker = OutboxWorker(database, Recorder(MailRejected("no such mailbox")), clock)
    assert worker.run_once().failed == 1
    clock.advance(days=2)
    assert worker.run_once().handled == 0
    row = _rows(database)[0]
    assert row.status == "failed" and "no such mailbox" in (row.last_error or "")


def test_temporary_errors_are_retried_for_days_then_given_up(database, clock):
    with database.transaction() as session:
        enqueue(session, "owner@cafe.gr", "payment_recovered", "en", {}, "recovered:1", now=clock.now())
    worker = OutboxWorker(database, Recorder(MailTemporaryError("down")), clock)
    start = clock.now()
    while worker.run_once().retried == 1:
        clock.advance(hours=1)
    row = _rows(database)[0]
    # At least 3 days of tries (the README promises an outage loses nothing), and then a clear end.
    assert row.status == "failed" and clock.now() - start >= timedelta(days=3)
    assert row.attempts > 60


def test_resend_lost_reply_is_retried_without_a_second_delivery(database, clock):
    stub, server = start_resend_stub()
    try:
        stub.lose_replies = 1
        worker = OutboxWorker(
            database, ResendMailer("re_test_key", "no-reply@pospal.gr", base_url=stub.url), clock
        )
        _enqueue(database, clock, 1, prefix="welcome")
        assert worker.run_once().retried == 1
        clock.advance(60)
        assert worker.run_once().sent == 1
    finally:
        server.shutdown()
        server.server_close()
    assert len(stub.requests) == 2
    assert [d["key"] for d in stub.delivered] == ["welcome:0"]
    assert {h["idempotency-key"] for h, _ in stub.requests} == {"welcome:0"}


def test_run_worker_delivers_in_the_background_and_stops(settings, database, clock):
    mailer = Recorder()
    stop = threading.Event()
    thread = threading.Thread(
        target=run_worker,
        args=(settings, stop),
        kwargs={"db": database, "mailer": mailer, "clock": clock, "poll_s": 0.05},
    )
    thread.start()
    try:
        _enqueue(database, clock, 1)
        assert mailer.sent_event.wait(timeout=20)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()
    assert [m.to_email for m in mailer.sent] == ["user0@cafe.gr"]


def test_trial_ending_reminder_is_sent_once_three_days_before(database, clock):
    now = clock.now()
    with database.transaction() as session:
        customer = Customer(email="owner@cafe.gr", locale="el", created_at=now)
        session.add(customer)
        session.flush()
        session.add_all(
            [
                Trial(
                    id="trial_soon",
                    first_seen_at=now - timedelta(days=28),
                    ends_at=now + timedelta(days=2),
                    machine_public_key="pk_known",
                ),
                Trial(
                    id="trial_later",
                    first_seen_at=now,
                    ends_at=now + timedelta(days=30),
                    machine_public_key="pk_known2",
                ),
                Trial(
                    id="trial_unknown",
                    first_seen_at=now - timedelta(days=28),
                    ends_at=now + timedelta(days=2),
                    machine_public_key="pk_nobody",
                ),
                Checkout(id="chk_1", customer_id=customer.id, machine_public_key="pk_known", created_at=now),
            ]
        )
    assert enqueue_trial_reminders(database, clock) == 1
    assert enqueue_trial_reminders(database, clock) == 0
    rows = _rows(database)
    assert [(r.to_email, r.template, r.locale, r.idempotency_key) for r in rows] == [
        ("owner@cafe.gr", "trial_ending", "el", "trial-ending:trial_soon")
    ]


def _wait_for_mail(sink: SmtpSink, count: int, timeout_s: float = 30) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while len(sink.messages) < count and time.monotonic() < deadline:
        time.sleep(0.1)


def test_server_process_delivers_through_its_in_process_worker(start_server, seed_subscription):
    seed_subscription(email="owner@cafe.gr")  # codes go only to addresses with a license
    sink = SmtpSink()
    sink.start()
    try:
        server = start_server(env={"POSPAL_EMAIL": "smtp", "SMTP_URL": sink.url, "POSPAL_OUTBOX_WORKER": "1"})
        import httpx

        response = httpx.post(
            f"{server.url}/v1/codes", json={"email": "owner@cafe.gr", "purpose": "activate"}
        )
        assert response.status_code == 202
        _wait_for_mail(sink, 1)
    finally:
        sink.stop()
    assert [rcpts for _, rcpts in sink.envelopes] == [["owner@cafe.gr"]]
    assert "POSPal" in sink.subjects()[0]


def test_pospal_server_worker_command_delivers_and_stops_on_sigterm(server_env, database, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from pospal_protocol.clock import SystemClock
    from tests.server.conftest import REPO

    with database.transaction() as session:
        enqueue(session, "owner@cafe.gr", "activation_code", "el", CODE, "cli:1", now=SystemClock().now())
    sink = SmtpSink()
    sink.start()
    env = {**os.environ, **server_env, "POSPAL_EMAIL": "smtp", "SMTP_URL": sink.url, "PYTHONPATH": str(REPO)}
    log = open(tmp_path / "worker.log", "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "worker"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_for_mail(sink, 1)
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=20)
        log.close()
        sink.stop()
    assert code == 0, (tmp_path / "worker.log").read_text()
    assert [rcpts for _, rcpts in sink.envelopes] == [["owner@cafe.gr"]]
    assert {r.status for r in _rows(database)} == {"sent"}
