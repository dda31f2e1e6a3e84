"""Scale-out: two real `pospal-server run` processes on one PostgreSQL and one Redis lose and repeat nothing.

Runs only when `POSPAL_TEST_DATABASE_URL` is set. The module starts, once: a fresh database migrated by
`pospal-server migrate` (instances never migrate), a Stripe-shaped stub the webhook handling re-fetches
subscriptions from, an aiosmtpd sink, and two instances A and B with identical settings (one signing-key
directory, one server secret, one Redis), each running its in-process outbox worker. Then, as PRODUCT.md
"Running several server instances" asks:

- the same signed webhook, posted to A and B at the same moment, is processed once, for 20 events;
- both outbox workers deliver, and every email reaches the sink exactly once;
- a refresh request replayed to the other instance is refused with 409 `replay`;
- the code rate limit is shared: 3 requests on A and 3 on B for one email give the 6th a 429;
- and the races an operator or a load balancer adds: two `migrate` runs at once, one webhook per
  instance for one new subscription, a trial start reaching both, a code from A used on B, a key rotation.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from sqlalchemy import create_engine, func, inspect, select, text
from sqlalchemy.engine import make_url

from bench.lb_proxy import start_in_thread
from server.db import Database, current_revision, head_revision
from server.models import AuditLog, License, Outbox, StripeEvent, Subscription, Trial
from tests.server.conftest import PG_URL, REPO, MachineKey, RunningServer, launch_server, token_claims
from tests.server.smtp_sink import SmtpSink
from tests.server.stripe_stub import event, sign, start_stripe_stub, stripe_env, subscription

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not PG_URL, reason="POSPAL_TEST_DATABASE_URL is not set"),
]

T = TypeVar("T")
# A Redis database number of our own on the shared server, emptied before and after the module.
REDIS_DB = 14
RATE_LIMIT_PREFIX = "pospal:rl:"
# The sink takes this long per message, so a batch keeps one worker busy long enough for the other to
# wake up (it polls every 2 s) and claim rows too.
SEND_DELAY_S = 0.05
EVENT_TYPES = (
    "invoice.paid",
    "customer.subscription.updated",
    "invoice.payment_succeeded",
    "customer.subscription.created",
)


class SlowSink(SmtpSink):
    """An aiosmtpd sink that takes `SEND_DELAY_S` to accept each message, like a real relay."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd API
        await asyncio.sleep(SEND_DELAY_S)
        return await super().handle_DATA(server, session, envelope)

    def message_digests(self) -> list[str]:
        """The idempotency-key digest in each delivered Message-ID, in delivery order."""
        with self._lock:
            ids = [str(m["Message-ID"]) for m in self.messages]
        return [m.group(1) for m in (re.search(r"<([0-9a-f]{32})@", i) for i in ids) if m]


# ------------------------------------------------------------------------------------------ plumbing


def _database_url(name: str) -> str:
    return make_url(PG_URL).set(database=name).render_as_string(hide_password=False)


def _admin_engine() -> Any:
    return create_engine(PG_URL, isolation_level="AUTOCOMMIT")


def _create_database() -> str:
    name = f"pospal_scaleout_{secrets.token_hex(5)}"
    engine = _admin_engine()
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return name


