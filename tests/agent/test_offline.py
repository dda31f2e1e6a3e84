"""Activation by file on the agent (agent/core/offline.py): the request file, and which license files it
takes."""

from __future__ import annotations

import json

import pytest

from agent.errors import LicenseFileRefused, Offline
from pospal_protocol import offline as wire
from pospal_protocol.tokens import Policy, encode_token
from pospal_protocol.trust import b64url_decode, b64url_encode
from tests.agent.test_service import Rig
from tests.agent.tokenkit import DAY, payload


@pytest.fixture
def rig(tmp_path, monkeypatch):
    monkeypatch.setenv("POSPAL_LANGUAGE", "en")
    return Rig(tmp_path)


def license_file(rig, svc, *, days: int = 40, **overrides) -> bytes:
    """A license file as the server signs it for this agent's machine key."""
    request = wire.read_request(svc.offline_request())
    now = int(rig.clock.now().timestamp())
    claims = payload(
        iat=now,
        mid="m_offline",
        fp=dict(request.fingerprint),
        period_end=now + (days - 7) * DAY,
        exp=now + days * DAY,
        policy={**Policy().to_claim(), "offline": True},
        mkey=request.machine_public_key,
        terminal="Beach bar",
    )
    claims.update(overrides)
    token = encode_token(rig.cloud.key, rig.cloud.kid, claims)
    return wire.make_license(token, machine_id="m_offline", license_id="lic_0001")


def _snapshot(svc):
    return svc.status(), (svc.settings.data_dir / "state.json").read_bytes() if (
        svc.settings.data_dir / "state.json"
    ).exists() else None


def test_the_request_file_holds_the_public_key_hashes_and_a_valid_signature_only(rig):
    svc = rig.service()
    data = svc.offline_request()
    request = wire.read_request(data)
    assert request.fingerprint == rig.fp.hashes() and request.terminal_name == "Bar 1"
    doc = json.loads(data)
    assert set(doc) == {
        "type",
        "v",
        "machine_public_key",
        "fingerprint",
        "terminal_name",
        "locale",
        "known_kids",
        "created",
        "nonce",
        "signature",
    }
    assert len(b64url_decode(doc["machine_public_key"])) == 32
    doc["terminal_name"] = "Other"
    with pytest.raises(wire.OfflineFileInvalid):
        wire.read_request(json.dumps(doc))


def test_a_license_file_makes_an_offline_license_that_needs_no_sync_until_its_end(rig):
    svc = rig.service()
    status = svc.import_offline_license(license_file(rig, svc, days=40))
    assert (status.license_state, status.reason, status.licensed) == (
        "licensed_active",
        "offline_license",
        True,
    )
    assert status.offline_license and status.to_dict()["offline_license"] is True
    assert status.days_left == 40 and "Offline license" in status.message
    rig.cloud.online = False
    rig.clock.advance(20 * DAY)  # past the 14-day lease of an online token, and every sync fails
    with pytest.raises(Offline):
        svc.sync_now()
    status = svc.refresh_status()
    assert status.licensed and status.reason == "offline_license" and status.days_left == 20
    rig.clock.advance(20 * DAY)
    assert svc.refresh_status().reason == "offline_expired"


def test_it_survives_a_restart(rig):
    svc = rig.service()
    svc.import_offline_license(license_file(rig, svc))
    again = rig.service()
    assert again.status().reason == "offline_license" and again.status().machine_id == "m_offline"


def test_renewal_with_a_newer_file_and_an_older_one_refused(rig):
    svc = rig.service()
    old = license_file(rig, svc, days=30)
    rig.clock.advance(DAY)
    svc.import_offline_license(license_file(rig, svc, days=60))
    before = _snapshot(svc)
    with pytest.raises(LicenseFileRefused) as refused:
        svc.import_offline_license(old)
    assert refused.value.code == "older" and _snapshot(svc) == before


def test_a_later_online_sync_takes_over(rig):
    svc = rig.service()
    svc.import_offline_license(license_file(rig, svc))
    svc.request_code("owner@cafe.example", "activate")
    status = svc.activate("owner@cafe.example", rig.cloud.codes["owner@cafe.example"])
    assert status.reason == "active" and not status.offline_license


