#!/usr/bin/env bash
# Install, run, upgrade and uninstall the Windows installer under Wine, against a Linux server.
#
#   POSPAL_SMOKE_SERVER_DIR=DIR scripts/windows_smoke.sh SETUP_V1.exe SETUP_V2.exe
#
# DIR holds the server whose public key the bundle was built with (scripts/windows_ci.sh makes both).
# Every check fails the script (no warn-and-skip):
#  1. Setup.exe /S: files in Program Files, both Start menu shortcuts, the HKLM Run value pointing at the
#     installed exe, the Add/Remove Programs keys;
#  2. the installed POSPalLicenseAgent.exe, started as the Run value starts it at login (its tray cannot
#     start under Wine), answers GET /v1/license on 127.0.0.1; the time to the first answer is printed;
#  3. pospal-agent.exe trial, then status --json, against a Linux server (sandbox billing): trial_active;
#  4. SETUP_V2 /S over the running agent: the version in the registry changes, the old agent is stopped,
#     and the agent (restarted by the installer, or at the next login) still says trial_active;
#  5. Uninstall.exe /S: files, Run value, shortcuts and uninstall keys gone, license data kept;
#  6. reinstall, then Uninstall.exe /S /REMOVEDATA: the license data is gone too.
# The agent listens on a free port (POSPAL_AGENT_PORT) so a developer's own agent on 7421 is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
# shellcheck source=scripts/windows_env.sh
source scripts/windows_env.sh
SETUP1="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
SETUP2="$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"

