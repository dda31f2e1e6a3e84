"""The owner's page through the app (TestClient: HTML forms and cookies; the real browser's run is
tests/server/test_owner_page_browser.py).

Behind the e-mailed code: the terminals with name, version and last seen; rename, remove, pause and
resume, the portal; in Greek; forms refused without the page's token or from another origin.
"""

from __future__ import annotations

import re
from datetime import timedelta

from server.models import AgentVersion
from tests.server.conftest import outbox_rows, token_claims
from tests.server.test_pause import EMAIL, _tills, beach, stub  # noqa: F401  (fixtures)


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


def _sign_in(client, database, lang="el") -> str:
    start = client.get(f"/owner?lang={lang}")
    assert start.status_code == 200
    csrf = _csrf(start.text)
    asked = client.post("/owner/code", data={"email": EMAIL, "csrf": csrf, "lang": lang})
    assert asked.status_code == 200, asked.text
    code = outbox_rows(database, to=EMAIL, template="activation_code")[-1].context["code"]
    signed = client.post(
        "/owner/login", data={"email": EMAIL, "code": code, "csrf": csrf, "lang": lang}, follow_redirects=True
    )
    assert signed.status_code == 200, signed.text
    return signed.text


def test_the_owner_sees_renames_removes_pauses_and_resumes_in_greek(
    beach, stub, database, make_machine, login_code, clock
):
    bar, sea = _tills(beach, make_machine, login_code)
    with database.transaction() as session:
        session.add(AgentVersion(machine_id=bar.machine_id, version="1.4.2", seen_at=clock.now()))

    page = _sign_in(beach, database)
    assert "Τα τερματικά σας POSPal" in page and EMAIL in page
    assert f'data-machine="{bar.machine_id}"' in page and f'data-machine="{sea.machine_id}"' in page
    assert "1.4.2" in page and "15/01/2026 12:00 UTC" in page  # version and last seen
    csrf = _csrf(page)

    renamed = beach.post(
        "/owner/rename",
        data={"machine_id": bar.machine_id, "name": "Μπαρ παραλίας", "csrf": csrf, "lang": "el"},
        follow_redirects=True,
    )
    assert "Μπαρ παραλίας" in renamed.text
    assert token_claims(bar.refresh(beach).json()["token"])["terminal"] == "Μπαρ παραλίας"

    removed = beach.post(
        "/owner/remove",
        data={"machine_id": sea.machine_id, "csrf": csrf, "lang": "el"},
        follow_redirects=True,
    )
    assert f'data-machine="{sea.machine_id}"' not in removed.text
    assert token_claims(sea.refresh(beach).json()["token"])["status"] == "revoked"

    spring = (clock.now() + timedelta(days=120)).date().isoformat()
    paused = beach.post(
        "/owner/pause", data={"resumes_on": spring, "csrf": csrf, "lang": "el"}, follow_redirects=True
    )
    assert "Σε παύση για τη σεζόν έως τις" in paused.text
    assert stub.subscriptions["sub_beach"]["pause_collection"]["behavior"] == "void"
    assert token_claims(bar.refresh(beach).json()["token"])["paused"] is True

    resumed = beach.post("/owner/resume", data={"csrf": csrf, "lang": "el"}, follow_redirects=True)
    assert "Ενεργή" in resumed.text and stub.subscriptions["sub_beach"]["pause_collection"] is None
    assert token_claims(bar.refresh(beach).json()["token"])["status"] == "active"

    portal = beach.post("/owner/portal", data={"csrf": csrf, "lang": "el"}, follow_redirects=False)
    assert portal.status_code == 303 and portal.headers["location"].startswith("https://billing.stripe.test/")


def test_forms_without_the_pages_token_or_from_another_site_change_nothing(
    beach, database, make_machine, login_code
):
    bar, _ = _tills(beach, make_machine, login_code)
    csrf = _csrf(_sign_in(beach, database, lang="en"))

    forged = beach.post("/owner/remove", data={"machine_id": bar.machine_id, "csrf": "x" * 32})
    cross = beach.post(
        "/owner/remove",
        data={"machine_id": bar.machine_id, "csrf": csrf},
        headers={"Origin": "https://evil.example"},
    )

    assert (forged.status_code, cross.status_code) == (403, 403)
    assert token_claims(bar.refresh(beach).json()["token"])["status"] == "active"


def test_without_a_session_the_page_asks_for_the_email(beach):
    answer = beach.get("/owner/terminals?lang=en", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/owner?lang=en"
    beach.cookies.set("pospal_owner", "cus_x.9999999999.forged", path="/owner")
    assert beach.get("/owner/terminals", follow_redirects=False).status_code == 303


def test_a_wrong_code_signs_nobody_in(beach, database):
    start = beach.get("/owner?lang=en")
    csrf = _csrf(start.text)
    beach.post("/owner/code", data={"email": EMAIL, "csrf": csrf})
    answer = beach.post("/owner/login", data={"email": EMAIL, "code": "000000", "csrf": csrf})
    assert answer.status_code == 401 and "pospal_owner=" not in answer.headers.get("set-cookie", "")
