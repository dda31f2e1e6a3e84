"""Token signing keys: Ed25519 private keys as 0600 files, public halves in `signing_keys`, rotation.

The private key for kid K lives in `POSPAL_SIGNING_KEY_DIR/K.pem` (mode 0600, directory 0700); the
database row says which keys exist and which is current (the newest one not retired). Several server
instances share keys by sharing that directory (a volume or a copied secret) and the database.

On first run, when no key exists, `SigningKeys.ensure_current` makes one. Rotation makes a new key and
retires the old one (its tokens stay valid until they expire, so it stays in the JWKS for one offline
lease). Agents trust a new key only through a key-set document signed by the offline key-set authority
(`pospal_protocol.trust`; `scripts/publish_update.py keyset` makes it and offers it to the fleet by TUF). The
server cannot sign one: it only hands out the published copy, `keyset.json` in the key directory
(`KEYSET_FILE`), to an agent that does not know the current key yet (a new install, an offline license
file). The legacy document `rotate` still returns, signed by the old key, is accepted only by agents from
before the authority existed. So a rotation starts with `prepare`: the next key's file is made (and named
in `NEXT_KEY_FILE`) without signing anything, its public half goes into the key set the publisher signs
offline, and `rotate` later makes that key current (README, key rotation).

The same directory also holds `server-secret`, the HMAC key for login codes and trial component hashes.
"""

from __future__ import annotations

import os
import secrets
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)
from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from pospal_protocol.tokens import Policy, encode_token, make_keyset_document
from pospal_protocol.trust import encode_public_key, jwk_from_public_key, kid_for
from server.db import session_of
from server.errors import SigningError
from server.models import SigningKey

SERVER_SECRET_FILE = "server-secret"  # noqa: S105 (a file name)
KEYSET_FILE = "keyset.json"  # the authority-signed key-set document, as published
NEXT_KEY_FILE = "next-key"  # the kid `prepare` made: its private key waits for `rotate`
# How long an instance may keep using its view of which key is current (see `_key_snapshot`).
CACHE_S = 10.0
# A key-set file changed less than this long ago is read again on every request (`published_keyset`).
SETTLE_S = 2


def _write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically with mode 0600 (temp file, fsync, rename, fsync dir)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_server_secret(key_dir: Path, configured: str | None = None) -> bytes:
    """Return the server's HMAC secret: `POSPAL_SERVER_SECRET` if set, else the key dir's file.

    The file is created (32 random bytes, hex, 0600) on first use. Every instance must see the same
    value, so several instances share the key directory or set the variable.
    """
    if configured:
        return configured.encode()
    path = key_dir / SERVER_SECRET_FILE
    if not path.exists():
        try:
            _write_private_exclusive(path, secrets.token_hex(32).encode())
        except FileExistsError:
            pass  # another process made it first; use theirs
    return path.read_bytes().strip()


