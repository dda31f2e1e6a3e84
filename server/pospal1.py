"""`pospal-server import-pospal1 FILE`: bring the old POSPal server's customers over, Stripe's state first.

The old server (a Cloudflare Worker) kept its records in D1: a `customers` table with the owner's e-mail,
restaurant name, Stripe customer and subscription ids, the old app's `unlock_token` and a status of its
own (`active`/`inactive`/`cancelled`), and a `trial_devices` table keyed by the old app's hardware hash.
The input is what `wrangler d1 export` writes (SQL text) or the SQLite file itself.

Three phases, so that a failure leaves nothing half done:

1. read: the export is loaded into an in-memory SQLite database (never the operator's file) and each row
   is checked: no e-mail, an unknown status or an e-mail that another row has in another letter case is
   a `bad` line and the row is left out, the rest of the import goes on;
2. fetch: every subscription id is asked from Stripe (no database transaction open), so Stripe's status,
   quantity, period and customer win over the old row; an id Stripe does not know is `unmatched`;
3. write: one transaction creates the customers, mirrors the subscriptions (no e-mail is sent: nothing
   changed for them), keeps a SHA-256 of each unlock token for `POST /v1/migrations`, and records the
   trials still running. Any exception rolls all of it back; `--dry-run` rolls back on purpose.

A customer already imported is `skipped`, so a second run changes nothing.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pospal_protocol.clock import Clock
from pospal_protocol.emails import is_email
from server.billing.base import BillingProvider
from server.billing.sync import FetchedState, WebhookContext, sync_subscription
from server.db import Database
from server.errors import BillingError, ImportRefused
from server.models import Customer, Pospal1Import, Pospal1Trial

OLD_STATUSES = frozenset({"active", "inactive", "cancelled"})
SQLITE_MAGIC = b"SQLite format 3\x00"
# Statements of a D1 export that an in-memory SQLite refuses or that carry nothing of the customers.
_SKIPPED_PREFIXES = ("PRAGMA", "BEGIN", "COMMIT")


@dataclass(frozen=True)
class Line:
    """One line of the report: `kind` is imported, skipped, unmatched, bad or trial."""

    kind: str
    subject: str
    detail: str

    def text(self) -> str:
        """The line as printed: kind, subject, detail in columns."""
        return f"{self.kind:<9} {self.subject:<36} {self.detail}"


@dataclass
class Report:
    """What an import did (or, dry, would do): one line per row, and the counts."""

    lines: list[Line] = field(default_factory=list)
    dry_run: bool = False

    def add(self, kind: str, subject: str, detail: str) -> None:
        """Append one line."""
        self.lines.append(Line(kind, subject, detail))

    def count(self, kind: str) -> int:
        """How many lines are of `kind`."""
        return sum(1 for line in self.lines if line.kind == kind)

    def summary(self) -> str:
        """The last line: the counts, and whether anything was written."""
        counts = ", ".join(
            f"{self.count(kind)} {kind}" for kind in ("imported", "skipped", "unmatched", "bad", "trial")
        )
        return counts + (" (dry run: nothing written)" if self.dry_run else "")


@dataclass(frozen=True)
class OldCustomer:
    """One old `customers` row, as checked in the read phase."""

    row: int
    email: str
    name: str | None
    stripe_customer_id: str | None
    subscription_id: str | None
    status: str
    unlock_token: str | None

    @property
    def subject(self) -> str:
        """How the report names the row."""
        return f"row {self.row} {self.email}"


@dataclass(frozen=True)
class OldTrial:
    """One old `trial_devices` row."""

    hardware_hash: str
    first_run: datetime
    expires_at: datetime
    status: str


def token_hash(token: str) -> str:
    """The SHA-256 hex of an old unlock token: all the server keeps of it."""
    return hashlib.sha256(token.strip().encode()).hexdigest()


# ------------------------------------------------------------------------------------------ read


def load_export(path: Path) -> sqlite3.Connection:
    """Open a D1 export (SQL text) or a SQLite file as a private in-memory SQLite database."""
    data = path.read_bytes()
    memory = sqlite3.connect(":memory:", isolation_level=None)  # autocommit: no transaction left open
    memory.row_factory = sqlite3.Row
    if data.startswith(SQLITE_MAGIC):
        source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            source.backup(memory)
        finally:
            source.close()
        return memory
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ImportRefused(f"{path} is neither a SQLite file nor SQL text (UTF-8)") from None
    for statement in _statements(text):
        try:
            memory.execute(statement)
        except sqlite3.Error as exc:
            raise ImportRefused(f"{path}: the statement {statement[:60]!r}... failed: {exc}") from None
    return memory


def _statements(text: str) -> Iterable[str]:
    """The export's SQL statements one by one, without the ones an in-memory copy must not run."""
    pending = ""
    for line in text.splitlines(keepends=True):
        pending += line
        if not sqlite3.complete_statement(pending):
            continue
        statement, pending = pending.strip(), ""
        upper = statement.upper()
        if upper.startswith(_SKIPPED_PREFIXES) or "SQLITE_SEQUENCE" in upper or "_CF_" in upper:
            continue
        yield statement
    if pending.strip():
        raise ImportRefused("the SQL text ends in the middle of a statement (a cut-off export?)")


