"""Start at login: the Windows Run keys (through fake registries here, the real one on Windows) and XDG.

The installer writes the all-users (HKLM) value and the tray's toggle the per-user (HKCU) one: the box
shows the effective state and explains, rather than pretends, when only an administrator can turn it off.
"""

from __future__ import annotations

import sys

import pytest

from tests.ui.conftest import build
from ui.autostart import (
    RUN_KEY,
    VALUE_NAME,
    AllUsersEntry,
    MemoryRegistry,
    WindowsRunKey,
    WinregRegistry,
    XdgAutostart,
    for_this_platform,
)


def test_run_key_on_and_off_with_a_fake_registry():
    registry = MemoryRegistry()
    run = WindowsRunKey(registry, command='"C:\\Program Files\\POSPal\\POSPalLicenseAgent.exe"')
    assert not run.is_enabled()
    run.set_enabled(True)
    assert run.is_enabled()
    assert registry.get(RUN_KEY, VALUE_NAME) == '"C:\\Program Files\\POSPal\\POSPalLicenseAgent.exe"'
    run.set_enabled(False)
    assert not run.is_enabled() and registry.get(RUN_KEY, VALUE_NAME) is None
    run.set_enabled(False)  # turning off twice is fine


def test_toggle_reads_what_the_installer_wrote():
    registry = MemoryRegistry()
    registry.set(RUN_KEY.upper(), VALUE_NAME, '"C:\\POSPal\\POSPalLicenseAgent.exe"')  # keys are case-blind
    assert WindowsRunKey(registry).is_enabled()


INSTALLED = '"C:\\Program Files\\POSPal\\POSPalLicenseAgent.exe"'


def installed_for_all_users() -> tuple[MemoryRegistry, MemoryRegistry, WindowsRunKey]:
    """HKCU empty, HKLM holding the installer's Run value, and the toggle over both."""
    user, machine = MemoryRegistry(), MemoryRegistry()
    machine.set(RUN_KEY, VALUE_NAME, INSTALLED)
    return user, machine, WindowsRunKey(user, command=INSTALLED, machine=machine)


def test_the_installers_all_users_entry_counts_as_on():
    user, machine, run = installed_for_all_users()
    assert run.is_enabled() and run.all_users and not run.user_enabled


def test_turning_on_over_an_all_users_entry_adds_no_second_entry():
    user, machine, run = installed_for_all_users()
    run.set_enabled(True)
    assert user.values == {} and run.is_enabled()


def test_turning_off_an_all_users_entry_is_refused_and_hklm_is_left_alone():
    user, machine, run = installed_for_all_users()
    user.set(RUN_KEY, VALUE_NAME, INSTALLED)  # an older tray also set the per-user value
    before = dict(machine.values)
    with pytest.raises(AllUsersEntry):
        run.set_enabled(False)
    assert user.values == {}  # this user's own entry is gone...
    assert machine.values == before  # ...the installer's is untouched: the tray never writes HKLM
    assert run.is_enabled()


def test_per_user_entry_alone_switches_off_with_an_empty_hklm():
    user, machine = MemoryRegistry(), MemoryRegistry()
    run = WindowsRunKey(user, command=INSTALLED, machine=machine)
    run.set_enabled(True)
    assert run.is_enabled() and not run.all_users
    run.set_enabled(False)
    assert not run.is_enabled() and user.values == {} and machine.values == {}


def test_window_box_is_on_for_the_installers_entry_and_explains_why_it_stays_on(qtbot, control, opener):
    user, machine, run = installed_for_all_users()
    before = dict(machine.values)
    worker, window, _ = build(qtbot, control, opener, autostart=run)
    try:
        assert window.autostart_box.isChecked()
        assert "all users" in window.autostart_box.toolTip()
        window.autostart_box.click()  # the owner tries to turn it off
        assert window.autostart_box.isChecked()  # still true: it still starts at login
        assert "administrator" in window.banner.text() and "all users" in window.banner.text()
        assert machine.values == before
    finally:
        assert worker.shutdown(5000)


def test_window_box_switches_the_per_user_entry_without_a_message(qtbot, control, opener):
    user, machine = MemoryRegistry(), MemoryRegistry()
    run = WindowsRunKey(user, command=INSTALLED, machine=machine)
    worker, window, _ = build(qtbot, control, opener, autostart=run)
    try:
        assert not window.autostart_box.isChecked() and window.autostart_box.toolTip() == ""
        window.autostart_box.click()
        assert window.autostart_box.isChecked() and user.get(RUN_KEY, VALUE_NAME) == INSTALLED
        window.autostart_box.click()
        assert not window.autostart_box.isChecked() and user.values == {}
        assert window.banner.text() == "" and machine.values == {}
    finally:
        assert worker.shutdown(5000)


@pytest.mark.windows
@pytest.mark.skipif(sys.platform != "win32", reason="the real registry exists only on Windows")
def test_real_registry_round_trip():
    registry = WinregRegistry()
    name = "POSPalLicenseAgentTest"
    key = r"Software\POSPal\Test"
    try:
        registry.set(key, name, "x")
        assert registry.get(key, name) == "x"
    finally:
        registry.delete(key, name)
    assert registry.get(key, name) is None


def test_xdg_desktop_file(tmp_path):
    auto = XdgAutostart(tmp_path, command="/opt/pospal/POSPalLicenseAgent")
    assert not auto.is_enabled()
    auto.set_enabled(True)
    path = tmp_path / "autostart" / "pospal-license-agent.desktop"
    text = path.read_text()
    assert "Exec=/opt/pospal/POSPalLicenseAgent\n" in text and "Type=Application" in text
    assert auto.is_enabled()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind
    auto.set_enabled(False)
    assert not path.exists() and not auto.is_enabled()


def test_xdg_respects_xdg_config_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert XdgAutostart().path == tmp_path / "cfg" / "autostart" / "pospal-license-agent.desktop"


def test_a_hidden_entry_counts_as_off(tmp_path):
    auto = XdgAutostart(tmp_path)
    auto.path.parent.mkdir(parents=True)
    auto.path.write_text("[Desktop Entry]\nHidden=true\n")
    assert not auto.is_enabled()


def test_platform_choice():
    chosen = for_this_platform()
    if sys.platform.startswith("linux"):
        assert isinstance(chosen, XdgAutostart)
    elif sys.platform == "win32":
        assert isinstance(chosen, WindowsRunKey)
