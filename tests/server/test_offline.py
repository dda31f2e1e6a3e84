"""The `/offline` page: e-mail code, request file upload, seats, and the license file it answers."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from pospal_protocol.offline import make_request
from pospal_protocol.tokens import verify_token
from pospal_protocol.trust import TrustedKeys
from server.api.offline import CSRF_COOKIE
from server.models import AuditLog, LoginCode, Machine
from tests.server.conftest import outbox_rows

EMAIL = "owner@cafe.gr"


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def _request_file(machine, clock, **kw) -> bytes:
    return make_request(
        machine.key,
        machine.fp,
        terminal_name=machine.terminal_name,
        locale=kw.pop("locale", "en"),
        created=int(clock.now().timestamp()),
        **kw,
    )


def _round_trip(client, database, machine, clock, *, lang="en", file=None, code=None):
    """Open the page, ask for a code, upload the request file: the final response."""
    page = client.get(f"/offline?lang={lang}")
    assert page.status_code == 200 and CSRF_COOKIE in page.cookies
    sent = client.post("/offline/code", data={"email": EMAIL, "csrf": _csrf(page.text), "lang": lang})
    assert sent.status_code == 200, sent.text
    if code is None:
        rows = outbox_rows(database, to=EMAIL, template="activation_code")
        code = str(rows[-1].context["code"])
    upload = file if file is not None else _request_file(machine, clock)
    return client.post(
        "/offline/license",
        data={"email": EMAIL, "code": code, "csrf": _csrf(sent.text), "lang": lang},
        files={"request": ("pospal-activation-request.json", upload, "application/json")},
    )


def _trusted(client) -> TrustedKeys:
    return TrustedKeys.from_jwks(client.get("/v1/keys").json())


def _machines(database) -> int:
    with database.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(Machine)))


def test_owner_gets_a_license_file_bound_to_the_machine_until_period_end_plus_payment_grace(
    client, database, seed_subscription, make_machine, clock
):
    seed_subscription(email=EMAIL, seats=1, period_days=30)
    machine = make_machine(terminal_name="Beach bar")
    answer = _round_trip(client, database, machine, clock)
    assert answer.status_code == 200, answer.text
    assert "attachment" in answer.headers["content-disposition"]
    doc = json.loads(answer.content)
    claims = verify_token(doc["token"], _trusted(client), clock.now(), check_exp=True)
    assert claims.policy.offline is True and claims.raw["mkey"] == machine.public_key
    assert claims.fp == machine.fp and claims.mid == doc["machine_id"] and claims.terminal == "Beach bar"
    assert claims.exp == claims.period_end + claims.policy.payment_grace_s
    with database.transaction() as session:
        row = session.get(Machine, doc["machine_id"])
        assert row.offline_until is not None and int(row.offline_until.timestamp()) == claims.exp
        actions = {a.action for a in session.scalars(select(AuditLog).where(AuditLog.machine_id == row.id))}
    assert {"machine.activated", "machine.offline_license"} <= actions


def test_renewal_is_the_same_round_trip_and_takes_no_second_seat(
    client, database, seed_subscription, make_machine, clock
):
    seed_subscription(email=EMAIL, seats=1)
    machine = make_machine()
    first = json.loads(_round_trip(client, database, machine, clock).content)
    clock.advance(3600)
    again = _round_trip(client, database, machine, clock)
    assert again.status_code == 200, again.text
    assert json.loads(again.content)["machine_id"] == first["machine_id"] and _machines(database) == 1


def test_an_over_full_plan_is_refused_listing_the_terminals_and_nothing_changes(
    client, database, seed_subscription, make_machine, clock, login_code
):
    seed_subscription(email=EMAIL, seats=1)
    online = make_machine(terminal_name="Till 1")
    assert online.activate(client, EMAIL, login_code(client, EMAIL)).status_code == 200
    before = _machines(database)
    answer = _round_trip(client, database, make_machine(terminal_name="Beach"), clock)
    assert answer.status_code == 409 and "Till 1" in answer.text
    assert answer.headers["content-type"].startswith("text/html")
    assert _machines(database) == before
    with database.transaction() as session:  # the code was not used up by the refused request
        newest = session.scalars(select(LoginCode).order_by(LoginCode.id.desc())).first()
        assert newest.used_at is None


def test_an_edited_request_file_is_refused(client, database, seed_subscription, make_machine, clock):
    seed_subscription(email=EMAIL, seats=2)
    machine = make_machine()
    doc = json.loads(_request_file(machine, clock))
    doc["fingerprint"]["mac"] = "0" * 64  # claim another computer's hardware
    answer = _round_trip(client, database, machine, clock, file=json.dumps(doc).encode())
    assert answer.status_code == 422 and "signature" in answer.text
    assert _machines(database) == 0


def test_raw_values_do_not_fit_the_request_format(make_machine, clock):
    import pytest

    from pospal_protocol.errors import OfflineFileInvalid

    machine = make_machine()
    with pytest.raises(OfflineFileInvalid):
        make_request(machine.key, {"mac": "00:11:22:33:44:55"}, terminal_name=None, locale="en", created=0)


def test_a_wrong_code_is_refused(client, database, seed_subscription, make_machine, clock):
    seed_subscription(email=EMAIL, seats=1)
    answer = _round_trip(client, database, make_machine(), clock, code="000000")
    assert answer.status_code == 401 and _machines(database) == 0


def test_forms_without_the_page_token_or_from_another_site_are_refused(client, database, seed_subscription):
    seed_subscription(email=EMAIL, seats=1)
    page = client.get("/offline")
    token = _csrf(page.text)
    forged = client.post("/offline/code", data={"email": EMAIL, "csrf": "1.x.y"})
    assert forged.status_code == 403
    cross = client.post(
        "/offline/code", data={"email": EMAIL, "csrf": token}, headers={"Origin": "https://evil.example"}
    )
    assert cross.status_code == 403
    client.cookies.clear()
    no_cookie = client.post("/offline/code", data={"email": EMAIL, "csrf": token})
    assert no_cookie.status_code == 403
    assert outbox_rows(database, to=EMAIL, template="activation_code") == []


def test_an_old_page_token_is_refused(client, database, seed_subscription, clock):
    seed_subscription(email=EMAIL, seats=1)
    token = _csrf(client.get("/offline").text)
    clock.advance(int(timedelta(hours=3).total_seconds()))
    assert client.post("/offline/code", data={"email": EMAIL, "csrf": token}).status_code == 403


def test_the_page_speaks_greek_and_the_code_email_is_greek(client, database, seed_subscription, clock):
    seed_subscription(email=EMAIL, seats=1)
    page = client.get("/offline", headers={"Accept-Language": "el-GR,el;q=0.9"})
    assert "Ενεργοποίηση" in page.text
    sent = client.post("/offline/code", data={"email": EMAIL, "csrf": _csrf(page.text), "lang": "el"})
    assert "κωδικός" in sent.text
    assert outbox_rows(database, to=EMAIL, template="activation_code")[-1].locale == "el"


def test_values_shown_are_escaped(client, seed_subscription):
    page = client.get("/offline")
    sent = client.post("/offline/code", data={"email": "<script>@x.gr", "csrf": _csrf(page.text)})
    assert "<script>" not in sent.text


def _signed_request(machine, clock, **fields) -> bytes:
    """A request file signed by the machine key with any fields (what an edited-then-re-signed file is)."""
    from pospal_protocol import offline as wire
    from pospal_protocol.trust import b64url_encode

    doc = json.loads(_request_file(machine, clock))
    doc.update(fields)
    doc.pop("signature")
    doc["signature"] = b64url_encode(machine.key.sign(wire._signing_input(doc)))
    return json.dumps(doc).encode()


@pytest.mark.parametrize("name", ["Bar\x1b[31m", "Bar\x00", "Bar\u009b2J", "Bar\u202e"])
def test_control_characters_in_a_request_files_terminal_name_got_http_500(
    client, database, seed_subscription, make_machine, clock, name
):
    seed_subscription(email=EMAIL, seats=1)
    machine = make_machine()
    edited = _signed_request(machine, clock, terminal_name=name)
    answer = _round_trip(client, database, machine, clock, file=edited)
    assert answer.status_code == 422 and "terminal name" in answer.text
    assert answer.headers["content-type"].startswith("text/html") and _machines(database) == 0


@pytest.mark.parametrize("name", ["Bar\x1b[31m", "Bar\u009b2J", "Bar\u202e"])
def test_control_characters_in_a_terminal_name_are_refused_by_the_json_api(
    client, seed_subscription, make_machine, login_code, name
):
    seed_subscription(email=EMAIL, seats=1)
    machine = make_machine(terminal_name=name)
    answer = machine.activate(client, EMAIL, login_code(client, EMAIL))
    assert answer.status_code == 422 and answer.json()["problems"][0]["field"] == "terminal_name"


@pytest.mark.parametrize(
    "fp",
    [
        # A Linux till's request edited to carry Windows names beside its own, re-signed with its key.
        {"machine_guid": "a" * 64, "smbios_uuid": "b" * 64, "machine_id": "c" * 64, "board_serial": "d" * 64},
        {"made_up": "a" * 64, "machine_id": "c" * 64, "product_uuid": "e" * 64},  # an unknown name
        {"machine_id": "c" * 64},  # one component: below the platform's minimum
        {"disk_serial": "c" * 64, "mac": "d" * 64},  # names no platform
    ],
)
def test_one_license_file_for_many_pcs_by_an_edited_fingerprint_is_refused_like_online(
    client, database, seed_subscription, make_machine, clock, login_code, fp
):
    seed_subscription(email=EMAIL, seats=2)
    machine = make_machine()
    edited = _signed_request(machine, clock, fingerprint=fp)
    answer = _round_trip(client, database, machine, clock, file=edited)
    assert answer.status_code == 422 and _machines(database) == 0
    online = make_machine(fp=fp).activate(client, EMAIL, login_code(client, EMAIL))
    assert online.status_code == 422  # the same refusal as an online activation


def test_a_license_files_token_has_exactly_the_binding_of_an_online_token(
    client, database, seed_subscription, make_machine, clock, login_code
):
    seed_subscription(email=EMAIL, seats=1)
    machine = make_machine()
    doc = json.loads(_round_trip(client, database, machine, clock).content)
    by_file = verify_token(doc["token"], _trusted(client), clock.now()).fp
    online = machine.activate(client, EMAIL, login_code(client, EMAIL))
    assert online.status_code == 200
    assert by_file == verify_token(online.json()["token"], _trusted(client), clock.now()).fp == machine.fp


def _remove(client, machine_id, code):
    return client.post("/v1/terminals/remove", json={"email": EMAIL, "code": code, "machine_id": machine_id})


def _deactivate(client, data: bytes):
    page = client.get("/offline")
    return client.post(
        "/offline/deactivate",
        data={"csrf": _csrf(page.text), "lang": "en"},
        files={"deactivation": ("pospal-deactivation.json", data, "application/json")},
    )


def test_seats_recycled_by_file_a_removed_tills_seat_stays_taken_until_its_file_ends(
    client, database, seed_subscription, make_machine, clock, login_code
):
    seed_subscription(email=EMAIL, seats=1, period_days=30)
    pc1, pc2 = make_machine(terminal_name="Beach"), make_machine(terminal_name="Bar")
    first = json.loads(_round_trip(client, database, pc1, clock).content)
    removed = _remove(client, first["machine_id"], login_code(client, EMAIL, "terminals"))
    assert removed.status_code == 200 and removed.json()["seat_held_until"]
    assert "licensed by file until" in removed.json()["message"]
    mail = outbox_rows(database, to=EMAIL, template="terminal_removed_file")[-1]
    assert mail.context["terminal_name"] == "Beach" and mail.context["until"]
    listed = client.post(
        "/v1/terminals", json={"email": EMAIL, "code": login_code(client, EMAIL, "terminals")}
    )
    assert [(t["terminal_name"], t["active"], t["reason"]) for t in listed.json()["terminals"]] == [
        ("Beach", True, "removed_offline_license")
    ]
    # PC2 gets no file for the same seat, and no online activation either, while PC1's file runs.
    second = _round_trip(client, database, pc2, clock)
    assert second.status_code == 409 and "Beach" in second.text
    assert pc2.activate(client, EMAIL, login_code(client, EMAIL)).status_code == 409
    clock.advance(38 * 86400)  # the file ended: the seat is free
    seed_subscription(email=EMAIL, seats=1, period_days=30)
    assert _round_trip(client, database, pc2, clock).status_code == 200


def test_a_tills_deactivation_file_frees_its_seat_and_an_older_one_does_not(
    client, database, seed_subscription, make_machine, clock, login_code
):
    from pospal_protocol.offline import make_deactivation

    seed_subscription(email=EMAIL, seats=1)
    pc1, pc2 = make_machine(terminal_name="Beach"), make_machine(terminal_name="Bar")
    first = json.loads(_round_trip(client, database, pc1, clock).content)
    iat = verify_token(first["token"], _trusted(client), clock.now()).iat
    now = int(clock.now().timestamp())
    old = make_deactivation(pc1.key, machine_id=first["machine_id"], license_iat=iat, created=now)
    clock.advance(3600)
    renewed = json.loads(_round_trip(client, database, pc1, clock).content)  # a newer file for PC1
    assert _deactivate(client, old).status_code == 409  # made before the newer file: it ends nothing
    forged = make_deactivation(pc2.key, machine_id=first["machine_id"], license_iat=now + 3600, created=now)
    assert _deactivate(client, forged).status_code == 404  # not that machine's key
    assert _round_trip(client, database, pc2, clock).status_code == 409
    new_iat = verify_token(renewed["token"], _trusted(client), clock.now()).iat
    proof = make_deactivation(pc1.key, machine_id=first["machine_id"], license_iat=new_iat, created=now)
    answer = _deactivate(client, proof)
    assert answer.status_code == 200 and "Beach" in answer.text
    with database.transaction() as session:
        row = session.get(Machine, first["machine_id"])
        assert row.offline_until is None and row.deactivated_at is not None
    assert _round_trip(client, database, pc2, clock).status_code == 200


def test_the_owners_choice_of_who_stays_takes_no_seat_from_a_till_licensed_by_file(
    client, database, seed_subscription, make_machine, clock, login_code
):
    seed_subscription(email=EMAIL, seats=2)
    beach = json.loads(_round_trip(client, database, make_machine(terminal_name="Beach"), clock).content)
    bar = make_machine(terminal_name="Bar")
    assert bar.activate(client, EMAIL, login_code(client, EMAIL)).status_code == 200
    with database.transaction() as session:  # the quantity drops to one seat
        from server.models import Subscription

        session.scalars(select(Subscription)).one().quantity = 1
    code = login_code(client, EMAIL, "terminals")
    kept = client.post(
        "/v1/terminals/keep", json={"email": EMAIL, "code": code, "machine_ids": [bar.machine_id]}
    )
    assert kept.status_code == 200
    active = {t["terminal_name"]: t["active"] for t in kept.json()["terminals"]}
    assert active == {"Beach": True, "Bar": False}
    with database.transaction() as session:
        assert session.get(Machine, beach["machine_id"]).seat_state is None


def _round_trip_as(client, database, email, file):
    page = client.get("/offline")
    sent = client.post("/offline/code", data={"email": email, "csrf": _csrf(page.text), "lang": "en"})
    code = str(outbox_rows(database, to=email, template="activation_code")[-1].context["code"])
    return client.post(
        "/offline/license",
        data={"email": email, "code": code, "csrf": _csrf(sent.text), "lang": "en"},
        files={"request": ("pospal-activation-request.json", file, "application/json")},
    )


@pytest.mark.parametrize("victim_by", ["file", "online", "file, then removed"])
def test_a_stranger_replaying_a_tills_request_file_under_their_own_email_cannot_take_the_till(
    client, database, seed_subscription, make_machine, clock, login_code, victim_by
):
    stranger = "stranger@evil.example"
    _, _, victim_license = seed_subscription(email=EMAIL, seats=1)
    seed_subscription(email=stranger, seats=5)
    till = make_machine(terminal_name="Beach")
    request_file = _request_file(till, clock)
    if victim_by.startswith("file"):
        machine_id = json.loads(_round_trip(client, database, till, clock, file=request_file).content)[
            "machine_id"
        ]
    else:
        assert till.activate(client, EMAIL, login_code(client, EMAIL)).status_code == 200
        machine_id = till.machine_id
    if victim_by == "file, then removed":  # its file runs on, and so does its seat on the owner's license
        assert _remove(client, machine_id, login_code(client, EMAIL, "terminals")).status_code == 200
    answer = _round_trip_as(client, database, stranger, request_file)
    assert answer.status_code == 403 and "another subscription" in answer.text
    with database.transaction() as session:
        assert session.get(Machine, machine_id).license_id == victim_license
    listed = client.post(
        "/v1/terminals", json={"email": EMAIL, "code": login_code(client, EMAIL, "terminals")}
    )
    assert [t["terminal_name"] for t in listed.json()["terminals"]] == ["Beach"]
    assert (
        _round_trip(client, database, till, clock, file=request_file).status_code == 200
    )  # the owner renews


def test_a_till_on_no_license_is_licensed_by_file_for_whoever_proves_the_email(
    client, database, seed_subscription, make_machine, clock
):
    seed_subscription(email="other@cafe.gr", seats=1)
    till = make_machine()
    assert till.start_trial(client).status_code == 200  # known to the server, on no license yet
    assert _round_trip_as(client, database, "other@cafe.gr", _request_file(till, clock)).status_code == 200


def test_control_characters_in_an_email_address_are_refused_by_the_json_api_and_the_page(client):
    assert (
        client.post("/v1/codes", json={"email": "a\u202e@cafe.gr", "purpose": "activate"}).status_code == 422
    )
    page = client.get("/offline")
    sent = client.post("/offline/code", data={"email": "a\u009b@cafe.gr", "csrf": _csrf(page.text)})
    assert sent.status_code == 422
