"""The owner's page in a real browser (Playwright driving Debian's chromium) against a real server process.

Sign in with the e-mailed code, see the terminals, pause for the season and resume, in Greek: what an
owner with a dead till does from a phone. The Stripe stand-in records what the page did to the
subscription.
"""

from __future__ import annotations

import json
import shutil

import pytest
import requests

from tests.server.conftest import MachineKey, launch_server, outbox_rows
from tests.server.stripe_stub import event, sign, start_stripe_stub, stripe_env, subscription

EMAIL = "bar@ammos-beach.gr"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def stub():
    stub, server = start_stripe_stub()
    stub.customers["cus_beach"] = {"id": "cus_beach", "object": "customer", "email": EMAIL}
    stub.subscriptions["sub_beach"] = subscription("sub_beach", "cus_beach", quantity=2)
    yield stub
    server.shutdown()
    server.server_close()


@pytest.fixture
def browser():
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


def _code(database, before: int) -> str:
    rows = outbox_rows(database, to=EMAIL, template="activation_code")
    assert len(rows) > before
    return str(rows[-1].context["code"])


def test_the_owner_signs_in_sees_the_terminals_pauses_and_resumes(
    server_env, database, stub, browser, tmp_path
):
    server = launch_server({**server_env, **stripe_env(stub.url)}, tmp_path / "server.log")
    try:
        raw = json.dumps(event("customer.subscription.created", stub.subscriptions["sub_beach"])).encode()
        hook = requests.post(
            f"{server.url}/v1/webhooks/stripe",
            data=raw,
            headers={"Content-Type": "application/json", "Stripe-Signature": sign(raw)},
            timeout=10,
        )
        assert hook.status_code == 200, hook.text
        for name in ("Μπαρ", "Παραλία"):
            till = MachineKey(clock=None, terminal_name=name)
            sent = len(outbox_rows(database, to=EMAIL, template="activation_code"))
            requests.post(f"{server.url}/v1/codes", json={"email": EMAIL, "purpose": "activate"}, timeout=10)
            with requests.Session() as http:
                answer = till.post(
                    _Http(http, server.url),
                    "/v1/activations",
                    {**till.identity(), "email": EMAIL, "code": _code(database, sent)},
                    machine_id=None,
                )
            assert answer.status_code == 200, answer.text

        page = browser.new_page(locale="el-GR")
        page.goto(f"{server.url}/owner")
        assert page.title() == "Τα τερματικά σας POSPal"  # Accept-Language: el
        sent = len(outbox_rows(database, to=EMAIL, template="activation_code"))
        page.fill("input[name=email]", EMAIL)
        page.click("text=Στείλτε μου κωδικό")
        page.fill("input[name=code]", _code(database, sent))
        page.click("text=Άνοιγμα της σελίδας μου")
        page.wait_for_url("**/owner/terminals**")
        assert page.locator("tr[data-machine]").count() == 2
        assert page.locator("tr[data-machine] input[name=name]").first.input_value() == "Μπαρ"

        page.click("text=Παύση για τη σεζόν")
        page.wait_for_selector("text=Σε παύση για τη σεζόν")
        assert stub.subscriptions["sub_beach"]["pause_collection"] == {"behavior": "void", "resumes_at": None}

        page.click("text=Επαναφορά τώρα")
        page.wait_for_selector("text=Ενεργή: 2 τερματικό/ά.")
        assert stub.subscriptions["sub_beach"]["pause_collection"] is None
    finally:
        server.stop()


class _Http:
    """`MachineKey.post` wants `client.post(path, content=, headers=)`: a requests session on a base URL."""

    def __init__(self, session: requests.Session, base: str) -> None:
        self.session, self.base = session, base

    def post(self, path: str, content: bytes, headers: dict[str, str]) -> requests.Response:
        return self.session.post(self.base + path, data=content, headers=headers, timeout=10)
