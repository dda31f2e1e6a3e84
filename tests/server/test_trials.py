"""POST /v1/trials: 30 days from first seen; a reinstall or one changed part cannot restart it."""

from __future__ import annotations

from datetime import timedelta

from tests.server.conftest import token_claims


def trial_end(response) -> int:
    assert response.status_code == 200, response.text
    return token_claims(response.json()["token"])["trial_end"]


def test_trial_lasts_30_days_from_first_seen(client, make_machine, clock):
    machine = make_machine()
    response = machine.start_trial(client)
    claims = token_claims(response.json()["token"])
    assert (claims["kind"], claims["status"], claims["plan"]) == ("trial", "trialing", "trial")
    assert claims["trial_end"] == int((clock.now() + timedelta(days=30)).timestamp())
    assert claims["sub"].startswith("trial_")
    assert claims["mid"] == machine.machine_id


def test_reinstall_with_a_new_machine_key_finds_the_same_trial(client, make_machine, clock):
    first = make_machine()
    end = trial_end(first.start_trial(client))
    clock.advance(days=10)
    reinstalled = make_machine(fp=dict(first.fp))
    assert trial_end(reinstalled.start_trial(client)) == end


def test_one_changed_component_still_finds_the_trial(client, make_machine, clock):
    first = make_machine()
    end = trial_end(first.start_trial(client))
    clock.advance(days=29)
    changed = make_machine(fp={**first.fp, "disk_serial": "ab" * 32})
    assert trial_end(changed.start_trial(client)) == end


def test_a_different_computer_gets_its_own_trial(client, make_machine, clock):
    end = trial_end(make_machine().start_trial(client))
    clock.advance(days=3)
    assert trial_end(make_machine().start_trial(client)) == end + 3 * 86400


def test_provisional_offline_start_counts_but_at_most_three_days_back(client, make_machine, clock):
    now = clock.now()
    two_days_ago = (now - timedelta(days=2)).isoformat()
    assert trial_end(make_machine().start_trial(client, provisional_started_at=two_days_ago)) == int(
        (now + timedelta(days=28)).timestamp()
    )
    a_year_ago = (now - timedelta(days=365)).isoformat()
    assert trial_end(make_machine().start_trial(client, provisional_started_at=a_year_ago)) == int(
        (now + timedelta(days=27)).timestamp()
    )


def test_expired_trial_refresh_still_says_when_it_ended(client, make_machine, clock):
    machine = make_machine()
    end = trial_end(machine.start_trial(client))
    clock.advance(days=31)
    claims = token_claims(machine.refresh(client).json()["token"])
    assert claims["trial_end"] == end < claims["iat"]


def test_trial_request_must_be_signed_by_the_key_in_the_body(client, make_machine):
    machine, other = make_machine(), make_machine()
    response = machine.post(
        client, "/v1/trials", {**machine.identity(), "machine_public_key": other.public_key}, machine_id=None
    )
    assert response.status_code == 401


def test_bad_public_key_is_invalid_request(client, make_machine):
    """A key that is not 32 bytes of base64url is malformed input: 422 invalid_request, naming the field."""
    machine = make_machine()
    response = machine.post(
        client, "/v1/trials", {**machine.identity(), "machine_public_key": "A" * 42}, machine_id=None
    )
    assert response.status_code == 422
    assert response.json() == {
        "error": "invalid_request",
        "message": "machine_public_key is not an Ed25519 public key.",
    }


def test_a_well_formed_key_that_did_not_sign_the_request_is_bad_signature(client, make_machine):
    """32 well-formed bytes of another key: the request's signature does not verify with it (401)."""
    machine = make_machine()
    response = machine.post(
        client, "/v1/trials", {**machine.identity(), "machine_public_key": "A" * 43}, machine_id=None
    )
    assert response.status_code == 401
    assert response.json()["error"] == "bad_signature"


