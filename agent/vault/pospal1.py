"""The old POSPal app's license on this PC, and its one-time exchange for this agent's first terminal.

Where the old app (a portable exe, `app.py` of POSPal 1.x) kept its license:

- `server_license.enc` in its data folder (`<exe folder>\\data`, or the older `C:\\POSPal\\data`) and a
  copy in `%ProgramData%\\POSPal` (the copy is where we look first: the exe folder can be anywhere);
- the text is base64url of a Fernet token whose key is PBKDF2-HMAC-SHA256 (100 000 rounds, the app's
  fixed salt) of the old hardware id followed by the app's fixed secret. The hardware id is
  SHA-256 of `mac|cpu|disk serial|SMBIOS UUID` as the old app read them (`uuid.getnode()`,
  `platform.processor()`, `wmic diskdrive`/`wmic csproduct`; "Unknown" when a read failed), so only this
  PC can open it. Inside: `{customer_email, unlock_token, hardware_id, activated_at, version}`;
- `trial.json` (`{first_run_date, signature}`) in the same two folders, for an unpaid trial.

On the first run with no license, `take_over_once` reads the license, sends the e-mail and the unlock
token to `POST /v1/migrations` and keeps the token it answers. Whatever happens, the old files are left
where they are (the old app, if started again, still finds them), and the result is written to
`pospal1.json` in the data dir so the exchange is tried once: a refusal (window closed, token already
used, no subscription) or a file this PC cannot open falls back to the normal activation, and the status
message (the window's card, the POS's `message`) and the diagnostics (`old_app_move`) say why, with the
state still `license_missing`/`not_activated`; only "offline"
is tried again at the next start. An old trial file (`trial.json`, found when there is no old license)
is not read (its signature uses a secret every copy of the old app ships): only its presence counts.
The agent then keeps this PC's old hardware id and sends it with its trial request, and the server
continues the old trial from the old server's own record (`pospal1_trials`), with its remaining days.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import platform
import subprocess
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from agent.cloud.transport import MachineIdentity
from agent.errors import Error, Offline, ServerRefused
from agent.vault import store
from pospal_protocol.signatures import new_nonce

if TYPE_CHECKING:
    from agent.core.service import AgentService
    from agent.core.state import LicenseStatus

log = logging.getLogger(__name__)

LICENSE_FILE = "server_license.enc"
RESULT_FILE = "pospal1.json"
TRIAL_FILE = "trial.json"
# Why an old license was not moved, kept in the agent's state (`pospal1_notice`) so the status message and
# the diagnostics say so (agent/messages.py `old_app.<notice>`), by the server's refusal code.
NOTICE_KEY = "pospal1_notice"
NOTICES = {"migration_used": "used", "migration_closed": "closed"}
# Where the agent keeps this PC's old hardware id for its trial request (agent/core/identity.py sends it).
TRIAL_ID_KEY = "pospal1_hardware_id"
# The old app's fixed key-derivation inputs (its `APP_SECRET_KEY` is formatted as a decimal integer).
_OLD_SECRET = str(0x8F3A2B1C9D4E5F6A)
_OLD_SALT = b"pospal_license_salt_v1"
_OLD_ROUNDS = 100_000
_MAX_FILE = 64 * 1024


@dataclass(frozen=True)
class OldLicense:
    """What the old app's license file holds that the server needs (and where it was found)."""

    email: str
    unlock_token: str
    path: Path


def old_dirs(env: Mapping[str, str]) -> list[Path]:
    """Where the old app's files may be, most reliable first.

    `POSPAL_OLD_APP_DIR` names the old exe's folder when it is not a default one (its `data` folder is
    searched, and the folder itself).
    """
    found: list[Path] = []
    if sys.platform == "win32":  # the known folder: a service's environment may name another one
        from agent.host.winacl import program_data as known_program_data

        program_data = str(known_program_data(dict(env)))
    else:
        program_data = env.get("PROGRAMDATA") or ""
    if program_data:
        found.append(Path(program_data) / "POSPal")
    if sys.platform == "win32":
        found.append(Path(r"C:\POSPal\data"))
    extra = env.get("POSPAL_OLD_APP_DIR")
    if extra:
        found += [Path(extra) / "data", Path(extra)]
    return found


def old_hardware_id() -> str:
    """This PC's hardware id as the old app computed it (the key to its license file)."""
    node = uuid.getnode()
    mac = ":".join(f"{(node >> shift) & 0xFF:02x}" for shift in range(40, -8, -8))
    cpu = platform.processor() or "Unknown"
    disk = _wmic(["diskdrive", "get", "serialnumber"], "SerialNumber")
    board = _wmic(["csproduct", "get", "uuid"], "UUID")
    return hashlib.sha256(f"{mac}|{cpu}|{disk}|{board}".encode()).hexdigest()


def _wmic(args: list[str], header: str) -> str:
    """The first value `wmic` prints, as the old app read it; "Unknown" off Windows or on any failure.

    A process, once, at the first run: the same tool the old app used gives the same text it hashed.
    """
    if sys.platform != "win32":
        return "Unknown"
    try:
        out = subprocess.run(
            ["wmic", *args],
            capture_output=True,
            text=True,
            timeout=5,
            creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "Unknown"
    for line in out.splitlines():
        value = line.strip()
        if value and value != header:
            return value
    return "Unknown"


def _fernet(hardware_id: str) -> Fernet:
    kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=_OLD_SALT, iterations=_OLD_ROUNDS)
    return Fernet(base64.urlsafe_b64encode(kdf.derive(f"{hardware_id}{_OLD_SECRET}".encode())))


