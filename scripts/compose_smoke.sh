#!/usr/bin/env bash
# Bring compose.yaml up as written, with podman-compose, and drive it end to end through its Caddy (TLS):
#   images   compose.yaml's postgres:16, redis:7 and caddy:2 cannot be pulled here (no registry): stand-ins
#            built from deploy/standins/ on the same bookworm base (scripts/image_base.sh), tagged under the
#            exact names the file uses (docker.io/library/...); pospal-server is the Dockerfile's image,
#            built as scripts/image_smoke.sh builds it (chroot isolation, the BASE build-arg).
#   runner   podman-compose (PyPI, pinned, in a venv under POSPAL_IMAGE_HOME) with --in-pod false (one
#            network namespace per service, as Docker Compose has: server-1 and server-2 both bind :8000)
#            on a bridge network, netavark + aardvark-dns, so services reach each other by name (db, redis,
#            server-1, server-2). --podman-path scripts/compose_podman.sh: it supplies the health waits
#            podman 4.3 lacks for `condition: service_healthy`, and drops the `--requires` podman 4.3
#            cannot start server-1 with.
#   podman   CONTAINERS_CONF: runc, and default ulimits at this host's hard limits (podman's own defaults
#            are above them and this root lacks CAP_SYS_RESOURCE, so setrlimit fails). Its "unable to get
#            systemd connection to add healthchecks" lines are harmless: without systemd it schedules no
#            health checks, and this script and compose_podman.sh run them with `podman healthcheck run`.
#   order    compose.yaml's depends_on: db healthy -> migrate (must exit 0, and exit before the servers and
#            the worker start, by podman's timestamps) -> server-1, server-2, worker -> caddy, which
#            publishes 80 and 443 on the host as the file says (both must be free).
#   image    the servers run its default CMD as the non-root `pospal` user; its HEALTHCHECK passes on both.
#   drive    scripts/stack_drive.py through https://localhost (Caddy's internal CA, read from its volume):
#            an agent's trial, a sandbox purchase, refreshes while server-1 is stopped; none may fail.
# Needs root. Prints the image sizes and the drive's figures; exits non-zero on any failure. Everything it
# starts (containers, network, volumes) is removed on exit. Runs on one machine wait for each other (a lock
# file): they would share ports 80 and 443 and the image tags. POSPAL_COMPOSE_PROJECT names the project.
set -euo pipefail
lock="${TMPDIR:-/tmp}/pospal-compose-smoke.lock"
if [ "${POSPAL_COMPOSE_LOCK:-}" != held ]; then
  # flock -o: the lock is flock's own, not inherited by the containers' conmon processes this run starts.
  flock -n -o "$lock" true || echo "[compose_smoke] another run holds $lock: waiting (at most 10 min)"
  exec env POSPAL_COMPOSE_LOCK=held flock -o -w 600 "$lock" bash "$(realpath "$0")" "$@"
fi
cd "$(dirname "$0")/.."
PROJECT=${POSPAL_COMPOSE_PROJECT:-pospalsmoke}
PODMAN_COMPOSE_VERSION=1.6.0
t0=$(date +%s)
say() { printf '[compose_smoke t+%ss] %s\n' "$(( $(date +%s) - t0 ))" "$*"; }

. scripts/image_base.sh

PC="$HOME_DIR/compose-venv/bin/podman-compose"
if [ "$("$PC" --version 2>/dev/null | head -1 | awk '{print $NF}')" != "$PODMAN_COMPOSE_VERSION" ]; then
  say "installing podman-compose $PODMAN_COMPOSE_VERSION (PyPI)"
  rm -rf "$HOME_DIR/compose-venv"
  python3 -m venv "$HOME_DIR/compose-venv"
  "$HOME_DIR/compose-venv/bin/pip" install -q --disable-pip-version-check "podman-compose==$PODMAN_COMPOSE_VERSION"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT  # until cleanup below takes over
build() {  # build NAME CONTEXT: podman's layer cache makes a warm rebuild a few seconds
  local old
  old=$(podman image inspect "$1" --format '{{.Id}}' 2>/dev/null || true)
  podman build -q --isolation chroot --format docker --build-arg BASE="$BASE" -t "$1" "$2" >/dev/null
  # The build this one replaced, untagged now: remove it (bounds the disk) and only it. `podman image prune`
  # fails while another run's build holds an image, and would take that run's layers too.
  if [ -n "$old" ] && [ "$old" != "$(podman image inspect "$1" --format '{{.Id}}')" ]; then
    podman rmi "$old" >/dev/null 2>&1 || true
  fi
}
say "building the stand-ins and pospal-server"
build docker.io/library/postgres:16 deploy/standins/postgres
build docker.io/library/redis:7 deploy/standins/redis
mkdir "$work/caddy-context"
cp deploy/standins/caddy/Containerfile "$CADDY" "$work/caddy-context/"
build docker.io/library/caddy:2 "$work/caddy-context"
build localhost/pospal-server:latest .
for image in "$BASE" postgres:16 redis:7 caddy:2 pospal-server; do
  say "  $image: $(( $(podman image inspect "$image" --format '{{.Size}}') / 1000000 )) MB"
done

