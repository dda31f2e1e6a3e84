"""The tray: icon colour, tooltip and menu for every license_state, notifications, and Quit."""

from __future__ import annotations

import pytest
from PySide6.QtGui import QColor

from tests.ui.fakes import make_status
from ui.icons import COLORS
from ui.present import Action, Kind

GREEN, BLUE, AMBER, RED, GREY = (
    COLORS[k] for k in (Kind.ACTIVE, Kind.TRIAL, Kind.WARNING, Kind.STOPPED, Kind.MISSING)
)

# state, reason override, icon colour, tooltip, sync enabled, subscription item (text, enabled),
# window buttons (primary first)
TABLE = [
    (
        "licensed_active",
        None,
        GREEN,
        "POSPal: Licensed",
        True,
        ("Manage subscription", True),
        [Action.BILLING, Action.MOVE, Action.SYNC, Action.PAUSE],
    ),
    (
        "trial_active",
        None,
        BLUE,
        "POSPal: Free trial, until 8 December 2026",
        True,
        ("Buy subscription", True),
        [Action.BUY, Action.ACTIVATE, Action.SYNC],
    ),
    (
        "licensed_grace",
        None,
        AMBER,
        "POSPal: Licensed, offline, 9 days left",
        True,
        ("Manage subscription", True),
        [Action.SYNC, Action.BILLING, Action.MOVE],
    ),
    (
        "licensed_renewal_required",
        None,
        AMBER,
        "POSPal: Payment failed, 4 days left",
        True,
        ("Manage subscription", True),
        [Action.BILLING, Action.SYNC, Action.MOVE],
    ),
    (
        "licensed_cancelled",
        None,
        RED,
        "POSPal: Subscription ended",
        True,
        ("Buy subscription", True),
        [Action.BUY, Action.BILLING, Action.ACTIVATE, Action.SYNC],
    ),
    (
        "trial_expired",
        None,
        RED,
        "POSPal: Trial ended",
        True,
        ("Buy subscription", True),
        [Action.BUY, Action.ACTIVATE, Action.SYNC],
    ),
    (
        "license_missing",
        None,
        GREY,
        "POSPal: Not activated",
        False,
        ("Buy subscription", True),
        [Action.TRIAL, Action.BUY, Action.ACTIVATE],
    ),
    (
        "license_error",
        "offline_expired",
        RED,
        "POSPal: License problem",
        True,
        ("Manage subscription", True),
        [Action.SYNC, Action.BILLING],
    ),
    (
        "license_error",
        "clock_rollback",
        RED,
        "POSPal: License problem",
        True,
        ("Buy subscription", False),
        [Action.SYNC],
    ),
    (
        "license_error",
        "machine_changed",
        RED,
        "POSPal: License problem",
        False,
        ("Buy subscription", True),
        [Action.ACTIVATE, Action.BUY],
    ),
    (
        "license_error",
        "revoked",
        RED,
        "POSPal: License problem",
        False,
        ("Buy subscription", True),
        [Action.ACTIVATE, Action.BUY],
    ),
]

# The one-line status: the tray menu's first item and the window card's headline.
HEADLINES = {
    ("licensed_active", None): "Licensed",
    ("trial_active", None): "Free trial",
    ("licensed_grace", None): "Licensed, offline",
    ("licensed_renewal_required", None): "Payment failed",
    ("licensed_cancelled", None): "Subscription ended",
    ("trial_expired", None): "Trial ended",
    ("license_missing", None): "Not activated",
    ("license_error", "offline_expired"): "License problem",
    ("license_error", "clock_rollback"): "License problem",
    ("license_error", "machine_changed"): "License problem",
    ("license_error", "revoked"): "License problem",
}


def hue_matches(pixel: QColor, expected: str) -> bool:
    """Same colour family: hue within 15 degrees, or both unsaturated greys."""
    want = QColor(expected)
    if want.hsvSaturation() < 40:
        return pixel.hsvSaturation() < 40
    return abs(pixel.hsvHue() - want.hsvHue()) <= 15 and pixel.hsvSaturation() > 100


