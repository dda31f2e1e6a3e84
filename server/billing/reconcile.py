"""`pospal-server stripe reconcile`: mirror every subscription of an allow-listed price, with a report.

Webhooks keep the mirror current one event at a time; this is the bulk pass for switch-over day (the
webhook endpoint moved, events were missed) and for a periodic check. For each allow-listed price the
provider lists every subscription (all statuses, page by page, no transaction open); each is then
mirrored in its own short transaction by `sync_subscription`, exactly as a webhook would, so one
failure is one `failed` line and the rest go on. A subscription new to us is `created` without an
e-mail (it is not news to its owner); a changed one is `updated` and announced as a webhook would be.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import select

from pospal_protocol.clock import Clock
from server.billing.base import BillingProvider, ProviderSubscription
from server.billing.sync import FetchedState, WebhookContext, sync_subscription
from server.db import Database
from server.errors import BillingError
from server.models import Subscription


@dataclass
class ReconcileReport:
    """One line per subscription (`kind subscription detail`), and the counts."""

    lines: list[tuple[str, str, str]] = field(default_factory=list)

    def count(self, kind: str) -> int:
        """How many lines are of `kind`."""
        return sum(1 for line in self.lines if line[0] == kind)

    def text(self) -> list[str]:
        """The report as printed: a line each, then the counts."""
        rows = [f"{kind:<9} {sub:<30} {detail}" for kind, sub, detail in self.lines]
        kinds = ("created", "updated", "unchanged", "failed")
        return [*rows, ", ".join(f"{self.count(k)} {k}" for k in kinds)]


def _state(row: Subscription | None) -> tuple[object, ...] | None:
    if row is None:
        return None
    return (row.status, row.quantity, row.current_period_end, row.cancel_at, row.cancel_at_period_end)


def reconcile(
    db: Database, provider: BillingProvider, prices: Iterable[str | None], ctx: WebhookContext, clock: Clock
) -> ReconcileReport:
    """Mirror every subscription of `prices` (None: the sandbox's, all of them); see the module doc."""
    report = ReconcileReport()
    seen: set[str] = set()
    listed: list[ProviderSubscription] = []
    for price in prices:
        for current in provider.list_subscriptions(price):
            if current.id not in seen:
                seen.add(current.id)
                listed.append(current)
    for current in listed:
        now = clock.now()
        try:
            with db.transaction() as session:
                row = session.scalars(
                    select(Subscription).where(Subscription.provider_subscription_id == current.id)
                ).first()
                before = _state(row)
                after_row, _ = sync_subscription(
                    session,
                    provider,
                    current.id,
                    ctx,
                    now,
                    fetched=FetchedState(current, now),
                    announce=before is not None,
                )
                after = _state(after_row)
        except BillingError as exc:
            report.lines.append(("failed", current.id, str(exc)))
            continue
        detail = f"{current.status} x{current.quantity}"
        kind = "created" if before is None else ("unchanged" if before == after else "updated")
        report.lines.append((kind, current.id, detail))
    return report
