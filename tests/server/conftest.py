"""Server test fixtures: both databases, an app with a fake clock, signed machines, real server processes.

Fixtures other test files use (all function-scoped unless noted):

- `db_url`: a migrated, empty database. Parametrized: every test that uses it runs on SQLite (a copy of
  a migrated template file) and, when `POSPAL_TEST_DATABASE_URL` is set, on PostgreSQL (one fresh
  database per test module, every table truncated before each test).
- `server_env`: the environment dict for a server on `db_url` (sandbox billing, console mail into
  `tmp_path/mail/mail.jsonl`, outbox worker off, keys under `tmp_path/keys`). Change it before
  `settings` is first used.
- `settings`, `database` (a `server.db.Database`), `clock` (a `FakeClock`), `mailer` (a ConsoleMailer
  writing JSON lines), `app` (from `create_app`, worker off) and `client` (a TestClient that returns 5xx
  as responses instead of raising).
- `make_machine()`: a `MachineKey` with an Ed25519 key and a fingerprint; `machine.post(client, path,
  body)` signs as the ARCHITECTURE "Machine-signed requests" section says.
- `seed_subscription(email=..., seats=..., status=...)`: a customer, subscription and license.
- `login_code(client, email, purpose)`: ask for a code and read it back from the outbox.
- `start_server(env=None, workers=1)`: `pospal-server run` as a real process on a free port (killed at
  teardown); `live_server` is one such server on `db_url`.
- `redis_url` (session-scoped real `redis-server` on a free port, flushed before each test).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from pospal_protocol.clock import FakeClock
from pospal_protocol.signatures import new_nonce, sign_request
from pospal_protocol.trust import encode_public_key
from server.config import Settings
from server.db import Database, upgrade
from server.models import Base, Customer, Outbox, Subscription
from tests.processes import new_group_kwargs, signal_group

REPO = Path(__file__).resolve().parents[2]
PG_URL = os.environ.get("POSPAL_TEST_DATABASE_URL", "").strip()
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
START = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------------------------------ databases


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated, empty SQLite file that each test copies (faster than migrating every time)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    db = Database(f"sqlite:///{path}", pool_size=1)
    upgrade(db)
    db.dispose()
    import sqlite3

    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return path


@pytest.fixture(scope="module")
def pg_module_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test module, migrated to head; dropped afterwards."""
    if not PG_URL:
        pytest.skip("POSPAL_TEST_DATABASE_URL is not set")
    name = f"pospal_t_{secrets.token_hex(6)}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    db = Database(url, pool_size=1)
    upgrade(db)
    db.dispose()
    try:
        yield url
    finally:
        stale = _engines.pop(url, None)
        if stale is not None:
            stale.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


_engines: dict[str, Any] = {}


def truncate_all(url: str) -> None:
    """Empty every table of the models (PostgreSQL), keeping the schema.

    DELETE in reverse dependency order is much faster than TRUNCATE on tables this small.
    """
    engine = _engines.get(url)
    if engine is None:
        engine = _engines[url] = create_engine(url, poolclass=NullPool)
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())


@pytest.fixture(params=BACKENDS)
def db_backend(request: pytest.FixtureRequest) -> str:
    """ "sqlite" or "postgres" (the latter skipped unless POSPAL_TEST_DATABASE_URL is set)."""
    if request.param == "postgres" and not PG_URL:
        pytest.skip("POSPAL_TEST_DATABASE_URL is not set")
    return request.param


