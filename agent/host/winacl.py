"""Who may touch the service's data, marks and service object on Windows: the intended DACLs as data,
and their application with win32security.

The till user is an ordinary local account. The license service runs as its own virtual account,
`NT SERVICE\\POSPalAgent`, whose SID is derived from the service name (`service_sid`), so a DACL can
name this one service and nothing else that runs as LocalService.

- `%ProgramData%\\POSPal` (`data_dir_policy`): owner Administrators, protected (nothing inherited from
  ProgramData, whose default lets Users create files), SYSTEM and Administrators full control, the
  service modify, inherited by every file below. Users get nothing: the sealed machine key, the state,
  the api-token and the logs are out of the till user's reach.
- the marks key `HKLM\\Software\\POSPal\\POSPal License Agent` (`marks_key_policy`): SYSTEM and
  Administrators full, the service read and set value, Users nothing.
- the service object (`service_policy`): SYSTEM and Administrators full, Authenticated Users query and
  interrogate only (no start, stop, pause or reconfiguration).

The policies are plain data (`Policy`, `Ace`) so that Linux tests can ask what a till user's token is
granted (`granted`), since Wine stores security descriptors but enforces none. `apply_*` and `read_*`
are the Windows side.
"""

from __future__ import annotations

import hashlib
import os
import struct
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import StoreError

SERVICE_NAME = "POSPalAgent"

SYSTEM = "S-1-5-18"
ADMINISTRATORS = "S-1-5-32-544"
USERS = "S-1-5-32-545"
AUTHENTICATED_USERS = "S-1-5-11"
INTERACTIVE = "S-1-5-4"
EVERYONE = "S-1-1-0"
LOCAL_SERVICE = "S-1-5-19"

# Generic and standard rights (winnt.h).
DELETE = 0x00010000
READ_CONTROL = 0x00020000
WRITE_DAC = 0x00040000
WRITE_OWNER = 0x00080000

# Files and directories.
FILE_READ_DATA = 0x0001
FILE_WRITE_DATA = 0x0002
FILE_APPEND_DATA = 0x0004
FILE_ALL_ACCESS = 0x001F01FF
FILE_MODIFY = 0x001301BF  # read, write, execute, delete: Explorer's "Modify", without WRITE_DAC/OWNER
FILE_DELETE_CHILD = 0x0040

# Registry keys.
KEY_QUERY_VALUE = 0x0001
KEY_SET_VALUE = 0x0002
KEY_READ = 0x00020019
KEY_ALL_ACCESS = 0x000F003F

# Services.
SERVICE_QUERY_CONFIG = 0x0001
SERVICE_CHANGE_CONFIG = 0x0002
SERVICE_QUERY_STATUS = 0x0004
SERVICE_ENUMERATE_DEPENDENTS = 0x0008
SERVICE_START = 0x0010
SERVICE_STOP = 0x0020
SERVICE_PAUSE_CONTINUE = 0x0040
SERVICE_INTERROGATE = 0x0080
SERVICE_USER_DEFINED_CONTROL = 0x0100
SERVICE_ALL_ACCESS = 0x000F01FF
SERVICE_READ_ONLY = (
    SERVICE_QUERY_CONFIG
    | SERVICE_QUERY_STATUS
    | SERVICE_ENUMERATE_DEPENDENTS
    | SERVICE_INTERROGATE
    | READ_CONTROL
)

OBJECT_INHERIT = 0x1
CONTAINER_INHERIT = 0x2
INHERIT_BOTH = OBJECT_INHERIT | CONTAINER_INHERIT

# The data directory's root (%ProgramData%\POSPal): the DACL is set here and inherited below it.
DATA_ROOT_NAME = "POSPal"


@dataclass(frozen=True)
class Ace:
    """One access-allowed entry: `sid` is granted `mask`, with `flags` saying who inherits it."""

    sid: str
    mask: int
    flags: int = 0


@dataclass(frozen=True)
class Policy:
    """An owner and a DACL of allow entries; `protected` blocks inheritance from the parent."""

    owner: str
    aces: tuple[Ace, ...]
    protected: bool = True


def service_sid(name: str = SERVICE_NAME) -> str:
    """The SID of the virtual account `NT SERVICE\\<name>`: S-1-5-80 followed by the SHA-1 of the
    upper-cased name in UTF-16LE, read as five little-endian 32-bit numbers (as `sc showsid` prints)."""
    digest = hashlib.sha1(name.upper().encode("utf-16-le")).digest()  # noqa: S324 - Windows' derivation, not a MAC
    return "S-1-5-80-" + "-".join(str(n) for n in struct.unpack("<5I", digest))


def data_dir_policy(service: str = SERVICE_NAME) -> Policy:
    """`%ProgramData%\\POSPal`: SYSTEM and Administrators full, the service modify, Users nothing."""
    return Policy(
        owner=ADMINISTRATORS,
        aces=(
            Ace(SYSTEM, FILE_ALL_ACCESS, INHERIT_BOTH),
            Ace(ADMINISTRATORS, FILE_ALL_ACCESS, INHERIT_BOTH),
            Ace(service_sid(service), FILE_MODIFY, INHERIT_BOTH),
        ),
    )


