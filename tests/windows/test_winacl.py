"""agent/host/winacl.py under Windows Python (in CI under Wine): the DACLs built with win32security are the
intended ones, the marks key's reads back from the registry as set, and re-protecting an earlier
version's data directory keeps the machine identity and the license readable by the service's stores.

Wine 8 keeps registry keys' security descriptors (without the protected bit), but a file's only as its
Unix mode bits (what reads back is derived from them), so a directory's DACL is compared as built, with
the real Windows APIs, before it is stored."""

from __future__ import annotations

import secrets

import pytest

from agent.host import winacl
from agent.vault import store

pytestmark = pytest.mark.windows

SVC = winacl.service_sid()


def sddl(policy: winacl.Policy) -> str:
    import win32security

    sd = win32security.SECURITY_DESCRIPTOR()
    sd.SetSecurityDescriptorOwner(win32security.ConvertStringSidToSid(policy.owner), False)
    sd.SetSecurityDescriptorDacl(True, winacl._acl(policy), False)
    if policy.protected:
        sd.SetSecurityDescriptorControl(win32security.SE_DACL_PROTECTED, win32security.SE_DACL_PROTECTED)
    info = win32security.OWNER_SECURITY_INFORMATION | win32security.DACL_SECURITY_INFORMATION
    return win32security.ConvertSecurityDescriptorToStringSecurityDescriptor(
        sd, win32security.SDDL_REVISION_1, info
    )


def test_the_data_dir_dacl_is_system_and_administrators_full_the_service_modify_nobody_else():
    assert (
        sddl(winacl.data_dir_policy()) == f"O:BAD:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)(A;OICI;0x1301bf;;;{SVC})"
    )


def test_the_service_dacl_lets_users_query_only():
    # CC query config, LC query status, SW enumerate dependents, LO interrogate, RC read control; no RP
    # (start), WP (stop), DT (pause), DC (change config), WD (write DAC) for Authenticated Users.
    full = "CCDCLCSWRPWPDTLOCRSDRCWDWO"  # SERVICE_ALL_ACCESS
    assert sddl(winacl.service_policy()) == f"O:BAD:(A;;{full};;;SY)(A;;{full};;;BA)(A;;CCLCSWLORC;;;AU)"


@pytest.fixture
def scratch_key():
    import win32api
    import win32con

    subkey = rf"Software\POSPal-test-{secrets.token_hex(4)}"
    yield subkey
    win32api.RegDeleteKeyEx(win32con.HKEY_LOCAL_MACHINE, subkey, win32con.KEY_WOW64_64KEY)


def test_the_marks_key_dacl_reads_back_from_the_registry_as_set(scratch_key):
    """Owner and entries read back as set. (Wine 8 does not return the SE_DACL_PROTECTED bit of a key;
    the DACL is built protected, as the SDDL tests show.)"""
    winacl.apply_to_key(scratch_key, winacl.marks_key_policy())
    back = winacl.read_key(scratch_key)
    assert (back.owner, back.aces) == (winacl.ADMINISTRATORS, winacl.marks_key_policy().aces)
    assert {ace.sid for ace in back.aces} == {winacl.SYSTEM, winacl.ADMINISTRATORS, SVC}  # no Users


def test_reprotecting_an_earlier_versions_data_keeps_the_identity_and_the_license(tmp_path):
    """An upgrade from the user-run agent: the same files, re-owned and re-protected by `service install`,
    still open with the same machine key (DPAPI machine scope) and the same state."""
    root = tmp_path / "POSPal"
    data = store.ensure_dir(root / "License Agent")
    key = store.MachineKeyStore(data).load_or_create()
    store.StateStore(data).save({"machine_id": "m-till-1", "token": "eyJ.license.token"})
    reset = winacl.apply_to_path(root, winacl.data_dir_policy())
    assert reset >= 3  # License Agent, state.json, machine-key.dpapi (at least)
    again = store.MachineKeyStore(data).load()
    assert again is not None and again.private_bytes_raw() == key.private_bytes_raw()
    loaded = store.StateStore(data).load().data
    assert loaded["machine_id"] == "m-till-1" and loaded["token"] == "eyJ.license.token"