def seal_old_license(data: Mapping[str, Any], hardware_id: str) -> str:
    """The file text the old app wrote for `data` (tests make an old till's files with it)."""
    token = _fernet(hardware_id).encrypt(json.dumps(dict(data), separators=(",", ":")).encode())
    return base64.urlsafe_b64encode(token).decode()


def read_old_license(path: Path, hardware_id: str) -> OldLicense | None:
    """The e-mail and unlock token in one old license file, or None (absent, another PC's, damaged)."""
    try:
        if path.stat().st_size > _MAX_FILE:
            return None
        text = path.read_text(encoding="ascii").strip()
        data = json.loads(_fernet(hardware_id).decrypt(base64.urlsafe_b64decode(text)))
    except (OSError, ValueError, InvalidToken):
        return None
    if not isinstance(data, dict):
        return None
    email, token = data.get("customer_email"), data.get("unlock_token")
    if not isinstance(email, str) or not isinstance(token, str) or not email.strip() or not token.strip():
        return None
    return OldLicense(email.strip().lower(), token.strip(), path)


def find_old_license(dirs: list[Path], hardware_id: str | None = None) -> OldLicense | None:
    """The first old license file in `dirs` this PC can open; None when there is none."""
    present = [d / LICENSE_FILE for d in dirs if (d / LICENSE_FILE).is_file()]
    if not present:
        return None
    hardware_id = hardware_id or old_hardware_id()
    for path in present:
        found = read_old_license(path, hardware_id)
        if found is not None:
            return found
        log.info("the old POSPal license in %s cannot be opened on this PC; it is left as it is", path)
    return None


def exchange(service: AgentService, old: OldLicense) -> LicenseStatus:
    """Send the old e-mail and unlock token to `POST /v1/migrations`; keep the token it answers."""
    migrate = getattr(service.transport, "migrate", None)
    if migrate is None:
        raise Offline("this agent's transport cannot move an old license")
    key = service.key_store.load_or_create()
    body = service._machine_body(key)  # the same machine fields an activation sends
    body.update(email=old.email, unlock_token=old.unlock_token, locale=service.language)
    gen = service._generation
    nonce = new_nonce()
    answer = migrate(MachineIdentity(key, nonce=nonce), body)
    service._accept(answer, gen, nonce, force=True)
    return service.status()


def take_over_once(service: AgentService, data_dir: Path, env: Mapping[str, str]) -> str:
    """On a PC with no license yet, exchange the old app's license once; the outcome, also logged.

    Outcomes: `licensed`, `none` (no old license here), `refused:unreadable` (a file this PC cannot
    open), `trial` (an old trial file, no license: its old hardware id is kept for the trial request),
    `refused:<code>`, `offline` (tried again at the next start), `skipped` (this agent already has a
    license or a trial). A refusal also sets the status message saying why (`_notice`).
    """
    result_path = data_dir / RESULT_FILE
    if result_path.exists():
        return "skipped"
    now = service.status()
    if now.license_state != "license_missing" and now.reason != "provisional_trial":
        return _done(result_path, "skipped")
    dirs = old_dirs(env)
    old = find_old_license(dirs)
    if old is None and any((d / LICENSE_FILE).is_file() for d in dirs):
        _notice(service, "unreadable")  # damaged, or another PC's: say so, and leave the file as it is
        return _done(result_path, "refused:unreadable")
    if old is None:
        if remember_old_trial(service, dirs):
            log.info("an old POSPal trial is on this PC: the trial continues it where the server knows it")
            return _done(result_path, "trial")
        return _done(result_path, "none")
    try:
        status = exchange(service, old)
    except ServerRefused as exc:
        log.warning(
            "the old POSPal license (%s) was not moved: %s; activate this PC with an e-mailed code or buy "
            "a subscription (the old files are left as they were)",
            old.path,
            exc.message,
        )
        _notice(service, NOTICES.get(exc.code, "refused"))
        return _done(result_path, f"refused:{exc.code}")
    except Offline:
        log.info("the old POSPal license could not be moved yet (offline); it is tried at the next start")
        return "offline"
    except Error as exc:
        log.warning("the old POSPal license was not moved: %s", exc)
        _notice(service, "refused")
        return _done(result_path, "refused:error")
    log.info("the old POSPal license of %s moved to this agent: %s", old.email, status.license_state)
    return _done(result_path, "licensed")


def remember_old_trial(service: AgentService, dirs: list[Path], hardware_id: str | None = None) -> bool:
    """With an old trial file in `dirs`, keep this PC's old hardware id for the trial request; True if so."""
    if not any((d / TRIAL_FILE).is_file() for d in dirs):
        return False
    hardware_id = hardware_id or old_hardware_id()
    with service._lock:
        service._data[TRIAL_ID_KEY] = hardware_id
        service._changed()
    service._save()
    return True


def _notice(service: AgentService, notice: str) -> None:
    """Keep why the old license was not moved, and publish the status whose message now says so."""
    with service._lock:
        service._data[NOTICE_KEY] = notice
        service._changed()
    service._save()
    service.refresh_status()


def _done(path: Path, outcome: str) -> str:
    store.atomic_write(path, json.dumps({"outcome": outcome}).encode() + b"\n")
    return outcome