def read_customers(db: sqlite3.Connection, report: Report) -> list[OldCustomer]:
    """The old customers fit to import; every row left out gets a `bad` line."""
    rows = [dict(r) for r in db.execute("SELECT * FROM customers ORDER BY id")]
    checked: list[OldCustomer] = []
    for row in rows:
        found = _checked(row, report)
        if found is not None:
            checked.append(found)
    by_email: dict[str, list[OldCustomer]] = {}
    for customer in checked:
        by_email.setdefault(customer.email, []).append(customer)
    fit = []
    for customer in checked:
        group = by_email[customer.email]
        if len(group) > 1:
            others = ", ".join(str(c.row) for c in group if c is not customer)
            report.add(
                "bad",
                customer.subject,
                f"the same e-mail in another letter case is in row(s) {others}: merge them by hand",
            )
            continue
        fit.append(customer)
    return fit


def _checked(row: Mapping[str, Any], report: Report) -> OldCustomer | None:
    number = row.get("id")
    raw_email = (row.get("email") or "").strip()
    if not raw_email:
        report.add("bad", f"row {number}", "no e-mail address")
        return None
    email = raw_email.lower()
    if not is_email(email):
        report.add("bad", f"row {number} {raw_email[:40]!r}", "not an e-mail address")
        return None
    status = (row.get("subscription_status") or "").strip()
    if status not in OLD_STATUSES:
        report.add("bad", f"row {number} {email}", f"unknown status {status!r} (active, inactive, cancelled)")
        return None
    return OldCustomer(
        row=int(number or 0),
        email=email,
        name=_clean_name(row.get("name")),
        stripe_customer_id=(row.get("stripe_customer_id") or "").strip() or None,
        subscription_id=(row.get("subscription_id") or "").strip() or None,
        status=status,
        unlock_token=(row.get("unlock_token") or "").strip() or None,
    )


def _clean_name(value: Any) -> str | None:
    """The restaurant name, or None when it has characters that are instructions to a display."""
    if not isinstance(value, str) or not value.strip():
        return None
    name = value.strip()[:200]
    try:
        from pospal_protocol import text  # the shared rule for typed names, when this tree has it
    except ImportError:
        return name if name.isprintable() else None
    return None if text.problem(name) else name


def read_trials(db: sqlite3.Connection, now: datetime, report: Report) -> list[OldTrial]:
    """The old trials still running at `now` (the table may be absent in an old export)."""
    try:
        rows = [dict(r) for r in db.execute("SELECT * FROM trial_devices ORDER BY first_run")]
    except sqlite3.OperationalError:
        return []
    running = []
    for row in rows:
        key = str(row.get("hardware_hash") or "").strip().lower()
        first, ends = _when(row.get("first_run")), _when(row.get("expires_at"))
        if len(key) != 64 or first is None or ends is None:
            report.add("bad", f"trial {key[:12] or '?'}", "no hardware hash or dates")
            continue
        if row.get("status") != "active" or ends <= now:
            continue  # an ended trial is nothing to carry over
        running.append(OldTrial(key, first, ends, str(row.get("status"))))
    return running


