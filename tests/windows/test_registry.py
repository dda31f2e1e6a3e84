"""The registry as the agent and installer use it: the 64-bit view's MachineGuid, and HKCU values."""

import secrets

import pytest

pytestmark = pytest.mark.windows


def test_machine_guid_is_in_the_64_bit_view():
    import winreg

    with winreg.OpenKey(
        winreg.HKEY_LOCAL_MACHINE,
        r"SOFTWARE\Microsoft\Cryptography",
        0,
        winreg.KEY_READ | winreg.KEY_WOW64_64KEY,
    ) as key:
        guid, kind = winreg.QueryValueEx(key, "MachineGuid")
    assert kind == winreg.REG_SZ
    assert len(guid) == 36 and guid.count("-") == 4


def test_a_value_written_under_hkcu_reads_back_and_is_removed():
    import winreg

    path = rf"Software\POSPal\tests-{secrets.token_hex(4)}"
    with winreg.CreateKey(winreg.HKEY_CURRENT_USER, path) as key:
        winreg.SetValueEx(key, "Probe", 0, winreg.REG_SZ, '"C:\\Program Files\\x.exe"')
    with winreg.OpenKey(winreg.HKEY_CURRENT_USER, path) as key:
        assert winreg.QueryValueEx(key, "Probe")[0] == '"C:\\Program Files\\x.exe"'
    winreg.DeleteKey(winreg.HKEY_CURRENT_USER, path)
    with pytest.raises(FileNotFoundError):
        winreg.OpenKey(winreg.HKEY_CURRENT_USER, path)
