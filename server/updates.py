"""The publisher's side of signed agent updates: a TUF repository (python-tuf's Metadata API) on disk.

Layout of the repository directory, which any static host (or `server/api/updates.py`) serves as is:

    metadata/1.root.json, 2.root.json ...     every root version (clients walk the chain)
    metadata/<n>.targets.json, <n>.snapshot.json, timestamp.json   (consistent snapshots)
    metadata/root.json, targets.json, snapshot.json                the newest copies, for the publisher
    targets/<platform>/<sha256>.pospal-agent-<version>.zip         the release builds

Roles and keys: `root` and `targets` are the offline keys (root may have several keys and a threshold);
`snapshot` and `timestamp` are online, and the timestamp expires within a day, so a mirror that freezes the
fleet on old metadata is noticed (TUF's freeze attack) unless the online side re-signs it (`refresh`).

Each key is a PEM file `<role>.<keyid[:16]>.pem` in a key directory; an operator keeps the offline ones
on a machine (or stick) of their own and hands `--keys` the directories a command needs. A target's
`custom` says who gets it: `{"version", "channel": "stable"|"beta", "rollout": 0-100, "terminals": [...]}`
(beta: only the listed machine ids; stable: the terminals whose deterministic bucket is under `rollout`).

The trusted token keys ride on the same repository (issue 24 item 5). `keyset_init` makes the offline
key-set authority (`keyset.<kid>.pem`, threshold in `keyset-authority.json`), whose public half every
build ships in `agent/keys/trusted.json` (`anchors`). `publish_keyset` signs a key-set document
(`pospal_protocol.tokens.make_authority_keyset`: the token keys to trust, the kids revoked, the next version)
with those keys and offers it as the target `keys/keyset.json`, signed by the offline targets key like a
build; a plain copy lands in `keyset.json` at the repository's top, for the server's key directory (it hands
it to agents that do not know its current key yet). The online server key can sign neither.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
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
from securesystemslib.signer import CryptoSigner, Signer
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from pospal_protocol.tokens import make_authority_keyset
from pospal_protocol.trust import KeysetAuthority, b64url_decode, kid_for
from server.errors import Error

ROLES = ("root", "targets", "snapshot", "timestamp")
OFFLINE_ROLES = ("root", "targets")
EXPIRY = {
    "root": timedelta(days=365),
    "targets": timedelta(days=90),
    "snapshot": timedelta(days=7),
    "timestamp": timedelta(days=1),
}
CHANNELS = ("stable", "beta")
KEYSET_TARGET = "keys/keyset.json"
KEYSET_ROLE = "keyset"  # the PEM files of the offline key-set authority: keyset.<kid>.pem
PLATFORMS = ("linux", "windows", "darwin")


class PublishError(Error):
    """A publishing step cannot be done (a missing key, a bad version, no repository)."""


@dataclass(frozen=True)
class Release:
    """One release build offered to the fleet."""

    version: str
    platform: str
    channel: str = "stable"
    rollout: int = 100
    terminals: tuple[str, ...] = ()

    def target_path(self) -> str:
        """The target's name in the repository."""
        return f"{self.platform}/pospal-agent-{self.version}.zip"

    def custom(self) -> dict[str, Any]:
        """The `custom` field clients choose by."""
        return {
            "version": self.version,
            "channel": self.channel,
            "rollout": self.rollout,
            "terminals": list(self.terminals),
        }


