"""Agent settings: one typed, frozen object read from the environment at start-up.

`AgentSettings.from_env()` is the only place the agent reads its environment variables. A malformed
value raises `ConfigError` naming the variable, before anything starts.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import platformdirs

from agent import flavour
from agent.errors import ConfigError

APP_NAME = "POSPal License Agent"
APP_AUTHOR = "POSPal"
DEFAULT_SERVER_URL = "https://license.pospal.gr"
DEFAULT_AGENT_PORT = 7421

log = logging.getLogger(__name__)


def legacy_user_data_dir() -> Path:
    """The per-user data dir earlier versions used (platformdirs user data dir); migrated from at start."""
    return Path(platformdirs.user_data_dir(APP_NAME, APP_AUTHOR))


def _writable(path: Path) -> bool:
    """Whether this process can write `path`, or create it (its nearest existing parent is writable)."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            return False
        probe = probe.parent
    return probe.is_dir() and os.access(probe, os.W_OK | os.X_OK)


def default_data_dir() -> Path:
    """The per-machine data dir (used when POSPAL_DATA_DIR is not set): one identity for every user.

    Windows: `%ProgramData%\\POSPal\\License Agent` (`pospal-agent service install`, run by the
    installer, sets its DACL: agent/host/winacl.py). Elsewhere `/var/lib/pospal` (macOS: the site data dir)
    when this account can write there, else the user data dir (a developer's machine, an agent run without
    privileges).
    """
    if sys.platform == "win32":
        from agent.host.winacl import data_root  # the root the installer protects (its DACL)

        return data_root() / "License Agent"
    machine = (
        Path(platformdirs.site_data_dir(APP_NAME, APP_AUTHOR))
        if sys.platform == "darwin"
        else Path("/var/lib/pospal")
    )
    return machine if _writable(machine) else legacy_user_data_dir()


def _origin(value: str, var: str) -> str:
    parts = urlsplit(value)
    if (
        parts.scheme not in ("http", "https")
        or not parts.netloc
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        raise ConfigError(f"{var}: {value!r} is not an origin like https://pos.example.com")
    return f"{parts.scheme}://{parts.netloc}".lower()


@dataclass(frozen=True)
class AgentSettings:
    """Everything the agent is configured with."""

    server_url: str = DEFAULT_SERVER_URL
    agent_port: int = DEFAULT_AGENT_PORT
    data_dir: Path = field(default_factory=default_data_dir)
    allowed_origins: tuple[str, ...] = ()
    trusted_keys_path: Path | None = None
    # Where the tray's channel socket lives (Linux, macOS; `agent.link.unixchannel`); None on Windows (a
    # pipe).
    runtime_dir: Path | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AgentSettings:
        """Read POSPAL_SERVER_URL, POSPAL_AGENT_PORT, POSPAL_DATA_DIR, POSPAL_AGENT_ALLOWED_ORIGINS,
        POSPAL_RUNTIME_DIR and POSPAL_TRUSTED_KEYS; raises `ConfigError` naming the variable on a malformed
        value.

        POSPAL_TRUSTED_KEYS is a development-only trust path: a release build (`agent.flavour`) ignores it,
        so nobody at the till can make the agent trust a key of their own.
        """
        env = os.environ if env is None else env

        server_url = (env.get("POSPAL_SERVER_URL") or DEFAULT_SERVER_URL).strip().rstrip("/")
        parts = urlsplit(server_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"POSPAL_SERVER_URL: {server_url!r} is not an http(s) URL")

        raw_port = (env.get("POSPAL_AGENT_PORT") or "").strip()
        try:
            port = int(raw_port) if raw_port else DEFAULT_AGENT_PORT
        except ValueError:
            port = -1
        if not 1 <= port <= 65535:
            raise ConfigError(f"POSPAL_AGENT_PORT: {raw_port!r} is not a TCP port (1-65535)")

        raw_dir = (env.get("POSPAL_DATA_DIR") or "").strip()
        data_dir = Path(raw_dir).expanduser() if raw_dir else default_data_dir()

        raw_origins = env.get("POSPAL_AGENT_ALLOWED_ORIGINS") or ""
        origins = tuple(
            _origin(o.strip(), "POSPAL_AGENT_ALLOWED_ORIGINS") for o in raw_origins.split(",") if o.strip()
        )

        raw_keys = (env.get("POSPAL_TRUSTED_KEYS") or "").strip()
        if raw_keys and flavour.is_release():
            log.warning("POSPAL_TRUSTED_KEYS is ignored: a release build trusts only the keys it ships with")
            raw_keys = ""
        keys_path = Path(raw_keys).expanduser() if raw_keys else None
        if keys_path is not None and not keys_path.is_file():
            raise ConfigError(f"POSPAL_TRUSTED_KEYS: {raw_keys!r} is not a readable JWKS file")

        return cls(
            server_url=server_url,
            agent_port=port,
            data_dir=data_dir,
            allowed_origins=origins,
            trusted_keys_path=keys_path,
            runtime_dir=runtime_dir(env, data_dir, explicit_data_dir=bool(raw_dir)),
        )


SERVICE_RUNTIME_DIR = Path("/run/pospal-agent")


def runtime_dir(env: Mapping[str, str], data_dir: Path, *, explicit_data_dir: bool) -> Path | None:
    """The tray channel's directory: POSPAL_RUNTIME_DIR; else, beside an explicit POSPAL_DATA_DIR,
    `<data dir>/run`; else the system service's `/run/pospal-agent` when it exists (or this is root);
    else `<data dir>/run`. None on Windows, where the channel is a named pipe.

    The service and its trays compute the same answer: the systemd unit sets POSPAL_RUNTIME_DIR, and a
    till user's tray, with no variable set, finds the service's directory under /run.
    """
    if sys.platform == "win32":
        return None
    raw = (env.get("POSPAL_RUNTIME_DIR") or "").strip()
    if raw:
        return Path(raw).expanduser()
    if not explicit_data_dir and (SERVICE_RUNTIME_DIR.is_dir() or os.geteuid() == 0):
        return SERVICE_RUNTIME_DIR
    return data_dir / "run"
