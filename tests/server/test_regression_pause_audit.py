"""Regression (found by the fleet's paused season, bench/fleet.py): a pause and a resume changed what every
till of the license may do, yet left no audit row. PRODUCT.md: "an audit log row for every license or
machine change". Both now write `subscription.synced` with the pause in its detail."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select

from server.models import AuditLog
from tests.server.test_pause import EMAIL, _tills, beach, stub  # noqa: F401 - fixtures

__all__ = ["beach", "stub"]


def _pause_rows(database) -> list[dict]:
    with database.transaction() as session:
        rows = session.scalars(select(AuditLog).where(AuditLog.action == "subscription.synced")).all()
        return [dict(r.detail) for r in rows if "paused" in (r.detail or {})]


def test_a_pause_and_a_resume_each_leave_an_audit_row(beach, make_machine, login_code, clock, database):  # noqa: F811
    bar, _sea = _tills(beach, make_machine, login_code)
    spring = clock.now() + timedelta(days=150)

    paused = beach.post(
        "/v1/subscription/pause",
        json={"email": EMAIL, "code": login_code(beach, EMAIL, "owner"), "resumes_at": spring.isoformat()},
    )
    assert paused.status_code == 200, paused.text
    resumed = beach.post(
        "/v1/subscription/resume", json={"email": EMAIL, "code": login_code(beach, EMAIL, "owner")}
    )
    assert resumed.status_code == 200, resumed.text

    rows = _pause_rows(database)
    assert [r["paused"] for r in rows] == [True, False], rows
    assert datetime.fromisoformat(rows[0]["resumes_at"]) == spring.replace(microsecond=0)
    assert rows[1]["resumes_at"] is None