@pytest.mark.parametrize(
    "case",
    [
        "other machine key",
        "other hardware",
        "edited",
        "not offline",
        "ended",
        "untrusted key",
        "not a license file",
    ],
)
def test_refused_files_change_nothing(rig, case):
    svc = rig.service()
    svc.start_trial()
    before = _snapshot(svc)
    if case == "other machine key":
        data = license_file(rig, svc, mkey=b64url_encode(b"\x01" * 32))
    elif case == "other hardware":
        data = license_file(rig, svc, fp={name: "0" * 64 for name in rig.fp.hashes()})
    elif case == "edited":
        doc = json.loads(license_file(rig, svc, days=30))
        head, body, sig = doc["token"].split(".")
        claims = json.loads(b64url_decode(body))
        claims["exp"] += 365 * DAY
        doc["token"] = ".".join((head, b64url_encode(json.dumps(claims).encode()), sig))
        data = json.dumps(doc).encode()
    elif case == "not offline":
        data = license_file(rig, svc, policy=Policy().to_claim())
    elif case == "ended":
        data = license_file(rig, svc, days=2)
        rig.clock.advance(3 * DAY)
        svc.refresh_status()
        before = _snapshot(svc)
    elif case == "untrusted key":
        from tests.agent.tokenkit import Signer

        doc = json.loads(license_file(rig, svc))
        doc["token"] = Signer().sign(**json.loads(b64url_decode(doc["token"].split(".")[1])))
        data = json.dumps(doc).encode()
    else:
        data = b"PK\x03\x04 not json"
    with pytest.raises(LicenseFileRefused) as refused:
        svc.import_offline_license(data)
    expected = {
        "other machine key": "other_machine",
        "other hardware": "other_machine",
        "ended": "expired",
        "not a license file": "unreadable",
    }.get(case, "invalid")
    assert refused.value.code == expected
    assert _snapshot(svc) == before


def test_refusals_speak_the_agents_language(rig, monkeypatch):
    monkeypatch.setenv("POSPAL_LANGUAGE", "el")
    svc = rig.service()
    with pytest.raises(LicenseFileRefused, match="αρχείο"):
        svc.import_offline_license(b"{}")


def test_a_pc_clock_a_few_hours_behind_takes_the_file_but_not_one_a_day_behind(rig):
    """The clock rules apply: smaller skews are tolerated, a clock more than 24 h behind is not."""
    svc = rig.service()
    now = int(rig.clock.now().timestamp())
    hours_ahead, day_ahead = now + 3 * 3600, now + DAY + 3600
    with pytest.raises(LicenseFileRefused) as refused:
        svc.import_offline_license(license_file(rig, svc, iat=day_ahead, nbf=day_ahead, srv=day_ahead))
    assert refused.value.code == "invalid" and svc.status().license_state == "license_missing"
    status = svc.import_offline_license(
        license_file(rig, svc, iat=hours_ahead, nbf=hours_ahead, srv=hours_ahead)
    )
    assert status.reason == "offline_license" and status.licensed
    assert rig.service().status().reason == "offline_license"  # and after a restart, clock still behind


@pytest.mark.parametrize(
    "names", [("machine_guid", "smbios_uuid", "baseboard_serial"), ("platform_uuid", "serial")]
)
def test_one_license_file_bound_to_another_platforms_components_imports_nowhere(rig, names):
    # The till's request was edited to carry component names this PC never reads and re-signed with its
    # machine key: nothing would be compared, so any PC given the key would take the file.
    svc = rig.service()
    svc.start_trial()
    before = _snapshot(svc)
    data = license_file(rig, svc, fp={name: "a" * 64 for name in names})
    with pytest.raises(LicenseFileRefused) as refused:
        svc.import_offline_license(data)
    assert refused.value.code == "other_machine" and _snapshot(svc) == before


def test_a_file_that_compares_too_few_components_is_refused(rig):
    svc = rig.service()
    svc.start_trial()
    own = rig.fp.hashes()
    # Two of this PC's components (of at least three needed) and two it does not read.
    fp = {**dict(list(own.items())[:2]), "machine_guid": "a" * 64, "smbios_uuid": "b" * 64}
    with pytest.raises(LicenseFileRefused) as refused:
        svc.import_offline_license(license_file(rig, svc, fp=fp))
    assert refused.value.code == "other_machine"


def test_giving_a_license_file_up_forgets_it_and_writes_a_signed_deactivation_for_that_file(rig):
    svc = rig.service()
    svc.import_offline_license(license_file(rig, svc, days=40))
    held = svc._claims
    data = svc.offline_deactivation()
    proof = wire.read_deactivation(data)
    assert (proof.machine_id, proof.license_iat) == ("m_offline", held.iat)
    assert proof.machine_public_key == wire.read_request(svc.offline_request()).machine_public_key
    assert svc.status().licensed is False
    with pytest.raises(LicenseFileRefused):  # nothing left to give up
        svc.offline_deactivation()
    doc = json.loads(data)
    doc["license_iat"] += 1  # an edited file does not verify
    with pytest.raises(wire.OfflineFileInvalid):
        wire.read_deactivation(json.dumps(doc))


def test_a_given_up_license_file_is_not_revived_by_importing_it_again_or_restoring_the_state(rig):
    svc = rig.service()
    data = license_file(rig, svc, days=40)
    svc.import_offline_license(data)
    state = svc.settings.data_dir / "state.json"
    copy = state.read_bytes()
    svc.offline_deactivation()
    with pytest.raises(LicenseFileRefused) as refused:
        svc.import_offline_license(data)
    assert refused.value.code == "older" and not svc.status().licensed
    state.write_bytes(copy)  # the sealed state from before the deactivation, put back
    again = rig.service()
    assert not again.status().licensed
    rig.clock.advance(DAY)  # a file the server issues later is taken
    assert again.import_offline_license(license_file(rig, again, days=40)).licensed
