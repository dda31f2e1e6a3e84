"""The fleet checker: an independent oracle for every agent's final state, and the server-side checks.

The oracle is written from PRODUCT.md's rules (trial 30 days keyed by the fingerprint; offline grace
after 48 h without sync; offline lease 14 days; payment grace 7 days from the first failure; a
cancellation runs to the period end; strict-majority fingerprint match, healed at the next sync; a clock
set back more than 24 h is a rollback until a sync succeeds; a first run offline gets a 3-day
provisional trial and the server's first-seen date wins; an old POSPal till's unlock token moves its
first till once per customer, inside the migration window; a paused subscription sells nothing, shows
`licensed_cancelled`/`paused`, and sells again at the first sync after its resume date or after the owner
resumed) applied to the agent's own history: what the script did to it, when, and which of its requests
the server answered. It never calls `agent.core.state`. Besides the final state, the states a till noted
at its `observe` moments (during a pause, after a resume) are checked against the oracle at that moment.

The server checks read the database: every webhook event processed, every outbox row sent once and
received by the SMTP sink exactly once, the emails each customer's history calls for, and an audit row
for every license and machine change (a pause and a resume included). For the old customers: each
imported once, with one subscription, its token used by the first till only; and Stripe (the sandbox)
collected nothing while a subscription was paused.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

DAY = 86400.0
TRIAL_S = 30 * DAY
LEASE_S = 14 * DAY
GRACE_S = 2 * DAY
PAYMENT_GRACE_S = 7 * DAY
ROLLBACK_S = DAY
PROVISIONAL_S = 3 * DAY
SYNC_ROUTES = ("/v1/refresh", "/v1/trials", "/v1/activations", "/v1/migrations")
# Emails whose count follows from the history alone (codes depend on retries; reminders on timing).
COUNTED_TEMPLATES = (
    "welcome",
    "payment_failed",
    "payment_recovered",
    "subscription_ending",
    "subscription_cancelled",
    "terminal_added",
    "terminal_removed",
    "pospal1_takeover",
)


def majority(bound: dict[str, str], current: dict[str, str]) -> bool:
    """PRODUCT.md: a strict majority of the bound components must match."""
    return bool(bound) and 2 * sum(1 for k, v in bound.items() if current.get(k) == v) > len(bound)


@dataclass
class Billing:
    """A customer's subscription as the provider holds it, replayed from the history."""

    events: list[tuple[float, str]] = field(default_factory=list)
    # (when, "pause" or "resume", resumes_at or None): the owner's pauses, in simulated seconds.
    pauses: list[tuple[float, str, float | None]] = field(default_factory=list)

    def paused_at(self, t: float) -> bool:
        """Whether the server calls it paused at `t`: paused, and its resume date not yet come."""
        paused, resumes = False, None
        for when, action, resumes_at in sorted(self.pauses, key=lambda p: p[0]):
            if when > t:
                break
            paused, resumes = action == "pause", resumes_at
        return paused and (resumes is None or t < resumes)

    def at(self, t: float) -> tuple[str, float | None]:
        """(status, first_failed_at) after every billing event up to and including `t`."""
        status, failed = "none", None
        for when, action in sorted(self.events):
            if when > t:
                break
            if action in ("purchase", "imported"):
                status, failed = "active", None
            elif action == "fail_renewal" and status != "canceled":
                if status != "past_due":
                    failed = when
                status = "past_due"
            elif action == "pay_now" and status != "canceled":
                status, failed = "active", None
            elif action == "cancel_now":
                status, failed = "canceled", None
        return status, failed


