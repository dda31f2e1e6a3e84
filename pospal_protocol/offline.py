"""Activation by file: the request file an offline terminal writes and the license file the server returns.

Both are small UTF-8 JSON documents that travel on a USB stick (docs/ARCHITECTURE.md, "Activation by
file"). Neither holds a secret or a raw hardware value.

Request (`pospal-offline-request`, written by the agent, read by the server)::

    {"type": "pospal-offline-request", "v": 1, "machine_public_key": <b64url raw Ed25519>,
     "fingerprint": {component: <64 hex HMAC>}, "terminal_name": str|null, "locale": "en"|"el"|null,
     "known_kids": [kid, ...], "created": <unix s>, "nonce": <32 hex>, "signature": <b64url Ed25519>}

`signature` is the machine key's signature over ``b"pospal-offline-request\\n"`` + the canonical JSON
(sorted keys, no spaces, ASCII) of every other member, so the file proves possession of the machine key
whose public half it carries, and an edited file does not verify.

License file (`pospal-offline-license`, written by the server, read by the agent)::

    {"type": "pospal-offline-license", "v": 1, "token": <compact JWS>, "machine_id": "m_...",
     "license_id": "lic_...", "keyset": <key-set document>|null}

Only `token` (and the optional `keyset`, itself signed) is trusted: it is a license token whose policy says
`offline: true` and whose `mkey` claim is the machine public key it is bound to; the other members are
for people reading the file.

Deactivation (`pospal-offline-deactivation`, written by the agent when it gives its license file up, read
by the server's `/offline/deactivate`)::

    {"type": "pospal-offline-deactivation", "v": 1, "machine_public_key": <b64url raw Ed25519>,
     "machine_id": "m_...", "license_iat": <the given-up token's iat>, "created": <unix s>,
     "nonce": <32 hex>, "signature": <b64url Ed25519>}

signed like a request but under ``b"pospal-offline-deactivation\n"``, so neither file passes for the
other. `license_iat` names the license file it ends: a deactivation made before a newer file was issued
does not end that newer one.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pospal_protocol import text
from pospal_protocol.errors import KeyInvalid, OfflineFileInvalid
from pospal_protocol.trust import b64url_decode, b64url_encode, decode_public_key, encode_public_key

REQUEST_TYPE = "pospal-offline-request"
LICENSE_TYPE = "pospal-offline-license"
DEACTIVATION_TYPE = "pospal-offline-deactivation"
VERSION = 1
# The claim of an offline license token that names the machine public key it is bound to.
MACHINE_KEY_CLAIM = "mkey"
# Both files are a few KiB; anything much larger is not one of them.
MAX_FILE_BYTES = 64 * 1024
REQUEST_FILE_NAME = "pospal-activation-request.json"
DEACTIVATION_FILE_NAME = "pospal-deactivation.json"
LICENSE_FILE_NAME = "pospal-license.json"

_HASH = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_NONCE = re.compile(r"^[0-9a-f]{32}$")
_KID = re.compile(r"^[0-9a-f]{16}$")
_MACHINE_ID = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
_MAX_COMPONENTS = 16
_MAX_TERMINAL = 100


@dataclass(frozen=True)
class OfflineRequest:
    """A verified activation request: what the machine asks to be licensed as."""

    machine_public_key: str
    fingerprint: Mapping[str, str]
    terminal_name: str | None
    locale: str | None
    created: int
    nonce: str
    known_kids: tuple[str, ...] = ()


@dataclass(frozen=True)
class OfflineDeactivation:
    """A verified deactivation: the machine key gave up the license file whose token has `license_iat`."""

    machine_public_key: str
    machine_id: str
    license_iat: int
    created: int
    nonce: str


@dataclass(frozen=True)
class OfflineLicense:
    """A license file's trusted parts (still to be verified: `token` by the agent's trusted keys)."""

    token: str
    keyset: str | None


def _canonical(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _signing_input(doc: Mapping[str, Any], kind: str = REQUEST_TYPE) -> bytes:
    return kind.encode() + b"\n" + _canonical({k: v for k, v in doc.items() if k != "signature"})


def _load(data: bytes | str, kind: str) -> dict[str, Any]:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if len(raw) > MAX_FILE_BYTES:
        raise OfflineFileInvalid(f"The {kind} is too large.")
    try:
        doc = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise OfflineFileInvalid(f"The {kind} is not valid JSON.") from exc
    if not isinstance(doc, dict):
        raise OfflineFileInvalid(f"The {kind} is not a JSON object.")
    return doc


def make_request(
    private_key: Ed25519PrivateKey,
    fingerprint: Mapping[str, str],
    *,
    terminal_name: str | None,
    locale: str | None,
    created: int,
    known_kids: tuple[str, ...] | list[str] = (),
    nonce: str | None = None,
) -> bytes:
    """The signed request file (UTF-8 JSON bytes) for this machine key and fingerprint hashes."""
    doc: dict[str, Any] = {
        "type": REQUEST_TYPE,
        "v": VERSION,
        "machine_public_key": encode_public_key(private_key.public_key()),
        "fingerprint": dict(fingerprint),
        "terminal_name": terminal_name,
        "locale": locale,
        "known_kids": list(known_kids),
        "created": int(created),
        "nonce": nonce or secrets.token_hex(16),
    }
    _check_request_fields(doc)
    doc["signature"] = b64url_encode(private_key.sign(_signing_input(doc)))
    return json.dumps(doc, indent=2, ensure_ascii=False).encode("utf-8") + b"\n"


def _check_request_fields(doc: Mapping[str, Any]) -> None:
    fp = doc.get("fingerprint")
    if not isinstance(fp, dict) or not 0 < len(fp) <= _MAX_COMPONENTS:
        raise OfflineFileInvalid("The request has no fingerprint.")
    for name, value in fp.items():
        # Hashes only: a raw serial number or MAC never fits this shape.
        if (
            not isinstance(name, str)
            or not _NAME.match(name)
            or not isinstance(value, str)
            or not _HASH.match(value)
        ):
            raise OfflineFileInvalid("The request's fingerprint is malformed.")
    terminal = doc.get("terminal_name")
    if terminal is not None and (not isinstance(terminal, str) or len(terminal) > _MAX_TERMINAL):
        raise OfflineFileInvalid("The request's terminal name is malformed.")
    if isinstance(terminal, str) and text.problem(terminal):
        # A terminal name is shown on pages, in e-mail and to the operator: text only (pospal_protocol.text).
        raise OfflineFileInvalid(f"The request's terminal name {text.problem(terminal)}.")
    if doc.get("locale") not in (None, "en", "el"):
        raise OfflineFileInvalid("The request's language is malformed.")
    kids = doc.get("known_kids", [])
    if (
        not isinstance(kids, list)
        or len(kids) > 32
        or not all(isinstance(k, str) and _KID.match(k) for k in kids)
    ):
        raise OfflineFileInvalid("The request's key list is malformed.")
    if type(doc.get("created")) is not int or doc["created"] < 0:
        raise OfflineFileInvalid("The request's date is malformed.")
    if not isinstance(doc.get("nonce"), str) or not _NONCE.match(doc["nonce"]):
        raise OfflineFileInvalid("The request's nonce is malformed.")


def read_request(data: bytes | str) -> OfflineRequest:
    """Parse and verify a request file; raises `OfflineFileInvalid` when malformed, edited or unsigned."""
    doc = _load(data, "activation request")
    if doc.get("type") != REQUEST_TYPE or doc.get("v") != VERSION:
        raise OfflineFileInvalid("This is not a POSPal activation request.")
    _check_request_fields(doc)
    signature = doc.get("signature")
    if not isinstance(signature, str):
        raise OfflineFileInvalid("The activation request is not signed.")
    try:
        key = decode_public_key(str(doc.get("machine_public_key") or ""))
        key.verify(b64url_decode(signature), _signing_input(doc))
    except (KeyInvalid, ValueError, InvalidSignature) as exc:
        raise OfflineFileInvalid("The activation request's signature does not verify.") from exc
    return OfflineRequest(
        machine_public_key=encode_public_key(key),
        fingerprint=dict(doc["fingerprint"]),
        terminal_name=doc.get("terminal_name") or None,
        locale=doc.get("locale"),
        created=doc["created"],
        nonce=doc["nonce"],
        known_kids=tuple(doc.get("known_kids", [])),
    )


def make_license(token: str, *, machine_id: str, license_id: str, keyset: str | None = None) -> bytes:
    """The license file (UTF-8 JSON bytes) carrying a signed offline license token."""
    doc = {
        "type": LICENSE_TYPE,
        "v": VERSION,
        "token": token,
        "machine_id": machine_id,
        "license_id": license_id,
        "keyset": keyset,
    }
    return json.dumps(doc, indent=2).encode("utf-8") + b"\n"


def read_license(data: bytes | str) -> OfflineLicense:
    """Parse a license file's shape (not its signature: the agent verifies the token itself)."""
    doc = _load(data, "license file")
    if doc.get("type") != LICENSE_TYPE or doc.get("v") != VERSION:
        raise OfflineFileInvalid("This is not a POSPal license file.")
    token, keyset = doc.get("token"), doc.get("keyset")
    if not isinstance(token, str) or token.count(".") != 2 or len(token) > MAX_FILE_BYTES:
        raise OfflineFileInvalid("The license file holds no license token.")
    if keyset is not None and not isinstance(keyset, str):
        raise OfflineFileInvalid("The license file's key update is malformed.")
    return OfflineLicense(token=token, keyset=keyset)


