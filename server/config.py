"""Server settings: one typed, frozen object read from the environment at start-up.

`Settings.from_env()` is the only place that reads environment variables. Secrets are wrapped in
`Secret`, whose repr and str hide the value, so a settings object can be logged safely. Every setting
is read before anything is refused: one `ConfigError` then carries every problem found, one line each in
`problems`, each naming the variable and the fix (`pospal-server check` and `run` print them all).

The production guard: a server is in development only with a loopback `POSPAL_PUBLIC_URL` or an
explicit `POSPAL_ENV=development`. Anywhere else it refuses to start with sandbox billing, console
e-mail or the test hooks, or with `POSPAL_SEAT_IDLE_DAYS` shorter than the offline lease.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import platformdirs
from sqlalchemy.engine import make_url

from pospal_protocol.tokens import Policy
from server.errors import ConfigError

T = TypeVar("T")

BILLING_CHOICES = ("stripe", "sandbox")
EMAIL_CHOICES = ("console", "smtp", "resend")
ENV_CHOICES = ("development", "production")
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


class Secret:
    """A secret string: `repr()` and `str()` show stars; call `reveal()` where the value is needed."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the secret value. Never log or format the result."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be 1/0, true/false, yes/no or on/off, not {raw!r}")


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    value = env.get(name, "").strip().lower() or default
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return value


def _secret(env: Mapping[str, str], name: str) -> Secret | None:
    value = env.get(name, "").strip()
    return Secret(value) if value else None


def _require(value: Any, name: str, why: str) -> None:
    if not value:
        raise ConfigError(f"{name} is required {why}")


def is_loopback_url(url: str) -> bool:
    """True when a URL's host is this computer (127.0.0.0/8, localhost or ::1): a development server."""
    from urllib.parse import urlsplit

    try:
        host = (urlsplit(url).hostname or "").lower()
    except ValueError:
        return False
    return host in _LOOPBACK_HOSTS or host.startswith("127.") or host.endswith(".localhost")


def _days(env: Mapping[str, str], name: str, default: int) -> int:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= 3650:
        raise ConfigError(f"{name} must be a whole number of days from 1 to 3650, not {raw!r}")
    return int(raw)


MAX_MIGRATION_WINDOW = timedelta(days=180)


def _window(env: Mapping[str, str], name: str) -> tuple[datetime, datetime] | None:
    """`START/END`, two ISO 8601 times with a zone (or dates, read as 00:00 UTC); None when unset."""
    raw = (env.get(name) or "").strip()
    if not raw:
        return None
    start_text, _, end_text = raw.partition("/")
    try:
        start, end = _instant(start_text), _instant(end_text)
    except ValueError:
        raise ConfigError(
            f"{name} must be START/END in ISO 8601 (2027-03-01T00:00Z/2027-05-01T00:00Z), not {raw!r}"
        ) from None
    if end <= start:
        raise ConfigError(f"{name} ends before it starts: {raw!r}")
    if end - start > MAX_MIGRATION_WINDOW:
        # The old unlock token is a permanent bearer secret: accept it only for the switch-over.
        raise ConfigError(f"{name} is longer than {MAX_MIGRATION_WINDOW.days} days: {raw!r}")
    return start, end


def _instant(text: str) -> datetime:
    parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        if len(text.strip()) > 10:
            raise ValueError("a time needs its zone")
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