def _write_private_exclusive(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.with_name(f".tmp-{secrets.token_hex(6)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    try:
        os.link(tmp, path)  # fails if it exists: first writer wins, atomically
    finally:
        tmp.unlink()


class SigningKeys:
    """The server's signing keys: sign tokens with the current key, publish the JWKS, rotate."""

    def __init__(self, key_dir: Path, policy: Policy | None = None) -> None:
        self.key_dir = Path(key_dir)
        self.policy = policy or Policy()
        self._private: dict[str, Ed25519PrivateKey] = {}
        self._lock = threading.Lock()
        self._snapshot: tuple[float, str, list[tuple[str, bool]]] | None = None
        self._published: tuple[tuple[int, int, int, int], str | None] | None = None
        # Asked on every refresh from an agent that lacks the current key: the path is joined once.
        self._keyset_path = os.fspath(self.key_dir / KEYSET_FILE)
        # Inside `one_look()` (this thread's), the published document as first looked up there.
        self._look = threading.local()

    # ------------------------------------------------------------------------------------ key files

    def _path(self, kid: str) -> Path:
        if not kid.isalnum():
            raise SigningError(f"bad key id {kid!r}")
        return self.key_dir / f"{kid}.pem"

    def private_key(self, kid: str) -> Ed25519PrivateKey:
        """Return the private key for `kid`, read from its file once and then cached."""
        with self._lock:
            key = self._private.get(kid)
        if key is not None:
            return key
        path = self._path(kid)
        try:
            loaded = load_pem_private_key(path.read_bytes(), password=None)
        except FileNotFoundError:
            raise SigningError(f"private key file for {kid} is missing from {self.key_dir}") from None
        except ValueError as exc:
            raise SigningError(f"private key file for {kid} is unreadable: {type(exc).__name__}") from None
        if not isinstance(loaded, Ed25519PrivateKey) or kid_for(loaded.public_key()) != kid:
            raise SigningError(f"private key file for {kid} does not hold that key")
        with self._lock:
            self._private[kid] = loaded
        return loaded

    def has_private_key(self, kid: str) -> bool:
        """True when this instance can sign with `kid`."""
        try:
            self.private_key(kid)
        except SigningError:
            return False
        return True

    def _new_key(self, session: Session, now: datetime) -> SigningKey:
        private = self._prepared()
        if private is None:
            private = Ed25519PrivateKey.generate()
            pem = private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
            _write_private(self._path(kid_for(private.public_key())), pem)
        kid = kid_for(private.public_key())
        (self.key_dir / NEXT_KEY_FILE).unlink(missing_ok=True)
        row = SigningKey(kid=kid, public_key=encode_public_key(private.public_key()), created_at=now)
        session.add(row)
        session.flush()
        with self._lock:
            self._private[kid] = private
        return row

    # ------------------------------------------------------------------------------------ database

    def rows(self, session: Session) -> list[SigningKey]:
        """Every key row: keys in use first, then retired ones, newest first within each."""
        rows = session.scalars(select(SigningKey).order_by(SigningKey.created_at.desc(), SigningKey.kid))
        return sorted(rows, key=lambda r: r.retired_at is not None)

    def current_row(self, session: Session) -> SigningKey | None:
        """The newest key that is not retired, or None before the first key exists."""
        return session.scalars(
            select(SigningKey)
            .where(SigningKey.retired_at.is_(None))
            .order_by(SigningKey.created_at.desc(), SigningKey.kid)
            .limit(1)
        ).first()

    def ensure_current(self, session: Session, now: datetime) -> str:
        """Return the current kid, generating the first key on first run; check we hold its file."""
        row = self.current_row(session)
        if row is None:
            row = self._new_key(session, now)
        self.private_key(row.kid)
        self._snapshot = None
        return row.kid

    def _key_snapshot(self, target: Session | Connection) -> tuple[str, list[tuple[str, bool]]]:
        """(current kid, [(kid, retired)] in `rows` order), cached for `CACHE_S` seconds.

        Refresh asks on every request; a rotation made by another instance (or the CLI) is seen within
        `CACHE_S`, and a rotation made through this object at once. The cache is a performance detail,
        so it runs on the monotonic clock rather than the injected business clock.
        """
        cached = self._snapshot
        if cached is not None and time.monotonic() < cached[0]:
            return cached[1], cached[2]
        with session_of(target) as session:
            current = self.current_row(session)
            if current is None:
                raise SigningError("no signing key: run `pospal-server keys rotate` or start the server once")
            listing = [(r.kid, r.retired_at is not None) for r in self.rows(session)]
        self._snapshot = (time.monotonic() + CACHE_S, current.kid, listing)
        return current.kid, listing

    def current_kid(self, session: Session | Connection) -> str:
        """The kid tokens are signed with now (from the database, cached briefly)."""
        return self._key_snapshot(session)[0]

    def _prepared(self) -> Ed25519PrivateKey | None:
        """The key `prepare` made and no row names yet, or None."""
        try:
            kid = (self.key_dir / NEXT_KEY_FILE).read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            return None
        try:
            return self.private_key(kid)
        except SigningError:
            return None

    def prepare(self) -> str:
        """Make the next signing key (its file only: nothing signs with it yet); returns its kid.

        Idempotent: a key already prepared is kept. `rotate` makes it current.
        """
        private = self._prepared()
        if private is None:
            private = Ed25519PrivateKey.generate()
            kid = kid_for(private.public_key())
            _write_private(
                self._path(kid), private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
            )
            _write_private(self.key_dir / NEXT_KEY_FILE, kid.encode("ascii"))
            with self._lock:
                self._private[kid] = private
        return kid_for(private.public_key())

    def next_jwks(self, session: Session, now: datetime) -> dict[str, Any]:
        """The published keys plus the prepared one: what the next key set must list."""
        jwks = self.jwks(session, now)
        private = self._prepared()
        if private is not None and kid_for(private.public_key()) not in {k["kid"] for k in jwks["keys"]}:
            jwks["keys"].append(jwk_from_public_key(private.public_key()))
        return jwks

    def rotate(self, session: Session, now: datetime) -> tuple[str, str | None]:
        """Make the prepared key (or a new one) current and retire the old one.

        Returns `(new_kid, keyset_document)`. The document lists the published keys and is signed by
        the previous key, so agents that trust it learn the new one; None when there was no previous key.
        """
        previous = self.current_row(session)
        new = self._new_key(session, now)
        document = None
        if previous is not None:
            previous.retired_at = now
            session.flush()
            document = self.keyset_document(session, previous.kid, now)
        self._snapshot = None
        return new.kid, document

    # ------------------------------------------------------------------------------------ publishing

    def published(self, session: Session, now: datetime) -> list[SigningKey]:
        """Keys whose tokens may still be valid: the current ones, plus keys retired within one lease."""
        horizon = now - timedelta(seconds=self.policy.lease_s)
        return [r for r in self.rows(session) if r.retired_at is None or r.retired_at > horizon]

    def jwks(self, session: Session, now: datetime) -> dict[str, Any]:
        """The JWKS served at `GET /v1/keys` (public keys only, current first)."""
        from pospal_protocol.trust import decode_public_key

        return {
            "keys": [
                jwk_from_public_key(decode_public_key(r.public_key)) for r in self.published(session, now)
            ]
        }

    def keyset_document(self, session: Session, signer_kid: str, now: datetime) -> str:
        """A key-set document listing the published keys, signed by `signer_kid`."""
        return make_keyset_document(
            self.private_key(signer_kid), signer_kid, self.jwks(session, now), int(now.timestamp())
        )

    def keyset_for(
        self, session: Session | Connection, known_kids: Iterable[str], now: datetime
    ) -> str | None:
        """A key-set document for an agent that trusts `known_kids`, or None if it needs none.

        The published authority document (`KEYSET_FILE`) when there is one. Otherwise the legacy document
        signed by the newest key the agent already trusts that we can still sign with (an agent that says
        nothing about its keys gets one signed by the most recently retired key).
        """
        current, listing = self._key_snapshot(session)
        known = [k for k in known_kids if isinstance(k, str)]
        if current in known:
            return None
        published = self.published_keyset()
        if published is not None:
            return published
        if known:
            candidates = [kid for kid, _retired in listing if kid in known]
        else:
            candidates = [kid for kid, retired in listing if retired]
        for kid in candidates:
            if kid != current and self.has_private_key(kid):
                with session_of(session) as orm_session:
                    return self.keyset_document(orm_session, kid, now)
        return None

    @contextmanager
    def one_look(self) -> Iterator[None]:
        """Within the block, this thread looks at the published key-set file once (`published_keyset`).

        For a batch of refreshes in flight together (`server.refresh_reads`): each would `stat` the
        file, and on PostgreSQL's read thread every such system call also waits to get the GIL back.
        A document published during the batch is served from the next batch on.
        """
        self._look.active, self._look.found = True, None
        try:
            yield
        finally:
            self._look.active, self._look.found = False, None

    def published_keyset(self) -> str | None:
        """The authority-signed key-set document in the key directory, or None (absent or unreadable).

        Every refresh from an agent that does not know the current key asks for it, so the text is kept
        with the file's identity (inode, size, modification and change times) and read again only when
        a `stat` shows another file: a newly published document is served from the next request on
        (inside `one_look`, from the next batch on). File times are coarse (a few ms), so a file changed
        within `SETTLE_S` is read every time: two writes inside one tick could otherwise look like one
        file.
        """
        look = self._look
        if getattr(look, "active", False):
            if look.found is None:
                look.found = (self._look_up_keyset(),)
            return look.found[0]
        return self._look_up_keyset()

    def _look_up_keyset(self) -> str | None:
        path = self._keyset_path
        try:
            info = os.stat(path)
        except OSError:
            return None
        identity = (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
        cached = self._published
        if cached is not None and cached[0] == identity:
            return cached[1]
        try:
            text = Path(path).read_text(encoding="utf-8").strip() or None
        except (OSError, UnicodeDecodeError):
            return None
        # The file system's clock, not the service's: it is what stamped st_mtime and st_ctime.
        settled = time.time_ns() - max(info.st_mtime_ns, info.st_ctime_ns) > SETTLE_S * 1_000_000_000
        self._published = (identity, text) if settled else None
        return text

    def sign(self, session: Session, claims: Mapping[str, Any]) -> str:
        """Sign token claims with the current key."""
        kid = self.current_kid(session)
        return encode_token(self.private_key(kid), kid, claims)