def make_deactivation(
    private_key: Ed25519PrivateKey,
    *,
    machine_id: str,
    license_iat: int,
    created: int,
    nonce: str | None = None,
) -> bytes:
    """The signed deactivation file (UTF-8 JSON bytes): this machine key gives up that license file."""
    doc: dict[str, Any] = {
        "type": DEACTIVATION_TYPE,
        "v": VERSION,
        "machine_public_key": encode_public_key(private_key.public_key()),
        "machine_id": machine_id,
        "license_iat": int(license_iat),
        "created": int(created),
        "nonce": nonce or secrets.token_hex(16),
    }
    _check_deactivation_fields(doc)
    doc["signature"] = b64url_encode(private_key.sign(_signing_input(doc, DEACTIVATION_TYPE)))
    return json.dumps(doc, indent=2).encode("utf-8") + b"\n"


def _check_deactivation_fields(doc: Mapping[str, Any]) -> None:
    if not isinstance(doc.get("machine_id"), str) or not _MACHINE_ID.match(doc["machine_id"]):
        raise OfflineFileInvalid("The deactivation file's machine id is malformed.")
    for name in ("license_iat", "created"):
        if type(doc.get(name)) is not int or doc[name] < 0:
            raise OfflineFileInvalid("The deactivation file's dates are malformed.")
    if not isinstance(doc.get("nonce"), str) or not _NONCE.match(doc["nonce"]):
        raise OfflineFileInvalid("The deactivation file's nonce is malformed.")


def read_deactivation(data: bytes | str) -> OfflineDeactivation:
    """Parse and verify a deactivation file; `OfflineFileInvalid` when malformed, edited or unsigned."""
    doc = _load(data, "deactivation file")
    if doc.get("type") != DEACTIVATION_TYPE or doc.get("v") != VERSION:
        raise OfflineFileInvalid("This is not a POSPal deactivation file.")
    _check_deactivation_fields(doc)
    signature = doc.get("signature")
    if not isinstance(signature, str):
        raise OfflineFileInvalid("The deactivation file is not signed.")
    try:
        key = decode_public_key(str(doc.get("machine_public_key") or ""))
        key.verify(b64url_decode(signature), _signing_input(doc, DEACTIVATION_TYPE))
    except (KeyInvalid, ValueError, InvalidSignature) as exc:
        raise OfflineFileInvalid("The deactivation file's signature does not verify.") from exc
    return OfflineDeactivation(
        machine_public_key=encode_public_key(key),
        machine_id=doc["machine_id"],
        license_iat=doc["license_iat"],
        created=doc["created"],
        nonce=doc["nonce"],
    )
