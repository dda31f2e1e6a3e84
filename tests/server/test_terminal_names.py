"""Renaming terminals (issue 27, item 5): a till renames itself; the owner renames any of theirs.

Two tills both showed as `vm` (their host name): the owner must be able to tell them apart and rename them,
from the till itself or from the owner's terminal list; the new name is in the list and in the next token.
"""

from __future__ import annotations

from tests.server.conftest import token_claims
from tests.server.test_terminals import activated

RENAME = "/v1/terminals/rename"


def _names(client, machine) -> list[str]:
    return [t["terminal_name"] for t in machine.post(client, "/v1/terminals", {}).json()["terminals"]]


def test_a_till_renames_itself_and_its_next_token_carries_the_name(
    client, seed_subscription, login_code, make_machine
):
    bar, terrace = activated(client, seed_subscription, login_code, make_machine, names=("vm", "vm"))
    answer = bar.post(client, RENAME, {"machine_id": bar.machine_id, "terminal_name": " Bar "})
    assert answer.status_code == 200, answer.text
    assert [t["terminal_name"] for t in answer.json()["terminals"]] == ["Bar", "vm"]
    assert token_claims(bar.refresh(client).json()["token"])["terminal"] == "Bar"
    assert _names(client, terrace) == ["Bar", "vm"]


def test_a_till_cannot_rename_another_without_the_owner_and_the_owner_can(
    client, seed_subscription, login_code, make_machine
):
    bar, terrace = activated(client, seed_subscription, login_code, make_machine, names=("vm", "vm"))
    body = {"machine_id": terrace.machine_id, "terminal_name": "Terrace"}
    refused = bar.post(client, RENAME, body)
    assert refused.status_code == 403 and refused.json()["error"] == "owner_proof_required"
    proof = login_code(client, "owner@cafe.gr", "owner")
    assert bar.post(client, "/v1/owner", {"email": "owner@cafe.gr", "code": proof}).status_code == 200
    assert bar.post(client, RENAME, body).status_code == 200
    assert token_claims(terrace.refresh(client).json()["token"])["terminal"] == "Terrace"
    # From any PC with the owner's e-mail and an unspent owner's code, spent by the rename.
    code = login_code(client, "owner@cafe.gr", "owner")
    by_mail = {"email": "owner@cafe.gr", "code": code, "machine_id": bar.machine_id, "terminal_name": "Bar"}
    assert client.post(RENAME, json=by_mail).status_code == 200
    again = client.post(RENAME, json={**by_mail, "terminal_name": "Bar 2"})
    assert again.status_code == 401
    assert _names(client, bar) == ["Bar", "Terrace"]


def test_empty_hostile_or_foreign_names_and_ids_are_refused(
    client, seed_subscription, login_code, make_machine
):
    bar, _ = activated(client, seed_subscription, login_code, make_machine, names=("vm", "vm"))
    for name in ("", "   ", "Bar\x1b[31m", "Bar\x00", "x" * 101):
        answer = bar.post(client, RENAME, {"machine_id": bar.machine_id, "terminal_name": name})
        assert answer.status_code == 422, name
    seed_subscription(email="rival@bar.gr")
    rival = make_machine()
    rival.activate(client, "rival@bar.gr", login_code(client, "rival@bar.gr"))
    stranger = rival.post(client, RENAME, {"machine_id": bar.machine_id, "terminal_name": "Mine"})
    assert stranger.status_code == 404
    assert _names(client, bar) == ["vm", "vm"]
