"""Activation by file and Greek at the till, end to end with real processes.

A `pospal-server run` (sandbox billing, console mail to a file, its outbox worker on) and
`pospal-agent` processes: a Greek owner buys 2 terminals on an online PC; a second PC that never reaches
the server writes a request file, the owner uploads it on the `/offline` page and imports the license
file; license files for another machine, edited ones, and one for an over-full plan are refused with
nothing changed. A till removed while its file runs keeps its seat until it gives the file up (its
deactivation file, uploaded on the page). The owner's e-mails, delivered by the server's own worker, are
in Greek.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import requests

from tests.agent.conftest import emailed_code, launch_server, pay, write_trusted_keys
from tests.server.conftest import free_port

pytestmark = pytest.mark.slow
EMAIL = "idioktitis@taverna-e2e.example"
GREEK = re.compile("[α-ωΑ-Ω]")


@pytest.fixture
def mailing_server(server_env, tmp_path):
    """The real server with its outbox worker delivering to the console mailer's file."""
    server = launch_server({**server_env, "POSPAL_OUTBOX_WORKER": "1"}, tmp_path / "server.log")
    try:
        yield server
    finally:
        server.stop()


def _mails(mail_dir: Path, to: str) -> list[dict]:
    lines = [
        line for path in sorted(mail_dir.glob("*.jsonl")) for line in path.read_text("utf-8").splitlines()
    ]
    return [m for m in map(json.loads, lines) if m["to"] == to]


def _wait_for_mail(mail_dir: Path, to: str, count: int, timeout_s: float = 60) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        mails = _mails(mail_dir, to) if mail_dir.exists() else []
        if len(mails) >= count:
            return mails
        time.sleep(0.2)
    found = _mails(mail_dir, to) if mail_dir.exists() else []
    raise AssertionError(f"fewer than {count} e-mails to {to}: {found}")


def _settled(status: dict) -> dict:
    """A status without `next_sync`, which the agent's own schedule moves on its own."""
    return {k: v for k, v in status.items() if k != "next_sync"}


def _upload(server_url: str, db_url: str, request_file: Path, lang: str = "el") -> requests.Response:
    """What the owner does in a browser: page, e-mail, code, file."""
    with requests.Session() as browser:
        page = browser.get(f"{server_url}/offline", params={"lang": lang}, timeout=10)
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        sent = browser.post(
            f"{server_url}/offline/code", data={"email": EMAIL, "csrf": csrf, "lang": lang}, timeout=10
        )
        assert sent.status_code == 200, sent.text
        csrf = re.search(r'name="csrf" value="([^"]+)"', sent.text).group(1)
        return browser.post(
            f"{server_url}/offline/license",
            data={"email": EMAIL, "code": emailed_code(db_url, EMAIL), "csrf": csrf, "lang": lang},
            files={"request": ("request.json", request_file.read_bytes(), "application/json")},
            timeout=30,
        )