def parse_version(text: str) -> tuple[int, ...]:
    """`"1.2.10"` -> (1, 2, 10); raises `PublishError` for anything but dotted numbers."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4 or not all(p.isdigit() and len(p) <= 6 for p in parts):
        raise PublishError(f"'{text}' is not a version (dotted numbers, like 1.2.0)")
    return tuple(int(p) for p in parts)


# -- keys ---------------------------------------------------------------------------------------------


def new_key(role: str, key_dir: Path) -> CryptoSigner:
    """Make an Ed25519 key for `role` and write it to `key_dir` (mode 0600); returns its signer."""
    signer = CryptoSigner.generate_ed25519()
    key_dir.mkdir(parents=True, exist_ok=True)
    path = key_dir / f"{role}.{signer.public_key.keyid[:16]}.pem"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(signer.private_bytes)
    return signer


def load_signers(role: str, key_dirs: list[Path]) -> dict[str, Signer]:
    """Every key of `role` found in `key_dirs`, by key id."""
    found: dict[str, Signer] = {}
    for key_dir in key_dirs:
        for path in sorted(key_dir.glob(f"{role}.*.pem")):
            private = load_pem_private_key(path.read_bytes(), password=None)
            signer = CryptoSigner(private)
            found[signer.public_key.keyid] = signer
    return found


# -- the repository -----------------------------------------------------------------------------------


class Repository:
    """A TUF repository in `path` (see the module docstring); `now` dates every signature's expiry."""

    def __init__(self, path: Path, key_dirs: list[Path], now: datetime) -> None:
        self.path = path
        self.meta_dir = path / "metadata"
        self.targets_dir = path / "targets"
        self.key_dirs = key_dirs
        self.now = now

    # -- reading and writing ---------------------------------------------------------------------------

    def load(self, role: str) -> Metadata[Any]:
        """The newest metadata of `role`."""
        name = self.meta_dir / f"{role}.json"
        if not name.exists():
            raise PublishError(f"no repository at {self.path} (run `init` first)")
        return Metadata.from_file(str(name))

    def _sign_and_write(self, md: Metadata[Any], *, bump: bool = True) -> None:
        role = md.signed.type
        if bump:
            md.signed.version += 1
        md.signed.expires = self.now + EXPIRY[role]
        usable = self._signers(role, md.signed if role == "root" else None)
        md.signatures.clear()
        for signer in usable:
            md.sign(signer, append=True)
        self._write(md)

    def _signers(self, role: str, root: Root | None = None) -> list[Signer]:
        """The keys of `role` at hand, at least its threshold; else `PublishError` naming where to look."""
        root = root or self.load("root").signed
        keyids = root.roles[role].keyids
        signers = load_signers(role, self.key_dirs)
        usable = [signers[k] for k in keyids if k in signers]
        if len(usable) < root.roles[role].threshold:
            where = "offline" if role in OFFLINE_ROLES else "online"
            raise PublishError(
                f"signing {role} needs {root.roles[role].threshold} of its keys; found {len(usable)} in "
                f"{', '.join(map(str, self.key_dirs))} (the {where} key directory)"
            )
        return usable

    def _write(self, md: Metadata[Any]) -> None:
        role = md.signed.type
        self.meta_dir.mkdir(parents=True, exist_ok=True)
        data = md.to_bytes(JSONSerializer(compact=False))
        names = (
            [f"{role}.json"] if role == "timestamp" else [f"{md.signed.version}.{role}.json", f"{role}.json"]
        )
        for name in names:
            _atomic_write(self.meta_dir / name, data)

    # -- commands --------------------------------------------------------------------------------------

    def init(self, root_keys: int = 1, root_threshold: int = 1) -> None:
        """Create keys (in the first key dir for offline roles, the last for online ones) and version 1."""
        if (self.meta_dir / "root.json").exists():
            raise PublishError(f"{self.path} already holds a repository")
        if not 1 <= root_threshold <= root_keys:
            raise PublishError("the root threshold must be between 1 and the number of root keys")
        offline, online = self.key_dirs[0], self.key_dirs[-1]
        root = Root(expires=self.now + EXPIRY["root"], consistent_snapshot=True)
        for _ in range(root_keys):
            root.add_key(new_key("root", offline).public_key, "root")
        root.roles["root"].threshold = root_threshold
        root.add_key(new_key("targets", offline).public_key, "targets")
        for role in ("snapshot", "timestamp"):
            root.add_key(new_key(role, online).public_key, role)
        self._sign_and_write(Metadata(root), bump=False)
        self._sign_and_write(Metadata(Targets(expires=self.now + EXPIRY["targets"])), bump=False)
        self._snapshot_and_timestamp(first=True)

    def add(self, build: Path, release: Release) -> TargetFile:
        """Offer `build` (a zip of one version's directory) as `release`: signs targets, then the rest."""
        parse_version(release.version)
        if release.channel not in CHANNELS:
            raise PublishError(f"channel must be one of {', '.join(CHANNELS)}")
        if release.platform not in PLATFORMS:
            raise PublishError(f"platform must be one of {', '.join(PLATFORMS)}")
        if not 0 <= release.rollout <= 100:
            raise PublishError("rollout is a percentage, 0 to 100")
        for role in ("targets", "snapshot", "timestamp"):
            self._signers(role)  # every key at hand before anything is written
        data = build.read_bytes()
        name = release.target_path()
        target = TargetFile.from_data(name, data, ["sha256"])
        target.unrecognized_fields["custom"] = release.custom()
        digest = target.hashes["sha256"]
        dest = self.targets_dir / release.platform / f"{digest}.{Path(name).name}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(dest, data)
        md = self.load("targets")
        md.signed.targets[name] = target
        self._sign_and_write(md)
        self._snapshot_and_timestamp()
        return target

    def set_rollout(self, platform: str, version: str, rollout: int, terminals: tuple[str, ...] = ()) -> None:
        """Change who gets an offered release (a targets signature: the offline key)."""
        md = self.load("targets")
        name = Release(version, platform).target_path()
        target = md.signed.targets.get(name)
        if target is None:
            raise PublishError(f"{name} is not offered")
        custom = dict(target.unrecognized_fields.get("custom") or {})
        custom["rollout"] = rollout
        if terminals:
            custom["terminals"] = list(terminals)
        target.unrecognized_fields["custom"] = custom
        self._sign_and_write(md)
        self._snapshot_and_timestamp()

    def refresh(self) -> None:
        """The online job: re-sign the timestamp (and the snapshot when it would expire within 2 days)."""
        snapshot = self.load("snapshot")
        if snapshot.signed.expires - self.now < timedelta(days=2):
            self._sign_and_write(snapshot)
        self._timestamp()

    def rotate(self, role: str, new_dir: Path) -> str:
        """Replace every key of `role` with a new one (in `new_dir`), through a new root version.

        The new root is signed by the old root keys (threshold) and, for a root rotation, by the new ones
        too, so clients holding the old root accept it; old `role` keys stop counting at once.
        """
        if role not in ROLES:
            raise PublishError(f"role must be one of {', '.join(ROLES)}")
        md = self.load("root")
        old_root_signers = load_signers("root", self.key_dirs)
        for keyid in list(md.signed.roles[role].keyids):
            md.signed.revoke_key(keyid, role)
        signer = new_key(role, new_dir)
        md.signed.add_key(signer.public_key, role)
        md.signed.version += 1
        md.signed.expires = self.now + EXPIRY["root"]
        md.signatures.clear()
        for s in old_root_signers.values():
            md.sign(s, append=True)
        if role == "root":
            md.sign(signer, append=True)
        self._write(md)
        # Everything the rotated role signs must be re-signed with the new key.
        if role == "targets":
            self._sign_and_write(self.load("targets"))
        if role in ("targets", "snapshot", "timestamp"):
            self._snapshot_and_timestamp()
        return signer.public_key.keyid

    # -- the trusted token keys ----------------------------------------------------------------------

    def keyset_init(self, count: int = 1, threshold: int = 1) -> dict[str, Any]:
        """Make the offline key-set authority (`count` keys in the first key dir); returns its anchor."""
        if (self.path / "keyset-authority.json").exists():
            raise PublishError(f"{self.path} already has a key-set authority")
        if not 1 <= threshold <= count:
            raise PublishError("the key-set threshold must be between 1 and the number of keys")
        self.key_dirs[0].mkdir(parents=True, exist_ok=True)
        keys = []
        for _ in range(count):
            private = Ed25519PrivateKey.generate()
            keys.append(private.public_key())
            path = self.key_dirs[0] / f"{KEYSET_ROLE}.{_kid(private)}.pem"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(_pem(private))
        anchor = KeysetAuthority(keys, threshold).to_doc()
        self.path.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.path / "keyset-authority.json", json.dumps(anchor, indent=2).encode() + b"\n")
        return anchor

    def authority(self) -> dict[str, Any]:
        """The `keyset_authority` every build ships (from `keyset-authority.json`)."""
        try:
            return json.loads((self.path / "keyset-authority.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise PublishError(f"no key-set authority in {self.path} (run `keyset-init` first)") from exc

    def published_keyset(self) -> dict[str, Any] | None:
        """The payload of the key-set document last published here, or None."""
        try:
            outer = json.loads((self.path / "keyset.json").read_text(encoding="utf-8"))
            return json.loads(b64url_decode(outer["payload"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def publish_keyset(self, jwks: dict[str, Any], revoked: tuple[str, ...] = ()) -> tuple[int, str]:
        """Sign and offer the trusted token keys (`jwks`) and the revoked kids; returns (version, doc).

        The version is one more than the last published; revoked kids accumulate (a revocation is for
        good). Needs the authority's threshold of key-set keys, and the targets, snapshot and timestamp
        keys, all at hand before anything is written.
        """
        anchor = KeysetAuthority.from_doc(self.authority())
        assert anchor is not None
        signers = [(key, kid) for kid, key in _keyset_signers(self.key_dirs).items() if kid in anchor.keys]
        if len(signers) < anchor.threshold:
            raise PublishError(
                f"signing the key set needs {anchor.threshold} of its offline keys; found {len(signers)} in "
                f"{', '.join(map(str, self.key_dirs))}"
            )
        for role in ("targets", "snapshot", "timestamp"):
            self._signers(role)
        previous = self.published_keyset() or {}
        version = int(previous.get("version") or 0) + 1
        gone = sorted(set(previous.get("revoked") or []) | set(revoked))
        listed = [k for k in jwks.get("keys", []) if k.get("kid") not in gone]
        doc = make_authority_keyset(
            signers, version=version, keys=listed, revoked=gone, iat=int(self.now.timestamp())
        )
        data = doc.encode()
        target = TargetFile.from_data(KEYSET_TARGET, data, ["sha256"])
        target.unrecognized_fields["custom"] = {"keyset_version": version}
        dest = self.targets_dir / "keys" / f"{target.hashes['sha256']}.keyset.json"
        dest.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(dest, data)
        md = self.load("targets")
        md.signed.targets[KEYSET_TARGET] = target
        self._sign_and_write(md)
        self._snapshot_and_timestamp()
        _atomic_write(self.path / "keyset.json", data)
        return version, doc

    def bundle(self, out: Path, platform: str | None = None) -> Path:
        """Copy the repository (metadata and, optionally, one platform's targets) for a USB stick."""
        if out.exists():
            raise PublishError(f"{out} exists; choose a new directory")
        shutil.copytree(self.meta_dir, out / "metadata")
        source = self.targets_dir / platform if platform else self.targets_dir
        dest = out / "targets" / platform if platform else out / "targets"
        if source.exists():
            shutil.copytree(source, dest)
        keys = self.targets_dir / "keys"
        if platform and keys.exists():
            shutil.copytree(keys, out / "targets" / "keys")  # the key set travels on the stick too
        return out

    # -- snapshot and timestamp ------------------------------------------------------------------------

    def _snapshot_and_timestamp(self, first: bool = False) -> None:
        targets = self.load("targets")
        snapshot: Metadata[Snapshot] = Metadata(Snapshot()) if first else self.load("snapshot")
        snapshot.signed.meta["targets.json"] = MetaFile(version=targets.signed.version)
        self._sign_and_write(snapshot, bump=not first)
        self._timestamp(first)

    def _timestamp(self, first: bool = False) -> None:
        snapshot = self.load("snapshot")
        raw = (self.meta_dir / "snapshot.json").read_bytes()
        timestamp: Metadata[Timestamp] = Metadata(Timestamp()) if first else self.load("timestamp")
        timestamp.signed.snapshot_meta = MetaFile(
            version=snapshot.signed.version,
            length=len(raw),
            hashes={"sha256": hashlib.sha256(raw).hexdigest()},
        )
        self._sign_and_write(timestamp, bump=not first)


def _kid(private: Ed25519PrivateKey) -> str:
    return kid_for(private.public_key())


def _pem(private: Ed25519PrivateKey) -> bytes:
    return private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def _keyset_signers(key_dirs: list[Path]) -> dict[str, Ed25519PrivateKey]:
    """The key-set authority's private keys found in `key_dirs`, by kid."""
    found: dict[str, Ed25519PrivateKey] = {}
    for key_dir in key_dirs:
        for path in sorted(key_dir.glob(f"{KEYSET_ROLE}.*.pem")):
            private = load_pem_private_key(path.read_bytes(), password=None)
            if isinstance(private, Ed25519PrivateKey):
                found[_kid(private)] = private
    return found


def _atomic_write(path: Path, data: bytes) -> None:
    """Write `path` so that a client never reads half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
