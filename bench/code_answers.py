"""Code answers for a customer and for a stranger: the same content, and how close in time.

Builds the real app (SQLite file, and PostgreSQL when POSPAL_TEST_DATABASE_URL is set) with the rate
limits off, seeds `--n` customers, then interleaves, for customers and strangers alike:

- `POST /v1/codes` (a code stored and its e-mail queued; a stranger's outbox row rolled back), and
- a wrong guess through `server.codes.prove_email` (the code check every code-taking route runs).

Prints the median and p90 of each, in microseconds, and the difference of the medians. The answers'
content is checked equal by tests/server/test_codes.py; this only measures time (no asserts).

    python bench/code_answers.py [--n 300]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fastapi.testclient import TestClient  # noqa: E402

from server import codes  # noqa: E402
from server.app import create_app  # noqa: E402
from server.config import Settings  # noqa: E402
from server.db import Database, upgrade  # noqa: E402
from server.errors import ApiError  # noqa: E402
from server.models import Customer  # noqa: E402


class NoLimits:
    """A rate limiter that never refuses (the bench measures the work, not the limits)."""

    def hit(self, key: str, limit: int, window_s: float, now: float) -> None:
        """Allow."""

    def reset(self) -> None:
        """Nothing to forget."""


def _stats(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1e6, ordered[int(len(ordered) * 0.9)] * 1e6


def run(url: str, n: int, tmp: Path) -> None:
    db = Database(url, pool_size=4)
    upgrade(db)
    now = datetime.now(UTC)
    with db.transaction() as session:
        for i in range(n):
            session.add(Customer(email=f"owner{i}@cafe.example", locale="en", created_at=now))
    settings = Settings.from_env(
        {
            "POSPAL_DATABASE_URL": url,
            "POSPAL_SERVER_DATA_DIR": str(tmp / "data"),
            "POSPAL_SIGNING_KEY_DIR": str(tmp / "keys"),
            "POSPAL_OUTBOX_WORKER": "0",
            "POSPAL_SERVER_SECRET": "bench",
            "POSPAL_LOG_LEVEL": "ERROR",
        }
    )
    app = create_app(settings, db=db, limiter=NoLimits(), start_worker=False)
    times: dict[str, list[float]] = {
        "codes/customer": [],
        "codes/stranger": [],
        "guess/customer": [],
        "guess/stranger": [],
    }
    with TestClient(app) as client:
        for i in range(n):
            for kind, email in (
                ("customer", f"owner{i}@cafe.example"),
                ("stranger", f"nobody{i}@bar.example"),
            ):
                start = time.perf_counter()
                response = client.post("/v1/codes", json={"email": email, "purpose": "activate"})
                times[f"codes/{kind}"].append(time.perf_counter() - start)
                assert response.status_code == 202
                start = time.perf_counter()
                try:
                    codes.prove_email(
                        db,
                        email=email,
                        code="12345x",
                        purposes=("activate",),
                        now=datetime.now(UTC),
                        secret=app.state.services.secret,
                    )
                except ApiError:
                    pass
                times[f"guess/{kind}"].append(time.perf_counter() - start)
    backend = "postgresql" if url.startswith("postgresql") else "sqlite"
    for what in ("codes", "guess"):
        c50, c90 = _stats(times[f"{what}/customer"][n // 10 :])  # the first tenth warms caches
        s50, s90 = _stats(times[f"{what}/stranger"][n // 10 :])
        print(
            f"{backend:10} {what:5} customer p50 {c50:7.0f} us p90 {c90:7.0f} us | "
            f"stranger p50 {s50:7.0f} us p90 {s90:7.0f} us | median difference {s50 - c50:+6.0f} us"
        )
    db.dispose()


def main() -> None:
    """Run on SQLite, then on PostgreSQL when configured."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run(f"sqlite:///{Path(tmp) / 'bench.db'}", args.n, Path(tmp))
    pg = os.environ.get("POSPAL_TEST_DATABASE_URL")
    if pg:
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        name = f"pospal_bench_codes_{os.getpid()}"
        admin = create_engine(pg, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            with tempfile.TemporaryDirectory() as tmp:
                run(make_url(pg).set(database=name).render_as_string(hide_password=False), args.n, Path(tmp))
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


if __name__ == "__main__":
    main()
