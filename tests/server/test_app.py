"""server.app: the one start-up line that says what this server does with money, mail and data."""

from __future__ import annotations

import logging

from server.app import create_app, startup_line
from server.config import Settings


def test_startup_logs_one_line_with_modes(settings, clock, database, mailer, caplog):
    with caplog.at_level(logging.INFO, logger="pospal.app"):
        create_app(settings, clock=clock, db=database, mailer=mailer, start_worker=False)
    lines = [r for r in caplog.records if r.name == "pospal.app" and "starting" in r.getMessage()]
    assert len(lines) == 1
    line = lines[0].getMessage()
    database_kind = "sqlite" if settings.is_sqlite else "postgresql"
    for part in (
        "environment=development",
        "billing=sandbox",
        "email=console",
        f"database={database_kind}",
        "signing_keys=1",
        "test_hooks=off",
    ):
        assert part in line, (part, line)
    # The fakes are announced as a warning, so nobody takes them for the real thing.
    assert lines[0].levelno == logging.WARNING


def test_startup_line_names_the_stripe_key_mode():
    settings = Settings.from_env(
        {
            "POSPAL_PUBLIC_URL": "https://license.example.com",
            "STRIPE_SECRET_KEY": "sk_live_x",
            "STRIPE_WEBHOOK_SECRET": "whsec_y",
            "STRIPE_PRICE_ID": "price_1",
            "POSPAL_EMAIL": "resend",
            "RESEND_API_KEY": "re_x",
            "POSPAL_DATABASE_URL": "postgresql+psycopg://pospal@db/pospal",
        }
    )
    line = startup_line(settings, 2)
    assert "environment=production billing=stripe (live key) email=resend database=postgresql" in line
    assert "signing_keys=2" in line