class _Problems:
    """Every settings problem found while reading, so that all of them are named at once, not the first."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def read(self, read: Callable[[], T], fallback: T) -> T:
        """`read()`, or `fallback` after noting its `ConfigError`."""
        try:
            return read()
        except ConfigError as exc:
            self.lines.extend(exc.problems)
            return fallback

    def choice(self, env: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
        """`_choice`, or after noting its problem the value as given: a wrong value then adds no line of its
        own (POSPAL_EMAIL=pigeon is not also "console in production")."""
        given = env.get(name, "").strip().lower() or default
        return self.read(lambda: _choice(env, name, choices, default), given)

    def raise_any(self) -> None:
        """Raise one `ConfigError` carrying every problem noted (one line each), if there is any."""
        if self.lines:
            raise ConfigError("; ".join(self.lines), tuple(self.lines))


def _database_backend(url: str) -> str:
    try:
        backend = make_url(url).get_backend_name()
    except Exception as exc:
        raise ConfigError(f"POSPAL_DATABASE_URL is not a database URL: {exc}") from None
    if backend not in ("sqlite", "postgresql"):
        raise ConfigError(f"POSPAL_DATABASE_URL must be sqlite or postgresql, not {backend!r}")
    return backend


def _origins(raw: str) -> tuple[str, ...]:
    return tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())


@dataclass(frozen=True)
class Settings:
    """Everything the server needs to know, typed; build it with `Settings.from_env()`."""

    database_url: str
    data_dir: Path
    signing_key_dir: Path
    public_url: str = "http://127.0.0.1:8000"
    billing: str = "sandbox"
    stripe_secret_key: Secret | None = None
    stripe_webhook_secret: Secret | None = None
    stripe_price_id: str | None = None
    # More prices whose subscriptions are ours (STRIPE_ALLOWED_PRICE_IDS): older or yearly prices.
    stripe_allowed_prices: tuple[str, ...] = ()
    stripe_api_base: str | None = None
    stripe_automatic_tax: bool = False
    email: str = "console"
    smtp_url: Secret | None = None
    resend_api_key: Secret | None = None
    resend_api_base: str = "https://api.resend.com"
    from_email: str = "POSPal <no-reply@pospal.gr>"
    system_admin_email: str | None = None
    allowed_origins: tuple[str, ...] = ()
    redis_url: Secret | None = None
    server_secret: Secret | None = None
    auto_migrate: bool = False
    outbox_worker: bool = True
    mail_dir: Path | None = None
    log_level: str = "INFO"
    # Simulation-only hooks (server/testhooks.py); never set in production.
    test_hooks: bool = False
    test_clock_file: Path | None = None
    # "development" (loopback public URL or POSPAL_ENV=development) may use the fakes; "production" may not.
    environment: str = "development"
    # A terminal unseen this many days stops counting against its license's seats (server/seats.py).
    seat_idle_days: int = 30
    # POSPAL_MIGRATION_WINDOW=START/END: when the old POSPal's unlock token is accepted (POST /v1/migrations).
    migration_window: tuple[datetime, datetime] | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and check every setting; raise one `ConfigError` naming every bad variable (`.problems`)."""
        env = os.environ if env is None else env
        data_dir = Path(
            env.get("POSPAL_SERVER_DATA_DIR") or platformdirs.user_data_dir("POSPal Server", "POSPal")
        )
        database_url = env.get("POSPAL_DATABASE_URL", "").strip() or f"sqlite:///{data_dir / 'pospal.db'}"
        problems = _Problems()
        problems.read(lambda: _database_backend(database_url), "sqlite")
        stripe_key = _secret(env, "STRIPE_SECRET_KEY")
        billing = problems.choice(
            env, "POSPAL_BILLING", BILLING_CHOICES, "stripe" if stripe_key else "sandbox"
        )
        public_url = (env.get("POSPAL_PUBLIC_URL") or "http://127.0.0.1:8000").rstrip("/")
        default_env = "development" if is_loopback_url(public_url) else "production"
        environment = problems.read(lambda: _choice(env, "POSPAL_ENV", ENV_CHOICES, default_env), default_env)
        settings = cls(
            database_url=database_url,
            data_dir=data_dir,
            signing_key_dir=Path(env.get("POSPAL_SIGNING_KEY_DIR") or data_dir / "keys"),
            public_url=public_url,
            billing=billing,
            stripe_secret_key=stripe_key,
            stripe_webhook_secret=_secret(env, "STRIPE_WEBHOOK_SECRET"),
            stripe_price_id=env.get("STRIPE_PRICE_ID") or None,
            stripe_allowed_prices=_origins(env.get("STRIPE_ALLOWED_PRICE_IDS", "")),
            stripe_api_base=env.get("STRIPE_API_BASE") or None,
            stripe_automatic_tax=problems.read(lambda: _flag(env, "STRIPE_AUTOMATIC_TAX", False), False),
            email=problems.choice(env, "POSPAL_EMAIL", EMAIL_CHOICES, "console"),
            smtp_url=_secret(env, "SMTP_URL"),
            resend_api_key=_secret(env, "RESEND_API_KEY"),
            resend_api_base=(env.get("RESEND_API_BASE") or "https://api.resend.com").rstrip("/"),
            from_email=env.get("FROM_EMAIL") or "POSPal <no-reply@pospal.gr>",
            system_admin_email=env.get("SYSTEM_ADMIN_EMAIL") or None,
            allowed_origins=_origins(env.get("ALLOWED_ORIGINS", "")),
            redis_url=_secret(env, "POSPAL_REDIS_URL"),
            server_secret=_secret(env, "POSPAL_SERVER_SECRET"),
            auto_migrate=problems.read(lambda: _flag(env, "POSPAL_AUTO_MIGRATE", False), False),
            outbox_worker=problems.read(lambda: _flag(env, "POSPAL_OUTBOX_WORKER", True), True),
            mail_dir=Path(env["POSPAL_MAIL_DIR"]) if env.get("POSPAL_MAIL_DIR") else None,
            log_level=(env.get("POSPAL_LOG_LEVEL") or "INFO").upper(),
            test_hooks=problems.read(lambda: _flag(env, "POSPAL_ENABLE_TEST_HOOKS", False), False),
            test_clock_file=Path(clock_file) if (clock_file := env.get("POSPAL_TEST_CLOCK_FILE")) else None,
            environment=environment,
            seat_idle_days=problems.read(lambda: _days(env, "POSPAL_SEAT_IDLE_DAYS", 30), 30),
            migration_window=problems.read(lambda: _window(env, "POSPAL_MIGRATION_WINDOW"), None),
        )
        problems.lines.extend(settings.problems())
        problems.raise_any()
        return settings

    def check(self) -> None:
        """Raise one `ConfigError` naming every problem of settings that depend on each other."""
        problems = _Problems()
        problems.lines.extend(self.problems())
        problems.raise_any()

    def problems(self) -> list[str]:
        """One line per problem of settings that depend on each other (empty when they fit together)."""
        found = _Problems()
        if self.billing == "stripe":
            why = "when POSPAL_BILLING is stripe"
            found.read(lambda: _require(self.stripe_secret_key, "STRIPE_SECRET_KEY", why), None)
            found.read(lambda: _require(self.stripe_webhook_secret, "STRIPE_WEBHOOK_SECRET", why), None)
            found.read(lambda: _require(self.stripe_price_id, "STRIPE_PRICE_ID", why), None)
        if self.email == "smtp":
            found.read(lambda: _require(self.smtp_url, "SMTP_URL", "when POSPAL_EMAIL is smtp"), None)
        if self.email == "resend":
            found.read(
                lambda: _require(self.resend_api_key, "RESEND_API_KEY", "when POSPAL_EMAIL is resend"), None
            )
        if self.environment == "production":
            found.lines.extend(self._production_problems())
        if self.log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            found.lines.append(
                f"POSPAL_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, not {self.log_level!r}"
            )
        lease_days = -(-Policy().lease_s // 86400)
        if self.environment == "production" and self.seat_idle_days < lease_days:
            # An idle till's token still runs for its whole lease: freeing its seat sooner puts two tills
            # on one seat (issue 28, case 8). Development servers may go lower: the fleet simulation
            # compresses a month into days.
            found.lines.append(
                f"POSPAL_SEAT_IDLE_DAYS={self.seat_idle_days} is shorter than the {lease_days}-day offline "
                f"lease: an idle till still holds a valid token, so its seat would run two tills; set it to "
                f"{lease_days} or more"
            )
        return found.lines

    def _production_problems(self) -> list[str]:
        """The development fakes on a server others can reach, one line each (the production guard)."""
        lines: list[str] = []
        why = (
            "POSPAL_ENV is production"
            if is_loopback_url(self.public_url)
            else f"POSPAL_PUBLIC_URL={self.public_url} is not a loopback address"
        )
        where = f"this server is production ({why})"
        dev_fix = "or set POSPAL_ENV=development if this really is a test server"
        if self.billing == "sandbox":
            lines.append(
                f"POSPAL_BILLING is sandbox (no money moves; anyone can 'pay' a checkout) but {where}: "
                "set POSPAL_BILLING=stripe with STRIPE_SECRET_KEY, STRIPE_WEBHOOK_SECRET and "
                f"STRIPE_PRICE_ID, {dev_fix}"
            )
        if self.email == "console":
            lines.append(
                f"POSPAL_EMAIL is console (login codes are printed to the log, never sent) but {where}: "
                f"set POSPAL_EMAIL=smtp with SMTP_URL, or POSPAL_EMAIL=resend with RESEND_API_KEY, {dev_fix}"
            )
        for name, on in (
            ("POSPAL_ENABLE_TEST_HOOKS", self.test_hooks),
            ("POSPAL_TEST_CLOCK_FILE", self.test_clock_file is not None),
        ):
            if not on:
                continue
            lines.append(
                f"{name} is set (unsigned test webhooks, a settable clock) but {where}: "
                f"remove {name}, {dev_fix}"
            )
        return lines

    @property
    def is_development(self) -> bool:
        """True for a development server (loopback public URL or POSPAL_ENV=development)."""
        return self.environment == "development"

    def adoptable_prices(self) -> frozenset[str] | None:
        """The prices whose Stripe subscriptions are POSPal's (None: the sandbox, where all are)."""
        if self.billing != "stripe":
            return None
        return frozenset(p for p in (self.stripe_price_id, *self.stripe_allowed_prices) if p)

    def stripe_key_mode(self) -> str | None:
        """'live' or 'test' from the Stripe secret key's prefix, 'unknown' otherwise; None without a key."""
        if not self.stripe_secret_key:
            return None
        key = self.stripe_secret_key.reveal()
        for mode in ("live", "test"):
            if key.startswith((f"sk_{mode}_", f"rk_{mode}_")):
                return mode
        return "unknown"

    def with_changes(self, **changes: Any) -> Settings:
        """Return a copy with some fields replaced (tests, CLI flags), checked again."""
        updated = replace(self, **changes)
        updated.check()
        return updated

    @property
    def is_sqlite(self) -> bool:
        """True when the database is SQLite."""
        return make_url(self.database_url).get_backend_name() == "sqlite"

    @property
    def sqlite_path(self) -> Path | None:
        """The SQLite database file, or None for PostgreSQL or in-memory SQLite."""
        if not self.is_sqlite:
            return None
        database = make_url(self.database_url).database
        return Path(database) if database and database != ":memory:" else None
