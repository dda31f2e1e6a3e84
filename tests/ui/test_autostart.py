"""Start at login: the Windows Run key (through a fake registry here, the real one on Windows) and XDG."""

from __future__ import annotations

import sys

import pytest

from ui.autostart import (
    RUN_KEY,
    VALUE_NAME,
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
