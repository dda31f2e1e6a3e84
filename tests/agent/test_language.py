"""The agent's language (agent/language.py): its order, what a Greek POS and a Greek owner get."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from agent import language, messages
from agent.core.state import ERROR_REASONS, compute_status
from agent.errors import InvalidInput
from tests.agent.test_service import Rig
from tests.agent.test_state import CATALOGUE_REASONS, DAY, ROWS, Row, T
from tests.agent.tokenkit import HOUR
from tests.agent.tokenkit import claims as make_claims

GREEK = re.compile("[α-ωΑ-Ω]")
OFFLINE_LICENSE = Row(
    "offline license",
    T + 20 * DAY,
    "licensed_active",
    True,
    "offline_license",
    7,
    claims={"exp": T + 27 * DAY, "policy": {"offline": True}},
)
# Reasons whose rows live elsewhere (3-D Secure renewals, issue 14).
EXTRA = [
    Row(
        "payment needs confirming",
        T + HOUR,
        "licensed_renewal_required",
        True,
        "payment_action_required",
        7,
        claims={
            "status": "past_due",
            "payment_grace_end": T + 7 * DAY,
            "payment_action_url": "https://invoice.stripe.test/i/1",
        },
    ),
]
ALL_ROWS = [*ROWS, OFFLINE_LICENSE, *EXTRA]


def _pattern(template: str) -> str:
    """A regex matching `template` with each `{placeholder}` filled by anything."""
    return "".join(
        ".+?" if part.startswith("{") else re.escape(part)
        for part in re.split(r"(\{[a-z_]+\})", template)
        if part
    )


def _catalogue_el(reason: str, active_nodate: bool = False) -> re.Pattern[str]:
    status = messages._CATALOGUE[f"status.{'active_nodate' if active_nodate else reason}"]["el"]
    fix_key = f"fix.{reason}" if messages.has(f"fix.{reason}") else "fix.active"
    fix = messages._CATALOGUE[fix_key]["el"]
    return re.compile(_pattern(status) + (" " + _pattern(fix) if fix else ""))


@pytest.mark.parametrize("row", ALL_ROWS, ids=[r.id for r in ALL_ROWS])
def test_a_greek_pos_sees_the_catalogues_greek_message_for_every_state_and_reason(row):
    messages.clear_fallbacks()
    status = compute_status(row.build("el"))
    assert (status.license_state, status.reason) == (row.state, row.reason)
    assert GREEK.search(status.message), status.message
    assert _catalogue_el(row.reason).fullmatch(status.message), status.message
    assert messages.fallbacks() == []


def test_the_rows_cover_every_reason():
    assert {r.reason for r in ALL_ROWS} >= set(ERROR_REASONS) | CATALOGUE_REASONS


def test_no_catalogue_lookup_falls_back_for_a_key_that_exists():
    import ui.strings  # noqa: F401  (registers the UI's keys into the same catalogue)

    messages.clear_fallbacks()
    for key in messages.keys():
        for lang in messages.LANGUAGES:
            text = messages.text(key, lang)
            assert "{" in messages._CATALOGUE[key][lang] or text == messages._CATALOGUE[key][lang]
    assert messages.fallbacks() == []
    messages.text("no.such.key", "el")  # the instrument itself records a real fallback
    assert messages.fallbacks() == [("no.such.key", "el")]
    messages.clear_fallbacks()


def test_the_agents_own_refusals_are_in_the_catalogue():
    for key in ("error.checkout_expired", "error.not_activated"):
        assert GREEK.search(messages.text(key, "el"))


@pytest.mark.parametrize(
    "env, chosen, system, expected",
    [
        ("el", "en", "en", "el"),  # POSPAL_LANGUAGE wins over everything
        (None, "el", "en", "el"),  # then the window's choice
        ("fr", "el", None, "el"),  # an unsupported POSPAL_LANGUAGE is ignored
        (None, None, "el", "el"),  # then the system's
        (None, None, None, "en"),  # then English
        ("el_GR.UTF-8", None, None, "el"),
    ],
)
def test_the_language_order(env, chosen, system, expected):
    assert language.resolve(env, chosen, system) == expected


@pytest.mark.parametrize(
    "value, expected",
    [
        ("el_GR.UTF-8", "el"),
        ("el-GR", "el"),
        ("Greek_Greece", "el"),
        ("en_US", "en"),
        ("de_DE", None),
        ("", None),
        (None, None),
    ],
)
def test_normalize(value, expected):
    assert language.normalize(value) == expected


def test_the_system_language_is_windows_then_the_locale():
    assert language.system_language({"LANG": "en_US.UTF-8"}, windows=lambda: "el") == "el"
    assert language.system_language({"LANG": "el_GR.UTF-8"}, windows=lambda: None) == "el"
    assert (
        language.system_language({"LC_ALL": "en_GB.UTF-8", "LANG": "el_GR.UTF-8"}, windows=lambda: None)
        == "en"
    )


def _no_env_language(monkeypatch, lang_var: str = "C"):
    monkeypatch.delenv("POSPAL_LANGUAGE", raising=False)
    for var in ("LC_ALL", "LC_MESSAGES", "LANGUAGE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LANG", lang_var)


def test_a_greek_locale_makes_the_agent_greek(tmp_path, monkeypatch):
    _no_env_language(monkeypatch, "el_GR.UTF-8")
    svc = Rig(tmp_path).service()
    assert svc.language == "el" and GREEK.search(svc.status().message)


def test_the_window_choice_persists_and_reaches_the_pos_after_a_restart(tmp_path, monkeypatch):
    _no_env_language(monkeypatch, "en_US.UTF-8")
    rig = Rig(tmp_path)
    svc = rig.service()
    assert svc.language == "en"
    status = svc.set_language("el")
    assert GREEK.search(status.message) and status.to_dict()["message"] == status.message
    assert rig.service().language == "el"  # a new process on the same data dir
    with pytest.raises(InvalidInput):
        svc.set_language("fr")


def test_pospal_language_beats_the_windows_choice(tmp_path, monkeypatch):
    _no_env_language(monkeypatch)
    rig = Rig(tmp_path)
    rig.service().set_language("en")
    monkeypatch.setenv("POSPAL_LANGUAGE", "el")
    assert rig.service().language == "el"


def test_every_status_carries_its_message_in_each_language(tmp_path, monkeypatch):
    _no_env_language(monkeypatch, "en_US.UTF-8")
    status = Rig(tmp_path).service().status()
    assert status.to_dict("el")["message"] != status.to_dict()["message"]
    assert GREEK.search(status.to_dict("el")["message"]) and not GREEK.search(status.message)
    assert status.to_dict("xx")["message"] == status.message


def test_codes_trials_and_checkouts_carry_the_agents_language(tmp_path, monkeypatch):
    _no_env_language(monkeypatch)
    rig = Rig(tmp_path)
    sent: list[tuple[str, str | None]] = []
    original = rig.cloud.request_code
    rig.cloud.request_code = lambda email, purpose, locale=None: (
        sent.append((purpose, locale)),
        original(email, purpose, locale),
    )
    bodies: list[dict] = []
    checkout = rig.cloud.create_checkout
    portal = rig.cloud.portal

    def recorded(call):
        return lambda identity, body: (bodies.append(dict(body)), call(identity, body))[1]

    rig.cloud.create_checkout, rig.cloud.portal = recorded(checkout), recorded(portal)
    svc = rig.service()
    svc.set_language("el")
    svc.request_code("owner@cafe.example", "activate")
    svc.start_trial()
    assert sent == [("activate", "el")] and rig.cloud.trial_bodies[-1]["locale"] == "el"
    svc.start_checkout("owner@cafe.example", "Ταβέρνα")
    svc.portal_url()
    assert [b.get("locale") for b in bodies] == ["el", "el"]


def test_an_offline_license_status_is_not_offline_grace_after_48_hours():
    status = compute_status(replace(OFFLINE_LICENSE.build(), now=OFFLINE_LICENSE.build().now))
    assert status.offline_license is True and status.to_dict()["offline_license"] is True
    assert status.grace_until.timestamp() == T + 27 * DAY
    online = compute_status(Row("x", T + 3 * DAY, "", True, "", None).build())
    assert online.reason == "offline_grace" and online.offline_license is False
    assert make_claims().policy.offline is False


def _http(port: int, method: str, path: str, body: dict | None = None, headers: dict | None = None):
    import http.client
    import json

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        data = json.dumps(body).encode() if body is not None else None
        hdrs = {"Host": f"127.0.0.1:{port}", **(headers or {})}
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=hdrs)
        answer = conn.getresponse()
        return answer.status, json.loads(answer.read())
    finally:
        conn.close()


def test_the_local_api_answers_a_pos_in_its_own_language_without_changing_the_agents(tmp_path, monkeypatch):
    from agent.control import InProcessControl
    from agent.localapi.api import LocalApi

    _no_env_language(monkeypatch, "en_US.UTF-8")
    svc = Rig(tmp_path).service()
    api = LocalApi(InProcessControl(svc), api_token="t" * 32, port=0).start()
    auth = {"Authorization": "Bearer " + "t" * 32}
    try:
        _, english = _http(api.port, "GET", "/v1/license")
        _, greek = _http(api.port, "GET", "/v1/license?lang=el")
        _, by_header = _http(api.port, "GET", "/v1/license", headers={"Accept-Language": "el-GR,el;q=0.9"})
        assert not GREEK.search(english["message"])
        assert GREEK.search(greek["message"]) and by_header["message"] == greek["message"]
        assert greek["message"] == messages.text("status.not_activated", "el") + " " + messages.text(
            "fix.not_activated", "el"
        )
        assert _http(api.port, "GET", "/v1/language", headers=auth) == (200, {"language": "en"})

        status, answer = _http(api.port, "POST", "/v1/language", {"language": "el"}, headers=auth)
        assert status == 200 and answer["language"] == "el"
        _, now_greek = _http(api.port, "GET", "/v1/license")
        assert now_greek["message"] == greek["message"]
        assert _http(api.port, "POST", "/v1/language", {"language": "fr"}, headers=auth)[0] == 422
    finally:
        api.stop()
