"""What the refresh path keeps between requests follows the database and the key directory at once.

The machine's public key is decoded once per process (server.api.refresh.public_key_of) and the
published key-set document is re-read only when its file changes (server.signing.published_keyset):
neither may answer from an old copy.
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from server.models import Machine


def test_a_machine_whose_stored_key_changed_is_checked_against_the_new_key(client, make_machine, database):
    machine = make_machine()
    assert machine.start_trial(client).status_code == 200
    assert machine.refresh(client).status_code == 200  # the old key is now decoded and kept
    old_key = machine.key
    machine.key = Ed25519PrivateKey.generate()
    with database.transaction() as session:
        session.get(Machine, machine.machine_id).public_key = machine.public_key
    refused = machine.refresh(client, key=old_key)
    assert refused.status_code == 401
    assert refused.json()["error"] == "bad_signature"
    assert machine.refresh(client).status_code == 200


def test_a_published_keyset_is_served_from_the_next_refresh_and_stops_when_removed(client, app, make_machine):
    machine = make_machine()
    machine.start_trial(client)
    path = app.state.services.keys.key_dir / "keyset.json"
    assert machine.refresh(client).json()["keyset"] is None
    path.write_text('{"version": 1}')
    assert machine.refresh(client).json()["keyset"] == '{"version": 1}'
    # Same size, rewritten in place: still a new file for the server.
    path.write_text('{"version": 2}')
    assert machine.refresh(client).json()["keyset"] == '{"version": 2}'
    path.unlink()
    assert machine.refresh(client).json()["keyset"] is None


def test_a_settled_keyset_rewritten_in_place_with_its_old_times_is_still_read_again(tmp_path):
    from server.signing import SigningKeys

    keys = SigningKeys(tmp_path / "keys")
    path = tmp_path / "keys" / "keyset.json"
    path.parent.mkdir()
    path.write_text('{"version": 1}')
    old = path.stat().st_mtime_ns - 3_600_000_000_000
    os.utime(path, ns=(old, old))
    assert keys.published_keyset() == '{"version": 1}'
    with path.open("r+") as handle:  # same inode, same size, same modification time set back
        handle.write('{"version": 2}')
    os.utime(path, ns=(old, old))
    assert keys.published_keyset() == '{"version": 2}'


def test_one_batch_looks_at_the_keyset_file_once_and_the_next_batch_sees_a_new_one(tmp_path):
    from server.signing import SigningKeys

    keys = SigningKeys(tmp_path / "keys")
    path = tmp_path / "keys" / "keyset.json"
    path.parent.mkdir()
    with keys.one_look():
        assert keys.published_keyset() is None
        path.write_text('{"version": 1}')  # published while the batch is in flight
        assert keys.published_keyset() is None  # the batch's refreshes all answer alike
    with keys.one_look():
        assert keys.published_keyset() == '{"version": 1}'
        path.unlink()
        assert keys.published_keyset() == '{"version": 1}'
    assert keys.published_keyset() is None  # outside a batch: every call looks
