"""The update client: which release this terminal should run, verified with TUF (python-tuf's ngclient).

Trust starts from a root shipped in the build (`agent/keys/update-root.json`; in a development tree
`POSPAL_UPDATE_ROOT` may name another, like POSPAL_TRUSTED_KEYS). ngclient does the checks: threshold
signatures of every role, expiry (a stale timestamp is a freeze), version rollback of every role, the
root chain (a rotated-out key stops counting), and the target's length and hashes (a mirror that serves
endless bytes is cut off at the length the signed metadata gives).

Newer roots the client walked to are kept in `<install>/tuf/metadata/root_history/`, but each start
re-verifies that chain from the shipped root (`trusted_root`), so a root file put there by hand counts
for nothing.

Sources: the update server over HTTPS (the agent's own session: OS trust store and proxy), or a directory
with the repository's `metadata/` and `targets/` (a USB update bundle), verified the same way.

The same metadata carries the trusted token keys: the target `keys/keyset.json` is the key-set document
the offline key-set authority signed (`pospal_protocol.trust`), offered under the offline targets key.
`UpdateClient.keyset` fetches it after a check (length and hashes checked); the agent applies it
(`AgentService.adopt_keyset`), so a new key or a revocation reaches every till on its next check.

Who gets what is in each target's signed `custom` (`server/updates.py`): `beta` targets go only to the
machine ids they list; `stable` ones to the terminals whose bucket (`bucket(terminal, version)`, a hash,
so the same terminals stay in as the percentage grows) is under `rollout`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from agent import flavour
from agent.errors import Error
from agent.selfupdate.install import platform_name, version_key

log = logging.getLogger(__name__)

ROOT_RESOURCE = "keys/update-root.json"
ROOT_ENV = "POSPAL_UPDATE_ROOT"
BUNDLE_SCHEME = "bundle"
KEYSET_TARGET = "keys/keyset.json"
# Metadata caps (bytes): a mirror serving endless metadata is cut off here; targets by their signed length.
_MAX_METADATA = 512 * 1024


class UpdateError(Error):
    """An update could not be checked, verified or staged (the message says which and why)."""


@dataclass(frozen=True)
class Offer:
    """A verified release this terminal may install."""

    version: str
    target_path: str
    length: int
    channel: str


def bucket(terminal: str, version: str) -> int:
    """This terminal's place (0-99) in the rollout of `version`: the same answer on every check."""
    digest = hashlib.sha256(f"pospal-rollout\n{version}\n{terminal}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100


def eligible(custom: dict[str, Any], terminal: str) -> bool:
    """Whether a target with this `custom` is for `terminal` (see the module docstring)."""
    version = str(custom.get("version") or "")
    terminals = custom.get("terminals") or []
    if custom.get("channel") == "beta":
        return isinstance(terminals, list) and terminal in terminals
    if custom.get("channel") not in (None, "stable"):
        return False
    if isinstance(terminals, list) and terminal in terminals:
        return True  # a terminal named on a stable release gets it ahead of the percentage
    rollout = custom.get("rollout", 100)
    if not isinstance(rollout, int) or isinstance(rollout, bool):
        return False
    return bucket(terminal, version) < rollout


def choose(
    targets: dict[str, Any], current: str, terminal: str, platform: str, skip: frozenset[str] = frozenset()
) -> Offer | None:
    """The newest target for `platform` newer than `current` that `terminal` may have, or None."""
    best: Offer | None = None
    for name, target in targets.items():
        if not name.startswith(f"{platform}/"):
            continue
        custom = target.custom if isinstance(getattr(target, "custom", None), dict) else {}
        version = str(custom.get("version") or "")
        try:
            newer = version_key(version) > version_key(current)
        except ValueError:
            continue
        if not newer or version in skip or not eligible(custom, terminal):
            continue
        if best is None or version_key(version) > version_key(best.version):
            best = Offer(version, name, int(target.length), str(custom.get("channel") or "stable"))
    return best


def shipped_root() -> bytes | None:
    """The root metadata this build trusts (None: this build has no update root, updates are off)."""
    override = os.environ.get(ROOT_ENV)
    if override and not flavour.is_release():
        try:
            return Path(override).read_bytes()
        except OSError as exc:
            raise UpdateError(f"{ROOT_ENV}: cannot read {override}: {exc.strerror or exc}") from exc
    try:
        return resources.files("agent").joinpath(ROOT_RESOURCE).read_bytes()
    except (FileNotFoundError, OSError):
        return None


def trusted_root(shipped: bytes, metadata_dir: Path) -> bytes:
    """The newest root that chains from `shipped` through the kept root history (each signed by the
    threshold of the one before it and of itself); bytes to bootstrap ngclient with."""
    from tuf.api.exceptions import RepositoryError
    from tuf.ngclient._internal.trusted_metadata_set import TrustedMetadataSet
    from tuf.ngclient.config import EnvelopeType

    trusted = TrustedMetadataSet(shipped, EnvelopeType.METADATA)
    newest = shipped
    history = metadata_dir / "root_history"
    while True:
        path = history / f"{trusted.root.version + 1}.root.json"
        try:
            data = path.read_bytes()
        except OSError:
            return newest
        try:
            trusted.update_root(data)
        except RepositoryError as exc:
            log.warning("ignored a kept root that does not chain from the shipped one: %s", exc)
            return newest
        newest = data


FETCH_ATTEMPTS = 3  # tries of one download whose connection fails before any answer
FETCH_RETRY_S = 0.5  # the wait before the second try; the third waits twice as long


def _why(exc: BaseException) -> str:
    """`Class: message`, with the cause ngclient wraps a failed download around (its own message names
    only the URL)."""
    why = f"{exc.__class__.__name__}: {exc}"
    cause = exc.__cause__
    if cause is not None and str(cause) not in why:
        why += f" ({cause.__class__.__name__}: {cause})"
    return why


def _fetchers() -> tuple[type, type]:
    from tuf.api.exceptions import DownloadHTTPError
    from tuf.ngclient import FetcherInterface

    class SessionFetcher(FetcherInterface):
        """ngclient's downloads through the agent's requests session (OS trust store, proxy)."""

        def __init__(self, session: Any, timeout: float = 30.0) -> None:
            self.session = session
            self.timeout = timeout

        def _fetch(self, url: str) -> Iterator[bytes]:
            import requests

            for attempt in range(FETCH_ATTEMPTS):  # a dropped or refused connection is tried again
                try:
                    resp = self.session.get(url, stream=True, timeout=self.timeout)
                    break
                except requests.ConnectionError:
                    if attempt == FETCH_ATTEMPTS - 1:
                        raise
                    time.sleep(FETCH_RETRY_S * (attempt + 1))
            if resp.status_code != 200:
                resp.close()
                raise DownloadHTTPError(f"HTTP {resp.status_code} for {url}", resp.status_code)
            return resp.iter_content(64 * 1024)

    class DirectoryFetcher(FetcherInterface):
        """`bundle:///metadata/...` and `bundle:///targets/...` read from a USB bundle's directory."""

        def __init__(self, root: Path) -> None:
            self.root = root

        def _fetch(self, url: str) -> Iterator[bytes]:
            rel = unquote(urlsplit(url).path).lstrip("/")
            path = (self.root / rel).resolve()
            if self.root.resolve() not in path.parents or not path.is_file():
                raise DownloadHTTPError(f"{rel} is not in the bundle", 404)

            def chunks() -> Iterator[bytes]:
                with open(path, "rb") as f:
                    while chunk := f.read(64 * 1024):
                        yield chunk

            return chunks()

    return SessionFetcher, DirectoryFetcher


class UpdateClient:
    """One check against one source: `url` (https://.../updates) or `bundle` (a directory)."""

    def __init__(
        self,
        root: bytes,
        state_dir: Path,
        *,
        url: str | None = None,
        bundle: Path | None = None,
        session: Any = None,
        platform: str | None = None,
    ) -> None:
        session_fetcher, directory_fetcher = _fetchers()
        self.metadata_dir = state_dir / "metadata"
        self.download_dir = state_dir / "downloads"
        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        self.download_dir.mkdir(parents=True, exist_ok=True)
        self.platform = platform or platform_name()
        if bundle is not None:
            fetcher: Any = directory_fetcher(Path(bundle))
            base = f"{BUNDLE_SCHEME}:///"
        elif url:
            if session is None:
                from agent.cloud.netconfig import new_session

                session = new_session()
            fetcher = session_fetcher(session)
            base = url.rstrip("/") + "/"
        else:
            raise UpdateError("no update source: give a URL or a bundle directory")
        self._source = (base, fetcher)
        self._root = root
        self._updater: Any = None

    def _new_updater(self) -> Any:
        """A fresh ngclient Updater (one refresh each), bootstrapped from the verified root chain."""
        from tuf.ngclient import Updater, UpdaterConfig

        base, fetcher = self._source
        config = UpdaterConfig(
            root_max_length=_MAX_METADATA,
            timestamp_max_length=16 * 1024,
            snapshot_max_length=_MAX_METADATA,
            targets_max_length=_MAX_METADATA,
        )
        return Updater(
            str(self.metadata_dir),
            base + "metadata/",
            str(self.download_dir),
            base + "targets/",
            fetcher=fetcher,
            config=config,
            bootstrap=trusted_root(self._root, self.metadata_dir),
        )

    def check(self, current: str, terminal: str, skip: frozenset[str] = frozenset()) -> Offer | None:
        """Refresh the metadata (every TUF check) and pick this terminal's offer; raises `UpdateError`."""
        from tuf.api.exceptions import DownloadError, RepositoryError

        try:
            self._updater = self._new_updater()
            self._updater.refresh()
        except (RepositoryError, DownloadError, OSError) as exc:
            raise UpdateError(f"update metadata refused: {_why(exc)}") from exc
        # ngclient has no public listing of targets; its verified set is the one to read.
        trusted = self._updater._trusted_set  # noqa: SLF001
        return choose(dict(trusted.targets.targets), current, terminal, self.platform, skip)

    def keyset(self) -> str | None:
        """The key-set document the verified targets offer (after `check`), or None when there is none.

        Raises `UpdateError` when it is offered but cannot be fetched or fails its length or hashes.
        """
        from tuf.api.exceptions import DownloadError, RepositoryError

        if self._updater is None:
            raise UpdateError("check the update metadata before asking for the key set")
        try:
            info = self._updater.get_targetinfo(KEYSET_TARGET)
            if info is None:
                return None
            path = self._updater.find_cached_target(info) or self._updater.download_target(info)
            return Path(path).read_text(encoding="utf-8")
        except (RepositoryError, DownloadError, OSError, UnicodeDecodeError) as exc:
            raise UpdateError(f"key set refused: {_why(exc)}") from exc

    def download(self, offer: Offer) -> Path:
        """The offered build, downloaded (or found cached) and checked against its length and hashes."""
        from tuf.api.exceptions import DownloadError, RepositoryError

        if self._updater is None:
            self.check("0", "")  # the metadata must be fresh before a download
        try:
            info = self._updater.get_targetinfo(offer.target_path)
            if info is None:
                raise UpdateError(f"{offer.target_path} is no longer offered")
            path = self._updater.find_cached_target(info) or self._updater.download_target(info)
        except (RepositoryError, DownloadError, OSError) as exc:
            raise UpdateError(f"update {offer.version} refused: {_why(exc)}") from exc
        return Path(path)
