"""server.binding: a copied machine key cannot walk the binding to another PC, and clones are flagged."""

from __future__ import annotations

import json
import secrets

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from server import binding, cli
from server.models import MachineFingerprint
from tests.server.conftest import token_claims


def count_audit(session, **filters) -> int:
    """Audit rows matching column filters, in `session`."""
    from sqlalchemy import func

    from server.models import AuditLog

    stmt = select(func.count()).select_from(AuditLog)
    for name, value in filters.items():
        stmt = stmt.where(getattr(AuditLog, name) == value)
    return int(session.scalar(stmt) or 0)


def count_audit_rows(database, **filters) -> int:
    """Audit rows matching column filters, in a transaction of its own."""
    with database.transaction() as session:
        return count_audit(session, **filters)


def _activated(client, seed_subscription, login_code, make_machine):
    seed_subscription(email="owner@cafe.gr")
    machine = make_machine()
    assert machine.activate(client, "owner@cafe.gr", login_code(client, "owner@cafe.gr")).status_code == 200
    return machine


def _refresh(client, machine, fp) -> dict:
    response = machine.post(client, "/v1/refresh", {"fingerprint": fp, "known_kids": []})
    assert response.status_code == 200, response.text
    return token_claims(response.json()["token"])


def _step(fp: dict, name: str, value: str = "ee" * 32) -> dict:
    return {**fp, name: value if fp[name] != value else "dd" * 32}


def test_binding_walk_refused(client, seed_subscription, login_code, make_machine, clock, database):
    machine = _activated(client, seed_subscription, login_code, make_machine)
    original = dict(machine.fp)
    walk, bindings = dict(original), []
    for name in ("machine_id", "product_uuid", "board_serial", "disk_serial"):
        walk = _step(walk, name)
        bindings.append(_refresh(client, machine, walk)["fp"])
        clock.advance(hours=6)
    # The first step (one replaced part) heals the binding; every later step within 30 days is refused.
    assert bindings[0] == {**original, "machine_id": walk["machine_id"]}
    assert all(b == bindings[0] for b in bindings[1:])
    assert count_audit_rows(database, action="machine.fingerprint_rebound") == 1
    # After 30 days one more step is allowed, and only one.
    clock.advance(days=30)
    assert _refresh(client, machine, walk)["fp"] == bindings[0]  # not a strict majority of the binding
    step = _step(bindings[0], "product_uuid", "ab" * 32)  # a part the walk has not presented before
    assert _refresh(client, machine, step)["fp"] == step
    assert _refresh(client, machine, _step(step, "board_serial", "ab" * 32))["fp"] == step


def test_owner_proof_lifts_the_rebind_limit(
    database, clock, make_machine, client, seed_subscription, login_code
):
    machine = _activated(client, seed_subscription, login_code, make_machine)
    first = _step(machine.fp, "machine_id")
    _refresh(client, machine, first)
    second = _step(first, "product_uuid")
    with database.transaction() as session:
        from server.models import Machine

        row = session.get(Machine, machine.machine_id)
        assert binding.observe(session, row, second, clock.now()) == binding.KEEP
        assert binding.observe(session, row, second, clock.now(), owner_proven=True).bind == second


def test_unknown_component_name_refused_on_refresh(client, seed_subscription, login_code, make_machine):
    machine = _activated(client, seed_subscription, login_code, make_machine)
    response = machine.post(
        client, "/v1/refresh", {"fingerprint": {**machine.fp, "gpu_serial": "ab" * 32}, "known_kids": []}
    )
    assert response.status_code == 422
    assert "gpu_serial" in response.json()["message"]


def test_replaced_nic_heals_the_binding_and_a_missing_part_is_kept(
    client, seed_subscription, login_code, make_machine, database, clock
):
    """PRODUCT: one replaced NIC is still licensed and the binding heals at the next sync; neither it nor
    an unreadable part is a re-bind (no month's limit spent, nothing recorded as a conflicting print)."""
    machine = _activated(client, seed_subscription, login_code, make_machine)
    original = dict(machine.fp)
    new_nic = {**original, "mac": "ab" * 32}
    assert _refresh(client, machine, new_nic)["fp"] == new_nic
    clock.advance(hours=6)
    assert _refresh(client, machine, new_nic)["fp"] == new_nic  # healed: the fast path's answer too
    partial = {k: v for k, v in new_nic.items() if k != "board_serial"}
    assert _refresh(client, machine, partial)["fp"] == new_nic
    assert count_audit_rows(database, action="machine.fingerprint_healed") == 1
    assert count_audit_rows(database, action="machine.fingerprint_rebound") == 0
    with database.transaction() as session:
        assert session.scalars(select(MachineFingerprint)).all() == []
    # The heal spent no re-bind: a replaced disk the next day still re-binds.
    clock.advance(days=1)
    disk = _step(new_nic, "disk_serial")
    assert _refresh(client, machine, disk)["fp"] == disk


