#!/usr/bin/env bash
# Build the POSPalLicenseAgent bundle from build.spec and prove it runs.
#
#   scripts/bundle_smoke.sh [--no-build]
#
# 1. builds dist/POSPalLicenseAgent with PyInstaller (skipped with --no-build);
# 2. prints its size on disk and the biggest items in it;
# 3. checks that no private key and no server-only package made it in;
# 4. starts `POSPalLicenseAgent --headless` on a temporary data dir and a free port, and checks that
#    GET /v1/license answers with a license_state;
# 5. when a display exists (xvfb-run in CI), starts it again without --headless and waits for the
#    tray to be ready, so the Qt half of the bundle (xcb plugin, pruned libraries, ICU stub) runs too.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=""
interpreters=".venv/bin/python .venv/Scripts/python.exe python3 python"
# On Windows "python3" may be the Microsoft Store stub; the real interpreter is "python".
[ "${OS:-}" = Windows_NT ] && interpreters=".venv/Scripts/python.exe python"
for candidate in $interpreters; do
  if [ -x "$candidate" ] || command -v "$candidate" >/dev/null 2>&1; then PY="$candidate"; break; fi
done
APP=dist/POSPalLicenseAgent
EXE="$APP/POSPalLicenseAgent"
[ -x "$EXE" ] || EXE="$APP/POSPalLicenseAgent.exe"

if [ "${1:-}" != "--no-build" ]; then
  echo "== building $APP from build.spec"
  start=$(date +%s)
  "$PY" -m PyInstaller --noconfirm --log-level WARN build.spec
  echo "build took $(( $(date +%s) - start )) s"
fi
[ -d "$APP" ] || { echo "no bundle at $APP" >&2; exit 1; }
[ -x "$APP/POSPalLicenseAgent" ] && EXE="$APP/POSPalLicenseAgent"
# The command line: the same executable, or on Windows its console twin (the main one has no console).
CLI="$EXE"
[ -x "$APP/pospal-agent.exe" ] && CLI="$APP/pospal-agent.exe"

echo "== bundle size"
du -sh "$APP"
echo "bytes (apparent): $(du -sb "$APP" | cut -f1)"
echo "== biggest items"
# awk reads everything (no `head`): under pipefail, sort killed by SIGPIPE would fail the script.
find "$APP" -type f -printf '%s\t%P\n' | sort -rn \
  | awk -F'\t' 'NR <= 15 {printf "%8.1f MB  %s\n", $1/1048576, $2}'

echo "== content checks"
# A PEM private key block with a body, or a JWK with its private member "d", anywhere in the bundle.
# (Qt's network library carries the bare "BEGIN PRIVATE KEY" header text as a parser constant.)
"$PY" - "$APP" <<'PYEOF' || { echo "FAIL: a private key is in the bundle" >&2; exit 1; }
import json, pathlib, re, sys
pem = re.compile(rb"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----\r?\n[A-Za-z0-9+/=\r\n]{40,}")
bad = []
for path in pathlib.Path(sys.argv[1]).rglob("*"):
    if not path.is_file():
        continue
    blob = path.read_bytes()
    if pem.search(blob):
        bad.append(str(path))
    elif path.suffix == ".json":
        try:
            doc = json.loads(blob)
        except ValueError:
            continue
        keys = doc.get("keys", [doc]) if isinstance(doc, dict) else []
        if any(isinstance(k, dict) and "kty" in k and "d" in k for k in keys):
            bad.append(str(path))
if bad:
    print("\n".join(bad))
sys.exit(1 if bad else 0)
PYEOF
for pkg in server fastapi uvicorn sqlalchemy alembic stripe psycopg redis; do
  if [ -e "$APP/_internal/$pkg" ]; then echo "FAIL: server-only package $pkg is in the bundle" >&2; exit 1; fi
done
# Python modules live inside the executable's archive (PYZ): check there too.
"$PY" - "$EXE" <<'PYEOF' || { echo "FAIL: server-only modules in the bundle's Python archive" >&2; exit 1; }
import sys
try:
    from PyInstaller.archive.readers import CArchiveReader
