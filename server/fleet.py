"""Fleet visibility: which agent version each terminal runs, recorded from its answered refreshes.

Every agent sends `User-Agent: pospal-agent/<version>` and signs its refresh with its machine key
(`X-POSPal-Machine`); under the launcher it also sends `X-POSPal-Update-Failed: <version>: <reason>`
after a rolled-back update, and `X-POSPal-Keyset: <n>`, the version of the offline authority's key-set
document it trusts (`pospal_protocol.trust`). `FleetVersions` is an ASGI middleware around the app (outside
the refresh fast path) that notes these headers for every `POST /v1/refresh` answered 200, which proves the
machine signed it, and never reads the body. A terminal's row in `agent_versions` is written only when what it
reports changes (a per-instance memory of the last value), off the event loop, after the answer went out,
so a steady fleet costs no database writes. `versions()`, `keysets()` and `terminals()` are what
`pospal-server admin fleet versions|keysets|terminals` print: before retiring a token key, every terminal
should trust a key-set version that lists its successor (README, key rotation).
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections import Counter
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from pospal_protocol.clock import Clock
from server.db import Database
from server.models import AgentVersion, Machine, table_of

log = logging.getLogger(__name__)

_UA = re.compile(rb"^pospal-agent/(\d{1,6}(?:\.\d{1,6}){0,3})\b")
_MACHINE = re.compile(rb"^m_[A-Za-z0-9_-]{1,37}$")
_KEYSET = re.compile(rb"^[0-9]{1,9}$")
_PATHS = frozenset({"/v1/refresh"})


def _failed(raw: bytes | None) -> str | None:
    if not raw:
        return None
    value = raw.decode("ascii", "replace")
    return "".join(c for c in value if c.isprintable())[:200] or None


class FleetVersions:
    """ASGI middleware: records the agent version of each terminal whose refresh was answered 200."""

    def __init__(self, app: Any, db: Database, clock: Clock) -> None:
        self.app = app
        self.db = db
        self.clock = clock
        self._known: dict[str, tuple[str, str | None, int | None]] = {}
        self._lock = threading.Lock()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or scope.get("method") != "POST" or scope.get("path") not in _PATHS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or ())
        ua = _UA.match(headers.get(b"user-agent", b""))
        machine = headers.get(b"x-pospal-machine", b"")
        if ua is None or not _MACHINE.match(machine):
            await self.app(scope, receive, send)
            return
        status: list[int] = []

        async def noting_send(message: dict) -> None:
            if message.get("type") == "http.response.start":
                status.append(int(message.get("status", 0)))
            await send(message)

        await self.app(scope, receive, noting_send)
        if status and status[0] == 200:
            keyset = headers.get(b"x-pospal-keyset", b"")
            report = (
                ua.group(1).decode(),
                _failed(headers.get(b"x-pospal-update-failed")),
                int(keyset) if _KEYSET.match(keyset) else None,
            )
            machine_id = machine.decode()
            with self._lock:
                changed = self._known.get(machine_id) != report
                self._known[machine_id] = report
            if changed:
                await asyncio.to_thread(self._record, machine_id, *report)

    def _record(self, machine_id: str, version: str, failed: str | None, keyset: int | None) -> None:
        try:
            with self.db.begin(durable=False) as conn:
                insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
                values: dict[str, Any] = {"machine_id": machine_id, "version": version}
                values.update(update_failed=failed, seen_at=self.clock.now(), keyset_version=keyset)
                statement = insert(table_of(AgentVersion)).values(**values)
                conn.execute(
                    statement.on_conflict_do_update(
                        index_elements=["machine_id"],
                        set_={
                            k: statement.excluded[k]
                            for k in ("version", "update_failed", "seen_at", "keyset_version")
                        },
                    )
                )
        except Exception:  # the answer went out; a lost version row is written at the next change
            with self._lock:
                self._known.pop(machine_id, None)
            log.warning("could not record the agent version of %s", machine_id, exc_info=True)


def versions(session: Session) -> list[dict[str, Any]]:
    """Terminals per agent version (newest version first), with how many reported a rolled-back update."""
    rows = session.execute(select(AgentVersion.version, AgentVersion.update_failed)).all()
    counts = Counter(v for v, _ in rows)
    failed = Counter(v for v, f in rows if f)

    def key(version: str) -> tuple[int, ...]:
        return tuple(int(p) for p in version.split(".") if p.isdigit())

    return [
        {"version": v, "terminals": counts[v], "update_failed": failed[v]}
        for v in sorted(counts, key=key, reverse=True)
    ]


def versions_of(session: Session, machine_ids: list[str]) -> dict[str, str]:
    """The agent version each of these machines last reported (those that did), by machine id."""
    if not machine_ids:
        return {}
    rows = session.execute(
        select(AgentVersion.machine_id, AgentVersion.version).where(AgentVersion.machine_id.in_(machine_ids))
    ).all()
    return {machine_id: version for machine_id, version in rows}


def keysets(session: Session) -> list[dict[str, Any]]:
    """Terminals per trusted key-set version (newest first; `null`: none reported, or an older agent)."""
    counts = Counter(session.scalars(select(AgentVersion.keyset_version)).all())
    return [
        {"keyset_version": v, "terminals": counts[v]}
        for v in sorted(counts, key=lambda v: -1 if v is None else v, reverse=True)
    ]


def terminals(session: Session) -> list[dict[str, Any]]:
    """Every terminal with a known version: machine, terminal name, version, last update failure, key set."""
    rows = session.execute(
        select(AgentVersion, Machine.terminal_name)
        .join(Machine, Machine.id == AgentVersion.machine_id, isouter=True)
        .order_by(AgentVersion.version, AgentVersion.machine_id)
    ).all()
    return [
        {
            "machine_id": av.machine_id,
            "terminal_name": name,
            "version": av.version,
            "update_failed": av.update_failed,
            "keyset_version": av.keyset_version,
            "seen_at": av.seen_at,
        }
        for av, name in rows
    ]
