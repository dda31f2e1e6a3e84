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
    publish_update.py keyset-init --repo R --keys K [--count 2 --threshold 2]   (the key-set authority)
    publish_update.py anchors --repo R --jwks JWKS --out agent/keys/trusted.json  (what builds ship)
    publish_update.py keyset  --repo R --keys K --keys O --jwks JWKS [--revoke KID,KID]

K (root, targets and key-set keys) stays offline; O (snapshot and timestamp) lives with the server.
`keyset` signs the token keys agents trust (JWKS: `pospal-server keys export`) and the kids revoked, and
offers them to the fleet; copy R/keyset.json into the server's key directory too (README, key rotation).
A build is a zip of one version's directory, holding its entry `pospal-agent` / `pospal-agent.exe`
(agent/selfupdate/install.py).
See server/updates.py for the layout and the roles.
"""

from __future__ import annotations

import argparse
import json
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
    for name in (
        "init",
        "add",
        "rollout",
        "refresh",
        "rotate",
        "root",
        "bundle",
        "keyset-init",
        "anchors",
        "keyset",
    ):
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
    sub.choices["keyset-init"].add_argument("--count", type=int, default=1)
    sub.choices["keyset-init"].add_argument("--threshold", type=int, default=1)
    sub.choices["anchors"].add_argument("--jwks", required=True, type=Path, help="the token keys builds ship")
    sub.choices["anchors"].add_argument("--out", required=True, type=Path)
    sub.choices["keyset"].add_argument("--jwks", required=True, type=Path, help="the token keys to trust")
    sub.choices["keyset"].add_argument(
        "--revoke", default="", help="kids never to trust again, comma separated"
    )
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
        elif args.command == "keyset-init":
            repo.keyset_init(args.count, args.threshold)
            print(
                f"key-set authority: {args.count} key(s) in {keys[0]}, threshold {args.threshold}; "
                "ship it with `anchors`"
            )
        elif args.command == "anchors":
            jwks = json.loads(args.jwks.read_text(encoding="utf-8"))
            doc = {"keys": jwks.get("keys", []), "keyset_authority": repo.authority()}
            args.out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
            print(f"wrote {len(doc['keys'])} token key(s) and the key-set authority to {args.out}")
        elif args.command == "keyset":
            jwks = json.loads(args.jwks.read_text(encoding="utf-8"))
            revoked = tuple(k for k in args.revoke.split(",") if k)
            version, _doc = repo.publish_keyset(jwks, revoked)
            print(
                f"key set version {version} offered ({len(jwks.get('keys', []))} key(s), revoked: "
                f"{', '.join(revoked) or 'none new'}); copy {args.repo / 'keyset.json'} "
                "into the server's key directory"
            )
    except PublishError as exc:
        print(f"publish_update.py: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
