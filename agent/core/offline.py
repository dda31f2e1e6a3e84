"""Activation by file, the agent's side: write the request file, check a license file before it is used.

`request_file` signs this machine's public key and fingerprint hashes with the machine key (format:
`pospal_protocol.offline`). `check_license_file` verifies a license file the way every token is verified (the
trusted keys, `nbf` against the trusted clock, allowing a lag of this PC's clock below the rollback limit)
and more: it must not have ended, it must be an offline license (`policy.offline`), its `mkey` claim must
be this machine's public key and its bound fingerprint must match this machine with a decided verdict
(`fingerprint.proves_same_machine`: a file bound to names this PC does not read is another PC's). Any
failure raises `LicenseFileRefused` with a message in the agent's language, and the caller changes nothing.

`deactivation_file` is the till's proof that it gave its license file up (the server's `/offline/deactivate`
frees the seat only with it, or when the file ends): signed by the machine key, naming the given-up
token's `iat`. The caller forgets the license first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent import messages
from agent.errors import KeySetRejected, LicenseFileRefused, MachineMismatch, OfflineFileInvalid, TokenInvalid
from agent.vault.cache import IAT_LEEWAY_S, check_fresh
from pospal_protocol import fingerprint
from pospal_protocol import offline as wire
from pospal_protocol.tokens import Claims, Policy, verify_token
from pospal_protocol.trust import TrustedKeys, encode_public_key


@dataclass(frozen=True)
class CheckedLicense:
    """A license file that passed every check: its token, verified claims and any key-set update."""

    token: str
    claims: Claims
    keyset: str | None


def request_file(
    key: Ed25519PrivateKey,
    hashes: Mapping[str, str],
    *,
    terminal_name: str | None,
    lang: str,
    now: datetime,
    known_kids: list[str],
) -> bytes:
    """The activation request file for this machine (public key, hashes, signature; nothing secret)."""
    return wire.make_request(
        key,
        hashes,
        terminal_name=terminal_name,
        locale=lang,
        created=int(now.timestamp()),
        known_kids=known_kids,
    )


def _refuse(code: str, lang: str) -> LicenseFileRefused:
    return LicenseFileRefused(code, messages.text(f"error.offline_file_{code}", lang))


def check_license_file(
    data: bytes | str,
    *,
    trusted: TrustedKeys,
    now: datetime,
    hashes: Mapping[str, str],
    public_key: str,
    held: Claims | None,
    lang: str,
    newest_iat: int | None = None,
) -> CheckedLicense:
    """Verify a license file for this machine; raises `LicenseFileRefused` (nothing is changed here).

    `trusted` is only read: a key-set update in the file is checked on a copy. `held` is the token the
    agent holds, which a file older than it may not replace (an old file replayed after a newer one);
    `newest_iat` the newest token time this PC has seen (`agent.vault.cache.check_fresh`'s rule), which also
    refuses a file this PC gave up (`past`).
    """
    try:
        lic = wire.read_license(data)
    except OfflineFileInvalid as exc:
        raise _refuse("unreadable", lang) from exc
    keys = trusted
    if lic.keyset:
        keys = trusted.copy()  # a copy: a refused file must change nothing
        try:
            keys.apply_keyset_update(lic.keyset)
        except KeySetRejected:
            # Not the authority's newest (a legacy document signed by a token key, an older version):
            # it adds nothing, and the token must verify on the keys this PC already trusts.
            keys = trusted

    def same_machine(bound: Mapping[str, str]) -> bool:
        # A file must prove it is for this PC: a verdict never decided (too few components read on both
        # sides, e.g. a file bound to another platform's component names) is not a yes, or one file
        # would import on every PC given the key (issue 28 case 5; the POS's rule of case 1).
        return fingerprint.proves_same_machine(bound, hashes)

    # The file was made on the server's clock and carried here by hand: this PC's clock may lag by less
    # than the rollback limit (PRODUCT.md "Clock": smaller skews are tolerated), so `nbf` is checked that
    # far ahead; the end is checked on the trusted clock itself.
    skew = timedelta(seconds=Policy().rollback_s)
    try:
        claims = verify_token(lic.token, keys, now + skew, fp_matches=same_machine)
    except MachineMismatch as exc:
        raise _refuse("other_machine", lang) from exc
    except TokenInvalid as exc:
        raise _refuse("invalid", lang) from exc
    if not claims.policy.offline or claims.kind != "license":
        raise _refuse("invalid", lang)
    if claims.exp <= now.timestamp():
        raise _refuse("expired", lang)
    if claims.raw.get(wire.MACHINE_KEY_CLAIM) != public_key:
        raise _refuse("other_machine", lang)
    if held is not None and held.sub == claims.sub and held.iat > claims.iat:
        raise _refuse("older", lang)
    try:
        check_fresh(claims, None, newest_iat)
    except TokenInvalid as exc:
        raise _refuse("older", lang) from exc
    return CheckedLicense(lic.token, claims, lic.keyset)


def deactivation_file(key: Ed25519PrivateKey, claims: Claims, *, now: datetime, lang: str) -> bytes:
    """The signed deactivation file giving up the offline license `claims` (`LicenseFileRefused` if none)."""
    if not claims.policy.offline or not claims.mid:
        raise _refuse("invalid", lang)
    return wire.make_deactivation(
        key, machine_id=claims.mid, license_iat=claims.iat, created=int(now.timestamp())
    )


def past(claims: Claims) -> int:
    """A newest-token time that `check_fresh` refuses `claims` under: the mark for a given-up license."""
    return claims.iat + IAT_LEEWAY_S + 1


def public_key_of(key: Ed25519PrivateKey) -> str:
    """The machine public key as the request file and the `mkey` claim carry it."""
    return encode_public_key(key.public_key())