def billing_by_customer(
    results: list[dict[str, Any]],
    provider_log: list[dict[str, Any]],
    old_customers: list[dict[str, Any]] | tuple[()] = (),
) -> dict[int, Billing]:
    """Each customer's billing events: the buyer's purchases and page actions, and the provider's own.

    An old POSPal customer's subscription was running before the run (`imported` at the start)."""
    billing: dict[int, Billing] = {}
    index_to_customer = {r["index"]: r["customer"] for r in results}
    for old in old_customers:
        billing.setdefault(old["customer"], Billing()).events.append((-1.0, "imported"))
    for r in results:
        for h in r["history"]:
            if h["kind"] == "purchase":
                billing.setdefault(r["customer"], Billing()).events.append((h["t"], "purchase"))
            elif h["kind"] == "billing" and h["action"] in ("pause", "resume"):
                pause = (h["t"], h["action"], h.get("resumes_at"))
                billing.setdefault(r["customer"], Billing()).pauses.append(pause)
            elif h["kind"] == "billing":
                billing.setdefault(r["customer"], Billing()).events.append((h["t"], h["action"]))
    for p in provider_log:
        action = {"reorder_fail": "fail_renewal", "reorder_recover": "pay_now"}.get(p["name"])
        if action:
            billing.setdefault(index_to_customer[p["plan"]], Billing()).events.append((p["t"], action))
    return billing


def expected_state(r: dict[str, Any], billing: Billing | None, end: float) -> tuple[str, bool, str]:
    """(license_state, licensed, why) that PRODUCT.md calls for, from this agent's history alone."""
    timeline: list[tuple[float, int, str, dict[str, Any]]] = []
    for h in r["history"]:
        timeline.append((h["t"], 0, h["kind"], h))
    for t, route, status in r["log"]:
        if route in SYNC_ROUTES and 200 <= status < 300:
            timeline.append((t, 1, "sync:" + route, {}))
    timeline.sort(key=lambda e: (e[0], e[1]))
    kind: str | None = None
    hw = dict(r["hw0"])  # the hardware the PC started with
    bound: dict[str, str] = {}
    trial_first_seen: float | None = None
    provisional: float | None = None
    last_sync: float | None = None
    rollback = False
    wall_shift = 0.0
    for t, _order, what, h in timeline:
        if what == "hw":
            hw = dict(h["values"])
        elif what == "reboot":
            wall_shift += h["wall_shift"]
            # The persisted high-water mark is the trusted time at shutdown (anchored: the server's).
            rollback = rollback or -h["wall_shift"] > ROLLBACK_S
        elif what == "provisional" and kind is None and provisional is None:
            provisional = t
        elif what in ("deactivated",):
            kind, bound, last_sync = None, {}, None
        elif what == "reinstall":
            kind, bound, last_sync, provisional = None, {}, None, None
        elif what == "sync:/v1/trials":
            if kind != "license":
                if trial_first_seen is None:
                    start = provisional if provisional is not None else t
                    trial_first_seen = min(t, max(t - PROVISIONAL_S, start))
                kind = "trial"
                provisional = None
            bound, last_sync, rollback = dict(hw), t, False
        elif what in ("sync:/v1/activations", "sync:/v1/migrations"):
            kind, bound, last_sync, rollback = "license", dict(hw), t, False
        elif what == "sync:/v1/refresh":
            if majority(bound, hw):
                bound = dict(hw)
            last_sync, rollback = t, False
    if rollback:
        return "license_error", False, "clock_rollback"
    if kind is None:
        if provisional is not None:
            if end - provisional >= PROVISIONAL_S:
                return "license_error", False, "offline_expired"
            return "trial_active", True, "provisional_trial"
        return "license_missing", False, "not_activated"
    assert last_sync is not None
    if not majority(bound, hw):
        return "license_error", False, "machine_changed"
    if end - last_sync >= LEASE_S:
        return "license_error", False, "offline_expired"
    if kind == "trial":
        assert trial_first_seen is not None
        if end >= trial_first_seen + TRIAL_S:
            return "trial_expired", False, "trial_ended"
        return "trial_active", True, "trial"
    status, failed = billing.at(last_sync) if billing else ("none", None)
    if status != "canceled" and billing is not None and billing.paused_at(last_sync):
        # The last token the till holds says paused: nothing sells until a sync says otherwise.
        return "licensed_cancelled", False, "paused"
    if status in ("canceled", "none"):
        return "licensed_cancelled", False, "subscription_ended"
    if status == "past_due":
        assert failed is not None
        if end >= failed + PAYMENT_GRACE_S:
            return "licensed_renewal_required", False, "payment_grace_ended"
        return "licensed_renewal_required", True, "payment_failed"
    if end - last_sync >= GRACE_S:
        return "licensed_grace", True, "offline_grace"
    return "licensed_active", True, "active"