def test_clone_flagged(
    client, seed_subscription, login_code, make_machine, clock, database, monkeypatch, capsys, server_env
):
    original_pc = _activated(client, seed_subscription, login_code, make_machine)
    a = dict(original_pc.fp)
    # A copy of the machine key on a second PC, presenting a fingerprint one part away.
    p = _step(a, "product_uuid")
    assert _refresh(client, original_pc, p)["fp"] == p  # the copy moved the binding (first re-bind)
    clock.advance(hours=1)
    # The original PC refreshes with its own fingerprint: the key alternates, the newer one is the clone.
    assert _refresh(client, original_pc, a)["fp"] == a  # binding back on the original
    clock.advance(hours=1)
    clone_claims = _refresh(client, original_pc, p)
    assert clone_claims["fp"] == {"product_uuid": a["product_uuid"]}
    # That token cannot match the clone's own fingerprint: its agent shows machine_changed.
    assert all(p[name] != value for name, value in clone_claims["fp"].items())
    clock.advance(hours=1)
    assert _refresh(client, original_pc, a)["fp"] == a  # the original keeps working
    assert count_audit_rows(database, action="machine.clone_flagged") == 1
    # The admin CLI lists it.
    for name, value in server_env.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["admin", "machine", "clones"]) == 0
    out = capsys.readouterr().out
    assert original_pc.machine_id in out and "product_uuid" in out


def test_clone_flagged_without_any_rebind(
    client, seed_subscription, login_code, make_machine, clock, database
):
    machine = _activated(client, seed_subscription, login_code, make_machine)
    a = dict(machine.fp)
    _refresh(client, machine, _step(a, "disk_serial"))  # a real repair: the one re-bind of the month
    a = _step(a, "disk_serial")
    clock.advance(days=1)
    q = _step(a, "board_serial")  # the copy: kept off the binding by the limit, still a majority
    assert _refresh(client, machine, q)["fp"] == a
    clock.advance(hours=1)
    assert _refresh(client, machine, a)["fp"] == a  # the original (fast path)
    clock.advance(hours=1)
    assert _refresh(client, machine, q)["fp"] == {"board_serial": a["board_serial"]}
    assert count_audit_rows(database, action="machine.clone_flagged") == 1


def test_walk_cannot_jump_to_a_fingerprint_that_was_only_presented(
    client, seed_subscription, login_code, make_machine, clock
):
    machine = _activated(client, seed_subscription, login_code, make_machine)
    a = dict(machine.fp)
    far = {**a, "machine_id": "a1" * 32, "product_uuid": "a2" * 32, "board_serial": "a3" * 32}
    near = {**a, "machine_id": "a1" * 32, "product_uuid": "a2" * 32}  # a majority of both
    assert _refresh(client, machine, far)["fp"] == a  # not a majority: kept, only recorded
    clock.advance(hours=1)
    assert _refresh(client, machine, near)["fp"] == near  # the month's one re-bind
    clock.advance(hours=1)
    # `far` is older than the binding, but was never bound: it is the clone, not the way back.
    claims = _refresh(client, machine, far)
    assert claims["fp"] == {"board_serial": a["board_serial"]}


def test_trial_request_cannot_rebind(client, make_machine, clock):
    machine = make_machine()
    first = token_claims(machine.start_trial(client).json()["token"])["fp"]
    clock.advance(hours=1)
    machine.fp = {name: "cd" * 32 for name in machine.fp}  # another computer, same machine key
    again = machine.start_trial(client)
    assert again.status_code == 200
    assert token_claims(again.json()["token"])["fp"] == first


def test_owner_proof_on_the_terminal_allows_a_second_rebind(
    client, seed_subscription, login_code, make_machine, database, clock
):
    from server import authority
    from server.models import License, Machine

    machine = _activated(client, seed_subscription, login_code, make_machine)
    first = _step(machine.fp, "machine_id")
    assert _refresh(client, machine, first)["fp"] == first
    second = _step(first, "product_uuid")
    assert _refresh(client, machine, second)["fp"] == first  # the month's re-bind is used
    with database.transaction() as session:
        row = session.get(Machine, machine.machine_id)
        customer_id = session.get(License, row.license_id).customer_id
        authority.remember(session, customer_id, row.public_key, clock.now())
    third = _step(first, "board_serial")  # a part not presented before
    assert _refresh(client, machine, third)["fp"] == third  # the owner's proof on this PC allows it


COMPONENTS = ("machine_id", "product_uuid", "board_serial", "disk_serial", "mac")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.tuples(st.sampled_from(COMPONENTS[:4]), st.integers(0, 3)), min_size=1, max_size=12))
def test_any_walk_within_30_days_moves_the_binding_at_most_once(database, clock, steps):
    from datetime import timedelta

    from server.models import Machine

    original = {name: f"{name}-0".encode().hex().ljust(64, "0") for name in COMPONENTS}
    with database.transaction() as session:
        machine = Machine(
            public_key=secrets.token_hex(16), fingerprint=dict(original), activated_at=clock.now()
        )
        session.add(machine)
        session.flush()
        presented, now = dict(original), clock.now()
        bindings = [dict(original)]
        for name, value in steps:
            presented = {**presented, name: f"{name}-{value}".encode().hex().ljust(64, "0")}
            now += timedelta(hours=6)
            verdict = binding.observe(session, machine, presented, now)
            if verdict.bind is not None:
                machine.fingerprint = verdict.bind
                bindings.append(verdict.bind)
            machine.last_seen_at = now
            session.flush()
        # At most one step away, and wherever the walk went, the binding is one the first PC still matches.
        assert len({json.dumps(b, sort_keys=True) for b in bindings}) <= 2
        assert count_audit(session, machine_id=machine.id, action="machine.fingerprint_rebound") <= 1
        kept = sum(machine.fingerprint[n] == original[n] for n in COMPONENTS)
        assert kept * 2 > len(COMPONENTS)
