"""The fleet's script: which agents exist, whose customer they are, and what happens to each, when.

`build(n_agents, days, seed)` returns `Plan`s: one per agent, each with a role and timed actions
(seconds of simulated time from the start). Roles cover PRODUCT.md's life of a terminal: trials (ending
inside the run or not), purchases through the sandbox (some after a declined card), extra terminals
activated with an emailed code (one beyond the seats, refused), failed renewals with and without
recovery, cancellations at period end and at once, hardware changes (1 and 3 components), clocks set
back (23 h: tolerated; 2 days: rollback until a sync; 3 days while offline: rollback at the end),
machines offline for 1, 3 and 20 days (and at the end), a first run offline (provisional trial), a
reinstall during a trial, a deactivation, customers whose webhooks the provider sends duplicated
and out of order (`provider_actions`, run by the orchestrator), and tills that die (a bought terminal goes
dark for good) whose owner later activates a replacement with an emailed code and no manual removal:
the dead till's seat frees itself after the server's `POSPAL_SEAT_IDLE_DAYS` (`Schedule.seat_idle_days`).
Agents of one customer are kept together (`customer`), so one worker process owns them all.

Old POSPal customers (`Schedule.old_customers`, imported before the server starts with `pospal-server
import-pospal1`) have tills that hold the old app's license: a plain migration (`migrate`); two tills of
one customer, the second refused (`migration_used`: the old token is accepted once per customer) and then
activated with an emailed code (`migrate_second`); a till whose first run comes after the migration window
closed (`migration_closed`), then activated with a code (`migrate_late`). Paused seasons: customers with
two tills whose owner pauses with a resume date (`pause_date`: the pause ends by itself), "until I
resume" and resumes later with the owner's code (`pause_open`), or pauses late with a date past the end
of the run (`pause_tail`: still paused at the end); their second till is `pause_extra`.

Times are scaled by `days / 30`, so the 3-day test run keeps the same shape. Anything that must stay
days long whatever the scale (payment grace, offline lease) is expressed in absolute seconds.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

DAY = 86400.0
HOUR = 3600.0

# (role, weight): weights are shares of agents (customer agents for "multi").
ROLES: tuple[tuple[str, float], ...] = (
    ("none", 2),
    ("trial_early", 6),
    ("trial", 9),
    ("provisional", 2),
    ("provisional_late", 1),
    ("reinstall", 2),
    ("buyer", 14),
    ("multi", 9),
    ("failed_recovered", 6),
    ("failed_open", 4),
    ("cancel_period_end", 3),
    ("cancel_now", 3),
    ("hw1", 4),
    ("hw3", 2),
    ("rollback", 3),
    ("rollback_small", 2),
    ("rollback_offline", 2),
    ("offline1", 3),
    ("offline3", 3),
    ("offline20", 3),
    ("offline_tail", 2),
    ("deactivate", 2),
    ("reorder", 5),
)


@dataclass
class Plan:
    """One agent's script: `actions` are (seconds from start, name, params), sorted by time."""

    index: int
    customer: int
    role: str
    email: str | None = None
    actions: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)

    def add(self, at: float, name: str, **params: Any) -> None:
        """Schedule `name` at `at` seconds of simulated time."""
        self.actions.append((at, name, params))
        self.actions.sort(key=lambda a: a[0])


@dataclass
class Schedule:
    """All plans plus the orchestrator's provider-side actions and the run's length."""

    plans: list[Plan]
    provider_actions: list[tuple[float, str, dict[str, Any]]]
    duration_s: float
    email_outage_at: float
    kills_at: list[float]
    pg_stop_at: float
    # The server's POSPAL_SEAT_IDLE_DAYS for this run (longer than the 14-day lease in a 30-day run).
    seat_idle_days: int = 30
    # The old POSPal server's customers the run imports: {customer, email, quantity, token, name}.
    old_customers: list[dict[str, Any]] = field(default_factory=list)
    # POSPAL_MIGRATION_WINDOW, in seconds from the start: old tokens are accepted inside it only.
    migration_window: tuple[float, float] = (-DAY, 10 * DAY)

    def by_customer(self) -> dict[int, list[Plan]]:
        """Plans grouped by customer (a worker takes whole customers)."""
        groups: dict[int, list[Plan]] = {}
        for plan in self.plans:
            groups.setdefault(plan.customer, []).append(plan)
        return groups


