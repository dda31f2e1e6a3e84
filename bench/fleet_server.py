"""The real parts the fleet runs against: one `pospal-server run` process, an SMTP sink, PostgreSQL.

- `ServerProcess` runs `pospal-server` (migrate, then run) on a free loopback port with sandbox billing,
  SMTP email to the sink and the simulation-only hooks (`POSPAL_ENABLE_TEST_HOOKS=1`: the clock file and
  `/_test/webhook`, see server/testhooks.py). `kill()` is SIGKILL; `start()` again is the restart.
- `SimClockFile` is the simulated time the server reads, rewritten atomically.
- `SmtpSink` (aiosmtpd) logs every message as a JSON line and can refuse (451, a temporary failure) to
  play an email provider outage.
- `old_export()` writes the old POSPal server's `customers` table as `wrangler d1 export` writes it (the
  old schema), for `ServerProcess.import_pospal1` (`pospal-server import-pospal1 FILE`, as the operator
  runs it).
- `postgres_stopped()` stops the local PostgreSQL cluster and ALWAYS starts it again (other tests use it).
"""

from __future__ import annotations

import contextlib
import email
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from email import policy
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
PG_CLUSTER = ("15", "main")


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SimClockFile:
    """The simulated time (Unix seconds) the server's FileClock reads."""

    def __init__(self, path: Path, t0: float) -> None:
        self.path = path
        self.set(t0)

    def set(self, t: float) -> None:
        """Write `t` atomically (temp file + rename: the server never reads half a number)."""
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(f"{t:.3f}\n")
        os.replace(tmp, self.path)


class ServerStartFailed(RuntimeError):
    """The server process exited during start-up (the message holds its log's tail)."""