def until(r: dict[str, Any], t: float) -> dict[str, Any]:
    """The agent as it was just before `t`: its history and requests before then."""
    return {
        **r,
        "history": [h for h in r["history"] if h["t"] < t],
        "log": [e for e in r["log"] if e[0] < t],
        "hw": next(
            (h["values"] for h in reversed(r["history"]) if h["kind"] == "hw" and h["t"] < t), r["hw0"]
        ),
    }


def check_states(
    results: list[dict[str, Any]],
    provider_log: list[dict[str, Any]],
    end: float,
    old_customers: list[dict[str, Any]] | tuple[()] = (),
) -> dict[str, Any]:
    """Compare every agent's final state, and each state it noted at an `observe`, with the oracle's."""
    billing = billing_by_customer(results, provider_log, old_customers)
    wrong = []
    observed = 0
    for r in results:
        checks = [(end, r, r["license_state"], r["licensed"], r["reason"])]
        for h in r["history"]:
            if h["kind"] == "observe":
                checks.append((h["t"], until(r, h["t"]), h["state"], h["licensed"], h["reason"]))
                observed += 1
        for t, seen, state_got, licensed_got, reason_got in checks:
            state, licensed, why = expected_state(seen, billing.get(r["customer"]), t)
            if (state, licensed) != (state_got, licensed_got) or (why == "paused") != (
                reason_got == "paused"
            ):
                wrong.append(
                    {
                        "index": r["index"],
                        "role": r["role"],
                        "at_day": round(t / DAY, 3),
                        "expected": [state, licensed, why],
                        "got": [state_got, licensed_got, reason_got],
                    }
                )
    return {
        "wrong": wrong,
        "observed": observed,
        "final_states": Counter(r["license_state"] for r in results),
        "paused_at_end": sum(1 for r in results if r["reason"] == "paused"),
    }


def check_migrations(results: list[dict[str, Any]], old_customers: list[dict[str, Any]]) -> dict[str, Any]:
    """Each old till's take-over outcome as PRODUCT.md calls for it, from its customer's tills' histories.

    The first till of an old customer that runs inside the window moves (`licensed`); any later till of
    that customer is refused `migration_used`; a first run after the window closed is refused
    `migration_closed`. The old files stay where they were, and a refused till is left as it was
    (`license_missing`, the reason in its message) until the owner's code activates it."""
    old = {o["customer"]: o for o in old_customers}
    wrong = []
    outcomes: Counter[str] = Counter()
    used: set[int] = set()
    runs = sorted(
        (h["t"], r["index"], r, h)
        for r in results
        if r["customer"] in old
        for h in r["history"]
        if h["kind"] in ("migrated", "migration_refused")
    )
    for _t, _i, r, h in runs:
        outcomes[h["outcome"]] += 1
        if r["role"] == "migrate_late":
            want = "refused:migration_closed"
        elif r["customer"] in used:
            want = "refused:migration_used"
        else:
            want = "licensed"
        if want == "licensed":
            used.add(r["customer"])
        problems = []
        if h["outcome"] != want:
            problems.append(f"outcome {h['outcome']}, expected {want}")
        if not h.get("old_file_kept"):
            problems.append("the old license file is gone")
        if want != "licensed" and (h["state"], h.get("notice")) != ("license_missing", want.split("_")[-1]):
            problems.append(f"refused till shows {h['state']} notice {h.get('notice')}")
        later = [x for x in r["history"] if x["t"] >= h["t"] and x["kind"] == "activated"]
        if want != "licensed" and not later:
            problems.append("refused, and never activated with the owner's code after")
        if problems:
            wrong.append({"index": r["index"], "role": r["role"], "problems": problems})
    never = [
        r["index"]
        for r in results
        if r["customer"] in old
        and not any(h["kind"] in ("migrated", "migration_refused") for h in r["history"])
    ]
    wrong += [{"index": i, "problems": ["never ran its first run"]} for i in never]
    return {"wrong": wrong, "outcomes": dict(outcomes)}


