"""Buying from the window: form, Checkout in the (fake) browser, a waiting view that finishes by itself.

The last test runs the whole thing for real: the window over InProcessControl over a real AgentService,
against a real `pospal-server run` process with sandbox billing; the test pays on the sandbox checkout
page the way a browser would, and never touches the window after paying.
"""

from __future__ import annotations

import json

import httpx
import pytest
from keyring.backends import fail

from agent.config import AgentSettings
from agent.control import InProcessControl
from agent.core.service import AgentService
from agent.vault.store import MachineKeyStore
from pospal_protocol.fingerprint import Component, Fingerprint
from tests.server.conftest import (  # noqa: F401 (fixtures used by the real-server test)
    db_url,
    live_server,
    pg_module_url,
    server_env,
    sqlite_template,
    start_server,
)
from tests.ui.conftest import build


@pytest.fixture
def db_backend() -> str:
    """The real-server test runs on SQLite only; the server's own suite covers PostgreSQL."""
    return "sqlite"


def fill_and_continue(qtbot, window, worker, email="maria@taverna-kyma.gr", name="Taverna Kyma"):
    window.show_page("buy")
    page = window.pages["buy"]
    page.email.setText(email)
    page.restaurant.setText(name)
    with qtbot.waitSignal(
        worker.action_finished, timeout=10000, check_params_cb=lambda tag, _r: tag == "checkout"
    ):
        page.submit.click()


def test_buy_opens_checkout_and_finishes_by_itself_after_payment(qtbot, ui, control, opener):
    worker, window, _ = ui
    fill_and_continue(qtbot, window, worker)
    assert ("start_checkout", ("maria@taverna-kyma.gr", "Taverna Kyma", 1)) in control.calls
    assert opener.urls == ["http://127.0.0.1:9/sandbox/checkout/co_test"]
    assert window.page == "wait"
    assert window.pages["wait"].title.text() == "Waiting for payment…"
    qtbot.waitUntil(lambda: control.called("wait_checkout") == 1, timeout=2000)

    control.paid.set()  # the owner pays in the browser; nobody touches the window afterwards

    qtbot.waitUntil(lambda: window.page == "overview", timeout=5000)
    assert window.card.headline.text() == "Licensed"
    assert window.banner.text() == "Payment received. This PC is licensed."


def test_cancel_waiting_stops_the_background_poll_and_changes_nothing(qtbot, ui, control):
    worker, window, _ = ui
    fill_and_continue(qtbot, window, worker)
    qtbot.waitUntil(lambda: control.called("wait_checkout") == 1, timeout=2000)
    tag = window.pages["wait"]._tag()
    with qtbot.waitSignal(worker.action_finished, timeout=3000, check_params_cb=lambda t, _r: t == tag):
        window.pages["wait"].cancel_button.click()
    assert window.page == "overview"
    assert window.card.headline.text() == "Not activated"
    assert not worker.is_pending(tag)
    assert window.banner.text() == "Stopped waiting for the payment."


def test_reopen_payment_page(qtbot, ui, control, opener):
    worker, window, _ = ui
    fill_and_continue(qtbot, window, worker)
    window.pages["wait"].reopen.click()
    assert opener.urls == ["http://127.0.0.1:9/sandbox/checkout/co_test"] * 2


def test_form_is_checked_before_anything_is_sent(ui, control):
    _, window, _ = ui
    window.show_page("buy")
    page = window.pages["buy"]
    page.email.setText("maria@taverna-kyma.gr")
    page.submit.click()
    assert window.banner.text() == "Enter the restaurant name."
    assert control.called("start_checkout") == 0


FP = Fingerprint(
    (
        Component("machine_id", True, "1a" * 32),
        Component("disk_serial", True, "2b" * 32),
        Component("mac", True, "3c" * 32),
    )
)


@pytest.fixture
def real_agent(live_server, tmp_path):  # noqa: F811 (the fixture imported above)
    """An AgentService on the real server, trusting the server's own key as the demo does."""
    jwks = httpx.get(f"{live_server.url}/v1/keys", timeout=10).json()
    keys = tmp_path / "trusted.json"
    keys.write_text(json.dumps(jwks))
    settings = AgentSettings(
        server_url=live_server.url, agent_port=7421, data_dir=tmp_path / "agent", trusted_keys_path=keys
    )
    service = AgentService(
        settings,
        fingerprinter=lambda: FP,
        terminal_name="Front counter",
        key_store=MachineKeyStore(tmp_path / "agent", backend=fail.Keyring()),
    )
    yield service
    service.stop()


@pytest.mark.slow
def test_buy_through_the_sandbox_server_ends_licensed_without_a_click(qtbot, real_agent, opener):
    worker, window, tray = build(qtbot, InProcessControl(real_agent), opener)
    try:
        assert window.card.headline.text() == "Not activated"
        window.pages["wait"].poll_s = 0.2
        fill_and_continue(qtbot, window, worker)
        assert window.page == "wait"
        [url] = opener.urls
        assert "/sandbox/checkout/" in url

        # The owner presses "Pay" on the sandbox checkout page in the browser.
        paid = httpx.post(url, data={"action": "pay"}, timeout=10)
        assert paid.status_code in (200, 303)

        qtbot.waitUntil(lambda: window.status.license_state == "licensed_active", timeout=20000)
        qtbot.waitUntil(lambda: window.page == "overview", timeout=5000)
        assert window.card.headline.text() == "Licensed"
        assert tray.icon.toolTip() == "POSPal: Licensed"
        assert real_agent.status().license_state == "licensed_active"
        assert window.card.values["terminal"].text() == "Front counter"
    finally:
        window.pages["wait"].cancel_pending()
        assert worker.shutdown(10000)
