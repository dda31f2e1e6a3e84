"""The update cycle inside the agent: check, download and stage in the background, then ask for a swap.

- **When to check:** the first check 1-30 min after start (a fleet restarting at once spreads out), then
  every `check_s` (a day) with ±25 % jitter; a failed check (offline, refused metadata) tries again in an
  hour. `pospal-agent update check|apply` checks on demand. A check never touches the license: it runs
  on its own thread, and its failures are log lines.
- **Staging:** the verified build (a zip of one version's directory) is unpacked into
  `<install>/versions/.staging-<v>-<pid>/`, must contain the entry (`agent.selfupdate.install.ENTRY`), and is
  renamed to `versions/<v>/` in one step; then `pending` names it. Versions the launcher marked failed are
  skipped.
- **Trusted keys:** every check also fetches the key-set target (`UpdateClient.keyset`), keeps it as
  `<install>/tuf/keyset.json` and hands it to `on_keyset` (the service's `adopt_keyset`): a new token key
  or a revocation rides on the same check, and a key-set problem never stops an update (a log line). A
  check made without the service (`pospal-agent update apply --from USB`) leaves the kept copy, which the
  agent adopts when it starts (the swap to the staged version restarts it); the document is the offline
  authority's, verified again whatever brought it.
- **When to swap** (`SwapPolicy`): a version is pending, and the POS sent nothing for `idle_s` (5 min),
  or the local time is inside the night window (`POSPAL_UPDATE_WINDOW`, default 02:00-05:00). The agent
  (`agent.selfupdate.launched`) also waits until no request is being answered, then exits for the launcher.

Settings: `POSPAL_UPDATE_URL` (default `<POSPAL_SERVER_URL>/updates`), `POSPAL_UPDATE_IDLE_S`,
`POSPAL_UPDATE_WINDOW` (`HH:MM-HH:MM` local time, or `off`), `POSPAL_UPDATE_CHECK_S`,
`POSPAL_UPDATE_FIRST_CHECK_S` (the first check's delay instead of a random 1-30 min).
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import stat
import threading
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.errors import ConfigError, Error
from agent.selfupdate.install import ENTRY, Install, atomic_write, version_key
from agent.selfupdate.updates import Offer, UpdateClient, UpdateError, shipped_root
from pospal_protocol import __version__
from pospal_protocol.clock import Clock, SystemClock

log = logging.getLogger(__name__)

FIRST_CHECK_S = (60.0, 1800.0)
RETRY_S = 3600.0
KEPT_KEYSET = "keyset.json"  # in the install's tuf dir: the last verified key-set target
JITTER = 0.25


def _minutes(text: str) -> int:
    hours, _, minutes = text.strip().partition(":")
    value = int(hours) * 60 + int(minutes or 0)
    if not 0 <= value <= 24 * 60:
        raise ValueError(text)
    return value


@dataclass(frozen=True)
class UpdateSettings:
    """How this agent updates (see the module docstring for the variables)."""

    url: str | None = None
    check_s: float = 86400.0
    idle_s: float = 300.0
    window: tuple[int, int] | None = (120, 300)  # minutes after local midnight: 02:00-05:00
    first_check_s: tuple[float, float] = FIRST_CHECK_S

    @classmethod
    def from_env(cls, server_url: str, env: Mapping[str, str] | None = None) -> UpdateSettings:
        """Read the POSPAL_UPDATE_* variables; raises `ConfigError` naming a malformed one."""
        env = os.environ if env is None else env
        url = (env.get("POSPAL_UPDATE_URL") or f"{server_url.rstrip('/')}/updates").strip()
        try:
            idle = float(env.get("POSPAL_UPDATE_IDLE_S") or cls.idle_s)
            check = float(env.get("POSPAL_UPDATE_CHECK_S") or cls.check_s)
            raw_first = env.get("POSPAL_UPDATE_FIRST_CHECK_S")
            first = (float(raw_first), float(raw_first)) if raw_first else FIRST_CHECK_S
        except ValueError as exc:
            raise ConfigError(
                "POSPAL_UPDATE_IDLE_S / _CHECK_S / _FIRST_CHECK_S: not a number of seconds"
            ) from exc
        raw = (env.get("POSPAL_UPDATE_WINDOW") or "").strip()
        window = cls.window
        if raw.lower() == "off":
            window = None
        elif raw:
            try:
                start, end = raw.split("-")
                window = (_minutes(start), _minutes(end))
            except ValueError as exc:
                raise ConfigError(f"POSPAL_UPDATE_WINDOW: {raw!r} is not HH:MM-HH:MM (or off)") from exc
        return cls(url=url, check_s=check, idle_s=idle, window=window, first_check_s=first)


@dataclass(frozen=True)
class SwapPolicy:
    """When a staged version may take over: the POS idle for `idle_s`, or local time inside `window`."""

    idle_s: float
    window: tuple[int, int] | None

    def allows(self, idle_s: float, local: datetime) -> bool:
        """Whether a swap may happen now, after `idle_s` seconds without a request, at local time `local`."""
        if idle_s >= self.idle_s:
            return True
        if self.window is None:
            return False
        start, end = self.window
        minute = local.hour * 60 + local.minute
        return start <= minute < end if start <= end else minute >= start or minute < end


def stage(install: Install, build: Path, version: str) -> Path:
    """Unpack `build` as `versions/<version>/` (atomically: a staging dir, then one rename)."""
    version_key(version)
    final = install.versions / version
    if (final / ENTRY).exists():
        return final
    # Per process: the scheduled check and `pospal-agent update apply` may stage the same version at once.
    staging = install.versions / f".staging-{version}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        with zipfile.ZipFile(build) as archive:
            archive.extractall(staging)  # zipfile drops absolute paths and '..' parts
        entry = staging / ENTRY
        if not entry.is_file():
            raise UpdateError(f"update {version} has no {ENTRY}")
        entry.chmod(entry.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        if (final / ENTRY).exists():
            return final  # the other one finished first: its copy is the same verified build
        shutil.rmtree(final, ignore_errors=True)  # a directory without its entry, left by hand
        os.replace(staging, final)
    except (OSError, zipfile.BadZipFile) as exc:
        raise UpdateError(f"cannot unpack update {version}: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


class Updater:
    """The background update cycle for one install (see the module docstring)."""

    def __init__(
        self,
        install: Install,
        client: Callable[[], UpdateClient] | None,
        *,
        terminal: Callable[[], str],
        settings: UpdateSettings | None = None,
        clock: Clock | None = None,
        current: str = __version__,
        rng: random.Random | None = None,
        on_keyset: Callable[[str], Any] | None = None,
    ) -> None:
        self.install = install
        self._on_keyset = on_keyset
        self._client = client
        self._terminal = terminal
        self.settings = settings or UpdateSettings()
        self.policy = SwapPolicy(self.settings.idle_s, self.settings.window)
        self.clock = clock or SystemClock()
        self.current = current
        self._rng = rng or random.Random()  # noqa: S311 (jitter only spreads load)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._pending_seen: str | None = None
        self._pending_checked = -1e9
        self.last_result = ""
        # The last check as (outcome, when, detail) for `agent.selfupdate.updatestate` (the tray); None before
        # one.
        self.last_check: tuple[str, datetime, str] | None = None

    @property
    def enabled(self) -> bool:
        """Whether this agent checks for updates (an update root and a source)."""
        return self._client is not None

    def note_failure(self, message: str) -> None:
        """Record a failed check (its words are what the tray shows)."""
        now = self.clock.now()
        self.last_result = f"{now:%Y-%m-%d %H:%M}Z: failed: {message}"
        self.last_check = ("failed", now, message)

    @classmethod
    def for_install(cls, install: Install, service: Any) -> Updater:
        """The updater of the running agent: its settings from the environment, its terminal id from the
        license (the machine id), the shipped update root (none: updates are off, swaps of staged
        versions still happen)."""
        try:
            settings = UpdateSettings.from_env(service.settings.server_url)
            root = shipped_root()
        except Error as exc:  # a bad update setting turns updates off; it never stops the license
            log.warning("automatic updates are off: %s", exc.message)
            settings, root = UpdateSettings(), None
        client = None
        if root is not None and settings.url:
            url = settings.url

            def client() -> UpdateClient:
                return UpdateClient(root, install.tuf_dir, url=url)
        else:
            log.info("this build ships no update root: automatic updates are off")

        def terminal() -> str:
            return service.status().machine_id or ""

        return cls(
            install,
            client,
            terminal=terminal,
            settings=settings,
            clock=service.clock,
            on_keyset=getattr(service, "adopt_keyset", None),
        )

    # -- checking and staging --------------------------------------------------------------------------

    def check(self, client: UpdateClient | None = None) -> Offer | None:
        """Ask the source what this terminal should run; None when it is current."""
        if client is None:
            if self._client is None:
                raise UpdateError("this build has no update root: updates are off")
            client = self._client()
        return client.check(self.current, self._terminal(), frozenset(self.install.failed()))

    def check_and_stage(self, client: UpdateClient | None = None) -> str | None:
        """Check, download, verify and stage the offered version; returns it (None: nothing to do)."""
        with self._lock:
            client = client or (self._client() if self._client is not None else None)
            if client is None:
                raise UpdateError("this build has no update root: updates are off")
            offer = self.check(client)
            self._keyset(client)
            if offer is None:
                now = self.clock.now()
                self.last_result = f"{now:%Y-%m-%d %H:%M}Z: up to date ({self.current})"
                self.last_check = ("up_to_date", now, self.current)
                return None
            build = client.download(offer)
            stage(self.install, build, offer.version)
            build.unlink(missing_ok=True)  # unpacked: the zip would only take the till's disk
            self.install.set_pending(offer.version)
            now = self.clock.now()
            self.last_result = f"{now:%Y-%m-%d %H:%M}Z: staged {offer.version}"
            self.last_check = ("staged", now, offer.version)
            log.info(
                "staged agent %s (%s channel); it takes over at the next idle moment",
                offer.version,
                offer.channel,
            )
            return offer.version

    def _keyset(self, client: UpdateClient) -> None:
        """Keep the verified key-set target; hand it to `on_keyset` (only the authority's newest counts)."""
        try:
            doc = client.keyset()
            if doc is None:
                return
            atomic_write(self.install.tuf_dir / KEPT_KEYSET, doc.encode("utf-8"))
        except (Error, OSError) as exc:
            log.warning("the trusted key set was not updated: %s", getattr(exc, "message", exc))
            return
        if self._on_keyset is not None:
            self._on_keyset(doc)

    def adopt_kept_keyset(self) -> None:
        """Hand the key set the last check kept (perhaps another process's) to `on_keyset`."""
        if self._on_keyset is None:
            return
        try:
            doc = (self.install.tuf_dir / KEPT_KEYSET).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return
        self._on_keyset(doc)

    def apply_bundle(self, bundle: Path, root: bytes) -> str | None:
        """Stage from a USB update bundle, verified against the same metadata rules as online."""
        return self.check_and_stage(UpdateClient(root, self.install.tuf_dir, bundle=bundle))

    # -- swapping --------------------------------------------------------------------------------------

    def swap_due(self, idle_s: float) -> bool:
        """Whether the agent should stop now for the staged version (the pointer is read once a second)."""
        now = self.clock.monotonic()
        if now - self._pending_checked >= 1.0:
            self._pending_checked = now
            pending = self.install.pending()
            self._pending_seen = pending if pending is not None and pending != self.current else None
        if self._pending_seen is None:
            return False
        return self.policy.allows(idle_s, self.clock.now().astimezone())

    # -- the schedule ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Adopt the kept key set, then run the check schedule on a daemon thread (none: updates off)."""
        self.adopt_kept_keyset()
        if self._client is None:
            return
        self._thread = threading.Thread(target=self._loop, name="pospal-updates", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the schedule (a download in progress is abandoned; it restarts from the cache next time)."""
        self._stop.set()

    def next_wait(self, failed: bool) -> float:
        """Seconds to the next check: an hour after a failure, else a day ±25 %."""
        if failed:
            return RETRY_S
        return self.settings.check_s * (1.0 + self._rng.uniform(-JITTER, JITTER))

    def _loop(self) -> None:
        wait = self._rng.uniform(*self.settings.first_check_s)
        while not self._stop.wait(wait):
            failed = False
            try:
                self.check_and_stage()
            except Error as exc:
                failed = True
                self.note_failure(exc.message)
                log.warning("update check failed: %s", exc.message)
            except Exception:  # a bug in a check must never reach the license service
                failed = True
                log.exception("update check failed unexpectedly")
            wait = self.next_wait(failed)
