"""Benchmark of a signed update, as the till sees it. Prints figures; asserts nothing.

Starts `pospal-launcher` (a real process) on agent 1.0.0 built from this tree (its server pointed at a
dead port: the license answer is served from memory either way), publishes newer builds in a TUF
repository served over loopback HTTP, and for each of `--swaps` updates:

- the update's cost: the build's bytes (the full file: no patches), the signed metadata a check fetches
  when something changed (timestamp, snapshot, targets) and when nothing did (the timestamp alone), and
  the time `pospal-agent update apply` takes (check, download, verify, unpack);
- the swap: a POS thread asks `AgentClient.license()` every 10 ms throughout; the longest time between two
  answers (target <= 2 s), failed calls (target 0), and the launcher's own stop-to-answer gap.

Usage: .venv/bin/python bench/update_swap.py [--swaps 3] [--pad-mb 40]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# The test kit builds real agent versions from this tree (a copy with another __version__) and runs them.
from tests.agent.updatekit import Launched, Pos, Publisher, make_version  # noqa: E402
from tests.server.conftest import free_port  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--swaps", type=int, default=3)
    parser.add_argument(
        "--pad-mb",
        type=float,
        default=0.0,
        help="add this many MB of incompressible bytes to each build "
        "(a frozen Windows bundle is tens of MB; the source-tree builds here are ~0.2 MB)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pospal-update-bench-") as tmp:
        base = Path(tmp)
        publisher = Publisher(base / "publisher")
        install = base / "install"
        make_version(install / "versions" / "1.0.0", "1.0.0")
        (install / "current").write_text("1.0.0\n")
        (base / "root.json").write_bytes(publisher.root)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("POSPAL_")}
        env.pop("DISPLAY", None)
        env.update(
            POSPAL_SERVER_URL=f"http://127.0.0.1:{free_port()}",
            POSPAL_DATA_DIR=str(base / "data"),
            POSPAL_RUNTIME_DIR=str(base / "run"),
            POSPAL_AGENT_PORT=str(port),
            POSPAL_UPDATE_ROOT=str(base / "root.json"),
            POSPAL_UPDATE_URL=publisher.serve(),
            POSPAL_UPDATE_IDLE_S="0",
            POSPAL_UPDATE_WINDOW="off",
        )
        launched = Launched(install, port, env, base / "launcher.log").start()
        rows = []
        costs: list[list[int]] = []
        try:
            for i in range(1, args.swaps + 1):
                version = f"1.{i}.0"
                build = make_version(base / f"build-{version}", version)
                if args.pad_mb:
                    (build / "padding.bin").write_bytes(os.urandom(int(args.pad_mb * 1024 * 1024)))
                publisher.publish(version, build)
                size = (publisher.builds / f"{version}.zip").stat().st_size
                meta = publisher.repo.meta_dir
                targets_v = publisher.repo.load("targets").signed.version
                snapshot_v = publisher.repo.load("snapshot").signed.version
                metadata = [
                    meta / "timestamp.json",
                    meta / f"{snapshot_v}.snapshot.json",
                    meta / f"{targets_v}.targets.json",
                ]
                metadata_bytes = [p.stat().st_size for p in metadata]
                pos = Pos(port).start()
                time.sleep(0.5)
                started = time.perf_counter()
                applied = launched.cli("update", "apply")
                apply_s = time.perf_counter() - started
                if applied.returncode != 0:
                    print(applied.stderr)
                    return 1
                launched.wait_for(
                    lambda v=version: (launched.health() or {}).get("version") == v, 60, version
                )
                time.sleep(0.5)
                pos.stop()
                report = json.loads((install / "launcher.json").read_text())
                rows.append((version, size, apply_s, pos, report))
                costs.append(metadata_bytes)
        finally:
            launched.stop()
            publisher.stop()
    print(
        f"{'version':<8} {'bytes':>9} {'apply s':>8} {'POS answers':>11} {'failed':>6} "
        f"{'longest gap ms':>14} {'launcher gap ms':>15} outcome"
    )
    for version, size, apply_s, pos, report in rows:
        print(
            f"{version:<8} {size:>9} {apply_s:>8.2f} {pos.answers:>11} {len(pos.failures):>6} "
            f"{pos.longest_gap_s * 1000:>14.0f} {report['gap_s'] * 1000:>15.0f} {report['outcome']}"
        )
    gaps = [pos.longest_gap_s for _, _, _, pos, _ in rows]
    failures = sum(len(pos.failures) for _, _, _, pos, _ in rows)
    print(
        f"POS longest gap: median {statistics.median(gaps) * 1000:.0f} ms, max {max(gaps) * 1000:.0f} ms "
        f"(target <= 2000); failed calls {failures} (target 0)"
    )
    for (version, size, *_), (ts, snap, targets) in zip(rows, costs, strict=True):
        print(
            f"{version}: full build {size} bytes; a check that finds it fetches {ts + snap + targets} bytes "
            f"of metadata (timestamp {ts}, snapshot {snap}, targets {targets}); with nothing new, {ts}"
        )
    for _, _, _, pos, _ in rows:
        for failure in pos.failures[:3]:
            print(f"  failed: {failure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
