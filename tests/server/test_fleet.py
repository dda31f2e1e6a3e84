"""Fleet visibility: the server records each terminal's agent version from its answered refreshes, and
`pospal-server admin fleet` lists them (server/fleet.py)."""

from __future__ import annotations

import argparse
from typing import Any

from sqlalchemy import select

from server import admin, fleet
from server.models import AgentVersion


def refresh(client: Any, machine: Any, agent: str | None, failed: str | None = None, **kwargs: Any) -> Any:
    raw, headers = machine.signed("/v1/refresh", {"fingerprint": machine.fp, "known_kids": []}, **kwargs)
    if agent is not None:
        headers["User-Agent"] = agent
    if failed is not None:
        headers["X-POSPal-Update-Failed"] = failed
    return client.post("/v1/refresh", content=raw, headers=headers)


def recorded(database: Any) -> dict[str, tuple[str, str | None]]:
    with database.transaction() as session:
        return {r.machine_id: (r.version, r.update_failed) for r in session.scalars(select(AgentVersion))}


def test_each_terminal_s_version_is_recorded_from_its_refresh(client, make_machine, database) -> None:
    till = make_machine()
    assert till.start_trial(client).status_code == 200
    assert refresh(client, till, "pospal-agent/1.0.0").status_code == 200
    assert recorded(database) == {till.machine_id: ("1.0.0", None)}

    assert refresh(client, till, "pospal-agent/1.1.0").status_code == 200
    assert recorded(database) == {till.machine_id: ("1.1.0", None)}

    failed = "1.2.0: exited with code 3 during its start check"
    assert refresh(client, till, "pospal-agent/1.1.0", failed).status_code == 200
    assert recorded(database) == {till.machine_id: ("1.1.0", failed)}


def test_a_refresh_the_server_refused_records_nothing(client, make_machine, database) -> None:
    till, stranger = make_machine(), make_machine()
    assert till.start_trial(client).status_code == 200
    # Someone without the machine's key claims it runs an old version: 401, nothing recorded.
    forged = refresh(client, till, "pospal-agent/0.9.0", key=stranger.key)
    assert forged.status_code == 401
    assert refresh(client, till, "curl/8").status_code == 200  # not an agent: nothing to record
    assert recorded(database) == {}


def test_admin_fleet_counts_terminals_per_version(client, make_machine, database) -> None:
    tills = [make_machine() for _ in range(3)]
    for i, till in enumerate(tills):
        assert till.start_trial(client).status_code == 200
        version = "1.1.0" if i else "1.0.0"
        assert refresh(client, till, f"pospal-agent/{version}").status_code == 200
    printed: list[Any] = []
    with database.transaction() as session:
        args = argparse.Namespace(entity="fleet", action="versions")
        assert admin.run(session, args, None, printed.append) == 0
        assert printed[0] == [
            {"version": "1.1.0", "terminals": 2, "update_failed": 0},
            {"version": "1.0.0", "terminals": 1, "update_failed": 0},
        ]
        listed = fleet.terminals(session)
    assert {t["machine_id"] for t in listed} == {t.machine_id for t in tills}
    assert {t["terminal_name"] for t in listed} == {"Till 1"}


def test_admin_fleet_keysets_says_which_terminals_still_trust_an_older_key_set(
    client, make_machine, database
) -> None:
    """Before retiring a token key, the operator waits until no terminal trusts a key set older than the
    one that lists its successor: `admin fleet keysets` counts terminals per reported version."""
    tills = [make_machine() for _ in range(3)]
    for till, keyset in zip(tills, ("2", "1", None), strict=True):
        assert till.start_trial(client).status_code == 200
        raw, headers = till.signed("/v1/refresh", {"fingerprint": till.fp, "known_kids": []})
        headers["User-Agent"] = "pospal-agent/1.1.0"
        if keyset is not None:
            headers["X-POSPal-Keyset"] = keyset
        assert client.post("/v1/refresh", content=raw, headers=headers).status_code == 200
    printed: list[Any] = []
    with database.transaction() as session:
        args = argparse.Namespace(entity="fleet", action="keysets")
        assert admin.run(session, args, None, printed.append) == 0
        assert printed[0] == [
            {"keyset_version": 2, "terminals": 1},
            {"keyset_version": 1, "terminals": 1},
            {"keyset_version": None, "terminals": 1},
        ]
        by_machine = {t["machine_id"]: t["keyset_version"] for t in fleet.terminals(session)}
    assert by_machine == {tills[0].machine_id: 2, tills[1].machine_id: 1, tills[2].machine_id: None}


def test_the_owners_terminal_list_and_admin_show_each_terminals_agent_version(
    client, make_machine, database, seed_subscription, login_code, clock
) -> None:
    seed_subscription(email="owner@cafe.gr", seats=2)
    bar, terrace = make_machine(terminal_name="Bar"), make_machine(terminal_name="Terrace")
    for till in (bar, terrace):
        assert till.activate(client, "owner@cafe.gr", login_code(client, "owner@cafe.gr")).status_code == 200
    assert refresh(client, bar, "pospal-agent/1.2.0").status_code == 200
    listed = bar.post(client, "/v1/terminals", {}).json()["terminals"]
    assert {t["terminal_name"]: t["agent_version"] for t in listed} == {"Bar": "1.2.0", "Terrace": None}
    printed: list[Any] = []
    with database.transaction() as session:
        args = argparse.Namespace(entity="customer", action="show", email="owner@cafe.gr")
        assert admin.run(session, args, clock.now(), printed.append) == 0
    machines = [m for lic in printed[0]["licenses"] for m in lic["machines"]]
    assert {m["terminal_name"]: m["agent_version"] for m in machines} == {"Bar": "1.2.0", "Terrace": None}
