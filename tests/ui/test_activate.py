"""Activating this PC: email, then code; a wrong code, then the right one; a full license."""

from __future__ import annotations

from tests.ui.fakes import RIGHT_CODE


def open_code_step(qtbot, window, worker):
    window.show_page("activate")
    page = window.pages["activate"]
    page.email.setText("maria@taverna-kyma.gr")
    with qtbot.waitSignal(worker.action_finished, check_params_cb=lambda tag, _r: tag == "request_code"):
        page.send.click()
    assert page.step == "code"
    return page


def test_wrong_code_then_right_code_activates(qtbot, ui, control):
    worker, window, _ = ui
    page = open_code_step(qtbot, window, worker)
    assert control.codes_sent == [("maria@taverna-kyma.gr", "activate")]
    assert page.code_intro.text() == "Enter the code we sent to maria@taverna-kyma.gr."

    page.code.setText("111111")
    with qtbot.waitSignal(worker.action_failed, timeout=2000):
        page.submit.click()
    assert window.banner.text() == "That code is not right. Check the latest email and try again."
    assert page.step == "code" and window.page == "activate"
    assert window.card.headline.text() == "Not activated"

    page.code.setText(RIGHT_CODE)
    with qtbot.waitSignal(worker.action_finished, check_params_cb=lambda tag, _r: tag == "activate"):
        page.submit.click()
    assert window.card.headline.text() == "Licensed"
    assert window.page == "overview"
    assert window.banner.text() == "This PC is activated."
    assert [c[1] for c in control.calls if c[0] == "activate"] == [
        ("maria@taverna-kyma.gr", "111111"),
        ("maria@taverna-kyma.gr", RIGHT_CODE),
    ]


def test_bad_email_and_short_code_are_caught_before_asking_the_server(qtbot, ui, control):
    worker, window, _ = ui
    window.show_page("activate")
    page = window.pages["activate"]
    page.email.setText("not-an-email")
    page.send.click()
    assert window.banner.text() == "Enter a valid email address."
    page = open_code_step(qtbot, window, worker)
    page.code.setText("12")
    page.submit.click()
    assert window.banner.text() == "The code has 6 digits."
    assert control.called("activate") == 0


def test_seats_full_lists_terminals_and_removing_one_activates(qtbot, ui, control, questions):
    control.seats_full = True
    worker, window, _ = ui
    page = open_code_step(qtbot, window, worker)
    page.code.setText(RIGHT_CODE)
    with qtbot.waitSignal(worker.action_failed, timeout=2000):
        page.submit.click()
    assert window.banner.text().startswith("All terminals on this subscription are in use.")
    assert set(page.terminals.remove_buttons) == {"m_bar"}
    questions.answer = True
    with qtbot.waitSignal(
        worker.action_finished, timeout=3000, check_params_cb=lambda tag, _r: tag == "activate"
    ):
        page.terminals.remove_buttons["m_bar"].click()
    assert questions.asked == ["Remove Beach bar?"]
    # Removing proves ownership with the same email and code, then the activation is retried.
    assert ("remove_terminal", ("m_bar", "maria@taverna-kyma.gr", RIGHT_CODE)) in control.calls
    assert window.card.headline.text() == "Licensed"
