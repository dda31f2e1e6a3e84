"""Machine rows on the refresh hot path: everything a refresh needs in one SELECT, and last-seen writes.

`load_machine_state` reads a machine with its license, subscription, customer and trial in one joined
query into plain objects (no ORM unit of work), and `MachineState.claims` turns them into token claims
through `server.licensing`, the one place that decides what a token says. `touch_machine` (one machine,
optionally re-binding its fingerprint) and `touch_machines` (a batch, `server.refresh_writes`) record when
machines were last seen. All statements are built once at import.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Connection, String, any_, bindparam, or_, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from server.db import connection_of
from server.hotsql import HotStatement
from server.licensing import claims_from
from server.models import Customer, License, Machine, Subscription, Trial, table_of

_M, _L, _S, _C, _T = (table_of(m) for m in (Machine, License, Subscription, Customer, Trial))
# The refresh hot path reads everything it needs in one statement, built once.
_STATE_COLUMNS = select(
    _M.c.id,
    _M.c.public_key,
    _M.c.fingerprint,
    _M.c.terminal_name,
    _M.c.deactivated_at,
    _M.c.seat_state,
    _M.c.license_id,
    _M.c.trial_id,
    _L.c.status.label("l_status"),
    _L.c.plan.label("l_plan"),
    _L.c.features.label("l_features"),
    _L.c.comp_until.label("l_comp_until"),
    _S.c.status.label("s_status"),
    _S.c.quantity.label("s_quantity"),
    _S.c.current_period_end.label("s_current_period_end"),
    _S.c.cancel_at.label("s_cancel_at"),
    _S.c.cancel_at_period_end.label("s_cancel_at_period_end"),
    _S.c.first_failed_at.label("s_first_failed_at"),
    _S.c.payment_action_url.label("s_payment_action_url"),
    _S.c.paused.label("s_paused"),
    _S.c.pause_resumes_at.label("s_pause_resumes_at"),
    _S.c.updated_at.label("s_updated_at"),
    _C.c.email.label("c_email"),
    _T.c.id.label("t_id"),
    _T.c.ends_at.label("t_ends_at"),
).select_from(
    _M.outerjoin(_L, _L.c.id == _M.c.license_id)
    .outerjoin(_S, _S.c.id == _L.c.subscription_id)
    .outerjoin(_C, _C.c.id == _L.c.customer_id)
    .outerjoin(_T, _T.c.id == _M.c.trial_id)
)
_MACHINE_STATE = _STATE_COLUMNS.where(_M.c.id == bindparam("p_machine"))
_MACHINE_STATES = _STATE_COLUMNS.where(_M.c.id.in_(bindparam("p_machines", expanding=True)))
# PostgreSQL: the ids as one array parameter, so every batch size is the same statement text, which
# SQLAlchemy compiles once and psycopg prepares once (an IN list is a new statement for each size).
_MACHINE_STATES_PG = _STATE_COLUMNS.where(_M.c.id == any_(bindparam("p_machines", type_=ARRAY(String))))
# The batched read runs on the driver (server.hotsql): Core's per-call and per-row costs were most of it.
_HOT_STATES = HotStatement(_MACHINE_STATES, expanding="p_machines")
_HOT_STATES_PG = HotStatement(_MACHINE_STATES_PG)
# A state row with the columns by name, as `Row` has them (a plain tuple: cheap to make and to read).
_StateRow = namedtuple("_StateRow", [str(column.key) for column in _STATE_COLUMNS.selected_columns])  # type: ignore[misc]


@dataclass
class MachineState:
    """A machine and what its token depends on, read in one query (plain objects, not ORM rows)."""

    machine: SimpleNamespace
    license: SimpleNamespace | None
    subscription: SimpleNamespace | None
    customer: SimpleNamespace | None
    trial: SimpleNamespace | None

    def claims(self, now: datetime) -> dict[str, Any]:
        """The token claims for this state at `now`."""
        return claims_from(self.machine, self.license, self.subscription, self.customer, self.trial, now)


def load_machine_state(session: Session | Connection, machine_id: str) -> MachineState | None:
    """Everything refresh needs about a machine, in one query; None for an unknown machine."""
    row = connection_of(session).execute(_MACHINE_STATE, {"p_machine": machine_id}).first()
    return None if row is None else _state_from_row(row)


def load_machine_states(connection: Connection, machine_ids: Iterable[str]) -> dict[str, MachineState]:
    """The states of several machines in one query, by machine id (unknown ids are simply absent)."""
    ids = sorted(set(machine_ids))
    if not ids:
        return {}
    statement = _HOT_STATES_PG if connection.dialect.name == "postgresql" else _HOT_STATES
    states = {}
    for values in statement.rows(connection, {"p_machines": ids}):
        row: Any = _StateRow._make(values)
        states[row.id] = _state_from_row(row)
    return states


def _state_from_row(row: Any) -> MachineState:
    machine = SimpleNamespace(
        id=row.id,
        public_key=row.public_key,
        fingerprint=row.fingerprint or {},
        terminal_name=row.terminal_name,
        deactivated_at=row.deactivated_at,
        seat_state=row.seat_state,
        license_id=row.license_id,
        trial_id=row.trial_id,
    )
    license_ = subscription = customer = trial = None
    if row.license_id is not None and row.l_status is not None:
        license_ = SimpleNamespace(
            id=row.license_id,
            status=row.l_status,
            plan=row.l_plan,
            features=row.l_features,
            comp_until=row.l_comp_until,
        )
        customer = SimpleNamespace(email=row.c_email) if row.c_email is not None else None
        if row.s_status is not None:
            subscription = SimpleNamespace(
                status=row.s_status,
                quantity=row.s_quantity,
                current_period_end=row.s_current_period_end,
                cancel_at=row.s_cancel_at,
                cancel_at_period_end=row.s_cancel_at_period_end,
                first_failed_at=row.s_first_failed_at,
                payment_action_url=row.s_payment_action_url,
                paused=bool(row.s_paused),
                pause_resumes_at=row.s_pause_resumes_at,
                updated_at=row.s_updated_at,
            )
    if row.t_id is not None:
        trial = SimpleNamespace(id=row.t_id, ends_at=row.t_ends_at)
    return MachineState(machine, license_, subscription, customer, trial)


_TOUCH = update(_M).where(_M.c.id == bindparam("p_machine")).values(last_seen_at=bindparam("p_seen"))
_TOUCH_AND_REBIND = (
    update(_M)
    .where(_M.c.id == bindparam("p_machine"))
    .values(last_seen_at=bindparam("p_seen"), fingerprint=bindparam("p_fingerprint"))
)


def _touch_many_statement() -> Any:
    # FOR UPDATE SKIP LOCKED (PostgreSQL; SQLite has no row locks and renders nothing): a machine row
    # locked by another transaction (an admin change, a deactivation) is skipped rather than waited
    # for, since last-seen times are best effort. Never moves a last-seen time backwards.
    unlocked = (
        select(_M.c.id)
        .where(_M.c.id.in_(bindparam("p_machines", expanding=True)))
        .with_for_update(skip_locked=True)
    )
    return (
        update(_M)
        .where(_M.c.id.in_(unlocked.scalar_subquery()))
        .where(or_(_M.c.last_seen_at.is_(None), _M.c.last_seen_at < bindparam("p_seen")))
        .values(last_seen_at=bindparam("p_seen"))
    )


_TOUCH_MANY = _touch_many_statement()
_HOT_TOUCH_MANY = HotStatement(_TOUCH_MANY, expanding="p_machines")


def touch_machines(connection: Connection, machine_ids: Iterable[str], now: datetime) -> None:
    """Record that several machines were seen at `now`: one UPDATE (the batched refresh writes)."""
    ids = sorted(set(machine_ids))
    if ids:
        _HOT_TOUCH_MANY.rows(connection, {"p_machines": ids, "p_seen": now})


def touch_machine(
    session: Session | Connection, machine_id: str, now: datetime, fingerprint: dict[str, Any] | None = None
) -> None:
    """Record that a machine was seen (and re-bind its fingerprint when given): one UPDATE."""
    if fingerprint is None:
        connection_of(session).execute(_TOUCH, {"p_machine": machine_id, "p_seen": now})
    else:
        connection_of(session).execute(
            _TOUCH_AND_REBIND, {"p_machine": machine_id, "p_seen": now, "p_fingerprint": fingerprint}
        )
