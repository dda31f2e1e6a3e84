#!/usr/bin/env python3
"""Publish signed agent updates: a TUF repository that the server (or any static host) serves.

    publish_update.py init    --repo R --offline-keys K --online-keys O [--root-keys 2 --root-threshold 2]
    publish_update.py add     --repo R --keys K --keys O --build B.zip --version V --platform P
                              [--channel stable|beta] [--rollout 25] [--terminals m_a,m_b]
    publish_update.py rollout --repo R --keys K --keys O --version V --platform P --rollout 100
    publish_update.py refresh --repo R --keys O            (the online job: re-sign the timestamp; hourly)
    publish_update.py rotate  --repo R --keys K --keys O --role targets --new-keys K2
    publish_update.py root    --repo R --out agent/keys/update-root.json   (the root a build ships)
    publish_update.py bundle  --repo R --out /media/usb/pospal-update [--platform windows]

K (root and targets keys) stays offline; O (snapshot and timestamp) lives with the server. A build is a
zip of one version's directory, holding its entry `pospal-agent` / `pospal-agent.exe` (agent/install.py).
See server/updates.py for the layout and the roles.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from server.updates import PublishError, Release, Repository  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Run one publishing command; exit 1 with one line when it cannot be done."""
    p = argparse.ArgumentParser(prog="publish_update.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("init", "add", "rollout", "refresh", "rotate", "root", "bundle"):
        c = sub.add_parser(name)
        c.add_argument("--repo", required=True, type=Path)
        c.add_argument("--keys", action="append", type=Path, default=[], help="a key directory (repeat)")
    init = sub.choices["init"]
    init.add_argument("--offline-keys", type=Path, required=True)
    init.add_argument("--online-keys", type=Path, required=True)
    init.add_argument("--root-keys", type=int, default=1)
    init.add_argument("--root-threshold", type=int, default=1)
    for name in ("add", "rollout"):
        c = sub.choices[name]
        c.add_argument("--version", required=True)
        c.add_argument("--platform", required=True)
        c.add_argument("--rollout", type=int, default=100, help="percentage of terminals (stable)")
        c.add_argument("--terminals", default="", help="machine ids, comma separated (beta; or first)")
    add = sub.choices["add"]
    add.add_argument("--build", required=True, type=Path)
    add.add_argument("--channel", default="stable")
    sub.choices["rotate"].add_argument("--role", required=True)
    sub.choices["rotate"].add_argument("--new-keys", required=True, type=Path)
    sub.choices["root"].add_argument("--out", required=True, type=Path)
    sub.choices["bundle"].add_argument("--out", required=True, type=Path)
    sub.choices["bundle"].add_argument("--platform")
    args = p.parse_args(argv)

    now = datetime.now(UTC).replace(microsecond=0)
    keys = list(args.keys)
    if args.command == "init":
        keys = [args.offline_keys, args.online_keys]
    repo = Repository(args.repo, keys, now)
    try:
        if args.command == "init":
            repo.init(args.root_keys, args.root_threshold)
            print(
                f"repository at {args.repo}; offline keys in {args.offline_keys}, "
                f"online in {args.online_keys}"
            )
        elif args.command == "add":
            terminals = tuple(t for t in args.terminals.split(",") if t)
            release = Release(args.version, args.platform, args.channel, args.rollout, terminals)
            target = repo.add(args.build, release)
            print(f"offered {target.path} ({target.length} bytes) on {args.channel}, rollout {args.rollout}%")
        elif args.command == "rollout":
            terminals = tuple(t for t in args.terminals.split(",") if t)
            repo.set_rollout(args.platform, args.version, args.rollout, terminals)
            print(f"{args.platform} {args.version}: rollout {args.rollout}%")
        elif args.command == "refresh":
            repo.refresh()
            print("timestamp re-signed")
        elif args.command == "rotate":
            keyid = repo.rotate(args.role, args.new_keys)
            print(f"{args.role} key is now {keyid[:16]} (in {args.new_keys}); root is at a new version")
        elif args.command == "root":
            args.out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(args.repo / "metadata" / "1.root.json", args.out)
            print(f"wrote the first root to {args.out}: ship it in the build (agent/keys/update-root.json)")
        elif args.command == "bundle":
            repo.bundle(args.out, args.platform)
            print(f"update bundle in {args.out}: `pospal-agent update apply --from {args.out}` on the till")
    except PublishError as exc:
        print(f"publish_update.py: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