class ServerProcess:
    """One real server process; `start()` waits for `/health`, `kill()` SIGKILLs it."""

    def __init__(
        self,
        run_dir: Path,
        database_url: str,
        clock_file: Path,
        smtp_port: int,
        seat_idle_days: int = 30,
        migration_window: str | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.run_dir = run_dir
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("POSPAL_", "STRIPE_", "SMTP_"))},
            "POSPAL_DATABASE_URL": database_url,
            "POSPAL_SERVER_DATA_DIR": str(run_dir / "server"),
            "POSPAL_SIGNING_KEY_DIR": str(run_dir / "server" / "keys"),
            "POSPAL_PUBLIC_URL": self.url,
            "POSPAL_BILLING": "sandbox",
            "POSPAL_EMAIL": "smtp",
            "SMTP_URL": f"smtp://127.0.0.1:{smtp_port}?tls=none",  # the loopback sink speaks no TLS
            "FROM_EMAIL": "POSPal <no-reply@pospal.gr>",
            "POSPAL_LOG_LEVEL": "WARNING",
            "POSPAL_ENABLE_TEST_HOOKS": "1",
            "POSPAL_TEST_CLOCK_FILE": str(clock_file),
            "POSPAL_SEAT_IDLE_DAYS": str(seat_idle_days),
            "FORWARDED_ALLOW_IPS": "127.0.0.1",
        }
        if migration_window:
            self.env["POSPAL_MIGRATION_WINDOW"] = migration_window
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def _cli(self) -> list[str]:
        return [sys.executable, "-m", "server.cli"]

    def migrate(self) -> None:
        """`pospal-server migrate`."""
        (self.run_dir / "server").mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [*self._cli(), "migrate"], env=self.env, cwd=ROOT, check=True, capture_output=True, timeout=120
        )

    def import_pospal1(self, export: Path) -> list[str]:
        """`pospal-server import-pospal1 FILE`: the old server's customers; the report's lines."""
        done = subprocess.run(
            [*self._cli(), "import-pospal1", str(export)],
            env=self.env,
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
            timeout=300,
        )
        return done.stdout.splitlines()

    def start(self, timeout: float = 60.0) -> None:
        """Start `pospal-server run` and wait until `/health` answers 200."""
        log = open(self.run_dir / "server.log", "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            [*self._cli(), "run", "--port", str(self.port)], env=self.env, cwd=ROOT, stdout=log, stderr=log
        )
        log.close()
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = (self.run_dir / "server.log").read_text(errors="replace")[-2000:]
                raise ServerStartFailed(f"server exited with {self.proc.returncode}: {tail}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError("server did not become healthy")

    def healthy(self) -> bool:
        """Whether `/health` answers 200 now."""
        try:
            return requests.get(self.url + "/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def kill(self) -> None:
        """SIGKILL the server (no shutdown of any kind) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        """Stop the server at the end (SIGTERM, then SIGKILL)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def rss_kib(self) -> int | None:
        """The server's resident set size (VmRSS) in KiB."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            return None
        return None


class _SinkHandler:
    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.refusing = False
        self.refused = 0
        self.received = 0
        self._lock = threading.Lock()

    async def handle_RCPT(
        self,
        server: Any,
        session: Any,
        envelope: Any,
        address: str,  # noqa: N802
        rcpt_options: Any,
    ) -> str:
        if self.refusing:
            self.refused += 1
            return "451 4.3.0 Mailbox temporarily unavailable (simulated provider outage)"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        msg = email.message_from_bytes(envelope.content, policy=policy.default)
        body = msg.get_body(preferencelist=("plain",))
        record = {
            "message_id": str(msg.get("Message-ID", "")),
            "to": ",".join(envelope.rcpt_tos),
            "subject": str(msg.get("Subject", "")),
            "text": body.get_content() if body is not None else "",
            "at": time.time(),
        }
        with self._lock, open(self.log_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        self.received += 1
        return "250 Message accepted"


class SmtpSink:
    """An aiosmtpd server on loopback that records mail to a JSON-lines file; `refusing` plays an outage."""

    def __init__(self, log_path: Path) -> None:
        from aiosmtpd.controller import Controller

        self.port = free_port()
        self.log_path = log_path
        log_path.touch()
        self.handler = _SinkHandler(log_path)
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)

    def start(self) -> None:
        """Start serving."""
        self.controller.start()

    def stop(self) -> None:
        """Stop serving."""
        self.controller.stop()

    def messages(self) -> list[dict[str, Any]]:
        """Every message received."""
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]


def _old_schema() -> str:
    """The old server's `customers` table as its D1 database defines it: the CREATE TABLE statement of
    the export fixture the import tests read (tests/fixtures/pospal1/d1-export.sql)."""
    fixture = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "pospal1" / "d1-export.sql"
    text = fixture.read_text(encoding="utf-8")
    start = text.index("CREATE TABLE customers (")
    return text[start : text.index(");", start) + 2] + "\n"


_OLD_SCHEMA = _old_schema()


def old_export(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Write `rows` ({email, name, customer_id, subscription_id, token}) as the old server's D1 export."""

    def q(value: Any) -> str:
        return "NULL" if value is None else "'" + str(value).replace("'", "''") + "'"

    lines = ["PRAGMA defer_foreign_keys=TRUE;", _OLD_SCHEMA.rstrip("\n")]
    for number, row in enumerate(rows, start=1):
        values = [
            str(number),
            q(row["email"]),
            q(row["name"]),
            q(row["customer_id"]),
            q(f"cs_live_old{number:04d}"),
            q(row["token"]),
            q(None),
            q("active"),
            q(row["subscription_id"]),
        ]
        lines.append(
            'INSERT INTO "customers" ("id","email","name","stripe_customer_id","stripe_session_id",'
            '"unlock_token","machine_fingerprint","subscription_status","subscription_id") '
            f"VALUES({','.join(values)});"
        )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _pg_ctl(action: str) -> None:
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", *PG_CLUSTER, action],
        check=True,
        capture_output=True,
        timeout=120,
    )


@contextlib.contextmanager
def postgres_stopped() -> Iterator[None]:
    """Stop the PostgreSQL cluster for the block; start it again whatever happens."""
    _pg_ctl("stop")
    try:
        yield
    finally:
        for attempt in range(5):
            try:
                _pg_ctl("start")
                break
            except subprocess.CalledProcessError:
                if attempt == 4:
                    raise
                time.sleep(2)


def create_pg_database(admin_url: str, name: str) -> str:
    """CREATE DATABASE `name` (dropping a leftover); return its SQLAlchemy URL."""
    from sqlalchemy import create_engine, text

    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def drop_pg_database(admin_url: str, name: str) -> None:
    """DROP DATABASE `name` (forcing other sessions off)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()
