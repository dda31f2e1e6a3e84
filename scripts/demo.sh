#!/usr/bin/env bash
# The README's first command: run the whole POSPal licensing system on this computer.
#
#   bash scripts/demo.sh
#
# From a fresh clone with only Python 3.11+: creates .venv, installs the project, then starts
#   - the server (SQLite, sandbox billing, console email; its signing key is generated on first run)
#     on http://127.0.0.1:8000 (or the next free port),
#   - the agent on http://127.0.0.1:7421, pointed at that server and trusting its key: the tray when
#     a display exists, headless otherwise.
# Everything lives in demo-data/ (delete it to start over). Ctrl+C stops both.
#
# Environment: PYTHON (default python3), DEMO_DIR (default demo-data), DEMO_SERVER_PORT (default
# 8000), POSPAL_AGENT_PORT (default 7421), DEMO_HEADLESS=1 to skip the tray, DEMO_SKIP_INSTALL=1 to
# use .venv as it is (tests, offline machines).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
PY="${PYTHON:-python3}"
DEMO="${DEMO_DIR:-demo-data}"
mkdir -p "$DEMO"
DEMO="$(cd "$DEMO" && pwd)"
AGENT_PORT="${POSPAL_AGENT_PORT:-7421}"
say() { printf '\033[1m[demo]\033[0m %s\n' "$*"; }
die() { printf '\033[1;31m[demo]\033[0m %s\n' "$*" >&2; exit 1; }

# --- 1. environment ---------------------------------------------------------------------------
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || die "needs Python 3.11 or newer (set PYTHON=...)"
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$PY" -m venv .venv || die "could not create .venv (on Debian/Ubuntu: apt-get install python3-venv)"
fi
VPY="$ROOT/.venv/bin/python"
# The locked dependencies (hashes checked), as the tests use them; install.sh does nothing on a second run.
if [ "${DEMO_SKIP_INSTALL:-0}" != 1 ]; then
  say "checking .venv against the lock (installs only on the first run)"
  bash scripts/install.sh || die "installing the dependencies failed (see above)"
fi
BIN="$ROOT/.venv/bin"

# SO_REUSEADDR as the servers use it: a port left in TIME_WAIT by an earlier run is free for them.
port_free() {
  "$VPY" -c 'import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", int(sys.argv[1])))' "$1" 2>/dev/null
}
port_free "$AGENT_PORT" || die "port $AGENT_PORT is in use (another agent running?). Stop it or set POSPAL_AGENT_PORT."
SERVER_PORT="${DEMO_SERVER_PORT:-8000}"
until port_free "$SERVER_PORT"; do SERVER_PORT=$((SERVER_PORT + 1)); done
SERVER_URL="http://127.0.0.1:$SERVER_PORT"
AGENT_URL="http://127.0.0.1:$AGENT_PORT"

# --- 2. processes and Ctrl+C -------------------------------------------------------------------
SERVER_PID=""
AGENT_PID=""
stopping=""
stop_all() {
  [ -n "$stopping" ] && return
  stopping=1
  echo
  say "stopping..."
  for pid in $AGENT_PID $SERVER_PID; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 100); do  # up to 10 s for a clean shutdown, then force
    alive=""
    for pid in $AGENT_PID $SERVER_PID; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ -z "$alive" ] && break
    sleep 0.1
  done
  for pid in $AGENT_PID $SERVER_PID; do kill -KILL "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  say "stopped. Data kept in $DEMO (delete it to start over)."
}
trap 'stop_all; exit 130' INT TERM
trap stop_all EXIT

# wait_http URL SECONDS PID: poll until URL answers 2xx; fail if PID dies first.
wait_http() {
  local url="$1" limit="$2" pid="$3" i
  for i in $(seq $((limit * 5))); do
    curl -fsS --max-time 2 -o /dev/null "$url" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.2
  done
  return 1
}

