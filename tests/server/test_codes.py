"""POST /v1/codes and code checking: 6 digits, stored hashed, 15 minutes, 5 tries, 5 requests an hour."""

from __future__ import annotations

from sqlalchemy import select

from server.models import LoginCode
from tests.server.conftest import outbox_rows


def test_sixth_code_request_within_an_hour_gets_429(client, seed_subscription, database, clock):
    seed_subscription(email="owner@cafe.gr")
    for _ in range(5):
        assert (
            client.post("/v1/codes", json={"email": "owner@cafe.gr", "purpose": "activate"}).status_code
            == 202
        )
        clock.advance(seconds=60)
    sixth = client.post("/v1/codes", json={"email": "Owner@Cafe.gr ", "purpose": "activate"})
    assert sixth.status_code == 429
    body = sixth.json()
    assert body["error"] == "rate_limited"
    assert 0 < body["retry_after"] <= 3600
    assert sixth.headers["Retry-After"] == str(body["retry_after"])
    assert len(outbox_rows(database, to="owner@cafe.gr", template="activation_code")) == 5
    # An hour after the first request, one more is allowed again.
    clock.advance(seconds=3600 - 5 * 60 + 1)
    assert client.post("/v1/codes", json={"email": "owner@cafe.gr", "purpose": "activate"}).status_code == 202


def test_code_is_six_digits_and_stored_only_as_a_hash(client, seed_subscription, database, login_code):
    seed_subscription(email="owner@cafe.gr")
    code = login_code(client, "owner@cafe.gr")
    assert len(code) == 6 and code.isdigit()
    with database.transaction() as session:
        row = session.scalars(select(LoginCode)).one()
    assert code not in row.code_hash
    assert len(row.code_hash) == 64


def test_unknown_email_gets_the_same_answer_and_no_email(client, database):
    response = client.post("/v1/codes", json={"email": "stranger@example.com", "purpose": "activate"})
    assert response.status_code == 202
    assert response.json() == {"sent": True}
    assert outbox_rows(database) == []


def test_malformed_email_is_invalid_request(client):
    response = client.post("/v1/codes", json={"email": "not-an-email", "purpose": "activate"})
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"


def test_wrong_codes_lock_out_after_five_attempts(client, seed_subscription, login_code, make_machine):
    seed_subscription(email="owner@cafe.gr")
    code = login_code(client, "owner@cafe.gr")
    wrong = "000000" if code != "000000" else "111111"
    machine = make_machine()
    answers = [machine.activate(client, "owner@cafe.gr", wrong).json()["error"] for _ in range(5)]
    assert answers == ["bad_code"] * 4 + ["too_many_attempts"]
    # Even the right code no longer works: the guesses used it up.
    assert machine.activate(client, "owner@cafe.gr", code).json()["error"] == "too_many_attempts"


def test_code_expires_after_15_minutes(client, seed_subscription, login_code, make_machine, clock):
    seed_subscription(email="owner@cafe.gr")
    code = login_code(client, "owner@cafe.gr")
    clock.advance(minutes=15, seconds=1)
    response = make_machine().activate(client, "owner@cafe.gr", code)
    assert response.status_code == 401
    assert response.json()["error"] == "code_expired"


def test_activation_code_works_once(client, seed_subscription, login_code, make_machine):
    seed_subscription(email="owner@cafe.gr", seats=3)
    code = login_code(client, "owner@cafe.gr")
    assert make_machine().activate(client, "owner@cafe.gr", code).status_code == 200
    again = make_machine().activate(client, "owner@cafe.gr", code)
    assert again.status_code == 401
    assert again.json()["error"] == "bad_code"


def test_a_code_for_one_email_does_not_prove_another(client, seed_subscription, login_code, make_machine):
    seed_subscription(email="owner@cafe.gr")
    seed_subscription(email="other@bar.gr")
    code = login_code(client, "owner@cafe.gr")
    assert make_machine().activate(client, "other@bar.gr", code).status_code == 401