WORK="$(mktemp -d)"
SERVER_PID=""
AGENT_PID=""
cleanup() {
  # Only what this script started: the Linux server by its pid, and this dedicated prefix's wineserver.
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
  wineserver -k 2>/dev/null || true
  [ -n "$SERVER_PID" ] && wait "$SERVER_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; for f in "$WORK"/*.log; do [ -f "$f" ] && { echo "--- $f"; tail -30 "$f"; }; done >&2; exit 1; }
ok() { echo "ok: $*"; }

free_port() { "$LINUX_PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now_ms() { date +%s%3N; }

C="$WINEPREFIX/drive_c"
INSTDIR="$C/Program Files/POSPal License Agent"
WIN_INSTDIR='C:\Program Files\POSPal License Agent'
MENU="$C/ProgramData/Microsoft/Windows/Start Menu/Programs/POSPal License Agent"
RUN_KEY='HKLM\Software\Microsoft\Windows\CurrentVersion\Run'
UNINSTALL_KEY='HKLM\Software\Microsoft\Windows\CurrentVersion\Uninstall\POSPalLicenseAgent'
# Where the license data may live: per machine (%ProgramData%\POSPal), or per user in older versions.
DATA_DIRS=("$C/ProgramData/POSPal" "$C/users/$(id -un)/AppData/Local/POSPal/POSPal License Agent")

reg_value() { wine_run reg query "$1" /v "$2" /reg:64 2>/dev/null | tr -d '\r' | awk -v v="$2" '$1 == v {sub(/^[ \t]*[^ \t]+[ \t]+[^ \t]+[ \t]+/, ""); print}'; }
license_data_present() { local d; for d in "${DATA_DIRS[@]}"; do [ -n "$(ls -A "$d" 2>/dev/null)" ] && return 0; done; return 1; }
# Wine 8's tasklist lists nothing; Wine's processes are Linux processes named by their exe's path.
agent_running() { pgrep -f 'POSPal License Agent/POSPalLicenseAgent.exe' >/dev/null; }
# The whole prefix quiet (an uninstaller relaunches itself from %TEMP% and returns at once), bounded.
prefix_idle() { timeout "${1:-120}" wineserver -w || fail "Windows processes still running after ${1:-120} s"; }

# --- a Linux server with sandbox billing (as scripts/demo.sh starts it) ---------------------------
# The bundle trusts only the keys it was built with, so the server is the one whose public key
# scripts/windows_ci.sh built into it (POSPAL_SMOKE_SERVER_DIR, made by `windows_server_prepare`).
SERVER_DIR="${POSPAL_SMOKE_SERVER_DIR:?set POSPAL_SMOKE_SERVER_DIR (see scripts/windows_ci.sh)}"
windows_server_env "$SERVER_DIR"
SERVER_PORT="$(free_port)"
export POSPAL_PUBLIC_URL="http://127.0.0.1:$SERVER_PORT"
BIN="$ROOT/.venv/bin"
"$BIN/pospal-server" run --host 127.0.0.1 --port "$SERVER_PORT" >>"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 300); do curl -fsS -o /dev/null "$POSPAL_PUBLIC_URL/health" 2>/dev/null && break; sleep 0.2; done
curl -fsS -o /dev/null "$POSPAL_PUBLIC_URL/health" || fail "the server did not start"

# The Windows processes inherit these (Wine passes the Linux environment through).
AGENT_PORT="$(free_port)"
export POSPAL_AGENT_PORT="$AGENT_PORT" POSPAL_SERVER_URL="$POSPAL_PUBLIC_URL"
unset POSPAL_DATA_DIR POSPAL_TRUSTED_KEYS
AGENT_URL="http://127.0.0.1:$AGENT_PORT"

# A clean slate: nothing left from an earlier run in this prefix.
wineserver -k 2>/dev/null || true
[ -f "$INSTDIR/Uninstall.exe" ] && { wine_run "$INSTDIR/Uninstall.exe" /S /REMOVEDATA >/dev/null || true; prefix_idle; }
rm -rf "${DATA_DIRS[@]}" "$INSTDIR"

# --- 1. install -----------------------------------------------------------------------------------
t0=$(now_ms)
wine_run "$SETUP1" /S >"$WORK/setup1.log" || fail "Setup.exe /S exited non-zero"
prefix_idle
ok "installed in $(( ($(now_ms) - t0) / 1000 )) s"
for f in POSPalLicenseAgent.exe pospal-agent.exe Uninstall.exe EULA.txt _internal; do
  [ -e "$INSTDIR/$f" ] || fail "$f is not in Program Files"
done
for f in "POSPal License Agent.lnk" "Uninstall POSPal License Agent.lnk"; do
  [ -f "$MENU/$f" ] || fail "Start menu shortcut missing: $f"
done
run_value="$(reg_value "$RUN_KEY" POSPalLicenseAgent)"
[ "$run_value" = "\"$WIN_INSTDIR\\POSPalLicenseAgent.exe\"" ] || fail "HKLM Run value is [$run_value]"
[ "$(reg_value "$UNINSTALL_KEY" QuietUninstallString)" = "\"$WIN_INSTDIR\\Uninstall.exe\" /S" ] || fail "no QuietUninstallString"
if [ -n "${POSPAL_VERIFY_CA:-}" ]; then  # the uninstaller was signed while makensis wrote it
  osslsigncode verify -CAfile "$POSPAL_VERIFY_CA" -in "$INSTDIR/Uninstall.exe" >/dev/null || fail "Uninstall.exe is not signed"
fi
v1="$(reg_value "$UNINSTALL_KEY" DisplayVersion)"
[ -n "$v1" ] || fail "no DisplayVersion"
ok "files, shortcuts, Run value, uninstall keys (version $v1)"

# --- 2. the installed agent answers ----------------------------------------------------------------
start_agent() {  # as the Run value starts it at login: no arguments
  local log="$1"
  (wine "$INSTDIR/POSPalLicenseAgent.exe" </dev/null 2>&1 | cat >>"$log") &
  AGENT_PID=$!
}
wait_license() {  # prints the ms to the first answer with a license_state
  local t0 i body
  t0=$(now_ms)
  for i in $(seq 600); do
    body="$(curl -fsS --max-time 2 "$AGENT_URL/v1/license" 2>/dev/null)" && echo "$body" | grep -q license_state && {
      echo $(( $(now_ms) - t0 )); return 0; }
    sleep 0.1
  done
  return 1
}
start_agent "$WORK/agent1.log"
ms="$(wait_license)" || fail "the installed agent did not answer GET /v1/license within 60 s"
ok "installed POSPalLicenseAgent.exe answered GET /v1/license $ms ms after start"
echo "windows-figure: first-answer-ms=$ms"

# --- 3. trial and status through the console twin --------------------------------------------------
cli() { wine_run "$INSTDIR/pospal-agent.exe" "$@"; }
cli trial >"$WORK/trial.log" || fail "pospal-agent.exe trial exited non-zero"
cli status --json >"$WORK/status.json" || fail "pospal-agent.exe status --json exited non-zero"
state() { "$LINUX_PY" -c 'import json,sys; t=sys.stdin.read(); print(json.loads(t[t.index("{"):])["license_state"])'; }
[ "$(state <"$WORK/status.json")" = trial_active ] || fail "status --json: $(cat "$WORK/status.json")"
license_data_present || fail "no license data on disk after the trial"
ok "pospal-agent.exe trial; status --json: trial_active"

# --- 4. upgrade over the running agent --------------------------------------------------------------
wine_run "$SETUP2" /S >"$WORK/setup2.log" || fail "the upgrade's Setup.exe /S exited non-zero"
v2="$(reg_value "$UNINSTALL_KEY" DisplayVersion)"
[ "$v2" != "$v1" ] || fail "DisplayVersion still $v1 after the upgrade"
[ -f "$INSTDIR/POSPalLicenseAgent.exe" ] || fail "the upgrade removed the executable"
if [ -n "$AGENT_PID" ] && kill -0 "$AGENT_PID" 2>/dev/null; then
  for _ in $(seq 100); do kill -0 "$AGENT_PID" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$AGENT_PID" 2>/dev/null && fail "the upgrade left the old agent running"
fi
# The restart: a scheduled task for the Users group, run in each logged-in session as its user.
TASK="$C/windows/system32/tasks/POSPal License Agent start"
[ -f "$TASK" ] || fail "the upgrade registered no start task"
# Wine stores a lossy copy (no principal, no command), so the definition itself is checked on Linux by
# tests/test_installer_task.py; here: it was registered by this installer.
grep -q 'Starts POSPal License Agent for each logged-in user' "$TASK" || fail "not our start task: $(cat "$TASK")"
ok "the upgrade registered its per-session start task"
if ms="$(wait_license)"; then
  ok "the upgrade restarted the agent (answering after $ms ms)"
else
  # Wine's Task Scheduler registers and "runs" the task but starts nothing (no logged-in Windows
  # session), so start the agent as the next login would. The license must have survived either way.
  agent_running && fail "an agent runs but does not answer"
  echo "note: no agent restarted by the upgrade here; starting it as the next login would"
  start_agent "$WORK/agent2.log"
  wait_license >/dev/null || fail "the upgraded agent did not answer"
fi
cli status --json >"$WORK/status2.json" || fail "status after the upgrade"
[ "$(state <"$WORK/status2.json")" = trial_active ] || fail "after the upgrade: $(cat "$WORK/status2.json")"
ok "upgraded $v1 -> $v2 in place; still trial_active"

# --- 5. uninstall, keeping the data -----------------------------------------------------------------
wine_run "$INSTDIR/Uninstall.exe" /S >"$WORK/uninstall.log" || fail "Uninstall.exe /S exited non-zero"
prefix_idle
[ -e "$INSTDIR/POSPalLicenseAgent.exe" ] && fail "the exe is still installed"
[ -e "$INSTDIR/_internal" ] && fail "_internal is still installed"
[ -e "$INSTDIR" ] && fail "the install directory is still there: $(ls "$INSTDIR")"
[ -e "$MENU" ] && fail "Start menu entries still there"
[ -e "$TASK" ] && fail "the start task is still registered"
[ -z "$(reg_value "$RUN_KEY" POSPalLicenseAgent)" ] || fail "the HKLM Run value is still there"
wine_run reg query "$UNINSTALL_KEY" /reg:64 >/dev/null 2>&1 && fail "the uninstall key is still there"
license_data_present || fail "a plain uninstall removed the license data"
ok "uninstalled: files, shortcuts, Run value and uninstall keys removed; license data kept"

# --- 6. uninstall with data removal -----------------------------------------------------------------
wine_run "$SETUP2" /S >"$WORK/setup3.log" || fail "reinstall"
prefix_idle
wine_run "$INSTDIR/Uninstall.exe" /S /REMOVEDATA >"$WORK/uninstall2.log" || fail "Uninstall.exe /S /REMOVEDATA"
prefix_idle
[ -e "$INSTDIR" ] && fail "the install directory is still there"
license_data_present && fail "/REMOVEDATA left license data: $(ls "${DATA_DIRS[@]}" 2>/dev/null)"
ok "uninstall /REMOVEDATA removed the license data"
echo "windows smoke: all steps passed"
