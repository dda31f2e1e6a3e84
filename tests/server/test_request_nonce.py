"""Every token the server signs for a machine-signed request carries that request's nonce (`rn`), so an
agent can tell a fresh answer from an old genuine token replayed to it (issue 12)."""

from __future__ import annotations

from tests.server.conftest import token_claims


def _nonce(headers: dict[str, str]) -> str:
    return headers["X-POSPal-Nonce"]


def test_trial_token_carries_the_request_nonce(client, make_machine):
    machine = make_machine()
    raw, headers = machine.signed("/v1/trials", machine.identity(), machine_id=None)
    response = client.post("/v1/trials", content=raw, headers=headers)
    assert response.status_code == 200, response.text
    assert token_claims(response.json()["token"])["rn"] == _nonce(headers)


def test_each_refresh_token_carries_its_own_request_nonce(client, make_machine, clock):
    machine = make_machine()
    assert machine.start_trial(client).status_code == 200
    seen = []
    for _ in range(2):
        clock.advance(hours=6)
        raw, headers = machine.signed("/v1/refresh", {"fingerprint": machine.fp, "known_kids": []})
        response = client.post("/v1/refresh", content=raw, headers=headers)
        assert response.status_code == 200, response.text
        seen.append((token_claims(response.json()["token"])["rn"], _nonce(headers)))
    assert [rn for rn, _ in seen] == [nonce for _, nonce in seen]
    assert seen[0][0] != seen[1][0]


def test_a_rebinding_refresh_also_carries_the_nonce(client, make_machine):
    machine = make_machine()
    assert machine.start_trial(client).status_code == 200
    changed = dict(machine.fp)
    changed[sorted(changed)[-1]] = "f" * 64  # one replaced part: the slower route that re-binds
    raw, headers = machine.signed("/v1/refresh", {"fingerprint": changed, "known_kids": []})
    response = client.post("/v1/refresh", content=raw, headers=headers)
    assert response.status_code == 200, response.text
    assert token_claims(response.json()["token"])["rn"] == _nonce(headers)


def test_activation_token_carries_the_request_nonce(client, make_machine, seed_subscription, login_code):
    seed_subscription(email="owner@cafe.gr", seats=2)
    machine = make_machine()
    body = {**machine.identity(), "email": "owner@cafe.gr", "code": login_code(client, "owner@cafe.gr")}
    raw, headers = machine.signed("/v1/activations", body, machine_id=None)
    response = client.post("/v1/activations", content=raw, headers=headers)
    assert response.status_code == 200, response.text
    assert token_claims(response.json()["token"])["rn"] == _nonce(headers)