printf '[containers]\ndefault_ulimits = ["nofile=%s:%s", "nproc=4096:4096"]\n[engine]\nruntime = "runc"\n' \
  "$(ulimit -Hn)" "$(ulimit -Hn)" >"$work/containers.conf"
export CONTAINERS_CONF="$work/containers.conf"
export POSTGRES_PASSWORD="smoke-$RANDOM$RANDOM" POSPAL_SERVER_SECRET="smoke-server-secret-$RANDOM"
export POSPAL_DOMAIN=localhost POSPAL_BILLING=sandbox POSPAL_EMAIL=console
compose=("$PC" --podman-path "$PWD/scripts/compose_podman.sh" --in-pod false -p "$PROJECT" -f compose.yaml)
c() { echo "${PROJECT}_$1_1"; }  # podman-compose's container name for a service

cleanup() {
  set +e
  # The containers first, with -v: that removes the anonymous volumes the images declare (redis's /data,
  # caddy's /config), which `down -v` leaves; then down removes the named volumes and the network.
  podman ps -aq --filter "label=io.podman.compose.project=$PROJECT" | xargs -r podman rm -f -v -t 5 >/dev/null 2>&1
  "${compose[@]}" down -v -t 5 >"$work/down.log" 2>&1
  podman volume ls -q --filter "label=io.podman.compose.project=$PROJECT" | xargs -r podman volume rm -f >/dev/null 2>&1
  podman network rm -f "${PROJECT}_default" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
for p in 80 443; do
  # bash's /dev/tcp: a connection accepted means something listens there (no iproute2 needed).
  if (: <"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "compose_smoke: port $p is taken on this host" >&2; exit 1; fi
done

say "podman-compose up -d (db healthy -> migrate -> servers, worker -> caddy)"
if ! timeout 300 "${compose[@]}" up -d --no-build >"$work/up.log" 2>&1; then
  tail -40 "$work/up.log"; "${compose[@]}" logs --tail 20 2>&1 | tail -80; exit 1
fi
migrate_exit=$(podman inspect "$(c migrate)" --format '{{.State.ExitCode}} {{.State.Status}}')
say "migrate: $migrate_exit; db: $(podman inspect "$(c db)" --format '{{.State.Health.Status}}')"
[ "$migrate_exit" = "0 exited" ] || { podman logs "$(c migrate)" | tail -20; exit 1; }
for s in db redis server-1 server-2 worker caddy; do
  [ "$(podman inspect "$(c "$s")" --format '{{.State.Running}}')" = true ] \
    || { echo "--- $s is not running"; podman logs --tail 30 "$(c "$s")"; exit 1; }
done
# migrate-then-serve: compose.yaml's order, from podman's own clock, not from the runner's log.
migrated=$(podman inspect "$(c migrate)" --format '{{.State.FinishedAt.UnixNano}}')
for s in server-1 server-2 worker; do
  [ "$(podman inspect "$(c "$s")" --format '{{.State.StartedAt.UnixNano}}')" -gt "$migrated" ] \
    || { echo "compose_smoke: $s started before migrate exited"; exit 1; }
done
# The image as compose.yaml runs it: the servers on its default CMD, as its non-root user, and its
# HEALTHCHECK passing on both (podman schedules none without systemd: run it).
say "server-1: $(podman inspect "$(c server-1)" --format '{{.Config.Entrypoint}} {{.Config.Cmd}}') as $(podman exec "$(c server-1)" id -un)"
podman exec "$(c server-1)" id -un | grep -qx pospal
for s in server-1 server-2; do
  healthy=0
  for _ in $(seq 60); do
    if podman healthcheck run "$(c "$s")" >/dev/null 2>&1; then healthy=1; break; fi
    sleep 0.5
  done
  [ "$healthy" = 1 ] || { echo "--- $s never passed the HEALTHCHECK"; podman logs --tail 30 "$(c "$s")"; exit 1; }
done
# Service names resolve on the compose network (aardvark-dns): the servers reached db and redis by them.
podman exec "$(c server-2)" python -c 'import socket; print("dns:", *(f"{n}={socket.gethostbyname(n)}" for n in ("db", "redis", "server-1", "caddy")))'

ca="$work/root.crt"
for _ in $(seq 100); do
  podman exec "$(c caddy)" cat /data/caddy/pki/authorities/local/root.crt >"$ca" 2>/dev/null && break
  sleep 0.2
done
[ -s "$ca" ] || { echo "compose_smoke: Caddy made no local CA"; podman logs --tail 30 "$(c caddy)"; exit 1; }
ip() { podman inspect "$(c "$1")" --format '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}'; }

say "driving the stack through Caddy (https://localhost); $(c server-1) is stopped mid-run"
if ! .venv/bin/python scripts/stack_drive.py --url https://localhost --ca "$ca" \
    --upstream "http://$(ip server-1):8000" --upstream "http://$(ip server-2):8000" \
    --stop "podman stop -t 10 $(c server-1)"; then
  for s in server-1 server-2 caddy; do echo "--- $s"; podman logs --tail 30 "$(c "$s")" 2>&1; done
  exit 1
fi
[ "$(podman inspect "$(c server-1)" --format '{{.State.Running}}')" = false ]
[ "$(podman inspect "$(c worker)" --format '{{.State.Running}}')" = true ]
say "ok"