def test_a_greek_owner_licenses_a_pc_without_internet_by_file(mailing_server, agents, tmp_path):
    server = mailing_server
    db_url = server.env["POSPAL_DATABASE_URL"]
    mail_dir = Path(server.env["POSPAL_MAIL_DIR"])
    keys = write_trusted_keys(server.url, tmp_path / "trusted.json")

    # A Greek owner buys two terminals on the online PC: Checkout, e-mails, everything in Greek.
    online = agents(server.url, keys)
    online.env["POSPAL_LANGUAGE"] = "el"
    online.start()
    buyer = online.popen_cli("buy", EMAIL, "--restaurant", "Ταβέρνα", "--quantity", "2", "--poll", "0.2")
    pay(buyer.stdout.readline().strip())
    stdout, stderr = buyer.communicate(timeout=60)
    assert buyer.returncode == 0 and stdout.startswith("licensed_active"), stderr
    assert GREEK.search(online.license()["message"])

    # The PC without internet: its server address leads nowhere.
    unreachable = f"http://127.0.0.1:{free_port()}"
    offline = agents(unreachable, keys)
    offline.env["POSPAL_LANGUAGE"] = "el"
    request_file = tmp_path / "usb" / "request.json"
    request_file.parent.mkdir()
    out = offline.cli("activate", "--offline-request", str(request_file))
    assert out.returncode == 0, out.stderr
    # Where to take the file, named with this agent's own server, in the file's language (Greek).
    assert f"{unreachable}/offline?lang=el" in out.stderr and "ανοίξτε τη διεύθυνση" in out.stderr
    assert json.loads(request_file.read_text())["type"] == "pospal-offline-request"

    answer = _upload(server.url, db_url, request_file)
    assert answer.status_code == 200, answer.text
    license_file = tmp_path / "usb" / "pospal-license.json"
    license_file.write_bytes(answer.content)

    # A third PC's request, made while both seats are taken: refused, nothing recorded.
    third = agents(f"http://127.0.0.1:{free_port()}", keys)
    third.env["POSPAL_LANGUAGE"] = "en"
    third_request = tmp_path / "usb" / "third.json"
    assert third.cli("activate", "--offline-request", str(third_request)).returncode == 0
    full = _upload(server.url, db_url, third_request)
    assert full.status_code == 409
    assert len(re.findall("<li>", full.text)) == 2  # the two terminals holding the seats

    # Import on the offline PC, through its running agent.
    offline.start()
    before = offline.license()
    assert before["license_state"] == "license_missing"
    edited = json.loads(license_file.read_text())
    head, body, sig = edited["token"].split(".")
    edited["token"] = ".".join((head, body[:-4] + ("AAAA" if body[-4:] != "AAAA" else "BBBB"), sig))
    edited_file = tmp_path / "usb" / "edited.json"
    edited_file.write_text(json.dumps(edited))
    out = offline.cli("activate", "--offline-response", str(edited_file))
    assert out.returncode == 1 and "Traceback" not in out.stderr and GREEK.search(out.stderr)
    assert _settled(offline.license()) == _settled(before)

    out = offline.cli("activate", "--offline-response", str(license_file))
    assert out.returncode == 0, out.stderr
    lic = offline.license()
    assert (lic["license_state"], lic["reason"], lic["licensed"], lic["offline_license"]) == (
        "licensed_active",
        "offline_license",
        True,
        True,
    )
    assert lic["grace_until"] and lic["customer_email"] == EMAIL and lic["days_left"] >= 30
    assert (
        GREEK.search(lic["message"])
        and tuple(lic["grace_until"][:10].split("-")[::-1])
        == re.search(r"(\d\d)/(\d\d)/(\d{4})", lic["message"]).groups()
    )
    english = offline.get("/v1/license?lang=en").json()
    assert english["message"].startswith("Offline license: valid until")
    assert _settled(offline.license()) == _settled(lic)

    # The same file imported on another machine: refused there, nothing changed.
    third.start()
    before = third.license()
    out = third.cli("activate", "--offline-response", str(license_file))
    assert out.returncode == 1 and "another computer" in out.stderr
    assert _settled(third.license()) == _settled(before)

    # The agent survives a restart with its offline license.
    offline.stop()
    offline.start()
    assert offline.license()["reason"] == "offline_license"

    # Seats recycled by file (issue 28 case 7): the owner removes the till licensed by file, but it cannot
    # be told, so its seat stays taken until the file ends; the third PC still gets no file.
    machine_id = offline.license()["machine_id"]
    assert requests.post(
        f"{server.url}/v1/codes", json={"email": EMAIL, "purpose": "terminals"}, timeout=10
    ).ok
    removed = requests.post(
        f"{server.url}/v1/terminals/remove",
        json={"email": EMAIL, "code": emailed_code(db_url, EMAIL), "machine_id": machine_id},
        timeout=10,
    )
    assert removed.status_code == 200 and removed.json()["seat_held_until"], removed.text
    assert _upload(server.url, db_url, third_request).status_code == 409
    # The till gives its file up: the agent forgets it and writes the deactivation file, which frees it.
    deactivation = tmp_path / "usb" / "deactivation.json"
    out = offline.cli("deactivate", "--offline-file", str(deactivation))
    assert "Traceback" not in out.stderr and "/offline" in out.stderr, out.stderr
    assert json.loads(deactivation.read_text())["type"] == "pospal-offline-deactivation"
    assert not offline.license()["licensed"]
    with requests.Session() as browser:
        page = browser.get(f"{server.url}/offline", timeout=10)
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        freed = browser.post(
            f"{server.url}/offline/deactivate",
            data={"csrf": csrf, "lang": "en"},
            files={"deactivation": ("deactivation.json", deactivation.read_bytes(), "application/json")},
            timeout=10,
        )
    assert freed.status_code == 200, freed.text
    assert _upload(server.url, db_url, third_request).status_code == 200

    # Greek e-mails: welcome/receipt, the codes, the terminal added.
    mails = _wait_for_mail(mail_dir, EMAIL, 4)
    assert all(GREEK.search(m["subject"]) and GREEK.search(m["text"]) for m in mails), mails
