"""The till user's attack list against the Windows model, by what the DACLs grant (Wine stores security
descriptors but enforces none, and Linux has no Windows tokens): read the machine key, edit or delete the
state and marks, stop or reconfigure the service, each refused; and `service install` configures exactly
those DACLs, automatic start and restart on failure (a fake win32service records what it is asked)."""

from __future__ import annotations

import sys
import types

import pytest

from agent.host import winacl, winservice
from agent.host.winacl import (
    ADMINISTRATORS,
    AUTHENTICATED_USERS,
    DELETE,
    EVERYONE,
    FILE_APPEND_DATA,
    FILE_DELETE_CHILD,
    FILE_READ_DATA,
    FILE_WRITE_DATA,
    INTERACTIVE,
    KEY_QUERY_VALUE,
    KEY_SET_VALUE,
    READ_CONTROL,
    SERVICE_CHANGE_CONFIG,
    SERVICE_PAUSE_CONTINUE,
    SERVICE_QUERY_STATUS,
    SERVICE_START,
    SERVICE_STOP,
    SYSTEM,
    USERS,
    WRITE_DAC,
    WRITE_OWNER,
    granted,
)
from agent.vault import marks

# A staff account at the till: a member of Users, logged on interactively, not an administrator.
TILL_USER = (
    "S-1-5-21-1004336348-1177238915-682003330-1001",
    USERS,
    AUTHENTICATED_USERS,
    INTERACTIVE,
    EVERYONE,
    "S-1-2-0",
)
SERVICE = (winacl.service_sid(), "S-1-5-6", AUTHENTICATED_USERS, EVERYONE)  # NT SERVICE\POSPalAgent, SERVICE
WRITES = FILE_WRITE_DATA | FILE_APPEND_DATA | DELETE | FILE_DELETE_CHILD | WRITE_DAC | WRITE_OWNER


def test_the_virtual_account_sid_is_windows_derivation():
    """`sc showsid TrustedInstaller` prints this SID; ours is derived the same way from POSPalAgent."""
    assert (
        winacl.service_sid("TrustedInstaller")
        == "S-1-5-80-956008885-3418522649-1831038044-1853292631-2271478464"
    )
    assert winacl.service_sid("posPALagent") == winacl.service_sid()  # the name is upper-cased first


def test_the_till_user_cannot_read_the_machine_key_the_state_or_the_api_token():
    assert granted(winacl.data_dir_policy(), TILL_USER) & (FILE_READ_DATA | READ_CONTROL) == 0


def test_the_till_user_cannot_edit_delete_or_replace_the_state_or_the_key():
    assert granted(winacl.data_dir_policy(), TILL_USER) & WRITES == 0


def test_nothing_from_programdata_is_inherited_and_nobody_at_the_till_owns_it():
    """ProgramData lets Users create files (and CREATOR OWNER gets full control): protected, owned by
    Administrators, so neither an inherited entry nor an owner's implicit WRITE_DAC lets the user in."""
    policy = winacl.data_dir_policy()
    assert policy.protected and policy.owner == ADMINISTRATORS
    assert {ace.sid for ace in policy.aces} == {SYSTEM, ADMINISTRATORS, winacl.service_sid()}
    assert all(ace.flags == winacl.INHERIT_BOTH for ace in policy.aces)  # every file below gets the same


def test_the_service_reads_and_writes_its_data_but_cannot_open_it_to_anyone():
    mask = granted(winacl.data_dir_policy(), SERVICE)
    assert mask & (FILE_READ_DATA | FILE_WRITE_DATA | DELETE) == FILE_READ_DATA | FILE_WRITE_DATA | DELETE
    assert mask & (WRITE_DAC | WRITE_OWNER) == 0


def test_the_till_user_cannot_write_or_read_the_marks_key_only_the_service_writes():
    assert granted(winacl.marks_key_policy(), TILL_USER) == 0
    assert granted(winacl.marks_key_policy(), SERVICE) & (KEY_QUERY_VALUE | KEY_SET_VALUE) == (
        KEY_QUERY_VALUE | KEY_SET_VALUE
    )


def test_the_till_user_can_see_the_service_but_not_stop_pause_start_or_reconfigure_it():
    mask = granted(winacl.service_policy(), TILL_USER)
    assert mask & SERVICE_QUERY_STATUS  # the tray may say "stopped"
    assert (
        mask & (SERVICE_STOP | SERVICE_PAUSE_CONTINUE | SERVICE_START | SERVICE_CHANGE_CONFIG | WRITE_DAC)
        == 0
    )


def test_an_administrator_keeps_full_control():
    admin = (*TILL_USER, ADMINISTRATORS)
    assert granted(winacl.data_dir_policy(), admin) == winacl.FILE_ALL_ACCESS | READ_CONTROL | WRITE_DAC
    assert granted(winacl.service_policy(), admin) & SERVICE_STOP