@pytest.fixture
def db_url(db_backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """URL of a migrated, empty database of the current backend."""
    if db_backend == "sqlite":
        path = tmp_path / "pospal.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url = request.getfixturevalue("pg_module_url")
    truncate_all(url)
    return url


# ---------------------------------------------------------------------------------------- the app


@pytest.fixture
def server_env(db_url: str, tmp_path: Path) -> dict[str, str]:
    """Environment for a server on `db_url`: sandbox billing, console mail to a file, worker off."""
    return {
        "POSPAL_DATABASE_URL": db_url,
        "POSPAL_SERVER_DATA_DIR": str(tmp_path / "data"),
        "POSPAL_SIGNING_KEY_DIR": str(tmp_path / "keys"),
        "POSPAL_BILLING": "sandbox",
        "POSPAL_EMAIL": "console",
        "POSPAL_MAIL_DIR": str(tmp_path / "mail"),
        "POSPAL_OUTBOX_WORKER": "0",
        "POSPAL_PUBLIC_URL": "http://testserver",
        "POSPAL_ENV": "development",
        "POSPAL_SERVER_SECRET": "test-server-secret",
        "POSPAL_LOG_LEVEL": "WARNING",
    }


@pytest.fixture
def settings(server_env: dict[str, str]) -> Settings:
    """Settings read from `server_env`."""
    return Settings.from_env(server_env)


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock at 2026-01-15 12:00 UTC; move it with `clock.advance(seconds)`."""
    return FakeClock(START)


@pytest.fixture
def database(settings: Settings) -> Iterator[Database]:
    """The test database (already migrated)."""
    db = Database(settings.database_url, pool_size=5)
    yield db
    db.dispose()


@pytest.fixture
def mailer(tmp_path: Path) -> Any:
    """A ConsoleMailer appending JSON lines to `tmp_path/mail/mail.jsonl`."""
    from server.mail.console import ConsoleMailer

    return ConsoleMailer(path=tmp_path / "mail" / "mail.jsonl")


@pytest.fixture
def app(settings: Settings, clock: FakeClock, database: Database, mailer: Any) -> Any:
    """The app under test: fake clock, sandbox billing, console mailer, outbox worker off."""
    from server.app import create_app

    return create_app(settings, clock=clock, db=database, mailer=mailer, start_worker=False)


@pytest.fixture
def client(app: Any) -> Iterator[Any]:
    """A TestClient for `app` (lifespan run; server errors come back as 500 responses)."""
    from fastapi.testclient import TestClient

    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


# ------------------------------------------------------------------------------------ signed machines


def fingerprint(seed: str = "") -> dict[str, str]:
    """A plausible Linux fingerprint (component -> 64 hex chars), different for each seed."""
    seed = seed or secrets.token_hex(4)
    names = ("machine_id", "product_uuid", "board_serial", "disk_serial", "mac")
    return {n: hashlib_hex(f"{seed}:{n}") for n in names}


def hashlib_hex(value: str) -> str:
    """SHA-256 hex of a string (stands in for the agent's HMAC)."""
    import hashlib

    return hashlib.sha256(value.encode()).hexdigest()


@dataclass
class MachineKey:
    """A POS machine as the server sees it: an Ed25519 key, a fingerprint, and (once known) its id."""

    clock: Any
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    fp: dict[str, str] = field(default_factory=fingerprint)
    machine_id: str | None = None
    terminal_name: str = "Till 1"

    @property
    def public_key(self) -> str:
        """The `machine_public_key` wire form (base64url raw key)."""
        return encode_public_key(self.key.public_key())

    def now_ts(self) -> int:
        """Current Unix seconds by the test clock (or the real one for real servers)."""
        return int(self.clock.now().timestamp()) if self.clock is not None else int(time.time())

    def signed(
        self,
        path: str,
        body: dict[str, Any],
        *,
        ts: int | None = None,
        nonce: str | None = None,
        key: Ed25519PrivateKey | None = None,
        machine_id: str | None | bool = True,
    ) -> tuple[bytes, dict[str, str]]:
        """The body bytes and headers of a signed POST (machine_id=True uses this machine's id)."""
        raw = json.dumps(body).encode()
        mid = self.machine_id if machine_id is True else (machine_id or None)
        headers = sign_request(
            key or self.key,
            "POST",
            path,
            raw,
            self.now_ts() if ts is None else ts,
            nonce or new_nonce(),
            machine_id=mid,
        )
        headers["Content-Type"] = "application/json"
        return raw, headers

    def post(self, client: Any, path: str, body: dict[str, Any], **kwargs: Any) -> Any:
        """Sign and POST `body` to `path` with `client` (a TestClient or an httpx.Client)."""
        raw, headers = self.signed(path, body, **kwargs)
        return client.post(path, content=raw, headers=headers)

    def identity(self) -> dict[str, Any]:
        """The body fields that introduce this machine (trial, activation, checkout)."""
        return {
            "fingerprint": self.fp,
            "machine_public_key": self.public_key,
            "terminal_name": self.terminal_name,
        }

    def start_trial(self, client: Any, **extra: Any) -> Any:
        """POST /v1/trials; remembers the machine id on success."""
        response = self.post(client, "/v1/trials", {**self.identity(), **extra}, machine_id=None)
        if response.status_code == 200:
            self.machine_id = token_claims(response.json()["token"])["mid"]
        return response

    def activate(self, client: Any, email: str, code: str | None = None, **extra: Any) -> Any:
        """POST /v1/activations; remembers the machine id on success."""
        body = {**self.identity(), "email": email, **extra}
        if code is not None:
            body["code"] = code
        response = self.post(client, "/v1/activations", body, machine_id=None)
        if response.status_code == 200:
            self.machine_id = response.json()["machine_id"]
        return response

    def refresh(self, client: Any, **kwargs: Any) -> Any:
        """POST /v1/refresh signed by this machine."""
        return self.post(client, "/v1/refresh", {"fingerprint": self.fp, "known_kids": []}, **kwargs)


def token_claims(token: str) -> dict[str, Any]:
    """A token's claims without verifying (tests verify separately where it matters)."""
    import jwt

    return jwt.decode(token, options={"verify_signature": False})


@pytest.fixture
def make_machine(clock: FakeClock) -> Callable[..., MachineKey]:
    """Factory of `MachineKey`s signing with the fake clock's time."""

    def make(**kwargs: Any) -> MachineKey:
        kwargs.setdefault("clock", clock)
        return MachineKey(**kwargs)

    return make


# ------------------------------------------------------------------------------------- seeded data


@pytest.fixture
def seed_subscription(database: Database, clock: FakeClock) -> Callable[..., tuple[str, str, str]]:
    """Factory: a customer + subscription + license; returns (customer_id, subscription_id, license_id)."""
    from server.licensing import ensure_license_for_subscription

    def seed(
        email: str = "owner@cafe.gr",
        seats: int = 1,
        status: str = "active",
        period_days: int = 30,
        **subscription_fields: Any,
    ) -> tuple[str, str, str]:
        now = clock.now()
        with database.transaction() as session:
            customer = session.scalars(select(Customer).where(Customer.email == email)).first()
            if customer is None:
                customer = Customer(
                    email=email, name="Cafe", stripe_customer_id=f"cus_{secrets.token_hex(6)}", created_at=now
                )
                session.add(customer)
                session.flush()
            subscription = Subscription(
                customer_id=customer.id,
                provider="sandbox",
                provider_subscription_id=f"sub_{secrets.token_hex(8)}",
                status=status,
                quantity=seats,
                current_period_end=now + timedelta(days=period_days),
                updated_at=now,
                **subscription_fields,
            )
            session.add(subscription)
            session.flush()
            license_ = ensure_license_for_subscription(session, subscription, now)
            return customer.id, subscription.id, license_.id

    return seed


def outbox_rows(database: Database, to: str | None = None, template: str | None = None) -> list[Outbox]:
    """Outbox rows, oldest first, optionally for one address and template."""
    with database.transaction() as session:
        stmt = select(Outbox).order_by(Outbox.id)
        if to:
            stmt = stmt.where(Outbox.to_email == to)
        if template:
            stmt = stmt.where(Outbox.template == template)
        return list(session.scalars(stmt))


@pytest.fixture
def login_code(database: Database) -> Callable[..., str]:
    """Factory: request a code by API and read it back from the newest outbox row."""

    def get(client: Any, email: str, purpose: str = "activate") -> str:
        response = client.post("/v1/codes", json={"email": email, "purpose": purpose})
        assert response.status_code == 202, response.text
        rows = outbox_rows(database, to=email, template="activation_code")
        assert rows, "no code email was queued"
        return str(rows[-1].context["code"])

    return get


# ------------------------------------------------------------------------------------ real servers


@dataclass
class RunningServer:
    """A `pospal-server run` process: its base URL, environment and log file."""

    url: str
    env: dict[str, str]
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        """The server's output so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """Stop the process group this fixture started (uvicorn and its workers)."""
        if self.process.poll() is None:
            signal_group(self.process)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                signal_group(self.process, kill=True)
                self.process.wait(timeout=5)


def launch_server(
    env: dict[str, str], log_path: Path, *, workers: int = 1, port: int | None = None, ready_s: float = 30
) -> RunningServer:
    """Start `python -m server.cli run` on a free port and wait until /health answers."""
    port = port or free_port()
    full_env = {**os.environ, **env, "PYTHONPATH": str(REPO)}
    full_env["POSPAL_PUBLIC_URL"] = f"http://127.0.0.1:{port}"
    log_file = open(log_path, "ab")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "server.cli",
            "run",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        cwd=REPO,
        env=full_env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        **new_group_kwargs(),
    )
    log_file.close()
    server = RunningServer(f"http://127.0.0.1:{port}", full_env, process, log_path)
    deadline = time.monotonic() + ready_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.log()[-3000:]}")
        try:
            if httpx.get(f"{server.url}/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"server did not become ready in {ready_s} s:\n{server.log()[-3000:]}")


@pytest.fixture
def start_server(server_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    """Factory: start real server processes on `db_url` (the DB is already migrated); all stopped after."""
    started: list[RunningServer] = []

    def start(env: dict[str, str] | None = None, workers: int = 1) -> RunningServer:
        merged = {**server_env, **(env or {})}
        server = launch_server(merged, tmp_path / f"server-{len(started)}.log", workers=workers)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def live_server(start_server: Callable[..., RunningServer]) -> RunningServer:
    """One real `pospal-server run` process on the test database."""
    return start_server()


@pytest.fixture(scope="session")
def _redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """POSPAL_TEST_REDIS_URL when set (CI's Redis), else a private redis-server on a free port."""
    configured = os.environ.get("POSPAL_TEST_REDIS_URL")
    if configured:
        yield configured
        return
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis: POSPAL_TEST_REDIS_URL is not set and redis-server is not installed")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import redis

    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        else:
            raise RuntimeError("redis-server did not start")
        yield url
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def redis_url(_redis_server: str) -> str:
    """URL of a real, empty Redis (one server per test session, flushed before each test)."""
    import redis

    client = redis.Redis.from_url(_redis_server)
    client.flushdb()
    client.close()
    return _redis_server