def test_an_email_given_at_trial_start_gets_the_reminder_three_days_before_the_end(
    client, make_machine, clock, database
):
    from server.reminders import enqueue_trial_reminders
    from tests.server.conftest import outbox_rows

    machine = make_machine()
    assert machine.start_trial(client, email=" Owner@Beach-Bar.GR ", locale="el").status_code == 200
    assert enqueue_trial_reminders(database, clock) == 0  # 30 days left
    clock.advance(days=26)
    assert enqueue_trial_reminders(database, clock) == 0  # 4 days left
    clock.advance(days=1, seconds=1)
    assert enqueue_trial_reminders(database, clock) == 1
    assert enqueue_trial_reminders(database, clock) == 0
    (row,) = outbox_rows(database, template="trial_ending")
    assert (row.to_email, row.locale) == ("owner@beach-bar.gr", "el")


def test_a_bad_trial_email_is_refused_and_starts_nothing(client, make_machine, database):
    from sqlalchemy import func, select

    from server.models import Trial

    response = make_machine().start_trial(client, email="not an email")
    assert response.status_code == 422
    with database.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Trial)) == 0


def test_one_address_on_many_trials_gets_one_reminder_and_subscribers_get_none(
    client, make_machine, clock, database, seed_subscription
):
    from server.reminders import enqueue_trial_reminders
    from tests.server.conftest import outbox_rows

    for _ in range(3):
        assert make_machine().start_trial(client, email="someone@cafe.gr").status_code == 200
    seed_subscription(email="payer@cafe.gr")
    assert make_machine().start_trial(client, email="payer@cafe.gr").status_code == 200
    clock.advance(days=28)
    assert enqueue_trial_reminders(database, clock) == 1
    assert [r.to_email for r in outbox_rows(database, template="trial_ending")] == ["someone@cafe.gr"]


# ------------------------------------------------------------------- hardware, not what was sent


def test_single_component_trial_request_refused(client, make_machine, clock):
    first = make_machine()
    trial_end(first.start_trial(client))
    # A changed /etc/machine-id sent alone used to look like a brand-new computer.
    lone = make_machine(fp={"machine_id": "ab" * 32})
    response = lone.start_trial(client)
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"
    assert "at least 2" in response.json()["message"]
    assert lone.machine_id is None


def test_windows_trial_needs_three_components(client, make_machine):
    two = make_machine(fp={"machine_guid": "a1" * 32, "smbios_uuid": "b2" * 32})
    assert two.start_trial(client).status_code == 422
    three = make_machine(fp={"machine_guid": "a1" * 32, "smbios_uuid": "b2" * 32, "mac": "c3" * 32})
    assert three.start_trial(client).status_code == 200


def test_shared_components_alone_do_not_name_a_platform(client, make_machine):
    response = make_machine(fp={"disk_serial": "a1" * 32, "mac": "b2" * 32}).start_trial(client)
    assert response.status_code == 422


def test_unknown_component_name_refused(client, make_machine):
    padded = make_machine()
    padded.fp = {**padded.fp, "favourite_colour": "ab" * 32}
    response = padded.start_trial(client)
    assert response.status_code == 422
    assert "favourite_colour" in response.json()["message"]


def test_any_strong_component_finds_the_earlier_trial(client, make_machine, clock):
    first = make_machine()
    end = trial_end(first.start_trial(client))
    clock.advance(days=20)
    # Everything changed but the board serial: still the same computer, still the same trial.
    other = make_machine()
    other.fp = {**other.fp, "board_serial": first.fp["board_serial"]}
    assert trial_end(other.start_trial(client)) == end


def test_a_shared_mac_alone_does_not_find_a_trial(client, make_machine, clock):
    first = make_machine()
    end = trial_end(first.start_trial(client))
    clock.advance(days=2)
    clone_of_image = make_machine()
    clone_of_image.fp = {**clone_of_image.fp, "mac": first.fp["mac"]}
    assert trial_end(clone_of_image.start_trial(client)) == end + 2 * 86400