# ------------------------------------------------------------------ service install, with a fake SCM


class FakeWin32Service(types.ModuleType):
    """The parts of win32service that `winservice.install` calls, recording them."""

    SC_MANAGER_ALL_ACCESS = SERVICE_ALL_ACCESS = 0xF01FF
    SERVICE_WIN32_OWN_PROCESS, SERVICE_AUTO_START, SERVICE_DEMAND_START, SERVICE_ERROR_NORMAL = 0x10, 2, 3, 1
    SERVICE_CONFIG_DESCRIPTION, SERVICE_CONFIG_FAILURE_ACTIONS, SERVICE_CONFIG_FAILURE_ACTIONS_FLAG = 1, 2, 4
    SC_ACTION_RESTART = 1

    class error(Exception):  # noqa: N801 - pywin32's name
        def __init__(self, winerror=1060, strerror="The specified service does not exist"):
            super().__init__(winerror, strerror)
            self.winerror, self.strerror = winerror, strerror

    def __init__(self, exists: bool) -> None:
        super().__init__("win32service")
        self.exists = exists
        self.calls: list[tuple] = []

    def OpenSCManager(self, *args):  # noqa: N802
        return "scm"

    def OpenService(self, scm, name, access):  # noqa: N802
        if not self.exists:
            raise self.error()
        return "svc"

    def CreateService(self, scm, name, display, access, kind, start, error, bin_path, *rest):  # noqa: N802
        self.calls.append(("create", name, kind, start, bin_path, rest[3]))
        return "svc"

    def ChangeServiceConfig(self, handle, kind, start, error, bin_path, group, tag, deps, account, *rest):  # noqa: N802
        self.calls.append(("change", kind, start, bin_path, account))

    def ChangeServiceConfig2(self, handle, level, value):  # noqa: N802
        self.calls.append(("config2", level, value))

    def CloseServiceHandle(self, handle):  # noqa: N802
        pass


@pytest.fixture
def fake_windows(monkeypatch):
    applied: list[tuple] = []
    monkeypatch.setattr(winservice.sys, "platform", "win32")
    monkeypatch.setattr(winacl, "_known_program_data", lambda: r"C:\ProgramData")
    monkeypatch.setattr(
        winacl, "apply_to_service", lambda handle, policy: applied.append(("service", policy))
    )
    monkeypatch.setattr(winacl, "apply_to_path", lambda path, policy: applied.append(("path", path, policy)))
    monkeypatch.setattr(winacl, "apply_to_key", lambda key, policy: applied.append(("key", key, policy)))

    def install(exists: bool) -> FakeWin32Service:
        fake = FakeWin32Service(exists)
        monkeypatch.setitem(sys.modules, "win32service", fake)
        return fake

    return install, applied


EXE = r"C:\Program Files\POSPal License Agent\pospal-agent.exe"


def test_install_creates_an_automatic_service_as_its_virtual_account_restarted_on_failure(fake_windows):
    """Automatic start is what makes the service take 127.0.0.1:7421 at boot, before any user logs on;
    a squatter that got there first only makes the start fail, and the restarts retry it."""
    install, applied = fake_windows
    fake = install(exists=False)
    winservice.install([EXE, "service", "run"])
    create = next(c for c in fake.calls if c[0] == "create")
    assert create[1:] == (
        "POSPalAgent",
        0x10,
        fake.SERVICE_AUTO_START,
        f'"{EXE}" service run',
        r"NT SERVICE\POSPalAgent",
    )
    failure = next(c[2] for c in fake.calls if c[:2] == ("config2", fake.SERVICE_CONFIG_FAILURE_ACTIONS))
    assert failure["Actions"] and all(kind == fake.SC_ACTION_RESTART for kind, _delay in failure["Actions"])
    assert ("config2", fake.SERVICE_CONFIG_FAILURE_ACTIONS_FLAG, True) in fake.calls
    assert ("service", winacl.service_policy()) in applied
    assert ("path", winacl.data_root(), winacl.data_dir_policy()) in applied
    assert ("key", marks.REGISTRY_PATH, winacl.marks_key_policy()) in applied


def test_install_over_an_existing_service_updates_it_in_place(fake_windows):
    """An upgrade keeps the service's name, and so its SID, its DACLs and its data."""
    install, applied = fake_windows
    fake = install(exists=True)
    winservice.install([EXE, "service", "run"])
    assert not [c for c in fake.calls if c[0] == "create"]
    change = next(c for c in fake.calls if c[0] == "change")
    assert change[1:] == (0x10, fake.SERVICE_AUTO_START, f'"{EXE}" service run', r"NT SERVICE\POSPalAgent")
    assert [a[0] for a in applied] == ["service", "path", "key"]