@pytest.mark.parametrize(
    ("state", "reason", "colour", "tooltip", "sync", "subscription", "buttons"),
    TABLE,
    ids=[f"{row[0]}-{row[1] or ''}" for row in TABLE],
)
def test_every_state_shows_its_icon_tooltip_and_actions(
    qtbot, ui, control, state, reason, colour, tooltip, sync, subscription, buttons
):
    worker, window, tray = ui
    status = make_status(state, **({"reason": reason} if reason else {}))
    with qtbot.waitSignal(worker.status_changed, timeout=2000):
        control.set_status(status)

    for size in (16, 32, 64):
        image = tray.icon.icon().pixmap(size, size).toImage()
        assert not image.isNull()
        assert hue_matches(image.pixelColor(size // 5, size * 2 // 5), colour), (size, state)
    assert tray.icon.toolTip() == tooltip
    assert "\n" not in tray.icon.toolTip()
    assert tray.status_action.text() == HEADLINES[(state, reason)]
    assert tray.sync_action.isEnabled() is sync
    assert (tray.subscription_action.text(), tray.subscription_action.isEnabled()) == subscription
    assert tray.open_action.isEnabled() and tray.quit_action.isEnabled()

    overview = window.pages["overview"]
    shown = [a for a in overview.visible_actions() if overview.buttons[a].isVisibleTo(window)]
    assert shown == buttons
    assert overview.buttons[buttons[0]].property("primary") is True
    hidden = set(Action) - set(buttons)
    assert not any(overview.buttons[a].isVisibleTo(window) for a in hidden)
    assert window.card.headline.text() == HEADLINES[(state, reason)]


def test_payment_grace_over_turns_the_icon_red(qtbot, ui, control):
    worker, window, tray = ui
    with qtbot.waitSignal(worker.status_changed):
        control.set_status(
            make_status(
                "licensed_renewal_required", licensed=False, reason="payment_grace_ended", days_left=0
            )
        )
    image = tray.icon.icon().pixmap(32, 32).toImage()
    assert hue_matches(image.pixelColor(6, 12), RED)
    assert "Orders are stopped" in window.card.detail.text()


def test_menu_has_the_promised_items_in_order(ui):
    _, _, tray = ui
    texts = [a.text() for a in tray.menu.actions() if not a.isSeparator()]
    assert texts == [
        "Not activated",
        "Open POSPal Agent",
        "Sync now",
        "Buy subscription",
        "Check for updates",
        "Quit",
    ]


def test_open_shows_the_window(qtbot, ui):
    _, window, tray = ui
    assert not window.isVisible()
    tray.open_action.trigger()
    qtbot.waitExposed(window)
    assert window.isVisible()


def test_manage_subscription_opens_the_billing_portal(qtbot, ui, control, opener):
    worker, window, tray = ui
    with qtbot.waitSignal(worker.status_changed):
        control.set_status(make_status("licensed_active"))
    with qtbot.waitSignal(worker.action_finished, check_params_cb=lambda tag, _r: tag == "portal"):
        tray.subscription_action.trigger()
    assert opener.urls == ["https://billing.example/portal/session"]


def test_buy_subscription_opens_the_buy_form(ui):
    _, window, tray = ui
    tray.subscription_action.trigger()
    assert window.isVisible() and window.page == "buy"


def test_sync_now_from_the_menu_syncs(qtbot, ui, control):
    worker, _, tray = ui
    with qtbot.waitSignal(worker.status_changed):
        control.set_status(make_status("licensed_grace"))
    with qtbot.waitSignal(worker.action_finished, check_params_cb=lambda tag, _r: tag == "sync"):
        tray.sync_action.trigger()
    assert control.called("sync_now") == 1


def test_quit_asks_and_declining_keeps_running(ui, questions):
    _, _, tray = ui
    questions.answer = False
    assert tray.ask_quit() is False
    assert questions.asked == ["Quit POSPal License Agent?"]
    assert tray.quits == []


def test_quit_confirmed_quits(ui, questions):
    _, _, tray = ui
    questions.answer = True
    tray.quit_action.trigger()
    assert questions.asked == ["Quit POSPal License Agent?"]
    assert tray.quits == [True]


def test_notifies_when_the_state_worsens(qtbot, ui, control):
    worker, _, tray = ui
    with qtbot.waitSignal(worker.status_changed):
        control.set_status(make_status("licensed_active"))
    with qtbot.waitSignal(tray.notified, timeout=2000) as blocker:
        control.set_status(make_status("licensed_grace", days_left=9))
    assert blocker.args[0].title == "POSPal license: Licensed, offline"
    assert "within 9 days" in blocker.args[0].body


@pytest.mark.parametrize(
    ("before", "after", "notifies"),
    [
        (6, 5, True),
        (5, 4, False),
        (4, 3, True),
        (3, 2, False),
        (2, 1, True),
        (9, 2, True),
        (1, 1, False),
        (3, 4, False),
    ],
)
def test_notifies_when_days_left_cross_5_3_1(qtbot, ui, control, before, after, notifies):
    worker, _, tray = ui
    with qtbot.waitSignal(worker.status_changed):
        control.set_status(make_status("licensed_grace", days_left=before))
    seen = []
    tray.notified.connect(seen.append)
    with qtbot.waitSignal(worker.status_changed):
        control.set_status(make_status("licensed_grace", days_left=after))
    assert bool(seen) is notifies
    if notifies:
        assert f"within {after} day" in seen[0].body


def test_improving_state_is_silent(qtbot, ui, control):
    worker, _, tray = ui
    with qtbot.waitSignal(worker.status_changed):
        control.set_status(make_status("licensed_grace"))
    seen = []
    tray.notified.connect(seen.append)
    with qtbot.waitSignal(worker.status_changed):
        control.set_status(make_status("licensed_active"))
    assert seen == []


@pytest.mark.parametrize(
    ("before", "after", "notifies"),
    [
        (8, 7, True),
        (7, 6, False),
        (6, 5, False),
        (4, 3, True),
    ],
)
def test_the_first_warning_comes_at_the_policys_warn_days(qtbot, ui, control, before, after, notifies):
    worker, _, tray = ui
    with qtbot.waitSignal(worker.status_changed):
        control.set_status(make_status("licensed_grace", days_left=before, warn_days=7))
    seen = []
    tray.notified.connect(seen.append)
    with qtbot.waitSignal(worker.status_changed):
        control.set_status(make_status("licensed_grace", days_left=after, warn_days=7))
    assert bool(seen) is notifies