def test_ipv6_trial_limit_per_64(app, make_machine):
    from fastapi.testclient import TestClient

    from server.api.trials import TRIALS_PER_HOUR_PER_IP

    def trial_from(address: str) -> int:
        with TestClient(app, client=(address, 40000)) as client:
            return make_machine().start_trial(client).status_code

    # Every trial from its own address, all in one /64: one customer line, one budget.
    statuses = [trial_from(f"2001:db8:1:2::{n:x}") for n in range(1, TRIALS_PER_HOUR_PER_IP + 2)]
    assert statuses[:-1] == [200] * TRIALS_PER_HOUR_PER_IP
    assert statuses[-1] == 429
    assert trial_from("2001:db8:1:3::1") == 200  # the next /64 is someone else


def _imported_trial(database, clock, hardware_id: str, *, days_ago: int, length: int = 30) -> None:
    """What `pospal-server import-pospal1` records for an old trial still running on the old server."""
    from server.models import Pospal1Trial

    first = clock.now() - timedelta(days=days_ago)
    with database.transaction() as session:
        session.add(
            Pospal1Trial(
                hardware_hash=hardware_id,
                first_run_at=first,
                ends_at=first + timedelta(days=length),
                imported_at=clock.now(),
            )
        )


OLD_ID = "ab" * 32


def test_an_imported_old_trial_keeps_its_remaining_days(client, make_machine, clock, database):
    """An old till 20 days into its old trial gets the 10 days left, not a fresh 30, nor a refusal."""
    _imported_trial(database, clock, OLD_ID, days_ago=20)
    response = make_machine().start_trial(client, pospal1_hardware_id=OLD_ID)
    claims = token_claims(response.json()["token"])
    assert claims["status"] == "trialing"
    assert claims["trial_end"] == int((clock.now() + timedelta(days=10)).timestamp())


def test_a_reinstall_sending_the_old_id_again_finds_the_same_trial(client, make_machine, clock, database):
    _imported_trial(database, clock, OLD_ID, days_ago=5)
    end = trial_end(make_machine().start_trial(client, pospal1_hardware_id=OLD_ID))
    clock.advance(days=3)
    assert trial_end(make_machine().start_trial(client, pospal1_hardware_id=OLD_ID)) == end


def test_an_old_id_the_import_did_not_record_starts_a_fresh_trial(client, make_machine, clock, database):
    _imported_trial(database, clock, OLD_ID, days_ago=5)
    response = make_machine().start_trial(client, pospal1_hardware_id="cd" * 32)
    assert trial_end(response) == int((clock.now() + timedelta(days=30)).timestamp())


def test_a_pc_already_on_a_new_trial_keeps_the_earlier_start(client, make_machine, clock, database):
    """The earliest trial wins, as for any PC: the old one started first, so its end date holds."""
    _imported_trial(database, clock, OLD_ID, days_ago=25)
    machine = make_machine()
    trial_end(machine.start_trial(client))
    assert trial_end(machine.start_trial(client, pospal1_hardware_id=OLD_ID)) == int(
        (clock.now() + timedelta(days=5)).timestamp()
    )


def test_an_imported_trial_that_has_since_ended_gives_an_ended_trial(client, make_machine, clock, database):
    """Still one trial per PC: an old trial that ran out after the import is not started again."""
    _imported_trial(database, clock, OLD_ID, days_ago=2)
    clock.advance(days=29)
    response = make_machine().start_trial(client, pospal1_hardware_id=OLD_ID)
    claims = token_claims(response.json()["token"])
    assert claims["trial_end"] < claims["iat"]


def test_a_malformed_old_id_is_invalid_request(client, make_machine):
    response = make_machine().start_trial(client, pospal1_hardware_id="not-hex")
    assert response.status_code == 422