except ImportError:
    print("(PyInstaller not importable here: Python archive not inspected)")
    sys.exit(0)
pyz = CArchiveReader(sys.argv[1]).open_embedded_archive("PYZ.pyz")
tops = {name.split(".")[0] for name in pyz.toc}
banned = {"server", "fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic", "stripe", "psycopg",
          "redis", "pydantic", "numpy", "pytest"}
print(f"Python archive: {len(pyz.toc)} modules in {len(tops)} top-level packages")
if tops & banned:
    print("found:", sorted(tops & banned))
    sys.exit(1)
PYEOF
echo "no private keys, no server-only packages"

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
DATA="$(mktemp -d)"
PID=""
cleanup() {
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
    kill "$PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$PID" 2>/dev/null || true
  fi
  rm -rf "$DATA"
}
trap cleanup EXIT

# start_and_check LABEL ARGS...: start the bundle, wait (bounded) for GET /v1/license, print it, stop.
start_and_check() {
  local label="$1"; shift
  local port; port="$(free_port)"
  local log="$DATA/$label.log"
  POSPAL_DATA_DIR="$DATA/$label" POSPAL_AGENT_PORT="$port" POSPAL_SERVER_URL="http://127.0.0.1:9" \
    "$EXE" "$@" >"$log" 2>&1 &
  PID=$!
  local t0 body=""; t0=$(date +%s)
  for _ in $(seq 300); do
    body="$(curl -fsS --max-time 2 "http://127.0.0.1:$port/v1/license" 2>/dev/null)" && break
    kill -0 "$PID" 2>/dev/null || { echo "FAIL: $label exited early:" >&2; cat "$log" >&2; exit 1; }
    sleep 0.2
  done
  if ! grep -q '"license_state"' <<<"$body"; then
    echo "FAIL: $label: GET /v1/license did not answer on port $port" >&2; cat "$log" >&2; exit 1
  fi
  echo "$label: GET http://127.0.0.1:$port/v1/license answered after $(( $(date +%s) - t0 )) s: $body"
  if [ "$label" = headless ]; then
    # The same executable is the command line: `status` reaches the running agent over the local API.
    local status
    status="$(POSPAL_DATA_DIR="$DATA/$label" POSPAL_AGENT_PORT="$port" POSPAL_SERVER_URL="http://127.0.0.1:9" \
      "$CLI" status --json 2>&1)" || true
    grep -q '"license_state"' <<<"$status" || { echo "FAIL: '$CLI status --json' said: $status" >&2; exit 1; }
    echo "$label: '$(basename "$CLI") status --json' answered through the local API"
  fi
  if [ "$label" = tray ]; then
    # The agent falls back to headless when the tray cannot start; here that is a failure.
    for _ in $(seq 150); do
      grep -rqs "tray ready" "$DATA/$label" "$log" && break
      grep -rqsE "tray (unavailable|failed)" "$DATA/$label" "$log" && break
      sleep 0.2
    done
    if ! grep -rqs "tray ready" "$DATA/$label" "$log"; then
      echo "FAIL: the tray did not start:" >&2; cat "$log" "$DATA/$label"/*.log >&2; exit 1
    fi
    echo "$label: Qt tray/window started ($(grep -rhos 'tray ready after [0-9]* ms' "$DATA/$label" "$log" | awk 'NR == 1'))"
  fi
  kill "$PID"
  for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$PID" 2>/dev/null && { echo "FAIL: $label did not stop on SIGTERM" >&2; exit 1; }
  PID=""
}

echo "== smoke: command line"
"$CLI" --version
"$CLI" fingerprint --json >"$DATA/fingerprint.json" 2>&1 || { cat "$DATA/fingerprint.json" >&2; echo "FAIL: fingerprint" >&2; exit 1; }
echo "fingerprint: $(grep -c '"name"' "$DATA/fingerprint.json") components probed"

echo "== smoke: --headless"
start_and_check headless --headless

if [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ] || [ "${OS:-}" = Windows_NT ]; then
  echo "== smoke: tray"
  start_and_check tray
else
  echo "== smoke: tray skipped (no display; run under xvfb-run to include it)"
fi
echo "bundle smoke test passed"