def _drop_database(name: str) -> None:
    engine = _admin_engine()
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def _cli(env: dict[str, str], *args: str) -> subprocess.Popen:
    """Start `pospal-server ARGS` (as `python -m server.cli`) with `env` on top of ours."""
    return subprocess.Popen(
        [sys.executable, "-m", "server.cli", *args],
        cwd=REPO,
        env={**os.environ, **env, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(process: subprocess.Popen) -> tuple[int, str]:
    """Wait for a `_cli` process; return its exit code and stderr."""
    _, err = process.communicate(timeout=120)
    return process.returncode, err


def _redis_url(request: pytest.FixtureRequest) -> str:
    """Our own database number on the shared Redis; a private redis-server if that is not reachable."""
    import redis

    base = urlsplit(os.environ.get("POSPAL_TEST_REDIS_URL") or "redis://127.0.0.1:6379")
    url = urlunsplit((base.scheme, base.netloc, f"/{REDIS_DB}", "", ""))
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        client.ping()
        return url
    except redis.RedisError:
        return str(request.getfixturevalue("_redis_server"))
    finally:
        client.close()


def _forget_rate_limits(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        for key in client.scan_iter(match=RATE_LIMIT_PREFIX + "*"):
            client.delete(key)
    finally:
        client.close()


def _emails_sent(server: RunningServer) -> int:
    """How many emails this instance's outbox worker reported sent (its JSON log lines)."""
    count = 0
    for line in server.log().splitlines():
        if '"email_sent"' in line:
            try:
                count += json.loads(line).get("event") == "email_sent"
            except ValueError:
                continue
    return count


def _at_once(*calls: Callable[[], T]) -> list[T]:
    """Run the calls from threads released by one barrier, so they reach the servers at the same moment."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], T]) -> T:
        barrier.wait(timeout=10)
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def _signed_post(client: httpx.Client, path: str, raw: bytes, headers: dict[str, str]) -> Callable[[], Any]:
    """A call that POSTs these exact bytes and headers with `client`."""
    return partial(client.post, path, content=raw, headers=headers)


def _webhook(client: httpx.Client, evt: dict[str, Any]) -> Callable[[], Any]:
    """A call that delivers `evt`, signed as Stripe signs, with `client`."""
    raw = json.dumps(evt).encode()
    headers = {"Stripe-Signature": sign(raw), "Content-Type": "application/json"}
    return _signed_post(client, "/v1/webhooks/stripe", raw, headers)


def _new_customer(stub: Any, email: str) -> tuple[str, str]:
    """A provider customer with one active subscription; returns (customer id, subscription id)."""
    tag = secrets.token_hex(6)
    customer, sub_id = f"cus_so{tag}", f"sub_so{tag}"
    stub.customers[customer] = {"id": customer, "object": "customer", "email": email}
    stub.subscriptions[sub_id] = subscription(sub_id, customer)
    return customer, sub_id


def _invoice_paid(customer: str, sub_id: str) -> dict[str, Any]:
    return event(
        "invoice.paid",
        {
            "object": "invoice",
            "id": f"in_{secrets.token_hex(6)}",
            "customer": customer,
            "subscription": sub_id,
        },
    )


# ----------------------------------------------------------------------------------------- fixtures


@dataclass
class Cluster:
    """Two instances on one database and one Redis, with the stub and sink they talk to."""

    a: RunningServer
    b: RunningServer
    db: Database
    stub: Any
    sink: SlowSink
    redis_url: str
    migrations: list[tuple[int, str]]
    key_dir: Path

    def clients(self) -> tuple[httpx.Client, httpx.Client]:
        """A keep-alive client for each instance (close them after use)."""
        return httpx.Client(base_url=self.a.url, timeout=30), httpx.Client(base_url=self.b.url, timeout=30)


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Migrate a fresh database with two CLI runs at once, then start instances A and B together."""
    workdir = tmp_path_factory.mktemp("scaleout")
    name = _create_database()
    url = _database_url(name)
    redis_url = _redis_url(request)
    _forget_rate_limits(redis_url)
    stub, stub_server = start_stripe_stub()
    sink = SlowSink()
    sink.start()
    servers: list[RunningServer] = []
    db: Database | None = None
    try:
        env = {
            **stripe_env(stub.url),
            "POSPAL_DATABASE_URL": url,
            "POSPAL_SIGNING_KEY_DIR": str(workdir / "keys"),
            "POSPAL_SERVER_SECRET": "scaleout-shared-secret",
            "POSPAL_REDIS_URL": redis_url,
            "POSPAL_EMAIL": "smtp",
            "SMTP_URL": sink.url,
            "FROM_EMAIL": "POSPal <no-reply@pospal.gr>",
            "POSPAL_OUTBOX_WORKER": "1",
            "POSPAL_LOG_LEVEL": "INFO",
        }
        migrates = [_cli(env, "migrate") for _ in range(2)]
        migrations = [_finish(p) for p in migrates]
        assert 0 in [code for code, _ in migrations], migrations
        with ThreadPoolExecutor(2) as pool:
            futures = [
                pool.submit(
                    launch_server,
                    {**env, "POSPAL_SERVER_DATA_DIR": str(workdir / f"data-{n}")},
                    workdir / f"server-{n}.log",
                )
                for n in "ab"
            ]
            errors = []
            for future in futures:
                try:
                    servers.append(future.result())
                except RuntimeError as exc:
                    errors.append(str(exc))
            assert not errors, errors
        db = Database(url, pool_size=2)
        yield Cluster(servers[0], servers[1], db, stub, sink, redis_url, migrations, workdir / "keys")
    finally:
        for server in servers:
            server.stop()
        if db is not None:
            db.dispose()
        sink.stop()
        stub_server.shutdown()
        stub_server.server_close()
        _forget_rate_limits(redis_url)
        _drop_database(name)


# ------------------------------------------------------------------------------------------- tests


def test_an_instance_refuses_an_unmigrated_database_and_leaves_it_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from server.cli import main

    name = _create_database()
    url = _database_url(name)
    monkeypatch.setenv("POSPAL_DATABASE_URL", url)
    monkeypatch.setenv("POSPAL_SERVER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("POSPAL_SIGNING_KEY_DIR", str(tmp_path / "keys"))
    # Only ever honoured for a brand-new SQLite demo file, never for a shared database.
    monkeypatch.setenv("POSPAL_AUTO_MIGRATE", "1")
    try:
        assert main(["run", "--port", "1"]) == 2
        assert "pospal-server migrate" in capsys.readouterr().err
        engine = create_engine(url)
        assert inspect(engine).get_table_names() == []
        engine.dispose()
    finally:
        _drop_database(name)


def test_two_migrates_at_once_both_succeed_and_both_instances_start(cluster: Cluster) -> None:
    # Deploy pipelines often run `migrate` before every instance, so the fixture ran two at once.
    assert [code for code, _ in cluster.migrations] == [0, 0], [err for _, err in cluster.migrations]
    assert current_revision(cluster.db) == head_revision()
    assert [httpx.get(f"{s.url}/health").status_code for s in (cluster.a, cluster.b)] == [200, 200]


def test_the_same_webhook_posted_to_both_instances_at_once_is_processed_once(cluster: Cluster) -> None:
    run = secrets.token_hex(3)
    events, subs = [], []
    for i in range(20):
        customer, sub_id = _new_customer(cluster.stub, f"owner{i}-{run}@scale.gr")
        kind = EVENT_TYPES[i % len(EVENT_TYPES)]
        if kind.startswith("invoice."):
            obj = {"object": "invoice", "id": f"in_{run}{i}", "customer": customer, "subscription": sub_id}
        else:
            obj = subscription(sub_id, customer)
        events.append(event(kind, obj))
        subs.append(sub_id)
    client_a, client_b = cluster.clients()
    outcomes = []
    with client_a, client_b:
        client_a.get("/health"), client_b.get("/health")  # open both connections before racing
        for evt in events:
            answers = _at_once(_webhook(client_a, evt), _webhook(client_b, evt))
            assert [r.status_code for r in answers] == [200, 200], [r.text for r in answers]
            outcomes.append(sorted(r.json()["outcome"] for r in answers))
    assert outcomes == [["duplicate", "processed"]] * 20
    ids = [e["id"] for e in events]
    with cluster.db.transaction() as session:
        rows = list(session.scalars(select(StripeEvent).where(StripeEvent.event_id.in_(ids))))
        assert len(rows) == 20
        assert all(r.processed_at is not None and r.error is None for r in rows)
        actors = [f"webhook:{i}" for i in ids]
        synced = session.execute(
            select(AuditLog.actor, func.count())
            .where(AuditLog.action == "subscription.synced", AuditLog.actor.in_(actors))
            .group_by(AuditLog.actor)
        ).all()
        assert sorted(count for _, count in synced) == [1] * 20
        mirrored = session.scalars(
            select(Subscription.id).where(Subscription.provider_subscription_id.in_(subs))
        ).all()
        assert len(mirrored) == 20
        assert (
            session.scalar(
                select(func.count()).select_from(License).where(License.subscription_id.in_(mirrored))
            )
            == 20
        )
        welcomes = session.execute(
            select(Outbox.to_email, func.count())
            .where(Outbox.template == "welcome", Outbox.to_email.like(f"%-{run}@scale.gr"))
            .group_by(Outbox.to_email)
        ).all()
        assert sorted(count for _, count in welcomes) == [1] * 20
    # Each delivery fetches at most once, before its transaction (a slow Stripe never holds the
    # database); only the one that won the event id applied it (one audit row, one e-mail above).
    assert all(1 <= len(cluster.stub.calls("GET", f"/v1/subscriptions/{s}")) <= 2 for s in subs)


def test_both_outbox_workers_deliver_every_email_to_the_sink_exactly_once(cluster: Cluster) -> None:
    from server.outbox import enqueue

    run = secrets.token_hex(3)
    with cluster.db.transaction() as session:
        for i in range(80):
            enqueue(
                session,
                f"diner{i}-{run}@scale.gr",
                "payment_recovered",
                "en",
                {},
                f"scaleout:{run}:{i}",
            )
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        with cluster.db.transaction() as session:
            waiting = session.scalar(select(func.count()).select_from(Outbox).where(Outbox.status != "sent"))
        if not waiting:
            break
        time.sleep(0.2)
    with cluster.db.transaction() as session:
        rows = list(session.scalars(select(Outbox)))
    assert [r for r in rows if r.status != "sent"] == []
    expected = Counter(hashlib.sha256(r.idempotency_key.encode()).hexdigest()[:32] for r in rows)
    assert set(expected.values()) == {1}
    assert Counter(cluster.sink.message_digests()) == expected
    # Both workers ran over the same rows; how the 80 split between them is up to the scheduler (no
    # assert on it), but together they sent each message exactly once.
    sent_by = [_emails_sent(cluster.a), _emails_sent(cluster.b)]
    assert sum(sent_by) == len(rows)


def test_two_events_for_one_new_subscription_on_both_instances_at_once_make_one_of_everything(
    cluster: Cluster,
) -> None:
    run = secrets.token_hex(3)
    emails, subs = [f"pair{i}-{run}@scale.gr" for i in range(5)], []
    client_a, client_b = cluster.clients()
    with client_a, client_b:
        for email in emails:
            customer, sub_id = _new_customer(cluster.stub, email)
            subs.append(sub_id)
            created = event("customer.subscription.created", subscription(sub_id, customer))
            answers = _at_once(
                _webhook(client_a, created), _webhook(client_b, _invoice_paid(customer, sub_id))
            )
            assert [(r.status_code, r.json()["outcome"]) for r in answers] == [(200, "processed")] * 2
    with cluster.db.transaction() as session:
        mirrored = session.scalars(
            select(Subscription.id).where(Subscription.provider_subscription_id.in_(subs))
        ).all()
        assert len(mirrored) == 5
        licenses = select(func.count()).select_from(License).where(License.subscription_id.in_(mirrored))
        assert session.scalar(licenses) == 5
        welcomes = session.scalars(
            select(Outbox.to_email).where(Outbox.template == "welcome", Outbox.to_email.in_(emails))
        ).all()
        assert sorted(welcomes) == sorted(emails)


def test_a_code_sent_by_one_instance_activates_a_machine_on_the_other(cluster: Cluster) -> None:
    email = f"buyer-{secrets.token_hex(3)}@scale.gr"
    machine = MachineKey(clock=None)
    client_a, client_b = cluster.clients()
    with client_a, client_b:
        customer, sub_id = _new_customer(cluster.stub, email)
        assert _webhook(client_a, _invoice_paid(customer, sub_id))().json()["outcome"] == "processed"
        assert client_a.post("/v1/codes", json={"email": email, "purpose": "activate"}).status_code == 202
        with cluster.db.transaction() as session:
            (context,) = session.scalars(
                select(Outbox.context).where(Outbox.to_email == email, Outbox.template == "activation_code")
            ).all()
        activated = machine.activate(client_b, email, str(context["code"]))
        assert activated.status_code == 200, activated.text
        assert machine.refresh(client_a).status_code == 200


def test_one_machine_starting_its_trial_on_both_instances_at_once_gets_one_trial(cluster: Cluster) -> None:
    client_a, client_b = cluster.clients()
    with client_a, client_b:
        for _ in range(5):
            machine = MachineKey(clock=None)
            calls = []
            for client in (client_a, client_b):
                raw, headers = machine.signed("/v1/trials", machine.identity(), machine_id=None)
                calls.append(_signed_post(client, "/v1/trials", raw, headers))
            answers = _at_once(*calls)
            assert [r.status_code for r in answers] == [200, 200], [r.text for r in answers]
            claims = [token_claims(r.json()["token"]) for r in answers]
            assert claims[0]["sub"] == claims[1]["sub"]
            assert claims[0]["mid"] == claims[1]["mid"]
            with cluster.db.transaction() as session:
                trials = (
                    select(func.count())
                    .select_from(Trial)
                    .where(Trial.machine_public_key == machine.public_key)
                )
                assert session.scalar(trials) == 1


def test_a_refresh_replayed_to_the_other_instance_is_refused(cluster: Cluster) -> None:
    machine = MachineKey(clock=None)
    client_a, client_b = cluster.clients()
    with client_a, client_b:
        assert machine.start_trial(client_a).status_code == 200
        raw, headers = machine.signed("/v1/refresh", {"fingerprint": machine.fp, "known_kids": []})
        assert client_a.post("/v1/refresh", content=raw, headers=headers).status_code == 200
        replayed = client_b.post("/v1/refresh", content=raw, headers=headers)
        assert replayed.status_code == 409
        assert replayed.json()["error"] == "replay"
        # B knows the machine: a freshly signed request is served there.
        assert machine.refresh(client_b).status_code == 200
        # The same request reaching both at the same moment: one answer, one refusal.
        raw, headers = machine.signed("/v1/refresh", {"fingerprint": machine.fp, "known_kids": []})
        answers = _at_once(
            _signed_post(client_a, "/v1/refresh", raw, headers),
            _signed_post(client_b, "/v1/refresh", raw, headers),
        )
        assert sorted(r.status_code for r in answers) == [200, 409]


def test_the_code_rate_limit_is_shared_between_instances(cluster: Cluster) -> None:
    import redis

    email = f"limit-{secrets.token_hex(3)}@scale.gr"
    body = {"email": email, "purpose": "activate"}
    client_a, client_b = cluster.clients()
    with client_a, client_b:
        answers = [client_a.post("/v1/codes", json=body) for _ in range(3)]
        answers += [client_b.post("/v1/codes", json=body) for _ in range(3)]
        assert [r.status_code for r in answers] == [202] * 5 + [429]
        assert answers[-1].json()["error"] == "rate_limited"
        assert answers[-1].json()["retry_after"] > 0
        assert client_a.post("/v1/codes", json=body).status_code == 429
        # Behind a load balancer the per-address limits count the client it names (from a trusted
        # proxy address: loopback here, FORWARDED_ALLOW_IPS in production), not the balancer.
        other = client_b.post(
            "/v1/codes", json={**body, "email": f"other-{email}"}, headers={"X-Forwarded-For": "203.0.113.9"}
        )
        assert other.status_code == 202
    client = redis.Redis.from_url(cluster.redis_url)
    try:
        assert client.zcard(f"{RATE_LIMIT_PREFIX}codes:{email}") == 5
        assert client.zcard(f"{RATE_LIMIT_PREFIX}codes:ip:203.0.113.9") == 1
    finally:
        client.close()


def test_the_round_robin_proxy_spreads_one_machine_over_both_instances(cluster: Cluster) -> None:
    upstreams = [(urlsplit(s.url).hostname or "", urlsplit(s.url).port or 0) for s in (cluster.a, cluster.b)]
    proxy = start_in_thread(upstreams)
    try:
        machine = MachineKey(clock=None)
        with httpx.Client(base_url=proxy.url, timeout=30) as client:
            assert machine.start_trial(client).status_code == 200
            assert [machine.refresh(client).status_code for _ in range(9)] == [200] * 9
    finally:
        proxy.stop()
    assert proxy.proxy.counts == [5, 5]


def test_a_key_rotation_reaches_both_instances(cluster: Cluster) -> None:
    import jwt

    from server.signing import SigningKeys

    machine = MachineKey(clock=None)
    client_a, client_b = cluster.clients()
    with client_a, client_b:
        assert machine.start_trial(client_a).status_code == 200
        # What `pospal-server keys rotate` does, on the shared database and key directory.
        with cluster.db.transaction() as session:
            new_kid, _ = SigningKeys(cluster.key_dir).rotate(session, datetime.now(UTC))
        kids: list[str] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            answers = [machine.refresh(client) for client in (client_a, client_b)]
            kids = [jwt.get_unverified_header(r.json()["token"])["kid"] for r in answers]
            if kids == [new_kid, new_kid]:
                break
            time.sleep(0.5)
        assert kids == [new_kid, new_kid]