def check_errors(results: list[dict[str, Any]], windows: list[tuple[float, float, str]]) -> dict[str, Any]:
    """Server errors seen by agents: every 5xx inside an injected fault window; every 5xx and every
    request left without an answer followed by a success of the same request later.

    "No answer" outside a fault is counted apart: a keep-alive connection the server closed just as the
    agent reused it; the agent's backoff retries it, as PRODUCT.md's sync rules say."""
    total = outside = no_answer_outside = unrecovered = 0
    by_fault: Counter[str] = Counter()
    samples: list[str] = []
    for r in results:
        log = r["log"]
        for i, (t, route, status) in enumerate(log):
            if not (status == 0 or status >= 500):
                continue
            total += 1
            fault = next((name for a, b, name in windows if a <= t <= b), None)
            if fault is not None:
                by_fault[fault] += 1
            elif status >= 500:
                outside += 1
            else:
                no_answer_outside += 1
            retried = any(r2 == route and 200 <= s2 < 400 for _t2, r2, s2 in log[i + 1 :])
            unrecovered += not retried
            if fault is None or not retried:
                samples.append(
                    f"agent {r['index']} ({r['role']}): {route} -> {status} at day {t / DAY:.3f}"
                    f"{'' if fault else ' outside faults'}, later: {log[i + 1 : i + 4]}"
                )
    return {
        "total": total,
        "outside_faults": outside,
        "no_answer_outside_faults": no_answer_outside,
        "not_retried_ok": unrecovered,
        "by_fault": dict(by_fault),
        "samples": samples[:20],
    }


def message_id(idempotency_key: str, domain: str = "pospal.gr") -> str:
    """The Message-ID the SMTP mailer derives from an outbox idempotency key."""
    return f"<{hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]}@{domain}>"


def expected_emails(
    results: list[dict[str, Any]],
    provider_log: list[dict[str, Any]],
    old_customers: list[dict[str, Any]] | tuple[()] = (),
) -> Counter[tuple[str, str]]:
    """(email, template) -> how many messages the histories call for.

    An imported subscription sends no welcome (nothing changed for its owner); a till that took over with
    the old token sends `pospal1_takeover` instead of `terminal_added`; a pause or resume sends nothing."""
    want: Counter[tuple[str, str]] = Counter()
    email_of = {r["index"]: r["email"] for r in results}
    billing = billing_by_customer(results, provider_log, old_customers)
    customer_email = {r["customer"]: r["email"] for r in results if r["email"]}
    customer_email.update({o["customer"]: o["email"] for o in old_customers})
    for customer, b in billing.items():
        email = customer_email[customer]
        status = "none"
        for _t, action in sorted(b.events):
            if action == "purchase" and status == "none":
                want[(email, "welcome")] += 1
            elif action == "fail_renewal" and status == "active":
                want[(email, "payment_failed")] += 1
            elif action == "pay_now" and status == "past_due":
                want[(email, "payment_recovered")] += 1
            elif action == "cancel_at_period_end" and status in ("active", "past_due"):
                want[(email, "subscription_ending")] += 1
            elif action == "cancel_now" and status in ("active", "past_due"):
                want[(email, "subscription_cancelled")] += 1
            status = {
                "imported": "active",
                "purchase": "active",
                "fail_renewal": "past_due",
                "pay_now": "active",
                "cancel_now": "canceled",
            }.get(action, status)
    for p in provider_log:
        if p["name"] == "reorder_cancel_flip":
            want[(email_of[p["plan"]], "subscription_ending")] += 1
    for r in results:
        for h in r["history"]:
            if h["kind"] == "activated":
                want[(r["email"], "terminal_added")] += 1
            elif h["kind"] == "migrated":
                want[(r["email"], "pospal1_takeover")] += 1
            elif h["kind"] == "deactivated" and r["email"]:
                want[(r["email"], "terminal_removed")] += 1
    return want


