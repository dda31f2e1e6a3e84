"""`pospal-agent update check|apply|status`: signed updates on demand (the CLI side of
`agent.selfupdate.updater`).

    pospal-agent update check  [--install DIR] [--from BUNDLE]   what this terminal would get (exit 0)
    pospal-agent update apply  [--install DIR] [--from BUNDLE]   download, verify, stage; the running
                                                                 agent swaps at its next idle moment
    pospal-agent update status [--install DIR]                   running, pending, failed, last swap

`--install` defaults to POSPAL_INSTALL_DIR (set by the launcher), on Windows then to the service's
`%ProgramData%\\POSPal\\install`; `--from` is a USB update bundle
(the repository's `metadata/` and `targets/`), verified against the build's update root like the server.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from agent.errors import Error
from agent.selfupdate.install import Install


def _install(args: argparse.Namespace) -> Install:
    path = args.install or os.environ.get("POSPAL_INSTALL_DIR")
    if not path and os.name == "nt":  # the Windows service's launcher install (agent.host.winservice)
        from agent.host.winservice import install_root

        path = str(install_root())
    if not path:
        raise Error("give --install DIR (the launcher's install directory) or set POSPAL_INSTALL_DIR")
    return Install(Path(path))


def _updater(install: Install) -> tuple[Any, Any]:
    from agent.cli import _control
    from agent.config import AgentSettings
    from agent.selfupdate.updater import Updater, UpdateSettings
    from agent.selfupdate.updates import UpdateClient, UpdateError, shipped_root

    root = shipped_root()
    if root is None:
        raise UpdateError("this build ships no update root: updates are off")
    settings = UpdateSettings.from_env(AgentSettings.from_env().server_url)
    url = settings.url

    def client() -> UpdateClient:
        return UpdateClient(root, install.tuf_dir, url=url)

    machine_id = _control().status().machine_id or ""
    from pospal_protocol import __version__

    current = install.current() or __version__
    return Updater(install, client, terminal=lambda: machine_id, settings=settings, current=current), root


def cmd_update(args: argparse.Namespace) -> int:
    """Check for, stage, or describe an update (see the module docstring)."""
    from agent.selfupdate.updates import UpdateClient

    install = _install(args)
    if args.update_command == "status":
        print(
            json.dumps(
                {
                    "current": install.current(),
                    "previous": install.previous(),
                    "pending": install.pending(),
                    "failed": install.failed(),
                    "last_swap": install.last_swap(),
                },
                indent=2,
            )
        )
        return 0
    updater, root = _updater(install)
    bundle = Path(args.source) if args.source else None
    if args.update_command == "check":
        client = UpdateClient(root, install.tuf_dir, bundle=bundle) if bundle else None
        offer = updater.check(client)
        print(f"up to date ({updater.current})" if offer is None else f"{offer.version} ({offer.channel})")
        return 0
    version = updater.apply_bundle(bundle, root) if bundle else updater.check_and_stage()
    if version is None:
        print(f"up to date ({updater.current})")
    else:
        print(f"staged {version}: the agent takes over with it at its next idle moment")
    return 0


def add_update(sub: argparse._SubParsersAction) -> None:
    """Register `update` on the `pospal-agent` parser."""
    p = sub.add_parser("update", help="signed agent updates: check, apply (stage), status")
    p.add_argument("update_command", choices=["check", "apply", "status"])
    p.add_argument("--install", help="the install directory (default: POSPAL_INSTALL_DIR)")
    p.add_argument("--from", dest="source", metavar="BUNDLE", help="a USB update bundle directory")
    p.set_defaults(func=cmd_update)