def _when(value: Any) -> datetime | None:
    """An old ISO date or SQLite `CURRENT_TIMESTAMP` text as aware UTC, or None."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


# ------------------------------------------------------------------------------------------ fetch


def fetch_all(
    provider: BillingProvider, customers: list[OldCustomer], now: datetime, report: Report
) -> list[tuple[OldCustomer, FetchedState]]:
    """Ask the provider for each subscription; rows without one are skipped, unknown ids unmatched."""
    found = []
    for customer in customers:
        if customer.subscription_id is None:
            report.add("skipped", customer.subject, f"no subscription (old status {customer.status})")
            continue
        try:
            current = provider.fetch_subscription(customer.subscription_id)
        except BillingError as exc:
            report.add("unmatched", customer.subject, f"{customer.subscription_id}: {exc}")
            continue
        found.append((customer, FetchedState(current, now)))
    return found


# ------------------------------------------------------------------------------------------ write


def write_all(
    session: Session,
    provider: BillingProvider,
    fetched: list[tuple[OldCustomer, FetchedState]],
    trials: list[OldTrial],
    ctx: WebhookContext,
    now: datetime,
    report: Report,
    *,
    after_row: Callable[[int], None] | None = None,
) -> None:
    """Create the customers and subscriptions and record the trials, in the caller's transaction."""
    for index, (old, state) in enumerate(fetched):
        _write_customer(session, provider, old, state, ctx, now, report)
        if after_row is not None:
            after_row(index)
    for trial in trials:
        if session.get(Pospal1Trial, trial.hardware_hash) is not None:
            report.add("skipped", f"trial {trial.hardware_hash[:12]}", "already recorded")
            continue
        session.add(
            Pospal1Trial(
                hardware_hash=trial.hardware_hash,
                first_run_at=trial.first_run,
                ends_at=trial.expires_at,
                imported_at=now,
            )
        )
        report.add("trial", f"trial {trial.hardware_hash[:12]}", f"running until {trial.expires_at:%Y-%m-%d}")
    session.flush()


def _write_customer(
    session: Session,
    provider: BillingProvider,
    old: OldCustomer,
    state: FetchedState,
    ctx: WebhookContext,
    now: datetime,
    report: Report,
) -> None:
    current = state.subscription
    customer = session.scalars(select(Customer).where(Customer.email == old.email)).first()
    if customer is not None and session.get(Pospal1Import, customer.id) is not None:
        report.add("skipped", old.subject, "already imported")
        return
    holder = session.scalars(
        select(Customer).where(Customer.stripe_customer_id == current.customer_id)
    ).first()
    if holder is not None and (customer is None or holder.id != customer.id):
        taken = f"Stripe customer {current.customer_id} already belongs to {holder.email}"
        report.add("unmatched", old.subject, taken)
        return
    if customer is None:
        customer = Customer(email=old.email, name=old.name, locale="en", created_at=now)
        session.add(customer)
    customer.stripe_customer_id = current.customer_id
    customer.name = customer.name or old.name
    session.flush()
    row, _ = sync_subscription(
        session, provider, current.id, ctx, now, customer_hint=customer.id, fetched=state, announce=False
    )
    session.add(
        Pospal1Import(
            customer_id=customer.id,
            old_id=old.row,
            token_hash=token_hash(old.unlock_token) if old.unlock_token else None,
            imported_at=now,
        )
    )
    notes = [f"{current.id} {row.status} x{row.quantity}"]
    if _old_view(old.status) != _old_view(row.status):
        notes.append(f"Stripe wins over the old row's {old.status!r}")
    if old.stripe_customer_id and old.stripe_customer_id != current.customer_id:
        notes.append(f"Stripe's customer {current.customer_id}, not the old row's {old.stripe_customer_id}")
    if not old.unlock_token:
        notes.append("no unlock token: its tills activate with an e-mailed code")
    report.add("imported", old.subject, "; ".join(notes))


def _old_view(status: str) -> str:
    """A Stripe status as the old server would have named it (to tell when the two disagree)."""
    if status in ("active", "trialing", "past_due"):
        return "active"
    if status in ("canceled", "cancelled", "incomplete_expired"):
        return "cancelled"
    return "inactive"


class _DryRun(Exception):
    """Raised inside the transaction to roll a dry run back."""


def run_import(
    db: Database,
    provider: BillingProvider,
    path: Path,
    clock: Clock,
    ctx: WebhookContext,
    *,
    dry_run: bool = False,
    after_row: Callable[[int], None] | None = None,
) -> Report:
    """Import `path` (see the module doc); `after_row` is a test hook called after each customer."""
    now = clock.now()
    report = Report(dry_run=dry_run)
    export = load_export(path)
    try:
        customers = read_customers(export, report)
        trials = read_trials(export, now, report)
    finally:
        export.close()
    fetched = fetch_all(provider, customers, now, report)
    try:
        with db.transaction() as session:
            write_all(session, provider, fetched, trials, ctx, now, report, after_row=after_row)
            if dry_run:
                raise _DryRun()
    except _DryRun:
        pass
    return report