def check_server(
    db_url: str,
    results: list[dict[str, Any]],
    provider_log: list[dict[str, Any]],
    sink_messages: list[dict[str, Any]],
    old_customers: list[dict[str, Any]] | tuple[()] = (),
    t0: float = 0.0,
) -> dict[str, Any]:
    """Events processed, emails neither lost nor duplicated, audit rows present, bindings healed."""
    from sqlalchemy import create_engine, func, select
    from sqlalchemy.orm import Session

    from pospal_protocol import fingerprint
    from server.models import AuditLog, License, Machine, Outbox, StripeEvent, Subscription

    old = _check_old_and_paused(db_url, results, provider_log, old_customers, t0)

    engine = create_engine(db_url)
    out: dict[str, Any] = {}
    with Session(engine) as s:
        out["events_total"] = s.scalar(select(func.count()).select_from(StripeEvent))
        out["events_not_processed"] = s.scalar(
            select(func.count()).select_from(StripeEvent).where(StripeEvent.processed_at.is_(None))
        )
        rows = s.execute(
            select(
                Outbox.to_email,
                Outbox.template,
                Outbox.idempotency_key,
                Outbox.status,
                Outbox.attempts,
                Outbox.last_error,
            )
        ).all()
        audit = s.execute(select(AuditLog.action, AuditLog.machine_id, AuditLog.license_id)).all()
        machines = {m.id: m for m in s.scalars(select(Machine))}
        n_subs = s.scalar(select(func.count()).select_from(Subscription))
        license_ids = set(s.scalars(select(License.id)))
    engine.dispose()
    received = Counter(m["message_id"] for m in sink_messages)
    out["outbox_total"] = len(rows)
    out["outbox_by_status"] = dict(Counter(r.status for r in rows))
    out["outbox_retried"] = sum(1 for r in rows if r.attempts > 1)
    # A sign-in code whose 15 minutes ended while the mail provider was down is never sent late (it would
    # not work): the outbox marks it failed as `expired`. That is by design, not a lost e-mail.
    expired = [r for r in rows if r.status == "failed" and (r.last_error or "").startswith("expired: ")]
    out["codes_expired_unsent"] = len(expired)
    out["expired_templates"] = sorted({r.template for r in expired})
    not_sent = [r.idempotency_key for r in rows if r.status != "sent" and r not in expired]
    missing_at_sink = [
        r.idempotency_key for r in rows if r.status == "sent" and not received[message_id(r.idempotency_key)]
    ]
    dup_at_sink = sum(n - 1 for n in received.values() if n > 1)
    have = Counter((r.to_email, r.template) for r in rows)
    want = expected_emails(results, provider_log, old_customers)
    short = {f"{e} {t}": [want[(e, t)], have[(e, t)]] for (e, t) in want if have[(e, t)] < want[(e, t)]}
    extra = {
        f"{e} {t}": [want[(e, t)], have[(e, t)]]
        for (e, t) in have
        if t in COUNTED_TEMPLATES and have[(e, t)] > want[(e, t)]
    }
    out["emails_lost"] = len(not_sent) + len(missing_at_sink) + sum(w - h for w, h in short.values())
    # Two kinds of second copy. The outbox writing a second e-mail is a bug (`emails_duplicated`). The
    # same outbox row reaching the sink twice under the same Message-ID is SMTP's at-least-once: the server
    # was SIGKILLed after the sink accepted a message and before the row was marked sent, so the lease
    # ran out and the message went again (server/mail/smtp.py: receivers drop it by its Message-ID).
    out["emails_duplicated"] = sum(h - w for w, h in extra.values())
    out["emails_redelivered"] = dup_at_sink
    out["email_problems"] = {
        "not_sent": not_sent[:10],
        "missing_at_sink": missing_at_sink[:10],
        "short": dict(list(short.items())[:10]),
        "extra": dict(list(extra.items())[:10]),
    }
    out["emails_received"] = sum(received.values())
    out["emails_by_template"] = dict(Counter(r.template for r in rows))
    # Audit: every activation, trial, deactivation and subscription change has its row.
    by_action: dict[str, set[Any]] = {}
    for action, machine_id, license_id in audit:
        by_action.setdefault(action, set()).add(machine_id or license_id)
    gaps = []
    for r in results:
        for h in r["history"]:
            if h["kind"] == "activated" and h.get("machine_id") not in by_action.get(
                "machine.activated", set()
            ):
                gaps.append(f"agent {r['index']}: no machine.activated for {h.get('machine_id')}")
            if h["kind"] == "deactivated" and h.get("machine_id") not in by_action.get(
                "machine.deactivated", set()
            ):
                gaps.append(f"agent {r['index']}: no machine.deactivated for {h.get('machine_id')}")
        if r["role"] == "deactivate" and not any(h["kind"] == "deactivated" for h in r["history"]):
            gaps.append(f"agent {r['index']}: a deactivate agent that never deactivated")
    trial_machines = by_action.get("trial.started", set()) | by_action.get("trial.resumed", set())
    for r in results:
        if (
            r["license_state"].startswith("trial")
            and r["machine_id"]
            and r["machine_id"] not in trial_machines
        ):
            gaps.append(f"agent {r['index']}: no trial audit for {r['machine_id']}")
    missing_licenses = (
        license_ids - by_action.get("license.created", set()) - by_action.get("license.rebound", set())
    )
    gaps += [f"license {lic}: no license.created" for lic in sorted(missing_licenses)]
    synced = audit and sum(1 for a in audit if a[0] == "subscription.synced")
    if n_subs and synced < n_subs:
        gaps.append(f"{n_subs} subscriptions but {synced} subscription.synced rows")
    out["audit_rows"] = len(audit)
    out["audit_gaps"] = gaps
    # One replaced part heals the binding at the next sync: the server holds the new hashes.
    unhealed = []
    for r in results:
        if r["role"] == "hw1" and r["machine_id"] in machines:
            now = {
                n: fingerprint.hash_component(n, fingerprint.normalize(v) or v) for n, v in r["hw"].items()
            }
            if machines[r["machine_id"]].fingerprint != now:
                unhealed.append(r["index"])
    out["hw1_not_healed"] = unhealed
    # A dead till frees its seat by itself: the owner's replacement activates without removing it.
    out.update(old)
    out["replacements_refused"] = [
        r["index"]
        for r in results
        if r["role"] == "replacement"
        and not any(h["kind"] == "activated" and h.get("via") == "code" for h in r["history"])
    ]
    return out


