"""`pospal-agent` commands: output, exit codes, one-line errors, stdin for the code, the tray fallback."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from agent import cli
from agent.control import InProcessControl
from agent.errors import Offline
from agent.localapi.api import LocalApi
from agent.localapi.remote import HttpControl
from agent.vault import store
from tests.agent.conftest import REPO
from tests.agent.contract import PRODUCT_LICENSE_FIELDS
from tests.agent.test_api import StubControl
from tests.agent.test_service import Rig
from tests.test_layout import imported_roots

EMAIL = "owner@cafe.example"


@pytest.fixture
def rig(tmp_path, monkeypatch):
    rig = Rig(tmp_path)
    service = rig.service()
    monkeypatch.setattr(cli, "_control", lambda: InProcessControl(service))
    rig.svc = service
    return rig


def test_status_exit_code_says_whether_licensed(rig, capsys):
    assert cli.main(["status"]) == 1
    assert capsys.readouterr().out.startswith("license_missing: ")
    rig.svc.start_trial()
    assert cli.main(["status", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["license_state"] == "trial_active" and set(body) >= set(PRODUCT_LICENSE_FIELDS)


def test_trial(rig, capsys):
    assert cli.main(["trial"]) == 0
    assert capsys.readouterr().out.startswith("trial_active")


def test_activate_asks_for_the_emailed_code(rig, capsys, monkeypatch):
    def code_arrives(*_):
        return rig.cloud.codes[EMAIL] + "\n"

    monkeypatch.setattr(sys, "stdin", type("In", (), {"readline": code_arrives})())
    assert cli.main(["activate", EMAIL]) == 0
    out = capsys.readouterr()
    assert out.out.startswith("licensed_active") and f"sent to {EMAIL}" in out.err and "Code:" in out.err


def test_activate_without_a_code_is_a_one_line_error(rig, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n"))
    assert cli.main(["activate", EMAIL]) == 1
    assert capsys.readouterr().err.splitlines()[-1].endswith("pospal-agent: no code entered")


def test_a_wrong_code_names_the_server_refusal(rig, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("12345x\n"))  # never a code FakeCloud sends
    assert cli.main(["activate", EMAIL]) == 1
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.endswith("pospal-agent: That code is not right. [bad_code]")


def test_buy_prints_the_checkout_url_then_waits_for_the_payment(rig, capsys, monkeypatch):
    import webbrowser

    monkeypatch.setattr(webbrowser, "open", lambda url: rig.cloud.pay(url.rsplit("/", 1)[1]))
    assert cli.main(["buy", EMAIL, "--restaurant", "Cafe", "--poll", "0.01"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("http://sandbox.invalid/checkout/") and lines[1].startswith("licensed_active")


def test_offline_sync_is_one_line_and_exit_1(rig, capsys):
    rig.svc.start_trial()
    rig.cloud.online = False
    assert cli.main(["sync"]) == 1
    err = capsys.readouterr().err
    assert err == "pospal-agent: The license server cannot be reached.\n"


def test_deactivate(rig, capsys, monkeypatch):
    rig.svc.request_code(EMAIL, "activate")
    rig.svc.activate(EMAIL, rig.cloud.codes[EMAIL])
    assert cli.main(["deactivate"]) == 0
    assert capsys.readouterr().out.startswith("license_missing")


@pytest.mark.parametrize(
    ("exc", "code", "text"),
    [
        (KeyboardInterrupt(), 130, "interrupted"),
        (RuntimeError("boom"), 1, "pospal-agent: unexpected error: RuntimeError: boom"),
        (Offline("Server unreachable."), 1, "pospal-agent: Server unreachable."),
    ],
)
def test_failures_never_print_a_traceback(monkeypatch, capsys, exc, code, text):
    def broken():
        raise exc

    monkeypatch.setattr(cli, "_control", broken)
    assert cli.main(["status"]) == code
    out = capsys.readouterr()
    assert out.err.strip() == text and "Traceback" not in out.err + out.out


def test_no_command_is_a_usage_error(capsys):
    assert cli.main([]) == 2


def test_bad_settings_name_the_variable(monkeypatch, capsys):
    monkeypatch.setenv("POSPAL_AGENT_PORT", "seventy")
    assert cli.main(["status"]) == 1
    assert "POSPAL_AGENT_PORT" in capsys.readouterr().err


def test_commands_talk_to_a_running_agent_with_its_token(tmp_path, monkeypatch):
    token = store.ensure_api_token(tmp_path)
    control = StubControl()
    api = LocalApi(control, api_token=token, port=0, poll_interval=0.02).start()
    try:
        monkeypatch.setenv("POSPAL_DATA_DIR", str(tmp_path))
        monkeypatch.setenv("POSPAL_AGENT_PORT", str(api.port))
        found = cli._control()
        assert isinstance(found, HttpControl)
        assert found.sync_now().license_state == "licensed_active"
        assert control.calls == [("sync_now",)]
    finally:
        api.stop()


def test_without_a_running_agent_commands_run_in_process(tmp_path, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("POSPAL_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("POSPAL_AGENT_PORT", str(port))
    assert isinstance(cli._control(), InProcessControl)


def test_tray_falls_back_to_headless_when_ui_cannot_load(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "ui.app", None)  # makes `import ui.app` fail
    assert cli._run_tray(object()) is False
    assert "running headless" in caplog.text


def test_tray_is_the_installed_entry_point_not_an_import_of_ui():
    from importlib.metadata import entry_points

    found = [e.value for e in entry_points(group=cli.TRAY_ENTRY_POINTS, name="tray")]
    if not found:
        pytest.skip("project not pip-installed here (no entry-point metadata)")
    assert found == ["ui.app:run_tray"]
    # Any form of import (`import ui`, `from ui.app import ...`, inside a function): none of them.
    assert "ui" not in {root for _, root in imported_roots(Path(cli.__file__))}


def test_a_registered_tray_runs_with_the_service(monkeypatch):
    seen = []
    monkeypatch.setattr(cli, "_tray_loader", None)
    cli.register_tray(lambda: seen.append)
    service = object()
    assert cli._run_tray(service) is True
    assert seen == [service]


@pytest.mark.slow
@pytest.mark.skipif(os.name != "posix", reason="process groups")
def test_a_second_session_attaches_its_tray_and_takes_over_when_the_first_agent_goes(agents, tmp_path):
    import signal
    import time

    first = agents("http://127.0.0.1:9").start()
    env = dict(first.env, DISPLAY=":99", QT_QPA_PLATFORM="offscreen")
    log = tmp_path / "second.log"
    with open(log, "ab") as out:
        second = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        # Wait for both lines: the tray's start is logged just after the attach, and under load it lags.
        wanted = ("this session's tray attaches", "tray started (pid")
        while not all(line in log.read_text() for line in wanted) and time.monotonic() < deadline:
            assert second.poll() is None, log.read_text()
            time.sleep(0.1)
        assert "this session's tray attaches" in log.read_text()
        assert "tray started (pid" in log.read_text()
        assert second.poll() is None, "the second session must stay, with its tray"
        first.stop()
        deadline = time.monotonic() + 60
        while "listening on 127.0.0.1" not in log.read_text() and time.monotonic() < deadline:
            assert second.poll() is None, log.read_text()
            time.sleep(0.1)
        assert "taking over the service" in log.read_text()
        assert first.get("/v1/license").json()["license_state"] == "license_missing"
    finally:
        os.killpg(second.pid, signal.SIGTERM)
        try:
            second.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(second.pid, signal.SIGKILL)
            second.wait(5)
    assert second.returncode == 0, log.read_text()


@pytest.mark.parametrize(
    ("lang", "words"),
    [
        ("en", "this PC's license file is given up. Upload this deactivation file on"),
        ("el", "το αρχείο άδειας αυτού του υπολογιστή παραδόθηκε. Ανεβάστε αυτό το αρχείο"),
    ],
)
def test_deactivate_offline_file_says_where_to_upload_it_in_the_agents_language(
    monkeypatch, capsys, tmp_path, lang, words
):
    from tests.ui.fakes import FakeControl, make_status

    control = FakeControl()
    control.set_status(make_status("licensed_active", reason="offline_license", offline_license=True))
    control.set_language(lang)
    monkeypatch.setattr(cli, "_control", lambda: control)
    target = tmp_path / "pospal-deactivation.json"
    cli.main(["deactivate", "--offline-file", str(target)])
    assert control.status().license_state == "license_missing"  # the file is given up
    err = capsys.readouterr().err
    assert str(target) in err and words in err and "https://license.pospal.gr/offline" in err
    assert target.read_bytes().startswith(b'{"type": "pospal-offline-deactivation"}')