def build(n_agents: int, days: float = 30.0, seed: int = 7) -> Schedule:
    """The schedule for `n_agents` over `days` simulated days (deterministic for a seed)."""
    rng = random.Random(seed)
    s = days / 30.0  # time scale of the 30-day script

    def day(lo: float, hi: float) -> float:
        return rng.uniform(lo, hi) * DAY * s

    plans: list[Plan] = []
    provider: list[tuple[float, str, dict[str, Any]]] = []
    roles, weights = zip(*ROLES, strict=True)
    customer = 0
    outage = 14.0 * DAY * s
    idle_days = max(1, round(15 * s))

    def new(role: str, email: str | None = None) -> Plan:
        plan = Plan(index=len(plans), customer=customer, role=role, email=email)
        plans.append(plan)
        return plan

    # Tills that die: every run has some (one per 50 agents, at least one), each with its replacement.
    for _ in range(max(1, n_agents // 50)):
        email = f"owner{customer}@fleet.example"
        buy_at = day(1, 5)
        dead = new("dead_till", email)
        dead.add(day(0, 1), "trial")
        dead.add(buy_at, "buy", quantity=1, decline_first=False)
        dead.add(buy_at + 2 * HOUR, "offline")  # gone for good: no sync, no removal
        replacement = new("replacement", email)
        replacement.add(day(0, 1), "trial")
        replacement.add(buy_at + 2 * HOUR + idle_days * DAY + 2 * HOUR, "activate_code")
        customer += 1

    window_end = 10.0 * DAY * s
    old_customers: list[dict[str, Any]] = []

    def old_customer(quantity: int) -> str:
        email = f"owner{customer}@fleet.example"
        token = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(26))
        old_customers.append(
            {
                "customer": customer,
                "email": email,
                "quantity": quantity,
                "token": token,
                "name": f"Old {customer}",
            }
        )
        return token

    # Old POSPal tills and paused seasons: every run has some (one set per 60 agents, at least one).
    for _ in range(max(1, n_agents // 60)):
        email = f"owner{customer}@fleet.example"
        token = old_customer(1)
        new("migrate", email).add(day(0.1, 3), "old_first_run", token=token)
        customer += 1
        email = f"owner{customer}@fleet.example"
        token = old_customer(2)
        first_at = day(0.1, 2)
        new("migrate", email).add(first_at, "old_first_run", token=token)
        second = new("migrate_second", email)
        second_at = first_at + day(1, 3)
        second.add(second_at, "old_first_run", token=token)
        second.add(second_at + HOUR, "activate_code")
        customer += 1
        email = f"owner{customer}@fleet.example"
        token = old_customer(1)
        late = new("migrate_late", email)
        late_at = window_end + day(1, 3)
        late.add(late_at, "old_first_run", token=token)
        late.add(late_at + 2 * HOUR, "activate_code")
        customer += 1
        for role in ("pause_date", "pause_open", "pause_tail"):
            email = f"owner{customer}@fleet.example"
            owner = new(role, email)
            owner.add(day(0, 1), "trial")
            buy_at = day(1, 3)
            owner.add(buy_at, "buy", quantity=2, decline_first=False)
            extra = new("pause_extra", email)
            extra.add(day(0, 1), "trial")
            extra.add(buy_at + day(1, 2), "activate_code")
            pause_at = day(24, 26) if role == "pause_tail" else day(7, 9)
            resumes_in = {"pause_date": day(8, 10), "pause_open": None, "pause_tail": 20 * DAY * s}[role]
            owner.add(pause_at, "pause", resumes_in=resumes_in)
            # Both tills say what they show during the pause and after it ended (by date or by the owner).
            moments = [pause_at + day(2, 3)]
            if role == "pause_open":
                resume_at = pause_at + day(8, 10)
                owner.add(resume_at, "resume")
                moments.append(resume_at + HOUR)
            elif role == "pause_date":
                assert resumes_in is not None
                moments.append(pause_at + resumes_in + HOUR)
            for till in (owner, extra):
                for k, at in enumerate(moments):
                    till.add(at + k * 60 + (till is extra) * 120, "observe")
            customer += 1

    while len(plans) < n_agents:
        role = rng.choices(roles, weights)[0]
        email = f"owner{customer}@fleet.example"
        if role in ("none",):
            new(role)
        elif role == "trial_early":
            new(role).add(rng.uniform(0.0, 0.08) * DAY * s, "trial")
        elif role == "trial":
            new(role).add(day(1, 3), "trial")
        elif role in ("provisional", "provisional_late"):
            p = new(role)
            start = day(1, 2)
            p.add(start - 60, "offline")
            p.add(start, "trial")  # offline: a provisional trial
            # Back online after 1 day, or after 4 days (the 3-day provisional trial ran out meanwhile).
            p.add(start + (1.0 if role == "provisional" else 4.0) * DAY, "online")
        elif role == "reinstall":
            p = new(role)
            p.add(day(0.2, 1), "trial")
            p.add(day(5, 7), "reinstall")
        else:
            # Everyone else buys: a trial first, then Checkout in the sandbox.
            buy_at = day(1, 5) if role != "buyer" else day(1, 12)
            quantity = rng.choice((2, 3)) if role == "multi" else 1
            p = new(role, email)
            p.add(day(0, 1), "trial")
            p.add(buy_at, "buy", quantity=quantity, decline_first=rng.random() < 0.25)
            _script_buyer(p, role, rng, day, provider)
            if role == "multi":
                extra = quantity - 1 + (1 if rng.random() < 0.4 else 0)  # sometimes one too many
                for k in range(extra):
                    t = new("extra_terminal" if k < quantity - 1 else "extra_refused", email)
                    t.add(day(0, 1), "trial")
                    ask = max(buy_at + HOUR, day(3, 16))
                    t.add(ask, "activate_code")
        customer += 1
    plans = plans[:n_agents]
    # A few purchases and code requests land inside the email outage, so the outbox must retry.
    buyers = [p for p in plans if p.role == "buyer"][:6]
    for p in buyers:
        p.actions = [(t, n, kw) for t, n, kw in p.actions if n != "buy"]
        p.add(outage + 20, "buy", quantity=1, decline_first=False)
    provider.sort(key=lambda a: a[0])
    return Schedule(
        plans=plans,
        provider_actions=provider,
        duration_s=days * DAY + 6 * HOUR * s,
        email_outage_at=outage,
        kills_at=[6.3 * DAY * s, 16.3 * DAY * s, 24.3 * DAY * s],
        pg_stop_at=20.3 * DAY * s,
        seat_idle_days=idle_days,
        old_customers=old_customers,
        migration_window=(-DAY, window_end),
    )


def _script_buyer(
    p: Plan, role: str, rng: random.Random, day: Any, provider: list[tuple[float, str, dict[str, Any]]]
) -> None:
    """Add the role's later actions to a buyer's plan."""
    if role == "failed_recovered":
        fail = day(8, 15)
        p.add(fail, "sub_action", action="fail_renewal")
        p.add(fail + rng.uniform(2, 5) * DAY, "sub_action", action="pay_now")
    elif role == "failed_open":
        p.add(day(20, 28), "sub_action", action="fail_renewal")
    elif role == "cancel_period_end":
        p.add(day(10, 20), "sub_action", action="cancel_at_period_end")
    elif role == "cancel_now":
        p.add(day(10, 20), "sub_action", action="cancel_now")
    elif role == "hw1":
        p.add(day(8, 12), "hw", changed=1)
    elif role == "hw3":
        p.add(day(8, 12), "hw", changed=3)
    elif role == "rollback":
        p.add(day(10, 15), "reboot", wall_shift=-2 * DAY)
    elif role == "rollback_small":
        p.add(day(10, 15), "reboot", wall_shift=-23 * HOUR)
    elif role == "rollback_offline":
        p.add(day(27, 27.5), "offline")
        p.add(day(28, 28.5), "reboot", wall_shift=-3 * DAY)
    elif role in ("offline1", "offline3", "offline20"):
        length = {"offline1": 1, "offline3": 3, "offline20": 20}[role] * DAY
        start = day(5, 6) if role == "offline20" else day(9, 12)
        p.add(start, "offline")
        p.add(start + length, "online")
    elif role == "offline_tail":
        p.add(day(25, 26), "offline")
    elif role == "deactivate":
        p.add(day(14, 18), "deactivate")
    elif role == "reorder":
        fail = day(8, 11)
        provider.append((fail, "reorder_fail", {"plan": p.index}))
        provider.append((fail + day(3, 3), "reorder_recover", {"plan": p.index}))
        provider.append((day(18, 22), "reorder_cancel_flip", {"plan": p.index}))