def _check_old_and_paused(
    db_url: str,
    results: list[dict[str, Any]],
    provider_log: list[dict[str, Any]],
    old_customers: list[dict[str, Any]] | tuple[()],
    t0: float,
) -> dict[str, Any]:
    """The old customers in the database, each pause and resume in the audit log, nothing collected paused.

    - `duplicates`: an e-mail held by two customers, a customer with two subscriptions, a subscription with
      two licenses; an old customer not imported exactly once, or whose token moved a till other than
      the one that took over (or none, or two);
    - `pause_audit_gaps`: a pause or resume with no audit row for its license at that server time;
    - `collected_while_paused`: a sandbox invoice made, or an `invoice.paid` event, for a paused
      subscription between its pause and its resume (by the owner, or by its date)."""
    from datetime import UTC, datetime

    from sqlalchemy import create_engine, func, select
    from sqlalchemy.orm import Session

    from server.models import (
        AuditLog,
        Customer,
        License,
        Pospal1Import,
        SandboxObject,
        StripeEvent,
        Subscription,
    )

    def sim(at: datetime | None) -> float | None:
        return None if at is None else at.replace(tzinfo=UTC).timestamp() - t0

    engine = create_engine(db_url)
    with Session(engine) as s:
        dup = []
        for email, n in s.execute(
            select(func.lower(Customer.email), func.count()).group_by(func.lower(Customer.email))
        ):
            if n > 1:
                dup.append(f"{n} customers for {email}")
        for customer_id, n in s.execute(
            select(Subscription.customer_id, func.count()).group_by(Subscription.customer_id)
        ):
            if n > 1:
                dup.append(f"{n} subscriptions for customer {customer_id}")
        for sub_id, n in s.execute(
            select(License.subscription_id, func.count())
            .where(License.subscription_id.isnot(None))
            .group_by(License.subscription_id)
        ):
            if n > 1:
                dup.append(f"{n} licenses for subscription {sub_id}")
        imports = {
            email: row
            for email, row in s.execute(
                select(Customer.email, Pospal1Import).join(
                    Pospal1Import, Pospal1Import.customer_id == Customer.id
                )
            )
        }
        license_of = {
            email: lic
            for email, lic in s.execute(
                select(Customer.email, License.id).join(License, License.customer_id == Customer.id)
            )
        }
        sub_of = {
            email: sub
            for email, sub in s.execute(
                select(Customer.email, Subscription.provider_subscription_id).join(
                    Subscription, Subscription.customer_id == Customer.id
                )
            )
        }
        audit = [
            (a.license_id, sim(a.at), a.action)
            for a in s.scalars(select(AuditLog).where(AuditLog.license_id.isnot(None)))
        ]
        invoices = [
            (o.data.get("subscription"), sim(o.created_at))
            for o in s.scalars(select(SandboxObject).where(SandboxObject.kind == "invoice"))
        ]
        paid = [
            ((e.payload.get("data") or {}).get("object", {}).get("subscription"), e.payload.get("created"))
            for e in s.scalars(select(StripeEvent).where(StripeEvent.type == "invoice.paid"))
        ]
    engine.dispose()
    migrated = {r["email"]: h["machine_id"] for r in results for h in r["history"] if h["kind"] == "migrated"}
    for o in old_customers:
        row = imports.get(o["email"])
        if row is None:
            dup.append(f"old customer {o['email']} not imported")
            continue
        if migrated.get(o["email"]) != row.used_machine_id:
            dup.append(
                f"{o['email']}: token used by {row.used_machine_id}, took over {migrated.get(o['email'])}"
            )
    if len(imports) != len(old_customers):
        dup.append(f"{len(imports)} imported customers, {len(old_customers)} in the export")
    # Each pause and resume, and the window it left Stripe without collecting.
    gaps, collected, windows = [], [], []
    for r in results:
        for h in r["history"]:
            if h["kind"] != "billing" or h["action"] not in ("pause", "resume"):
                continue
            lic = license_of.get(r["email"])
            if not any(
                lid == lic and at is not None and abs(at - h["t"]) < 5 and action.startswith("subscription.")
                for lid, at, action in audit
            ):
                when = f"day {h['t'] / DAY:.3f}"
                gaps.append(f"agent {r['index']} ({r['role']}): no audit row for its {h['action']} at {when}")
            if h["action"] == "pause":
                ends = [x["t"] for x in r["history"] if x["kind"] == "billing" and x["action"] == "resume"]
                end = min([t for t in ends if t > h["t"]] + [h.get("resumes_at") or float("inf")])
                windows.append((sub_of.get(r["email"]), h["t"], end))
    for sub, start, end in windows:
        collected += [
            f"invoice for {sub} at {t}"
            for s2, t in invoices
            if s2 == sub and t is not None and start < t < end
        ]
        collected += [
            f"invoice.paid for {sub} at {c}"
            for s2, c in paid
            if s2 == sub and c is not None and start < c - t0 < end
        ]
    return {
        "duplicates": dup,
        "old_imported": len(imports),
        "pause_audit_gaps": gaps,
        "collected_while_paused": collected,
        "pause_windows": len(windows),
    }