def marks_key_policy(service: str = SERVICE_NAME) -> Policy:
    """The marks key in HKLM: SYSTEM and Administrators full, the service read and set value, Users none."""
    return Policy(
        owner=ADMINISTRATORS,
        aces=(
            Ace(SYSTEM, KEY_ALL_ACCESS, INHERIT_BOTH),
            Ace(ADMINISTRATORS, KEY_ALL_ACCESS, INHERIT_BOTH),
            Ace(service_sid(service), KEY_READ | KEY_SET_VALUE, INHERIT_BOTH),
        ),
    )


def service_policy() -> Policy:
    """The service object: SYSTEM and Administrators full; a logged-on user may only query it, so the
    tray can say "stopped" but no till user can stop, pause or reconfigure the license service."""
    return Policy(
        owner=ADMINISTRATORS,
        aces=(
            Ace(SYSTEM, SERVICE_ALL_ACCESS),
            Ace(ADMINISTRATORS, SERVICE_ALL_ACCESS),
            Ace(AUTHENTICATED_USERS, SERVICE_READ_ONLY),
        ),
        protected=False,
    )


def granted(policy: Policy, token: Iterable[str]) -> int:
    """The rights a token with these SIDs gets from `policy` (allow entries only, as ours are), plus the
    owner's implicit READ_CONTROL and WRITE_DAC when the token holds the owner."""
    sids = set(token)
    mask = 0
    for ace in policy.aces:
        if ace.sid in sids:
            mask |= ace.mask
    if policy.owner in sids:
        mask |= READ_CONTROL | WRITE_DAC
    return mask


def program_data(env: dict[str, str] | None = None) -> Path:
    """The ProgramData folder: the shell's known folder on Windows, which a service sees as the installer
    does (a service's environment may lack %ProgramData%; Wine's services.exe sets it to C:\\users\\Public),
    else the environment's, else C:\\ProgramData."""
    known = _known_program_data() if sys.platform == "win32" else None
    if known:
        return Path(known)
    env = dict(os.environ) if env is None else env
    return Path(env.get("ProgramData") or env.get("ALLUSERSPROFILE") or r"C:\ProgramData")


def _known_program_data() -> str | None:  # pragma: no cover - Windows only
    if sys.platform != "win32":
        return None
    import ctypes
    import uuid

    folder = (ctypes.c_byte * 16).from_buffer_copy(uuid.UUID("62AB5D82-FDC1-4DC3-A9DD-070D1D495D97").bytes_le)
    out = ctypes.c_wchar_p()
    try:
        shell32, ole32 = ctypes.WinDLL("shell32"), ctypes.WinDLL("ole32")
    except (AttributeError, OSError):  # no shell (a test that only says it is Windows): use the environment
        return None
    if shell32.SHGetKnownFolderPath(ctypes.byref(folder), 0, None, ctypes.byref(out)) != 0:
        return None
    try:
        return out.value
    finally:
        ole32.CoTaskMemFree(out)


def data_root(env: dict[str, str] | None = None) -> Path:
    """`%ProgramData%\\POSPal`, the directory the DACL is set on (agent.config puts the data below it)."""
    return program_data(env) / DATA_ROOT_NAME


# ------------------------------------------------------------------------------------------- Windows


def _win() -> tuple[Any, Any]:  # pragma: no cover - Windows only
    if sys.platform != "win32":
        raise OSError("Windows only")
    import win32api
    import win32security

    return win32security, win32api


def _acl(policy: Policy) -> Any:  # pragma: no cover - Windows only
    win32security, _ = _win()
    acl = win32security.ACL()
    for ace in policy.aces:
        acl.AddAccessAllowedAceEx(
            win32security.ACL_REVISION, ace.flags, ace.mask, win32security.ConvertStringSidToSid(ace.sid)
        )
    return acl


def _info(policy: Policy, *, owner: bool) -> int:  # pragma: no cover - Windows only
    win32security, _ = _win()
    info = win32security.DACL_SECURITY_INFORMATION
    info |= (
        win32security.PROTECTED_DACL_SECURITY_INFORMATION
        if policy.protected
        else win32security.UNPROTECTED_DACL_SECURITY_INFORMATION
    )
    if owner:
        info |= win32security.OWNER_SECURITY_INFORMATION
    return info


def enable_privileges() -> None:  # pragma: no cover - Windows only
    """Enable SeTakeOwnership and SeRestore in this (elevated) process, so the owner of files a till user
    created can be set to Administrators; best effort (an unelevated process simply lacks them)."""
    win32security, win32api = _win()
    token = win32security.OpenProcessToken(
        win32api.GetCurrentProcess(), win32security.TOKEN_ADJUST_PRIVILEGES | win32security.TOKEN_QUERY
    )
    wanted = []
    for name in ("SeTakeOwnershipPrivilege", "SeRestorePrivilege"):
        try:
            wanted.append(
                (win32security.LookupPrivilegeValue(None, name), win32security.SE_PRIVILEGE_ENABLED)
            )
        except win32security.error:
            continue
    if wanted:
        win32security.AdjustTokenPrivileges(token, False, wanted)


