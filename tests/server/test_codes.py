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


# ------------------------------------------------------------------ guesses, lock-out and enumeration


def _wrong(code: str) -> str:
    return "000000" if code != "000000" else "111111"


def test_oldest_of_five_codes_not_accepted_after_24_guesses(
    client, seed_subscription, login_code, make_machine, clock
):
    seed_subscription(email="owner@cafe.gr")
    sent = []
    for _ in range(5):
        sent.append(login_code(client, "owner@cafe.gr"))
        clock.advance(seconds=30)
    wrong = next(f"{n:06d}" for n in range(1_000_000) if f"{n:06d}" not in sent)
    machine = make_machine()
    answers = [machine.activate(client, "owner@cafe.gr", wrong).json()["error"] for _ in range(24)]
    assert answers == ["bad_code"] * 4 + ["too_many_attempts"] * 20
    # Every code of the email is locked, the oldest one included.
    for code in sent:
        assert machine.activate(client, "owner@cafe.gr", code).json()["error"] == "too_many_attempts"


def test_five_wrong_guesses_lock_every_code_of_the_email_for_an_hour(
    client, seed_subscription, login_code, make_machine, clock
):
    seed_subscription(email="owner@cafe.gr")
    first = login_code(client, "owner@cafe.gr")
    machine = make_machine()
    for _ in range(5):
        machine.activate(client, "owner@cafe.gr", _wrong(first))
    # A new code asked for within the hour is locked too, for every purpose.
    clock.advance(minutes=20)
    fresh = login_code(client, "owner@cafe.gr")
    assert machine.activate(client, "owner@cafe.gr", fresh).json()["error"] == "too_many_attempts"
    clock.advance(minutes=61)
    again = login_code(client, "owner@cafe.gr")
    assert machine.activate(client, "owner@cafe.gr", again).status_code == 200


def test_stranger_and_customer_get_same_code_answers(client, seed_subscription, make_machine):
    seed_subscription(email="owner@cafe.gr")

    def story(email: str) -> list[tuple[int, dict]]:
        machine = make_machine()
        answers = []
        response = client.post("/v1/codes", json={"email": email, "purpose": "activate"})
        answers.append((response.status_code, response.json()))
        for _ in range(6):
            response = machine.activate(client, email, "123456")
            answers.append((response.status_code, response.json()))
        for path in ("/v1/terminals", "/v1/portal"):
            response = client.post(path, json={"email": email, "code": "123456"})
            answers.append((response.status_code, response.json()))
        return answers

    customer, stranger = story("owner@cafe.gr"), story("stranger@example.com")
    assert customer == stranger
    # The portal takes only portal codes, and none was asked for: a plain bad_code, for both alike.
    assert [status for status, _ in customer] == [202, 401, 401, 401, 401, 429, 429, 429, 401]


def test_code_requests_do_the_same_statements_for_stranger_and_customer(client, seed_subscription, database):
    from sqlalchemy import event

    seed_subscription(email="owner@cafe.gr")
    statements: list[str] = []

    def record(_conn, _cursor, statement, *_args):
        # Savepoint names differ per call, and the stranger's ends in a rollback rather than a release.
        word = statement.split()[0].upper()
        statements.append("END SAVEPOINT" if word in ("RELEASE", "ROLLBACK") else statement)

    def run(email: str) -> list[str]:
        statements.clear()
        event.listen(database.engine, "before_cursor_execute", record)
        try:
            assert client.post("/v1/codes", json={"email": email, "purpose": "activate"}).status_code == 202
        finally:
            event.remove(database.engine, "before_cursor_execute", record)
        return list(statements)

    customer, stranger = run("owner@cafe.gr"), run("stranger@example.com")
    assert customer == stranger
    assert any("INSERT INTO outbox" in s for s in customer)
    assert outbox_rows(database, to="stranger@example.com") == []


def test_code_taking_routes_are_limited_per_ip(client, seed_subscription, make_machine):
    from server.api.deps import CODE_GUESSES_PER_HOUR_PER_IP

    seed_subscription(email="owner@cafe.gr")
    routes = ["/v1/terminals", "/v1/portal", "/v1/terminals/remove"]
    answers = []
    for n in range(CODE_GUESSES_PER_HOUR_PER_IP + 1):
        # A different address each time, so only the per-address budget can stop it.
        body = {"email": f"guess{n}@example.com", "code": "123456", "machine_id": "m_x"}
        answers.append(client.post(routes[n % 3], json=body).status_code)
    assert 429 not in answers[:-1]
    assert answers[-1] == 429
    activation = make_machine().activate(client, "owner@cafe.gr", "123456")
    assert activation.json()["error"] == "rate_limited"
