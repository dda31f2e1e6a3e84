#!/usr/bin/env bash
# The `podman` that scripts/compose_smoke.sh gives podman-compose (--podman-path): Debian bookworm's podman
# 4.3 with the one thing compose.yaml needs that it lacks, `depends_on: condition: service_healthy`.
#   podman 4.3 has no `wait --condition=healthy`, so podman-compose skips healthy conditions below podman
#   4.6 (with a warning) and would start `migrate` before PostgreSQL accepts connections; and without
#   systemd podman schedules no health checks at all. So this script reports a version podman-compose
#   accepts and answers `wait --condition=healthy NAME...` by running each container's own health check
#   (`podman healthcheck run`) once a second until it passes. A container that stops first fails the wait
#   (exit 1); podman-compose then asks again a second later, so the caller's timeout bounds a dependency
#   that never becomes healthy (scripts/compose_smoke.sh: `timeout` around `up`).
#   podman-compose also creates each container with `--requires=` its depends_on containers, and podman 4.3
#   then refuses to start server-1 ("depends on container ... not found in input list": its dependency graph
#   breaks on the transitive db <- migrate <- server-1). Those flags are dropped here: podman-compose itself
#   starts each container only once its depends_on conditions hold, and without them `podman start
#   server-1` does not run the exited migrate again (Docker Compose would not either).
# Everything else goes to podman unchanged.
set -euo pipefail
PODMAN=${POSPAL_REAL_PODMAN:-/usr/bin/podman}

if [ "${1:-}" = --version ]; then
  # podman-compose reads the last word as the version.
  echo "$("$PODMAN" --version), health waits by scripts/compose_podman.sh, so as 4.6.0"
  exit 0
fi
if [ "${1:-}" = wait ] && [ "${2:-}" = --condition=healthy ]; then
  shift 2
  for name in "$@"; do
    until "$PODMAN" healthcheck run "$name" >/dev/null 2>&1; do
      if [ "$("$PODMAN" inspect "$name" --format '{{.State.Running}}' 2>/dev/null)" != true ]; then
        echo "compose_podman: $name stopped before it was healthy" >&2
        exit 1
      fi
      sleep 1
    done
  done
  exit 0
fi
if [ "${1:-}" = create ] || [ "${1:-}" = run ]; then
  args=()
  for arg in "$@"; do
    case "$arg" in --requires=*) ;; *) args+=("$arg") ;; esac
  done
  set -- "${args[@]}"
fi
exec "$PODMAN" "$@"