# --- 3. server ---------------------------------------------------------------------------------
export POSPAL_SERVER_DATA_DIR="$DEMO/server"
export POSPAL_SIGNING_KEY_DIR="$DEMO/server/keys"
export POSPAL_DATABASE_URL="sqlite:///$DEMO/server/pospal.db"
export POSPAL_BILLING=sandbox
export POSPAL_EMAIL=console
export POSPAL_PUBLIC_URL="$SERVER_URL"
mkdir -p "$POSPAL_SERVER_DATA_DIR"
say "migrating the server database"
"$BIN/pospal-server" migrate >>"$DEMO/server.log" 2>&1 || { tail -20 "$DEMO/server.log" >&2; die "pospal-server migrate failed (log: $DEMO/server.log)"; }
say "starting the server on $SERVER_URL (log: $DEMO/server.log; e-mails are printed here)"
# stdout carries the console e-mails (activation codes), stderr the JSON logs.
"$BIN/pospal-server" run --host 127.0.0.1 --port "$SERVER_PORT" 2>>"$DEMO/server.log" &
SERVER_PID=$!
wait_http "$SERVER_URL/health" 60 "$SERVER_PID" || { tail -20 "$DEMO/server.log" >&2; die "the server did not start"; }

# The demo server made its own signing key on first run. The agent trusts no key it is sent, so the
# operator exports the server's public JWKS from the server's own key store (not over the network)
# and names the file in POSPAL_TRUSTED_KEYS; a real deployment ships the same file inside the agent
# (agent/keys/trusted.json).
TRUSTED="$DEMO/trusted-keys.json"
"$BIN/pospal-server" keys export --out "$TRUSTED" 2>>"$DEMO/server.log" \
  || { tail -5 "$DEMO/server.log" >&2; die "pospal-server keys export failed"; }

# --- 4. agent ----------------------------------------------------------------------------------
export POSPAL_SERVER_URL="$SERVER_URL"
export POSPAL_DATA_DIR="$DEMO/agent"
export POSPAL_TRUSTED_KEYS="$TRUSTED"
export POSPAL_AGENT_PORT="$AGENT_PORT"
mode=(--headless)
how="headless (no display)"
if [ "${DEMO_HEADLESS:-0}" != 1 ] && { [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ] || [ "$(uname -s)" = Darwin ]; }; then
  mode=()
  how="with the tray icon"
fi
say "starting the agent $how on $AGENT_URL (log: $DEMO/agent.log)"
"$BIN/pospal-agent" run ${mode[@]+"${mode[@]}"} >>"$DEMO/agent.log" 2>&1 &
AGENT_PID=$!
wait_http "$AGENT_URL/v1/health" 60 "$AGENT_PID" || { tail -20 "$DEMO/agent.log" >&2; die "the agent did not start"; }

cat >"$DEMO/env.sh" <<EOF
# Source this to use the pospal-agent / pospal-server commands against the demo.
export PATH="$BIN:\$PATH"
export POSPAL_SERVER_URL="$SERVER_URL" POSPAL_DATA_DIR="$POSPAL_DATA_DIR" POSPAL_AGENT_PORT="$AGENT_PORT"
export POSPAL_TRUSTED_KEYS="$TRUSTED"
export POSPAL_SERVER_DATA_DIR="$POSPAL_SERVER_DATA_DIR" POSPAL_SIGNING_KEY_DIR="$POSPAL_SIGNING_KEY_DIR"
export POSPAL_DATABASE_URL="$POSPAL_DATABASE_URL" POSPAL_BILLING=sandbox POSPAL_EMAIL=console
EOF

cat <<EOF

  POSPal licensing demo is running.

  Local API (what the POS app asks)   $AGENT_URL/v1/license
  Cloud server                        $SERVER_URL   (API docs: $SERVER_URL/docs)
  Data, logs, keys                    $DEMO

  In another terminal:
    source $DEMO/env.sh
    curl -s $AGENT_URL/v1/license          # license_missing to start with
    pospal-agent trial                      # 30-day trial  -> trial_active
    pospal-agent buy you@example.com --restaurant "Demo Cafe"
                                            # prints a sandbox Checkout URL: open it, press "Pay"
                                            # (no card, no account, no money) -> licensed_active
    pospal-agent status
  Or use the tray icon's window: Start trial, Buy, Manage billing.
  Activation codes and other e-mails are printed below.

  Ctrl+C stops the agent and the server.

EOF

# --- 5. run until Ctrl+C or until either process dies ------------------------------------------
while kill -0 "$SERVER_PID" 2>/dev/null && kill -0 "$AGENT_PID" 2>/dev/null; do
  sleep 1
done
kill -0 "$SERVER_PID" 2>/dev/null || say "the server stopped unexpectedly (log: $DEMO/server.log)"
kill -0 "$AGENT_PID" 2>/dev/null || say "the agent stopped unexpectedly (log: $DEMO/agent.log)"
exit 1