def apply_to_path(path: Path, policy: Policy) -> int:  # pragma: no cover - Windows only
    """Set `policy` on the directory `path` (created if missing), then make everything below it owned by
    `policy.owner` and inherit only from it (an earlier version's files, owned by the till user who ran
    it, would otherwise keep their owner's implicit WRITE_DAC). Returns how many entries were reset.
    Raises `StoreError`."""
    win32security, _ = _win()
    owner = win32security.ConvertStringSidToSid(policy.owner)
    try:
        path.mkdir(parents=True, exist_ok=True)
        enable_privileges()
        win32security.SetNamedSecurityInfo(
            str(path),
            win32security.SE_FILE_OBJECT,
            _info(policy, owner=True),
            owner,
            None,
            _acl(policy),
            None,
        )
        reset = 0
        inherit_only = (
            win32security.DACL_SECURITY_INFORMATION
            | win32security.UNPROTECTED_DACL_SECURITY_INFORMATION
            | win32security.OWNER_SECURITY_INFORMATION
        )
        for below in sorted(path.rglob("*")):
            win32security.SetNamedSecurityInfo(
                str(below), win32security.SE_FILE_OBJECT, inherit_only, owner, None, win32security.ACL(), None
            )
            reset += 1
        return reset
    except (OSError, win32security.error) as exc:
        raise StoreError(f"Cannot protect {path}: {exc}") from exc


def apply_to_key(subkey: str, policy: Policy) -> None:  # pragma: no cover - Windows only
    """Create `HKLM\\<subkey>` if missing and set `policy` on it. Raises `StoreError`."""
    win32security, win32api = _win()
    import win32con

    try:
        key, _ = win32api.RegCreateKeyEx(
            win32con.HKEY_LOCAL_MACHINE, subkey, win32con.KEY_ALL_ACCESS | win32con.KEY_WOW64_64KEY, None, 0
        )
        try:
            win32security.SetSecurityInfo(
                key,
                win32security.SE_REGISTRY_KEY,
                _info(policy, owner=True),
                win32security.ConvertStringSidToSid(policy.owner),
                None,
                _acl(policy),
                None,
            )
        finally:
            win32api.RegCloseKey(key)
    except win32security.error as exc:
        raise StoreError(f"Cannot protect HKLM\\{subkey}: {exc}") from exc


def apply_to_service(handle: Any, policy: Policy) -> None:  # pragma: no cover - Windows only
    """Set `policy`'s DACL on an open service handle (opened with WRITE_DAC)."""
    win32security, _ = _win()
    import win32service

    sd = win32security.SECURITY_DESCRIPTOR()
    sd.SetSecurityDescriptorDacl(True, _acl(policy), False)
    win32service.SetServiceObjectSecurity(handle, win32security.DACL_SECURITY_INFORMATION, sd)


def policy_of(sd: Any) -> Policy:  # pragma: no cover - Windows only
    """The owner and allow entries of a security descriptor read back from Windows, as a `Policy`."""
    win32security, _ = _win()
    dacl = sd.GetSecurityDescriptorDacl()
    aces = []
    for i in range(dacl.GetAceCount() if dacl is not None else 0):
        (kind, flags), mask, sid = dacl.GetAce(i)
        if kind != win32security.ACCESS_ALLOWED_ACE_TYPE:
            raise StoreError(f"unexpected ACE type {kind}")
        aces.append(Ace(win32security.ConvertSidToStringSid(sid), mask, flags))
    control, _revision = sd.GetSecurityDescriptorControl()
    owner = sd.GetSecurityDescriptorOwner()
    return Policy(
        owner=win32security.ConvertSidToStringSid(owner) if owner is not None else "",
        aces=tuple(aces),
        protected=bool(control & win32security.SE_DACL_PROTECTED),
    )


def read_key(subkey: str) -> Policy:  # pragma: no cover - Windows only
    """The security descriptor of `HKLM\\<subkey>`, as Windows (or Wine) stores it."""
    win32security, _ = _win()
    info = win32security.DACL_SECURITY_INFORMATION | win32security.OWNER_SECURITY_INFORMATION
    return policy_of(
        win32security.GetNamedSecurityInfo(f"MACHINE\\{subkey}", win32security.SE_REGISTRY_KEY, info)
    )


def read_path(path: Path) -> Policy:  # pragma: no cover - Windows only
    """The security descriptor of a file or directory, as Windows stores it."""
    win32security, _ = _win()
    info = win32security.DACL_SECURITY_INFORMATION | win32security.OWNER_SECURITY_INFORMATION
    return policy_of(win32security.GetNamedSecurityInfo(str(path), win32security.SE_FILE_OBJECT, info))
