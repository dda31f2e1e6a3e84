"""The cached state's field types (agent/vault/statefields.py): wrong types cost the field, never the
start."""

from __future__ import annotations

from agent.vault.statefields import PRIVILEGED, clean

GOOD = {
    "token": "a.b.c",
    "machine_id": "m_1",
    "last_sync": 1_700_000_000,
    "provisional_trial_started": None,
    "high_water": 1_700_000_100,
    "token_iat": 1_700_000_000,
    "clock_rolled_back": False,
    "terminal_name": "Bar",
    "language": "el",
    "trial_email": "a@b.gr",
    "fingerprint": {"mac": "ab" * 32},
    "keyset_updates": ["x.y.z"],
    "checkout": {"id": "cs_1", "email": "a@b.gr"},
}


def test_a_good_sealed_state_is_kept_whole():
    assert clean(GOOD, sealed=True) == (GOOD, [])


def test_the_type_confusions_of_the_issue_drop_only_their_fields():
    bad = {
        **GOOD,
        "keyset_updates": 5,
        "high_water": 1e308,
        "last_sync": -(10**20),
        "clock_rolled_back": "no",
        "fingerprint": {"mac": 5},
        "machine_id": "../../etc",
        "checkout": [1],
    }
    data, dropped = clean(bad, sealed=True)
    assert dropped == sorted(
        [
            "keyset_updates",
            "high_water",
            "last_sync",
            "clock_rolled_back",
            "fingerprint",
            "machine_id",
            "checkout",
        ]
    )
    assert data["token"] == "a.b.c" and data["terminal_name"] == "Bar"


def test_booleans_are_not_times():
    assert clean({"last_sync": True}, sealed=True) == ({}, ["last_sync"])


def test_an_unsealed_state_keeps_identity_but_nothing_that_licenses():
    data, dropped = clean({**GOOD, "something_new": 1}, sealed=False)
    assert not set(data) & PRIVILEGED and "something_new" not in data
    assert data["machine_id"] == "m_1" and data["fingerprint"] == GOOD["fingerprint"]
    assert "token" in dropped and "provisional_trial_started" in dropped


def test_unknown_fields_of_a_sealed_state_pass_through():
    assert (
        clean({"key_anchor": {"mid": "m", "name": "n", "hash": "h"}, "future_field": [1]}, sealed=True)[1]
        == []
    )
